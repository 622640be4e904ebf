// The tickcast client: subscriptions, books, reconnect with full-jitter backoff, resume, the
// dead-connection timer, and the fallback from /ws to /stream to /sse.

import { Backoff, type BackoffOptions } from "./backoff.js";
import { OrderBook, type BookView } from "./book.js";
import {
  HttpLink,
  WsLink,
  type CloseInfo,
  type FetchLike,
  type HttpGroup,
  type Link,
  type LinkHandlers,
  type TransportName,
  type WebSocketConstructor,
} from "./transport.js";
import {
  decodeBatch,
  decodeJsonRecords,
  formatScaled,
  type BookRecord,
  type Decimals,
  type Side,
  type StatusRecord,
  type WireRecord,
} from "./wire.js";

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

export type StateEvent =
  | { state: "connecting"; endpoint: string; transport: TransportName; attempt: number }
  | { state: "open"; endpoint: string; transport: TransportName }
  | {
      state: "subscribed";
      endpoint: string;
      transport: TransportName;
      /** True when this follows a lost connection and every named stream was recovered. */
      resumed: boolean;
      /** `recovered` per symbol, for the symbols the resume named. */
      recovered: Record<string, boolean>;
    }
  | { state: "reconnecting"; delayMs: number; attempt: number; reason: string }
  | { state: "closed"; reason: string; terminal: boolean };

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
  tradeGap: { symbol: string; have: number; got: number };
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

interface Sub {
  depth: number;
  channels: Channel[];
}

interface Pending {
  symbols: string[];
  /** One of the requests that (re)establish the whole subscription on a new connection. */
  initial?: boolean;
  resolve?: (v: SymbolInfo[]) => void;
  reject?: (e: Error) => void;
}

/** A refused subscribe, or the client closed before the reply. */
export class SubscribeError extends Error {
  override name = "SubscribeError";
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

type Listener<T> = (ev: T) => void;

interface Endpoint {
  ws: string;
  http: string;
}

function parseEndpoint(s: string): Endpoint {
  const u = new URL(s);
  const secure = u.protocol === "wss:" || u.protocol === "https:";
  let prefix = u.pathname.replace(/\/+$/, "");
  if (prefix.endsWith("/ws")) prefix = prefix.slice(0, -3);
  return {
    ws: `${secure ? "wss" : "ws"}://${u.host}${prefix}/ws`,
    http: `${secure ? "https" : "http"}://${u.host}${prefix}`,
  };
}

const DEFAULT_CHANNELS: Channel[] = ["book", "trades"];

export class TickcastClient {
  private readonly o: ClientOptions;
  private readonly endpoints: Endpoint[];
  private readonly transports: TransportName[];
  private readonly backoff: Backoff;
  private readonly listeners = new Map<string, Set<Listener<any>>>();

  private readonly subs = new Map<string, Sub>();
  private readonly books = new Map<string, OrderBook>();
  private readonly tradeSeq = new Map<string, number>();
  private readonly bySid = new Map<number, string>();
  private readonly info = new Map<string, SymbolInfo>();
  private epoch: string | undefined;
  private token: string | undefined;

  private link: Link | undefined;
  private running = false;
  private epIdx = 0;
  private tIdx = 0;
  private readonly preferred = new Map<number, number>();
  private _state: ConnectionState = "idle";
  private everSubscribed = false;
  private lostSinceSubscribed = false;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly resyncing = new Set<string>();
  private awaitingGroups = 0;
  private recoveredNow: Record<string, boolean> = {};
  private lastRx = 0;
  private timers: ReturnType<typeof setTimeout>[] = [];
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshWaiters = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private symbolsWaiters = new Map<number, { resolve: (v: SymbolInfo[]) => void; reject: (e: Error) => void }>();

  readonly stats: ClientStats = {
    reconnects: 0,
    resumed: 0,
    delays: [],
    records: 0,
    gaps: 0,
    checksumMismatches: 0,
    checksumsVerified: 0,
  };

