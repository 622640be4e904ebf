// Transports: WebSocket (`/ws`), fetch streaming (`/stream`) and server-sent events (`/sse`),
// behind one small interface so that the client's state machine does not care which one runs.

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

// ---- WebSocket -------------------------------------------------------------------------------

export class WsLink implements Link {
  readonly transport = "ws";
  readonly canSend = true;
  private ws: WebSocketLike;
  private done = false;
  private opened = false;
  private status: number | undefined;
  private network = false;
  private error: string | undefined;

  constructor(Ctor: WebSocketConstructor, url: string, protocols: string[] | undefined, private h: LinkHandlers) {
    this.ws = protocols && protocols.length ? new Ctor(url, protocols) : new Ctor(url);
    this.ws.binaryType = "arraybuffer";
    const ws = this.ws;
    ws.addEventListener("open", () => {
      if (this.done) return;
      this.opened = true;
      h.open();
    });
    ws.addEventListener("message", (ev: { data: unknown }) => {
      if (this.done) return;
      h.activity();
      const d = ev.data;
      if (typeof d === "string") {
        if (d.charCodeAt(0) === 91 /* [ */) h.json(d);
        else {
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(d);
          } catch {
            return;
          }
          h.control(msg);
        }
      } else if (d instanceof ArrayBuffer || ArrayBuffer.isView(d)) {
        h.binary(d as ArrayBuffer);
      }
    });
    ws.addEventListener("error", (ev: { message?: string; error?: { code?: string } }) => {
      // The `ws` package says "Unexpected server response: 401" for a refused upgrade and gives
      // the socket error (ECONNREFUSED, ...) for a host that is down; browsers say neither.
      const m = ev?.message ?? "";
      this.error = m || this.error;
      const s = /Unexpected server response: (\d+)/.exec(m);
      if (s) this.status = Number(s[1]);
      const code = ev?.error?.code;
      if (code && /^E(CONNREFUSED|CONNRESET|HOSTUNREACH|NETUNREACH|NOTFOUND|ADDRNOTAVAIL|AI_AGAIN)$/.test(code)) {
        this.network = true;
      }
    });
    ws.addEventListener("close", (ev: { code?: number; reason?: string }) => {
      this.finish({ code: ev?.code, reason: ev?.reason });
    });
    // The `ws` package (Node) shows the server's WebSocket pings; browsers never do.
    const anyWs = ws as unknown as { on?: (e: string, f: () => void) => void };
    if (typeof anyWs.on === "function") anyWs.on("ping", () => !this.done && h.activity());
  }

  private finish(extra: Partial<CloseInfo>): void {
    if (this.done) return;
    this.done = true;
    const info: CloseInfo = { opened: this.opened, ...extra };
    if (this.status !== undefined) info.status = this.status;
    if (this.network && !this.opened) info.network = true;
    if (this.error !== undefined) info.error = this.error;
    this.h.close(info);
  }

  send(msg: unknown): void {
    if (!this.done && this.ws.readyState === 1) this.ws.send(JSON.stringify(msg));
  }

  close(local: string): void {
    if (this.done) return;
    try {
      this.ws.close(1000);
    } catch {
      // already closing
    }
    this.finish({ local });
  }
}

// ---- HTTP streams (/stream, /sse) -----------------------------------------------------------

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
export class HttpLink implements Link {
  readonly canSend = false;
  private done = false;
  private opened = false;
  private readonly requests = new Map<string, { ctl: AbortController; group: HttpGroup }>();
  constructor(
    readonly transport: "stream" | "sse",
    private readonly fetchFn: FetchLike,
    private readonly h: LinkHandlers,
    /** Last SSE event id per request URL: kept by the client across links, sent as Last-Event-ID. */
    readonly lastEventIds: Map<string, string> = new Map(),
  ) {}

  get isOpen(): boolean {
    return this.opened && !this.done;
  }

  /** Opens the requests for `groups`, restarting changed ones and closing the others. */
  setGroups(groups: HttpGroup[]): void {
    const keep = new Set<string>();
    for (const g of groups) {
      keep.add(g.key);
      const cur = this.requests.get(g.key);
      if (cur && cur.group.url === g.url) continue;
      this.start(g);
    }
    for (const [k, r] of this.requests) {
      if (!keep.has(k)) {
        this.requests.delete(k);
        r.ctl.abort();
      }
    }
  }

  /** Starts the group's request again (a resync: the server answers with fresh snapshots). */
  restart(key: string): void {
    const r = this.requests.get(key);
    if (r) this.start(r.group, false);
  }

  private start(group: HttpGroup, resume = true): void {
    const old = this.requests.get(group.key);
    if (old) old.ctl.abort();
    const ctl = new AbortController();
    this.requests.set(group.key, { ctl, group });
    void this.run(group, ctl, resume);
  }

