export type TransportName = "ws" | "stream" | "sse";
/** The parts of the WHATWG WebSocket the client uses (browsers, Node 22, the `ws` package). */
export interface WebSocketLike {
    binaryType: string;
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    addEventListener(type: string, listener: (ev: any) => void): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;
export type FetchLike = (input: string, init?: any) => Promise<any>;
/** How a link ended. */
export interface CloseInfo {
    /** Whether the transport was established (WebSocket open, HTTP 200 headers). */
    opened: boolean;
    /** WebSocket close code, when one was received. */
    code?: number;
    reason?: string;
    /** HTTP status of a refused upgrade or request, where it can be seen. */
    status?: number;
    /** A network-level failure (connection refused, reset): the host is down, not the transport. */
    network?: boolean;
    /** The link was closed by the client (user close, dead-connection timer, connect timeout). */
    local?: string;
    error?: string;
}
export interface LinkHandlers {
    open(): void;
    /** A JSON control message (reply, error, conflating, ...). `group` names the HTTP request. */
    control(msg: Record<string, unknown>, group?: string): void;
    /** A binary batch. */
    binary(data: ArrayBuffer | Uint8Array): void;
    /** A format=json batch (array) or one JSON record (SSE). */
    json(text: string): void;
    /** Any bytes arrived (liveness). */
    activity(): void;
    close(info: CloseInfo): void;
}
export interface Link {
    readonly transport: TransportName;
    /** Whether control messages can be sent (WebSocket only). */
    readonly canSend: boolean;
    send(msg: unknown): void;
    close(local: string): void;
}
export declare class WsLink implements Link {
    private h;
    readonly transport = "ws";
    readonly canSend = true;
    private ws;
    private done;
    private opened;
    private status;
    private network;
    private error;
    constructor(Ctor: WebSocketConstructor, url: string, protocols: string[] | undefined, h: LinkHandlers);
    private finish;
    send(msg: unknown): void;
    close(local: string): void;
}
/** One HTTP request of an HTTP session: one (depth, channels) group of the subscription. */
export interface HttpGroup {
    key: string;
    url: string;
    /** SSE: the last event id seen on this group, sent back as Last-Event-ID. */
    lastEventId?: string;
}
/**
 * A set of long-lived HTTP requests (one per subscription group), reading `/stream` frames or
 * `/sse` events. The session is "open" once a request got its 200 response; it closes, whole,
 * when any request fails or ends (the client then reconnects every group).
 */
export declare class HttpLink implements Link {
    readonly transport: "stream" | "sse";
    private readonly fetchFn;
    private readonly h;
    /** Last SSE event id per request URL: kept by the client across links, sent as Last-Event-ID. */
    readonly lastEventIds: Map<string, string>;
    readonly canSend = false;
    private done;
    private opened;
    private readonly requests;
    constructor(transport: "stream" | "sse", fetchFn: FetchLike, h: LinkHandlers, 
    /** Last SSE event id per request URL: kept by the client across links, sent as Last-Event-ID. */
    lastEventIds?: Map<string, string>);
    get isOpen(): boolean;
    /** Opens the requests for `groups`, restarting changed ones and closing the others. */
    setGroups(groups: HttpGroup[]): void;
    /** Starts the group's request again (a resync: the server answers with fresh snapshots). */
    restart(key: string): void;
    private start;
    private run;
    /** `/stream` frames: {u32 length LE, u8 type, payload}; type 1 binary batch, 2 JSON control. */
    private frameParser;
    /** text/event-stream: named events are control messages, unnamed ones data records. */
    private sseParser;
    private fail;
    send(): void;
    close(local: string): void;
}