  constructor(options: ClientOptions) {
    this.o = options;
    const eps = typeof options.endpoints === "string" ? [options.endpoints] : options.endpoints;
    if (!eps || eps.length === 0) throw new TypeError("endpoints: at least one URL");
    this.endpoints = eps.map(parseEndpoint);
    this.transports = options.transports?.length ? options.transports : ["ws", "stream", "sse"];
    this.backoff = new Backoff(options.backoff);
    this.token = options.token;
  }

  // ---- public API -----------------------------------------------------------------------------

  /** The connection state. */
  get state(): ConnectionState {
    return this._state;
  }

  /** The transport in use (or being tried), if any. */
  get transport(): TransportName | undefined {
    return this.link?.transport ?? this.lastTransport;
  }

  private lastTransport: TransportName | undefined;
  /** SSE: the last event id per subscription group, for Last-Event-ID on the next connection. */
  private readonly sseLastIds = new Map<string, string>();

  /** The endpoint in use (or being tried). */
  get endpoint(): string {
    return this.endpoints[this.epIdx]!.ws;
  }

  on<K extends keyof ClientEvents>(event: K, fn: Listener<ClientEvents[K]>): this {
    let s = this.listeners.get(event);
    if (!s) this.listeners.set(event, (s = new Set()));
    s.add(fn);
    return this;
  }

  off<K extends keyof ClientEvents>(event: K, fn: Listener<ClientEvents[K]>): this {
    this.listeners.get(event)?.delete(fn);
    return this;
  }

  /** Starts connecting (idempotent). Subscriptions made before are sent once connected. */
  connect(): this {
    if (this.running) return this;
    this.running = true;
    this.backoff.reset();
    this.open();
    return this;
  }

  /** Closes the connection and stops reconnecting. Books are kept (read-only). */
  close(): void {
    this.running = false;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const l = this.link;
    this.link = undefined;
    this.stopTimers();
    l?.close("closed by the client");
    this.setClosed("closed by the client", false);
  }

  /**
   * Subscribes to `symbols` (replacing the depth and channels of ones already subscribed).
   * Resolves with the symbols' info once the server confirmed; rejects if it refused them (the
   * symbols are then dropped from the subscription).
   */
  subscribe(symbols: string[], opts: SubscribeOptions = {}): Promise<SymbolInfo[]> {
    const depth = opts.depth ?? 25;
    const channels = opts.channels?.length ? [...opts.channels] : [...DEFAULT_CHANNELS];
    for (const s of symbols) {
      const old = this.subs.get(s);
      this.subs.set(s, { depth, channels });
      const b = this.books.get(s);
      if (channels.includes("book") && (!b || b.depth !== depth)) {
        const i = this.info.get(s);
        this.books.set(s, new OrderBook(s, depth, i?.pxDecimals ?? 0, i?.qtyDecimals ?? 0));
      } else if (!channels.includes("book")) this.books.delete(s);
      if (old && old.channels.includes("trades") !== channels.includes("trades")) this.tradeSeq.delete(s);
    }
    return new Promise((resolve, reject) => {
      const p: Pending = { symbols: [...symbols], resolve, reject };
      if (this.link?.canSend && this.isLinkOpen()) {
        this.sendSubscribe(symbols, depth, channels, false, p);
      } else {
        // Sent (with the rest of the subscription) once connected.
        this.waiting.push(p);
        if (this.link instanceof HttpLink) this.syncHttpGroups();
      }
    });
  }

  /** Drops `symbols`: their books are removed. */
  unsubscribe(symbols: string[]): void {
    for (const s of symbols) {
      this.subs.delete(s);
      this.books.delete(s);
      this.tradeSeq.delete(s);
      this.resyncing.delete(s);
    }
    if (this.link?.canSend && this.isLinkOpen()) {
      this.link.send({ op: "unsubscribe", id: this.nextId++, symbols });
    } else if (this.link instanceof HttpLink) this.syncHttpGroups();
  }

  /** The book the client holds for `symbol`, if it subscribed to its book channel. */
  book(symbol: string): BookView | undefined {
    return this.books.get(symbol);
  }

  /** Symbol info from the last subscribe reply. */
  symbolInfo(symbol: string): SymbolInfo | undefined {
    return this.info.get(symbol);
  }

