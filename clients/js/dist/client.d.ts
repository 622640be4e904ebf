import { type BackoffOptions } from "./backoff.js";
import { type BookView } from "./book.js";
import { type FetchLike, type TransportName, type WebSocketConstructor } from "./transport.js";
import { type Side } from "./wire.js";
export type Channel = "book" | "trades";
export type Format = "binary" | "json";
export interface ClientOptions {
    /**
     * Servers to connect to, tried in turn: `ws://host:port/ws`, `wss://...`, or the `http(s)://`
     * base. `/stream` and `/sse` are found next to `/ws`.
     */
    endpoints: string | string[];
    /** WebSocket constructor (default `globalThis.WebSocket`; in Node 20 pass `ws`'s). */
    WebSocket?: WebSocketConstructor;
    /** fetch (default `globalThis.fetch`), for `/stream` and `/sse`. */
    fetch?: FetchLike;
    /** Data encoding on `/ws` (default binary). `/stream` is binary and `/sse` JSON. */
    format?: Format;
    /** Access token: `token=` on every request. */
    token?: string;
    /**
     * On /ws, offer the token as the subprotocol `token.<T>` (with `tickcast.v1`) instead of in the
     * URL, to keep it out of logs (docs/protocol.md §1). /stream and /sse still use `token=`.
     */
    tokenInSubprotocol?: boolean;
    /** Transports to try, in order, when one cannot be established (default ws, stream, sse). */
    transports?: TransportName[];
    /** Reconnect backoff: full jitter, base 500 ms, cap 20 s by default. */
    backoff?: BackoffOptions;
    /** A transport not established within this long counts as refused (default 10 s). */
    connectTimeoutMs?: number;
    /** Ping (`{"op":"ping"}`) after this long without data (default 10 s; /ws only). */
    pingIntervalMs?: number;
    /** The connection is dead after ping interval + this much silence (default 5 s). */
    pongTimeoutMs?: number;
    /** /stream and /sse: dead after this long without a byte (default 60 s). */
    httpIdleTimeoutMs?: number;
    /** Verify book checksums when the server sends them (default true). */
    checksums?: boolean;
    /** Ask for conflated book streams of at most this many snapshots per second (§3.3). */
    maxHz?: number;
    /** Called with one line per notable event (connects, reconnect delays, resyncs). */
    log?: (line: string) => void;
}
export interface SubscribeOptions {
    /** Levels per side: 1, 10, 25 (default), 100, or 0 for the whole book. */
    depth?: number;
    /** Default both. */
    channels?: Channel[];
}
export type ConnectionState = "idle" | "connecting" | "open" | "subscribed" | "reconnecting" | "closed";
export type StateEvent = {
    state: "connecting";
    endpoint: string;
    transport: TransportName;
    attempt: number;
} | {
    state: "open";
    endpoint: string;
    transport: TransportName;
} | {
    state: "subscribed";
    endpoint: string;
    transport: TransportName;
    /** True when this follows a lost connection and every named stream was recovered. */
    resumed: boolean;
    /** `recovered` per symbol, for the symbols the resume named. */
    recovered: Record<string, boolean>;
} | {
    state: "reconnecting";
    delayMs: number;
    attempt: number;
    reason: string;
} | {
    state: "closed";
    reason: string;
    terminal: boolean;
};
export interface BookEvent {
    symbol: string;
    book: BookView;
    /** True when the record was a snapshot (the whole book replaced). */
    snapshot: boolean;
    seq: number;
    exchTs: bigint;
    recvTs: bigint;
}
export interface TradeEvent {
    symbol: string;
    seq: number;
    price: number;
    qty: number;
    /** Decimal strings, as format=json prints them. */
    priceText: string;
    qtyText: string;
    tradeId: bigint;
    side: Side;
    exchTs: bigint;
    recvTs: bigint;
}
export interface StatusEvent {
    symbol: string;
    /** 1 feed stale, 2 feed resumed, 3 slow-consumer warning. */
    code: number;
    ts: bigint;
}
export interface ResyncEvent {
    symbol: string;
    reason: "gap" | "checksum";
    /** The book's seq before, and the record's. */
    have: number;
    got: number;
}
export interface ServerErrorEvent {
    code: string;
    message: string;
    id?: unknown;
    symbols?: string[];
}
export interface SymbolInfo {
    symbol: string;
    sid: number;
    pxDecimals: number;
    qtyDecimals: number;
    /** The granted conflation rate of the symbol's book stream, when one was asked for (§5.1). */
    maxHz?: number;
}
export interface ClientEvents {
    state: StateEvent;
    book: BookEvent;
    trade: TradeEvent;
    status: StatusEvent;
    resync: ResyncEvent;
    /** A jump in a trades stream (trades cannot be replayed: the loss is reported). */
    tradeGap: {
        symbol: string;
        have: number;
        got: number;
    };
    error: ServerErrorEvent;
    /** Every control message from the server, as parsed JSON (conflating, live, refreshed, ...). */
    control: Record<string, unknown>;
}
export interface ClientStats {
    /** Connections established again after a lost one (subscribed again). */
    reconnects: number;
    /** Of those, the ones where every stream was recovered (no snapshot needed). */
    resumed: number;
    /** Reconnect delays chosen, in order (ms). */
    delays: number[];
    records: number;
    gaps: number;
    checksumMismatches: number;
    checksumsVerified: number;
}
/** A refused subscribe, or the client closed before the reply. */
export declare class SubscribeError extends Error {
    readonly code: string;
    name: string;
    constructor(message: string, code: string);
}
type Listener<T> = (ev: T) => void;
export declare class TickcastClient {
    private readonly o;
    private readonly endpoints;
    private readonly transports;
    private readonly backoff;
    private readonly listeners;
    private readonly subs;
    private readonly books;
    private readonly tradeSeq;
    private readonly bySid;
    private readonly info;
    private epoch;
    private token;
    private link;
    private running;
    private epIdx;
    private tIdx;
    private readonly preferred;
    private _state;
    private everSubscribed;
    private lostSinceSubscribed;
    private nextId;
    private readonly pending;
    private readonly resyncing;
    private awaitingGroups;
    private recoveredNow;
    private lastRx;
    private timers;
    private reconnectTimer;
    private refreshWaiters;
    private symbolsWaiters;
    readonly stats: ClientStats;
    constructor(options: ClientOptions);
    /** The connection state. */
    get state(): ConnectionState;
    /** The transport in use (or being tried), if any. */
    get transport(): TransportName | undefined;
    private lastTransport;
    /** SSE: the last event id per subscription group, for Last-Event-ID on the next connection. */
    private readonly sseLastIds;
    /** The endpoint in use (or being tried). */
    get endpoint(): string;
    on<K extends keyof ClientEvents>(event: K, fn: Listener<ClientEvents[K]>): this;
    off<K extends keyof ClientEvents>(event: K, fn: Listener<ClientEvents[K]>): this;
    /** Starts connecting (idempotent). Subscriptions made before are sent once connected. */
    connect(): this;
    /** Closes the connection and stops reconnecting. Books are kept (read-only). */
    close(): void;
    /**
     * Subscribes to `symbols` (replacing the depth and channels of ones already subscribed).
     * Resolves with the symbols' info once the server confirmed; rejects if it refused them (the
     * symbols are then dropped from the subscription).
     */
    subscribe(symbols: string[], opts?: SubscribeOptions): Promise<SymbolInfo[]>;
    /** Drops `symbols`: their books are removed. */
    unsubscribe(symbols: string[]): void;
    /** The book the client holds for `symbol`, if it subscribed to its book channel. */
    book(symbol: string): BookView | undefined;
    /** Symbol info from the last subscribe reply. */
    symbolInfo(symbol: string): SymbolInfo | undefined;
    /**
     * Replaces the access token. On /ws it is sent at once (`{"op":"refresh"}`): resolves with the
     * `refreshed` reply, rejects with a {@link SubscribeError} if the server refused it. Every
     * later connection uses the new token; when there is no /ws connection to send it on (or it
     * drops first), resolves with `undefined`.
     */
    refresh(token: string): Promise<unknown>;
    /**
     * Lists the symbols the server offers (`{"op":"symbols"}`): with entitlements, only those the
     * token grants. Needs an open `/ws` connection (the HTTP transports carry no requests): rejects
     * with a {@link SubscribeError} (`not_connected`) without one, or (`closed`) if the connection
     * drops before the reply.
     */
    symbols(): Promise<SymbolInfo[]>;
    /**
     * Changes the conflation rate of every book stream: `hz` (1–1000) asks for replacing snapshots
     * at most that often (the server may grant less; see {@link SymbolInfo.maxHz}), `undefined`
     * goes back to every delta. The whole subscription is sent again, so each book restarts from a
     * fresh snapshot. Resolves with the symbols' info (the grants) once the server confirmed, or at
     * once with `[]` when not connected (the rate then applies to the next connection).
     */
    setMaxHz(hz: number | undefined): Promise<SymbolInfo[]>;
    private emit;
    private log;
    private setState;
    private setClosed;
    private rejectSymbolsWaiters;
    private waiting;
    private linkOpen;
    /** A 401/403 on the upgrade, while the fallbacks are tried. */
    private refusal;
    private isLinkOpen;
    private open;
    private openTransport;
    private armConnectTimeout;
    private get connectTimeout();
    private onOpen;
    /** Sends the whole subscription (with the positions held) on a fresh WebSocket. */
    private sendAll;
    private waitingReplies;
    private groups;
    private resumeFor;
    private sendSubscribe;
    /** On an HTTP transport, (re)opens one request per subscription group. */
    private syncHttpGroups;
    private onClose;
    private onFailed;
    private startLiveness;
    private stopTimers;
    private onControl;
    private onSubscribed;
    private onAllSubscribed;
    private onError;
    private readonly onRecord;
    private readonly decimalsOf;
    private onBinary;
    private onJson;
    private handle;
    /** Resubscribes one symbol after a gap or a checksum mismatch (once per episode). */
    private resync;
}
export {};
