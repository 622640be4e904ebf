// The tickcast client: subscriptions, books, reconnect with full-jitter backoff, resume, the
// dead-connection timer, and the fallback from /ws to /stream to /sse.
import { Backoff } from "./backoff.js";
import { OrderBook } from "./book.js";
import { HttpLink, WsLink, } from "./transport.js";
import { decodeBatch, decodeJsonRecords, formatScaled, } from "./wire.js";
/** A refused subscribe, or the client closed before the reply. */
export class SubscribeError extends Error {
    code;
    name = "SubscribeError";
    constructor(message, code) {
        super(message);
        this.code = code;
    }
}
function parseEndpoint(s) {
    const u = new URL(s);
    const secure = u.protocol === "wss:" || u.protocol === "https:";
    let prefix = u.pathname.replace(/\/+$/, "");
    if (prefix.endsWith("/ws"))
        prefix = prefix.slice(0, -3);
    return {
        ws: `${secure ? "wss" : "ws"}://${u.host}${prefix}/ws`,
        http: `${secure ? "https" : "http"}://${u.host}${prefix}`,
    };
}
const DEFAULT_CHANNELS = ["book", "trades"];
export class TickcastClient {
    o;
    endpoints;
    transports;
    backoff;
    listeners = new Map();
    subs = new Map();
    books = new Map();
    tradeSeq = new Map();
    bySid = new Map();
    info = new Map();
    epoch;
    token;
    link;
    running = false;
    epIdx = 0;
    tIdx = 0;
    preferred = new Map();
    _state = "idle";
    everSubscribed = false;
    lostSinceSubscribed = false;
    nextId = 1;
    pending = new Map();
    resyncing = new Set();
    awaitingGroups = 0;
    recoveredNow = {};
    lastRx = 0;
    timers = [];
    reconnectTimer;
    refreshWaiters = new Map();
    symbolsWaiters = new Map();
    stats = {
        reconnects: 0,
        resumed: 0,
        delays: [],
        records: 0,
        gaps: 0,
        checksumMismatches: 0,
        checksumsVerified: 0,
    };
    constructor(options) {
        this.o = options;
        const eps = typeof options.endpoints === "string" ? [options.endpoints] : options.endpoints;
        if (!eps || eps.length === 0)
            throw new TypeError("endpoints: at least one URL");
        this.endpoints = eps.map(parseEndpoint);
        this.transports = options.transports?.length ? options.transports : ["ws", "stream", "sse"];
        this.backoff = new Backoff(options.backoff);
        this.token = options.token;
    }
    // ---- public API -----------------------------------------------------------------------------
    /** The connection state. */
    get state() {
        return this._state;
    }
    /** The transport in use (or being tried), if any. */
    get transport() {
        return this.link?.transport ?? this.lastTransport;
    }
    lastTransport;
    /** SSE: the last event id per subscription group, for Last-Event-ID on the next connection. */
    sseLastIds = new Map();
    /** The endpoint in use (or being tried). */
    get endpoint() {
        return this.endpoints[this.epIdx].ws;
    }
    on(event, fn) {
        let s = this.listeners.get(event);
        if (!s)
            this.listeners.set(event, (s = new Set()));
        s.add(fn);
        return this;
    }
    off(event, fn) {
        this.listeners.get(event)?.delete(fn);
        return this;
    }
    /** Starts connecting (idempotent). Subscriptions made before are sent once connected. */
    connect() {
        if (this.running)
            return this;
        this.running = true;
        this.backoff.reset();
        this.open();
        return this;
    }
    /** Closes the connection and stops reconnecting. Books are kept (read-only). */
    close() {
        this.running = false;
        if (this.reconnectTimer)
            clearTimeout(this.reconnectTimer);
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
    subscribe(symbols, opts = {}) {
        const depth = opts.depth ?? 25;
        const channels = opts.channels?.length ? [...opts.channels] : [...DEFAULT_CHANNELS];
        for (const s of symbols) {
            const old = this.subs.get(s);
            this.subs.set(s, { depth, channels });
            const b = this.books.get(s);
            if (channels.includes("book") && (!b || b.depth !== depth)) {
                const i = this.info.get(s);
                this.books.set(s, new OrderBook(s, depth, i?.pxDecimals ?? 0, i?.qtyDecimals ?? 0));
            }
            else if (!channels.includes("book"))
                this.books.delete(s);
            if (old && old.channels.includes("trades") !== channels.includes("trades"))
                this.tradeSeq.delete(s);
        }
        return new Promise((resolve, reject) => {
            const p = { symbols: [...symbols], resolve, reject };
            if (this.link?.canSend && this.isLinkOpen()) {
                this.sendSubscribe(symbols, depth, channels, false, p);
            }
            else {
                // Sent (with the rest of the subscription) once connected.
                this.waiting.push(p);
                if (this.link instanceof HttpLink)
                    this.syncHttpGroups();
            }
        });
    }
    /** Drops `symbols`: their books are removed. */
    unsubscribe(symbols) {
        for (const s of symbols) {
            this.subs.delete(s);
            this.books.delete(s);
            this.tradeSeq.delete(s);
            this.resyncing.delete(s);
        }
        if (this.link?.canSend && this.isLinkOpen()) {
            this.link.send({ op: "unsubscribe", id: this.nextId++, symbols });
        }
        else if (this.link instanceof HttpLink)
            this.syncHttpGroups();
    }
    /** The book the client holds for `symbol`, if it subscribed to its book channel. */
    book(symbol) {
        return this.books.get(symbol);
    }
    /** Symbol info from the last subscribe reply. */
    symbolInfo(symbol) {
        return this.info.get(symbol);
    }
    /**
     * Replaces the access token. On /ws it is sent at once (`{"op":"refresh"}`): resolves with the
     * `refreshed` reply, rejects with a {@link SubscribeError} if the server refused it. Every
     * later connection uses the new token; when there is no /ws connection to send it on (or it
     * drops first), resolves with `undefined`.
     */
    refresh(token) {
        this.token = token;
        if (this.link?.canSend && this.isLinkOpen()) {
            const id = this.nextId++;
            return new Promise((resolve, reject) => {
                this.refreshWaiters.set(id, { resolve, reject });
                this.link.send({ op: "refresh", id, token });
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
    symbols() {
        if (!(this.link?.canSend && this.isLinkOpen())) {
            return Promise.reject(new SubscribeError("symbols needs an open /ws connection", "not_connected"));
        }
        const id = this.nextId++;
        return new Promise((resolve, reject) => {
            this.symbolsWaiters.set(id, { resolve, reject });
            this.link.send({ op: "symbols", id });
        });
    }
    /**
     * Changes the conflation rate of every book stream: `hz` (1–1000) asks for replacing snapshots
     * at most that often (the server may grant less; see {@link SymbolInfo.maxHz}), `undefined`
     * goes back to every delta. The whole subscription is sent again, so each book restarts from a
     * fresh snapshot. Resolves with the symbols' info (the grants) once the server confirmed, or at
     * once with `[]` when not connected (the rate then applies to the next connection).
     */
    setMaxHz(hz) {
        if (hz !== undefined && !(Number.isInteger(hz) && hz >= 1 && hz <= 1000)) {
            return Promise.reject(new RangeError(`maxHz must be an integer in 1..=1000, not ${hz}`));
        }
        this.o.maxHz = hz;
        if (this.link instanceof HttpLink) {
            // /stream and /sse carry the rate in the request: reopen the groups with the new one.
            this.syncHttpGroups();
            return Promise.resolve([]);
        }
        if (!(this.link?.canSend && this.isLinkOpen()))
            return Promise.resolve([]);
        const all = [];
        for (const g of this.groups().values()) {
            all.push(new Promise((resolve, reject) => {
                this.sendSubscribe(g.symbols, g.depth, g.channels, false, { symbols: g.symbols, resolve, reject });
            }));
        }
        return Promise.all(all).then((r) => r.flat());
    }
    // ---- events ---------------------------------------------------------------------------------
    emit(event, ev) {
        const s = this.listeners.get(event);
        if (!s)
            return;
        for (const fn of s) {
            try {
                fn(ev);
            }
            catch (e) {
                // A listener's bug must not break the connection.
                this.log(`listener for ${event} threw: ${e?.stack ?? e}`);
            }
        }
    }
    log(line) {
        this.o.log?.(line);
    }
    setState(ev) {
        this._state = ev.state;
        this.emit("state", ev);
    }
    setClosed(reason, terminal) {
        if (this._state === "closed")
            return;
        this.setState({ state: "closed", reason, terminal });
        for (const p of [...this.pending.values(), ...this.waiting, ...this.waitingReplies]) {
            p.reject?.(new SubscribeError(`connection closed: ${reason}`, "closed"));
        }
        this.pending.clear();
        this.waiting = [];
        this.waitingReplies = [];
        for (const w of this.refreshWaiters.values())
            w.resolve(undefined);
        this.refreshWaiters.clear();
        this.rejectSymbolsWaiters(`connection closed: ${reason}`);
    }
    rejectSymbolsWaiters(why) {
        for (const w of this.symbolsWaiters.values())
            w.reject(new SubscribeError(why, "closed"));
        this.symbolsWaiters.clear();
    }
    // ---- connecting ---------------------------------------------------------------------------
    waiting = [];
    linkOpen = false;
    /** A 401/403 on the upgrade, while the fallbacks are tried. */
    refusal;
    isLinkOpen() {
        return this.linkOpen;
    }
    open() {
        if (!this.running)
            return;
        const pref = this.preferred.get(this.epIdx) ?? 0;
        this.tIdx = pref;
        this.openTransport();
    }
    openTransport() {
        const ep = this.endpoints[this.epIdx];
        const transport = this.transports[this.tIdx];
        this.linkOpen = false;
        this.setState({ state: "connecting", endpoint: ep.ws, transport, attempt: this.backoff.attempt });
        this.log(`connecting to ${transport === "ws" ? ep.ws : ep.http + "/" + transport} (attempt ${this.backoff.attempt})`);
        let link;
        const h = {
            open: () => link === this.link && this.onOpen(),
            control: (m, group) => link === this.link && this.onControl(m, group),
            binary: (d) => link === this.link && this.onBinary(d),
            json: (t) => link === this.link && this.onJson(t),
            activity: () => {
                if (link === this.link)
                    this.lastRx = Date.now();
            },
            close: (info) => link === this.link && this.onClose(info),
        };
        try {
            if (transport === "ws") {
                const Ctor = this.o.WebSocket ?? globalThis.WebSocket;
                if (!Ctor)
                    throw new Error("no WebSocket: pass options.WebSocket (e.g. the ws package in Node 20)");
                const q = new URLSearchParams();
                if (this.o.format === "json")
                    q.set("format", "json");
                const protocols = this.token && this.o.tokenInSubprotocol ? ["tickcast.v1", `token.${this.token}`] : undefined;
                if (this.token && !protocols)
                    q.set("token", this.token);
                const qs = q.toString();
                link = new WsLink(Ctor, ep.ws + (qs ? "?" + qs : ""), protocols, h);
            }
            else {
                const f = this.o.fetch ?? globalThis.fetch;
                if (!f)
                    throw new Error("no fetch for the /stream and /sse transports");
                link = new HttpLink(transport, f.bind(globalThis), h, this.sseLastIds);
            }
        }
        catch (e) {
            this.log(`cannot open ${transport}: ${e.message}`);
            this.link = undefined;
            queueMicrotask(() => this.onFailed({ opened: false, error: e.message }, transport));
            return;
        }
        this.link = link;
        this.lastRx = Date.now();
        this.armConnectTimeout(link);
        if (link instanceof HttpLink)
            this.syncHttpGroups();
    }
    armConnectTimeout(link) {
        const t = setTimeout(() => {
            if (link === this.link && !this.linkOpen) {
                this.log(`${link.transport}: not established within ${this.connectTimeout} ms`);
                link.close("connect timeout");
            }
        }, this.connectTimeout);
        this.timers.push(t);
    }
    get connectTimeout() {
        return this.o.connectTimeoutMs ?? 10000;
    }
    onOpen() {
        this.linkOpen = true;
        this.refusal = undefined;
        const link = this.link;
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
    sendAll() {
        const groups = this.groups();
        this.awaitingGroups = 0;
        const waiting = this.waiting;
        this.waiting = [];
        for (const g of groups.values()) {
            const p = { symbols: g.symbols, initial: true };
            this.sendSubscribe(g.symbols, g.depth, g.channels, true, p);
            this.awaitingGroups++;
        }
        // Promises of subscribe() calls made while disconnected: resolved by the group replies.
        for (const w of waiting) {
            const live = w.symbols.filter((s) => this.subs.has(s));
            if (live.length === 0)
                w.resolve?.([]);
            else
                this.waitingReplies.push(w);
        }
        if (groups.size === 0)
            this.onAllSubscribed();
    }
    waitingReplies = [];
    groups() {
        const out = new Map();
        for (const [s, sub] of this.subs) {
            const key = `${sub.depth}|${[...sub.channels].sort().join(",")}`;
            let g = out.get(key);
            if (!g)
                out.set(key, (g = { depth: sub.depth, channels: sub.channels, symbols: [] }));
            g.symbols.push(s);
        }
        return out;
    }
    resumeFor(symbols) {
        if (this.epoch === undefined)
            return undefined;
        const streams = {};
        let any = false;
        for (const s of symbols) {
            const pos = {};
            const b = this.books.get(s);
            if (b && b.valid && b.seq > 0)
                pos.book = b.seq;
            const t = this.tradeSeq.get(s);
            if (t !== undefined && this.subs.get(s)?.channels.includes("trades"))
                pos.trades = t;
            if (Object.keys(pos).length) {
                streams[s] = pos;
                any = true;
            }
        }
        return any ? { epoch: this.epoch, streams } : undefined;
    }
    sendSubscribe(symbols, depth, channels, resume, p) {
        const id = this.nextId++;
        const msg = { op: "subscribe", id, symbols, channels, depth };
        if (this.o.maxHz)
            msg.max_hz = this.o.maxHz;
        if (resume) {
            const r = this.resumeFor(symbols);
            if (r)
                msg.resume = r;
        }
        for (const s of symbols)
            if (!resume || !msg.resume)
                this.books.get(s)?.desync();
        this.pending.set(id, p);
        this.link.send(msg);
    }
    /** On an HTTP transport, (re)opens one request per subscription group. */
    syncHttpGroups() {
        const link = this.link;
        if (!(link instanceof HttpLink))
            return;
        const ep = this.endpoints[this.epIdx];
        const groups = [];
        for (const [key, g] of this.groups()) {
            const q = new URLSearchParams();
            q.set("symbols", g.symbols.join(","));
            q.set("depth", String(g.depth));
            q.set("channels", g.channels.join(","));
            if (this.o.maxHz)
                q.set("max_hz", String(this.o.maxHz));
            if (this.token)
                q.set("token", this.token);
            groups.push({ key, url: `${ep.http}/${link.transport}?${q.toString().replace(/%2C/g, ",")}` });
        }
        this.awaitingGroups = groups.length;
        link.setGroups(groups);
    }
    onClose(info) {
        const transport = this.link.transport;
        this.link = undefined;
        this.linkOpen = false;
        this.stopTimers();
        // Requests in flight: subscribe() promises are answered by the next connection's replies;
        // a token refresh applies to the next connection (its promise resolves with undefined).
        for (const p of this.pending.values())
            if (p.resolve)
                this.waiting.push(p);
        this.pending.clear();
        for (const w of this.refreshWaiters.values())
            w.resolve(undefined);
        this.refreshWaiters.clear();
        this.rejectSymbolsWaiters("connection lost before the symbols reply");
        this.onFailed(info, transport);
    }
    onFailed(info, transport) {
        if (!this.running)
            return;
        const why = describe(info, transport);
        const terminal = (reason) => {
            this.log(`refused, not retrying: ${reason}`);
            this.running = false;
            this.refusal = undefined;
            this.setClosed(reason, true);
        };
        // Terminal refusals: the server will say the same again. Close 1008 (policy, token expired)
        // ends it at once. A 401/403 on the upgrade might come from a proxy that refuses WebSocket,
        // so the fallbacks are still tried: the server answers them with the same access rules, and
        // if none of them gets through, the refusal stands.
        if (info.code === 1008)
            return terminal(why);
        if (info.status === 401 || info.status === 403) {
            if (transport !== "ws" || this.tIdx + 1 >= this.transports.length)
                return terminal(why);
            this.refusal = why;
        }
        if (this._state === "subscribed" || info.opened)
            this.lostSinceSubscribed = this.everSubscribed;
        // An upgrade that was refused or never completed: the next transport on the same endpoint.
        if (!info.opened && !info.network && this.tIdx + 1 < this.transports.length) {
            this.log(`${why}; falling back to ${this.transports[this.tIdx + 1]}`);
            this.tIdx++;
            this.openTransport();
            return;
        }
        if (this.refusal !== undefined && !info.opened)
            return terminal(this.refusal);
        this.refusal = undefined;
        if (!info.opened)
            this.preferred.delete(this.epIdx);
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
    startLiveness(link) {
        const ping = this.o.pingIntervalMs ?? 10000;
        const slack = this.o.pongTimeoutMs ?? 5000;
        const idleMax = link.canSend ? ping + slack : (this.o.httpIdleTimeoutMs ?? 60000);
        const tick = Math.max(50, Math.min(1000, Math.floor(Math.min(ping, idleMax) / 4)));
        let lastPing = 0;
        const t = setInterval(() => {
            if (link !== this.link)
                return;
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
    stopTimers() {
        for (const t of this.timers)
            clearTimeout(t);
        this.timers = [];
    }
    // ---- control messages ----------------------------------------------------------------------
    onControl(m, group) {
        this.emit("control", m);
        switch (m.op) {
            case "subscribed":
                this.onSubscribed(m, group);
                break;
            case "error":
                this.onError(m);
                break;
            case "refreshed": {
                const w = this.refreshWaiters.get(m.id);
                this.refreshWaiters.delete(m.id);
                w?.resolve(m);
                break;
            }
            case "symbols": {
                const w = this.symbolsWaiters.get(m.id);
                this.symbolsWaiters.delete(m.id);
                w?.resolve((m.symbols ?? []).map(symbolInfo));
                break;
            }
            default:
                break;
        }
    }
    onSubscribed(m, group) {
        const id = m.id;
        const p = typeof id === "number" ? this.pending.get(id) : undefined;
        if (p)
            this.pending.delete(id);
        if (typeof m.epoch === "string") {
            if (this.epoch !== undefined && this.epoch !== m.epoch)
                this.log(`server epoch changed: ${this.epoch} -> ${m.epoch}`);
            this.epoch = m.epoch;
        }
        const infos = [];
        for (const e of m.symbols ?? []) {
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
            }
            else {
                if (e.recovered === false)
                    this.recoveredNow[symbol] = false;
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
                    w.resolve?.(w.symbols.map((s) => this.info.get(s)).filter(Boolean));
                    return false;
                }
                return true;
            });
        }
        if (this.link instanceof HttpLink && group !== undefined) {
            // Each HTTP request answers once; a restarted one answers again.
            for (const w of this.waiting.splice(0))
                w.resolve?.(w.symbols.map((s) => this.info.get(s)).filter(Boolean));
        }
        if (this._state !== "subscribed" && (p?.initial || group !== undefined)) {
            this.awaitingGroups--;
            if (this.awaitingGroups <= 0)
                this.onAllSubscribed();
        }
    }
    onAllSubscribed() {
        const resumedSyms = Object.keys(this.recoveredNow);
        const resumed = this.lostSinceSubscribed && resumedSyms.length > 0 && resumedSyms.every((s) => this.recoveredNow[s] === true);
        if (this.lostSinceSubscribed) {
            this.stats.reconnects++;
            if (resumed)
                this.stats.resumed++;
        }
        this.everSubscribed = true;
        this.lostSinceSubscribed = false;
        // The attempt counter starts again only now, once subscribed again.
        this.backoff.reset();
        if (this.link)
            this.preferred.set(this.epIdx, this.tIdx);
        this.setState({
            state: "subscribed",
            endpoint: this.endpoint,
            transport: this.link?.transport ?? "ws",
            resumed,
            recovered: { ...this.recoveredNow },
        });
    }
    onError(m) {
        const id = m.id;
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
        const ev = { code, message, id: m.id };
        if (p) {
            this.pending.delete(id);
            ev.symbols = p.symbols;
            if (code === "not_ready" || code === "rate_limited") {
                // Try again shortly with the same request.
                const t = setTimeout(() => {
                    const live = p.symbols.filter((s) => this.subs.has(s));
                    const sub = live.length ? this.subs.get(live[0]) : undefined;
                    if (sub && this.link?.canSend && this.linkOpen)
                        this.sendSubscribe(live, sub.depth, sub.channels, true, p);
                }, 500);
                this.timers.push(t);
            }
            else {
                for (const s of p.symbols) {
                    this.subs.delete(s);
                    this.books.delete(s);
                }
                p.reject?.(new SubscribeError(message, code));
                if (this._state !== "subscribed" && p.initial) {
                    this.awaitingGroups--;
                    if (this.awaitingGroups <= 0)
                        this.onAllSubscribed();
                }
            }
        }
        this.emit("error", ev);
    }
    // ---- data -----------------------------------------------------------------------------------
    onRecord = (r) => this.handle(r);
    decimalsOf = (symbol) => this.info.get(symbol);
    onBinary(d) {
        try {
            decodeBatch(d, this.onRecord);
        }
        catch (e) {
            this.log(`bad batch: ${e.message}; reconnecting`);
            this.link?.close("bad batch");
        }
    }
    onJson(text) {
        try {
            decodeJsonRecords(text, this.decimalsOf, this.onRecord);
        }
        catch (e) {
            this.log(`bad JSON batch: ${e.message}; reconnecting`);
            this.link?.close("bad batch");
        }
    }
    handle(r) {
        const symbol = r.symbol || this.bySid.get(r.sid);
        if (symbol === undefined)
            return;
        this.stats.records++;
        if (r.kind === 1 || r.kind === 2) {
            const b = this.books.get(symbol);
            if (!b)
                return;
            const rec = this.o.checksums === false && r.checksum !== undefined ? { ...r, checksum: undefined } : r;
            const have = b.seq;
            const before = b.checksumsVerified;
            const res = b.apply(rec);
            if (b.checksumsVerified !== before)
                this.stats.checksumsVerified++;
            if (res === "ok") {
                this.emit("book", { symbol, book: b, snapshot: r.kind === 1, seq: r.seq, exchTs: r.exchTs, recvTs: r.recvTs });
            }
            else if (res === "gap" || res === "checksum") {
                if (res === "gap")
                    this.stats.gaps++;
                else
                    this.stats.checksumMismatches++;
                this.log(`${symbol}: ${res === "gap" ? `seq gap ${have} -> ${r.seq}` : `checksum mismatch at seq ${r.seq}`}; resubscribing it`);
                this.emit("resync", { symbol, reason: res, have, got: r.seq });
                this.resync(symbol);
            }
        }
        else if (r.kind === 3) {
            const last = this.tradeSeq.get(symbol);
            if (last !== undefined && r.seq !== last + 1)
                this.emit("tradeGap", { symbol, have: last, got: r.seq });
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
        }
        else {
            const st = r;
            const b = this.books.get(symbol);
            if (b && st.code === 1)
                b.stale = true;
            if (b && st.code === 2)
                b.stale = false;
            this.emit("status", { symbol, code: st.code, ts: st.recvTs });
        }
    }
    /** Resubscribes one symbol after a gap or a checksum mismatch (once per episode). */
    resync(symbol) {
        if (this.resyncing.has(symbol))
            return;
        const sub = this.subs.get(symbol);
        if (!sub)
            return;
        this.resyncing.add(symbol);
        const link = this.link;
        if (!link || !this.linkOpen)
            return; // the reconnect resubscribes everything
        if (link.canSend) {
            this.sendSubscribe([symbol], sub.depth, sub.channels, false, { symbols: [symbol] });
        }
        else if (link instanceof HttpLink) {
            link.restart(`${sub.depth}|${[...sub.channels].sort().join(",")}`);
        }
    }
}
function describe(info, transport) {
    const parts = [transport];
    if (info.local)
        parts.push(info.local);
    else if (!info.opened)
        parts.push(info.network ? "unreachable" : "not established");
    else
        parts.push("lost");
    if (info.status !== undefined)
        parts.push(`HTTP ${info.status}`);
    if (info.code !== undefined)
        parts.push(`close ${info.code}${info.reason ? ` ${info.reason}` : ""}`);
    if (info.error && !info.local)
        parts.push(info.error);
    return parts.join(": ");
}
/** A symbol entry of a `subscribed` or `symbols` reply. */
function symbolInfo(e) {
    const inf = {
        symbol: String(e.symbol),
        sid: Number(e.sid),
        pxDecimals: Number(e.px_decimals ?? 0),
        qtyDecimals: Number(e.qty_decimals ?? 0),
    };
    if (typeof e.max_hz === "number")
        inf.maxHz = e.max_hz;
    return inf;
}