  /**
   * Replaces the access token. On /ws it is sent at once (`{"op":"refresh"}`): resolves with the
   * `refreshed` reply, rejects with a {@link SubscribeError} if the server refused it. Every
   * later connection uses the new token; when there is no /ws connection to send it on (or it
   * drops first), resolves with `undefined`.
   */
  refresh(token: string): Promise<unknown> {
    this.token = token;
    if (this.link?.canSend && this.isLinkOpen()) {
      const id = this.nextId++;
      return new Promise((resolve, reject) => {
        this.refreshWaiters.set(id, { resolve, reject });
        this.link!.send({ op: "refresh", id, token });
      });
    }
    return Promise.resolve(undefined);
  }

  /**
   * Lists the symbols the server offers (`{"op":"symbols"}`): with entitlements, only those the
   * token grants. Needs an open `/ws` connection (the HTTP transports carry no requests): rejects
   * with a {@link SubscribeError} (`not_connected`) without one, or (`closed`) if the connection
   * drops before the reply.
   */
  symbols(): Promise<SymbolInfo[]> {
    if (!(this.link?.canSend && this.isLinkOpen())) {
      return Promise.reject(new SubscribeError("symbols needs an open /ws connection", "not_connected"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.symbolsWaiters.set(id, { resolve, reject });
      this.link!.send({ op: "symbols", id });
    });
  }

  /**
   * Changes the conflation rate of every book stream: `hz` (1–1000) asks for replacing snapshots
   * at most that often (the server may grant less; see {@link SymbolInfo.maxHz}), `undefined`
   * goes back to every delta. The whole subscription is sent again, so each book restarts from a
   * fresh snapshot. Resolves with the symbols' info (the grants) once the server confirmed, or at
   * once with `[]` when not connected (the rate then applies to the next connection).
   */
  setMaxHz(hz: number | undefined): Promise<SymbolInfo[]> {
    if (hz !== undefined && !(Number.isInteger(hz) && hz >= 1 && hz <= 1000)) {
      return Promise.reject(new RangeError(`maxHz must be an integer in 1..=1000, not ${hz}`));
    }
    this.o.maxHz = hz;
    if (this.link instanceof HttpLink) {
      // /stream and /sse carry the rate in the request: reopen the groups with the new one.
      this.syncHttpGroups();
      return Promise.resolve([]);
    }
    if (!(this.link?.canSend && this.isLinkOpen())) return Promise.resolve([]);
    const all: Promise<SymbolInfo[]>[] = [];
    for (const g of this.groups().values()) {
      all.push(
        new Promise<SymbolInfo[]>((resolve, reject) => {
          this.sendSubscribe(g.symbols, g.depth, g.channels, false, { symbols: g.symbols, resolve, reject });
        }),
      );
    }
    return Promise.all(all).then((r) => r.flat());
  }

  // ---- events ---------------------------------------------------------------------------------

  private emit<K extends keyof ClientEvents>(event: K, ev: ClientEvents[K]): void {
    const s = this.listeners.get(event);
    if (!s) return;
    for (const fn of s) {
      try {
        fn(ev);
      } catch (e) {
        // A listener's bug must not break the connection.
        this.log(`listener for ${event} threw: ${(e as Error)?.stack ?? e}`);
      }
    }
  }

  private log(line: string): void {
    this.o.log?.(line);
  }

  private setState(ev: StateEvent): void {
    this._state = ev.state;
    this.emit("state", ev);
  }

  private setClosed(reason: string, terminal: boolean): void {
    if (this._state === "closed") return;
    this.setState({ state: "closed", reason, terminal });
    for (const p of [...this.pending.values(), ...this.waiting, ...this.waitingReplies]) {
      p.reject?.(new SubscribeError(`connection closed: ${reason}`, "closed"));
    }
    this.pending.clear();
    this.waiting = [];
    this.waitingReplies = [];
    for (const w of this.refreshWaiters.values()) w.resolve(undefined);
    this.refreshWaiters.clear();
    this.rejectSymbolsWaiters(`connection closed: ${reason}`);
  }

  private rejectSymbolsWaiters(why: string): void {
    for (const w of this.symbolsWaiters.values()) w.reject(new SubscribeError(why, "closed"));
    this.symbolsWaiters.clear();
  }

  // ---- connecting ---------------------------------------------------------------------------

  private waiting: Pending[] = [];
  private linkOpen = false;
  /** A 401/403 on the upgrade, while the fallbacks are tried. */
  private refusal: string | undefined;

  private isLinkOpen(): boolean {
    return this.linkOpen;
  }

  private open(): void {
    if (!this.running) return;
    const pref = this.preferred.get(this.epIdx) ?? 0;
    this.tIdx = pref;
    this.openTransport();
  }

  private openTransport(): void {
    const ep = this.endpoints[this.epIdx]!;
    const transport = this.transports[this.tIdx]!;
    this.linkOpen = false;
    this.setState({ state: "connecting", endpoint: ep.ws, transport, attempt: this.backoff.attempt });
    this.log(`connecting to ${transport === "ws" ? ep.ws : ep.http + "/" + transport} (attempt ${this.backoff.attempt})`);
    let link: Link;
    const h: LinkHandlers = {
      open: () => link === this.link && this.onOpen(),
      control: (m, group) => link === this.link && this.onControl(m, group),
      binary: (d) => link === this.link && this.onBinary(d),
      json: (t) => link === this.link && this.onJson(t),
      activity: () => {
        if (link === this.link) this.lastRx = Date.now();
      },
      close: (info) => link === this.link && this.onClose(info),
    };
    try {
      if (transport === "ws") {
        const Ctor = this.o.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
        if (!Ctor) throw new Error("no WebSocket: pass options.WebSocket (e.g. the ws package in Node 20)");
        const q = new URLSearchParams();
        if (this.o.format === "json") q.set("format", "json");
        const protocols = this.token && this.o.tokenInSubprotocol ? ["tickcast.v1", `token.${this.token}`] : undefined;
        if (this.token && !protocols) q.set("token", this.token);
        const qs = q.toString();
        link = new WsLink(Ctor, ep.ws + (qs ? "?" + qs : ""), protocols, h);
      } else {
        const f = this.o.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
        if (!f) throw new Error("no fetch for the /stream and /sse transports");
        link = new HttpLink(transport, f.bind(globalThis) as FetchLike, h, this.sseLastIds);
      }
    } catch (e) {
      this.log(`cannot open ${transport}: ${(e as Error).message}`);
      this.link = undefined;
      queueMicrotask(() => this.onFailed({ opened: false, error: (e as Error).message }, transport));
      return;
    }
    this.link = link;
    this.lastRx = Date.now();
    this.armConnectTimeout(link);
    if (link instanceof HttpLink) this.syncHttpGroups();
  }

  private armConnectTimeout(link: Link): void {
    const t = setTimeout(() => {
      if (link === this.link && !this.linkOpen) {
        this.log(`${link.transport}: not established within ${this.connectTimeout} ms`);
        link.close("connect timeout");
      }
    }, this.connectTimeout);
    this.timers.push(t);
  }

  private get connectTimeout(): number {
    return this.o.connectTimeoutMs ?? 10000;
  }

  private onOpen(): void {
    this.linkOpen = true;
    this.refusal = undefined;
    const link = this.link!;
    this.lastTransport = link.transport;
    this.setState({ state: "open", endpoint: this.endpoint, transport: link.transport });
    this.startLiveness(link);
    this.recoveredNow = {};
    // A connection that never gets its subscription confirmed is replaced.
    const t = setTimeout(() => {
      if (link === this.link && this._state === "open") {
        this.log(`${link.transport}: subscription not confirmed within ${this.connectTimeout * 2} ms`);
        link.close("no subscribe reply");
      }
    }, this.connectTimeout * 2);
    this.timers.push(t);
    if (link.canSend) {
      this.sendAll();
    }
  }

  /** Sends the whole subscription (with the positions held) on a fresh WebSocket. */
  private sendAll(): void {
    const groups = this.groups();
    this.awaitingGroups = 0;
    const waiting = this.waiting;
    this.waiting = [];
    for (const g of groups.values()) {
      const p: Pending = { symbols: g.symbols, initial: true };
      this.sendSubscribe(g.symbols, g.depth, g.channels, true, p);
      this.awaitingGroups++;
    }
    // Promises of subscribe() calls made while disconnected: resolved by the group replies.
    for (const w of waiting) {
      const live = w.symbols.filter((s) => this.subs.has(s));
      if (live.length === 0) w.resolve?.([]);
      else this.waitingReplies.push(w);
    }
    if (groups.size === 0) this.onAllSubscribed();
  }

  private waitingReplies: Pending[] = [];

  private groups(): Map<string, { depth: number; channels: Channel[]; symbols: string[] }> {
    const out = new Map<string, { depth: number; channels: Channel[]; symbols: string[] }>();
    for (const [s, sub] of this.subs) {
      const key = `${sub.depth}|${[...sub.channels].sort().join(",")}`;
      let g = out.get(key);
      if (!g) out.set(key, (g = { depth: sub.depth, channels: sub.channels, symbols: [] }));
      g.symbols.push(s);
    }
    return out;
  }

  private resumeFor(symbols: string[]): Record<string, unknown> | undefined {
    if (this.epoch === undefined) return undefined;
    const streams: Record<string, Record<string, number>> = {};
    let any = false;
    for (const s of symbols) {
      const pos: Record<string, number> = {};
      const b = this.books.get(s);
      if (b && b.valid && b.seq > 0) pos.book = b.seq;
      const t = this.tradeSeq.get(s);
      if (t !== undefined && this.subs.get(s)?.channels.includes("trades")) pos.trades = t;
      if (Object.keys(pos).length) {
        streams[s] = pos;
        any = true;
      }
    }
    return any ? { epoch: this.epoch, streams } : undefined;
  }

  private sendSubscribe(symbols: string[], depth: number, channels: Channel[], resume: boolean, p: Pending): void {
    const id = this.nextId++;
    const msg: Record<string, unknown> = { op: "subscribe", id, symbols, channels, depth };
    if (this.o.maxHz) msg.max_hz = this.o.maxHz;
    if (resume) {
      const r = this.resumeFor(symbols);
      if (r) msg.resume = r;
    }
    for (const s of symbols) if (!resume || !msg.resume) this.books.get(s)?.desync();
    this.pending.set(id, p);
    this.link!.send(msg);
  }

  /** On an HTTP transport, (re)opens one request per subscription group. */
  private syncHttpGroups(): void {
    const link = this.link;
    if (!(link instanceof HttpLink)) return;
    const ep = this.endpoints[this.epIdx]!;
    const groups: HttpGroup[] = [];
    for (const [key, g] of this.groups()) {
      const q = new URLSearchParams();
      q.set("symbols", g.symbols.join(","));
      q.set("depth", String(g.depth));
      q.set("channels", g.channels.join(","));
      if (this.o.maxHz) q.set("max_hz", String(this.o.maxHz));
      if (this.token) q.set("token", this.token);
      groups.push({ key, url: `${ep.http}/${link.transport}?${q.toString().replace(/%2C/g, ",")}` });
    }
    this.awaitingGroups = groups.length;
    link.setGroups(groups);
  }

  private onClose(info: CloseInfo): void {
    const transport = this.link!.transport;
    this.link = undefined;
    this.linkOpen = false;
    this.stopTimers();
    // Requests in flight: subscribe() promises are answered by the next connection's replies;
    // a token refresh applies to the next connection (its promise resolves with undefined).
    for (const p of this.pending.values()) if (p.resolve) this.waiting.push(p);
    this.pending.clear();
    for (const w of this.refreshWaiters.values()) w.resolve(undefined);
    this.refreshWaiters.clear();
    this.rejectSymbolsWaiters("connection lost before the symbols reply");
    this.onFailed(info, transport);
  }

  private onFailed(info: CloseInfo, transport: TransportName): void {
    if (!this.running) return;
    const why = describe(info, transport);
    const terminal = (reason: string) => {
      this.log(`refused, not retrying: ${reason}`);
      this.running = false;
      this.refusal = undefined;
      this.setClosed(reason, true);
    };
    // Terminal refusals: the server will say the same again. Close 1008 (policy, token expired)
    // ends it at once. A 401/403 on the upgrade might come from a proxy that refuses WebSocket,
    // so the fallbacks are still tried: the server answers them with the same access rules, and
    // if none of them gets through, the refusal stands.
    if (info.code === 1008) return terminal(why);
    if (info.status === 401 || info.status === 403) {
      if (transport !== "ws" || this.tIdx + 1 >= this.transports.length) return terminal(why);
      this.refusal = why;
    }
    if (this._state === "subscribed" || info.opened) this.lostSinceSubscribed = this.everSubscribed;
    // An upgrade that was refused or never completed: the next transport on the same endpoint.
    if (!info.opened && !info.network && this.tIdx + 1 < this.transports.length) {
      this.log(`${why}; falling back to ${this.transports[this.tIdx + 1]}`);
      this.tIdx++;
      this.openTransport();
      return;
    }
    if (this.refusal !== undefined && !info.opened) return terminal(this.refusal);
    this.refusal = undefined;
    if (!info.opened) this.preferred.delete(this.epIdx);
    this.epIdx = (this.epIdx + 1) % this.endpoints.length;
    const attempt = this.backoff.attempt;
    const delay = this.backoff.next();
    this.stats.delays.push(delay);
    this.log(`${why}; reconnecting in ${delay} ms (attempt ${attempt + 1}, ceiling ${this.backoff.ceiling(attempt)} ms)`);
    this.setState({ state: "reconnecting", delayMs: delay, attempt: attempt + 1, reason: why });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.open();
    }, delay);
  }