  private async run(group: HttpGroup, ctl: AbortController, resume: boolean): Promise<void> {
    const headers: Record<string, string> = {
      Accept: this.transport === "sse" ? "text/event-stream" : "application/octet-stream",
    };
    // Keyed by URL: an id is only offered back for the very same subscription.
    const last = this.lastEventIds.get(group.url);
    if (this.transport === "sse" && resume && last !== undefined) headers["Last-Event-ID"] = last;
    if (!resume) this.lastEventIds.delete(group.url);
    let res: any;
    try {
      res = await this.fetchFn(group.url, { headers, signal: ctl.signal, cache: "no-store" });
    } catch (e) {
      if (ctl.signal.aborted) return;
      this.fail({ network: true, error: String((e as Error)?.message ?? e) });
      return;
    }
    if (ctl.signal.aborted) return;
    if (res.status !== 200 || !res.body) {
      try {
        await res.body?.cancel();
      } catch {
        // ignore
      }
      this.fail({ status: res.status, error: `HTTP ${res.status}` });
      return;
    }
    if (!this.opened && !this.done) {
      this.opened = true;
      this.h.open();
    }
    const reader = res.body.getReader();
    const stop = () => this.done || ctl.signal.aborted;
    const parse = this.transport === "sse" ? this.sseParser(group.key, group.url, stop) : this.frameParser(group.key, stop);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (ctl.signal.aborted || this.done) return;
        if (done) break;
        this.h.activity();
        parse(value as Uint8Array);
      }
    } catch (e) {
      if (ctl.signal.aborted || this.done) return;
      this.fail({ error: String((e as Error)?.message ?? e) });
      return;
    }
    this.fail({ error: "stream ended" });
  }

  /** `/stream` frames: {u32 length LE, u8 type, payload}; type 1 binary batch, 2 JSON control. */
  private frameParser(key: string, stop: () => boolean): (chunk: Uint8Array) => void {
    let buf: Uint8Array = new Uint8Array(0);
    const dec = new TextDecoder();
    return (chunk) => {
      if (buf.length === 0) buf = chunk;
      else {
        const b = new Uint8Array(buf.length + chunk.length);
        b.set(buf);
        b.set(chunk, buf.length);
        buf = b;
      }
      let off = 0;
      while (buf.length - off >= 5) {
        const dv = new DataView(buf.buffer, buf.byteOffset + off, 5);
        const len = dv.getUint32(0, true);
        const type = dv.getUint8(4);
        if (buf.length - off - 5 < len) break;
        const payload = buf.subarray(off + 5, off + 5 + len);
        off += 5 + len;
        if (type === 1) this.h.binary(payload);
        else if (type === 2) {
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(dec.decode(payload));
          } catch {
            continue;
          }
          this.h.control(msg, key);
        }
        if (stop()) return;
      }
      buf = off === buf.length ? new Uint8Array(0) : buf.subarray(off);
    };
  }

  /** text/event-stream: named events are control messages, unnamed ones data records. */
  private sseParser(key: string, url: string, stop: () => boolean): (chunk: Uint8Array) => void {
    const dec = new TextDecoder();
    let text = "";
    let event = "";
    let data: string[] = [];
    let id: string | undefined;
    const dispatch = () => {
      if (id !== undefined) this.lastEventIds.set(url, id);
      if (data.length > 0) {
        const d = data.join("\n");
        if (event === "" || event === "message") {
          this.h.json(d);
        } else {
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(d);
          } catch {
            msg = {};
          }
          if (typeof msg.op !== "string") msg.op = event;
          this.h.control(msg, key);
        }
      }
      event = "";
      data = [];
      id = undefined;
    };
    return (chunk) => {
      text += dec.decode(chunk, { stream: true });
      let start = 0;
      for (;;) {
        const nl = text.indexOf("\n", start);
        if (nl < 0) break;
        let line = text.slice(start, nl);
        start = nl + 1;
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          dispatch();
          if (stop()) return;
          continue;
        }
        if (line.charCodeAt(0) === 58 /* : */) continue; // comment / keep-alive
        const c = line.indexOf(":");
        const field = c < 0 ? line : line.slice(0, c);
        let value = c < 0 ? "" : line.slice(c + 1);
        if (value.charCodeAt(0) === 32) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") event = value;
        else if (field === "id") id = value;
      }
      text = text.slice(start);
    };
  }

  private fail(info: Partial<CloseInfo>): void {
    if (this.done) return;
    this.done = true;
    for (const r of this.requests.values()) r.ctl.abort();
    this.requests.clear();
    const ci: CloseInfo = { opened: this.opened, ...info };
    if (this.opened) delete ci.network;
    this.h.close(ci);
  }

  send(): void {
    // No upstream channel: the subscription is in the query string.
  }

  close(local: string): void {
    if (this.done) return;
    this.fail({ local });
  }
}