  // ---- liveness -------------------------------------------------------------------------------

  private startLiveness(link: Link): void {
    const ping = this.o.pingIntervalMs ?? 10000;
    const slack = this.o.pongTimeoutMs ?? 5000;
    const idleMax = link.canSend ? ping + slack : (this.o.httpIdleTimeoutMs ?? 60000);
    const tick = Math.max(50, Math.min(1000, Math.floor(Math.min(ping, idleMax) / 4)));
    let lastPing = 0;
    const t = setInterval(() => {
      if (link !== this.link) return;
      const now = Date.now();
      const idle = now - this.lastRx;
      if (idle >= idleMax) {
        this.log(`${link.transport}: nothing received for ${idle} ms: dead`);
        link.close("dead connection");
        return;
      }
      if (link.canSend && idle >= ping && now - lastPing >= ping) {
        lastPing = now;
        link.send({ op: "ping", id: this.nextId++ });
      }
    }, tick);
    this.timers.push(t);
  }

  private stopTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
  }

  // ---- control messages ----------------------------------------------------------------------

  private onControl(m: Record<string, unknown>, group?: string): void {
    this.emit("control", m);
    switch (m.op) {
      case "subscribed":
        this.onSubscribed(m, group);
        break;
      case "error":
        this.onError(m);
        break;
      case "refreshed": {
        const w = this.refreshWaiters.get(m.id as number);
        this.refreshWaiters.delete(m.id as number);
        w?.resolve(m);
        break;
      }
      case "symbols": {
        const w = this.symbolsWaiters.get(m.id as number);
        this.symbolsWaiters.delete(m.id as number);
        w?.resolve(((m.symbols as Record<string, unknown>[]) ?? []).map(symbolInfo));
        break;
      }
      default:
        break;
    }
  }

  private onSubscribed(m: Record<string, unknown>, group?: string): void {
    const id = m.id as number;
    const p = typeof id === "number" ? this.pending.get(id) : undefined;
    if (p) this.pending.delete(id);
    if (typeof m.epoch === "string") {
      if (this.epoch !== undefined && this.epoch !== m.epoch) this.log(`server epoch changed: ${this.epoch} -> ${m.epoch}`);
      this.epoch = m.epoch;
    }
    const infos: SymbolInfo[] = [];
    for (const e of (m.symbols as Record<string, unknown>[]) ?? []) {
      const inf = symbolInfo(e);
      const symbol = inf.symbol;
      infos.push(inf);
      this.info.set(symbol, inf);
      this.bySid.set(inf.sid, symbol);
      this.resyncing.delete(symbol);
      const b = this.books.get(symbol);
      if (b) {
        b.pxDecimals = inf.pxDecimals;
        b.qtyDecimals = inf.qtyDecimals;
      }
      if (e.recovered === true) {
        this.recoveredNow[symbol] = true;
        b?.resumeOk();
      } else {
        if (e.recovered === false) this.recoveredNow[symbol] = false;
        // A fresh subscription: a snapshot comes first; trades restart from the live point.
        b?.desync();
        this.tradeSeq.delete(symbol);
      }
    }
    p?.resolve?.(infos);
    if (this.waitingReplies.length) {
      const got = new Set(infos.map((i) => i.symbol));
      this.waitingReplies = this.waitingReplies.filter((w) => {
        if (w.symbols.every((s) => got.has(s) || this.info.has(s))) {
          w.resolve?.(w.symbols.map((s) => this.info.get(s)!).filter(Boolean));
          return false;
        }
        return true;
      });
    }
    if (this.link instanceof HttpLink && group !== undefined) {
      // Each HTTP request answers once; a restarted one answers again.
      for (const w of this.waiting.splice(0)) w.resolve?.(w.symbols.map((s) => this.info.get(s)!).filter(Boolean));
    }
    if (this._state !== "subscribed" && (p?.initial || group !== undefined)) {
      this.awaitingGroups--;
      if (this.awaitingGroups <= 0) this.onAllSubscribed();
    }
  }

  private onAllSubscribed(): void {
    const resumedSyms = Object.keys(this.recoveredNow);
    const resumed =
      this.lostSinceSubscribed && resumedSyms.length > 0 && resumedSyms.every((s) => this.recoveredNow[s] === true);
    if (this.lostSinceSubscribed) {
      this.stats.reconnects++;
      if (resumed) this.stats.resumed++;
    }
    this.everSubscribed = true;
    this.lostSinceSubscribed = false;
    // The attempt counter starts again only now, once subscribed again.
    this.backoff.reset();
    if (this.link) this.preferred.set(this.epIdx, this.tIdx);
    this.setState({
      state: "subscribed",
      endpoint: this.endpoint,
      transport: this.link?.transport ?? "ws",
      resumed,
      recovered: { ...this.recoveredNow },
    });
  }

  private onError(m: Record<string, unknown>): void {
    const id = m.id as number;
    const code = String(m.code ?? "error");
    const message = String(m.message ?? "");
    const sw = this.symbolsWaiters.get(id);
    if (sw) {
      this.symbolsWaiters.delete(id);
      sw.reject(new SubscribeError(message, code));
    }
    const w = this.refreshWaiters.get(id);
    if (w) {
      this.refreshWaiters.delete(id);
      w.reject(new SubscribeError(message, code));
    }
    const p = this.pending.get(id);
    const ev: ServerErrorEvent = { code, message, id: m.id };
    if (p) {
      this.pending.delete(id);
      ev.symbols = p.symbols;
      if (code === "not_ready" || code === "rate_limited") {
        // Try again shortly with the same request.
        const t = setTimeout(() => {
          const live = p.symbols.filter((s) => this.subs.has(s));
          const sub = live.length ? this.subs.get(live[0]!) : undefined;
          if (sub && this.link?.canSend && this.linkOpen) this.sendSubscribe(live, sub.depth, sub.channels, true, p);
        }, 500);
        this.timers.push(t);
      } else {
        for (const s of p.symbols) {
          this.subs.delete(s);
          this.books.delete(s);
        }
        p.reject?.(new SubscribeError(message, code));
        if (this._state !== "subscribed" && p.initial) {
          this.awaitingGroups--;
          if (this.awaitingGroups <= 0) this.onAllSubscribed();
        }
      }
    }
    this.emit("error", ev);
  }

  // ---- data -----------------------------------------------------------------------------------

  private readonly onRecord = (r: WireRecord): void => this.handle(r);
  private readonly decimalsOf = (symbol: string): Decimals | undefined => this.info.get(symbol);

  private onBinary(d: ArrayBuffer | Uint8Array): void {
    try {
      decodeBatch(d, this.onRecord);
    } catch (e) {
      this.log(`bad batch: ${(e as Error).message}; reconnecting`);
      this.link?.close("bad batch");
    }
  }

  private onJson(text: string): void {
    try {
      decodeJsonRecords(text, this.decimalsOf, this.onRecord);
    } catch (e) {
      this.log(`bad JSON batch: ${(e as Error).message}; reconnecting`);
      this.link?.close("bad batch");
    }
  }

  private handle(r: WireRecord): void {
    const symbol = r.symbol || this.bySid.get(r.sid);
    if (symbol === undefined) return;
    this.stats.records++;
    if (r.kind === 1 || r.kind === 2) {
      const b = this.books.get(symbol);
      if (!b) return;
      const rec: BookRecord = this.o.checksums === false && r.checksum !== undefined ? { ...r, checksum: undefined } : r;
      const have = b.seq;
      const before = b.checksumsVerified;
      const res = b.apply(rec);
      if (b.checksumsVerified !== before) this.stats.checksumsVerified++;
      if (res === "ok") {
        this.emit("book", { symbol, book: b, snapshot: r.kind === 1, seq: r.seq, exchTs: r.exchTs, recvTs: r.recvTs });
      } else if (res === "gap" || res === "checksum") {
        if (res === "gap") this.stats.gaps++;
        else this.stats.checksumMismatches++;
        this.log(`${symbol}: ${res === "gap" ? `seq gap ${have} -> ${r.seq}` : `checksum mismatch at seq ${r.seq}`}; resubscribing it`);
        this.emit("resync", { symbol, reason: res, have, got: r.seq });
        this.resync(symbol);
      }
    } else if (r.kind === 3) {
      const last = this.tradeSeq.get(symbol);
      if (last !== undefined && r.seq !== last + 1) this.emit("tradeGap", { symbol, have: last, got: r.seq });
      this.tradeSeq.set(symbol, r.seq);
      const inf = this.info.get(symbol);
      this.emit("trade", {
        symbol,
        seq: r.seq,
        price: r.price,
        qty: r.qty,
        priceText: formatScaled(r.price, inf?.pxDecimals ?? 0),
        qtyText: formatScaled(r.qty, inf?.qtyDecimals ?? 0),
        tradeId: r.tradeId,
        side: r.side,
        exchTs: r.exchTs,
        recvTs: r.recvTs,
      });
    } else {
      const st = r as StatusRecord;
      const b = this.books.get(symbol);
      if (b && st.code === 1) b.stale = true;
      if (b && st.code === 2) b.stale = false;
      this.emit("status", { symbol, code: st.code, ts: st.recvTs });
    }
  }

  /** Resubscribes one symbol after a gap or a checksum mismatch (once per episode). */
  private resync(symbol: string): void {
    if (this.resyncing.has(symbol)) return;
    const sub = this.subs.get(symbol);
    if (!sub) return;
    this.resyncing.add(symbol);
    const link = this.link;
    if (!link || !this.linkOpen) return; // the reconnect resubscribes everything
    if (link.canSend) {
      this.sendSubscribe([symbol], sub.depth, sub.channels, false, { symbols: [symbol] });
    } else if (link instanceof HttpLink) {
      link.restart(`${sub.depth}|${[...sub.channels].sort().join(",")}`);
    }
  }
}

function describe(info: CloseInfo, transport: TransportName): string {
  const parts: string[] = [transport];
  if (info.local) parts.push(info.local);
  else if (!info.opened) parts.push(info.network ? "unreachable" : "not established");
  else parts.push("lost");
  if (info.status !== undefined) parts.push(`HTTP ${info.status}`);
  if (info.code !== undefined) parts.push(`close ${info.code}${info.reason ? ` ${info.reason}` : ""}`);
  if (info.error && !info.local) parts.push(info.error);
  return parts.join(": ");
}

/** A symbol entry of a `subscribed` or `symbols` reply. */
function symbolInfo(e: Record<string, unknown>): SymbolInfo {
  const inf: SymbolInfo = {
    symbol: String(e.symbol),
    sid: Number(e.sid),
    pxDecimals: Number(e.px_decimals ?? 0),
    qtyDecimals: Number(e.qty_decimals ?? 0),
  };
  if (typeof e.max_hz === "number") inf.maxHz = e.max_hz;
  return inf;
}
