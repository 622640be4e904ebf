// Transports: WebSocket (`/ws`), fetch streaming (`/stream`) and server-sent events (`/sse`),
// behind one small interface so that the client's state machine does not care which one runs.
// ---- WebSocket -------------------------------------------------------------------------------
export class WsLink {
    h;
    transport = "ws";
    canSend = true;
    ws;
    done = false;
    opened = false;
    status;
    network = false;
    error;
    constructor(Ctor, url, protocols, h) {
        this.h = h;
        this.ws = protocols && protocols.length ? new Ctor(url, protocols) : new Ctor(url);
        this.ws.binaryType = "arraybuffer";
        const ws = this.ws;
        ws.addEventListener("open", () => {
            if (this.done)
                return;
            this.opened = true;
            h.open();
        });
        ws.addEventListener("message", (ev) => {
            if (this.done)
                return;
            h.activity();
            const d = ev.data;
            if (typeof d === "string") {
                if (d.charCodeAt(0) === 91 /* [ */)
                    h.json(d);
                else {
                    let msg;
                    try {
                        msg = JSON.parse(d);
                    }
                    catch {
                        return;
                    }
                    h.control(msg);
                }
            }
            else if (d instanceof ArrayBuffer || ArrayBuffer.isView(d)) {
                h.binary(d);
            }
        });
        ws.addEventListener("error", (ev) => {
            // The `ws` package says "Unexpected server response: 401" for a refused upgrade and gives
            // the socket error (ECONNREFUSED, ...) for a host that is down; browsers say neither.
            const m = ev?.message ?? "";
            this.error = m || this.error;
            const s = /Unexpected server response: (\d+)/.exec(m);
            if (s)
                this.status = Number(s[1]);
            const code = ev?.error?.code;
            if (code && /^E(CONNREFUSED|CONNRESET|HOSTUNREACH|NETUNREACH|NOTFOUND|ADDRNOTAVAIL|AI_AGAIN)$/.test(code)) {
                this.network = true;
            }
        });
        ws.addEventListener("close", (ev) => {
            this.finish({ code: ev?.code, reason: ev?.reason });
        });
        // The `ws` package (Node) shows the server's WebSocket pings; browsers never do.
        const anyWs = ws;
        if (typeof anyWs.on === "function")
            anyWs.on("ping", () => !this.done && h.activity());
    }
    finish(extra) {
        if (this.done)
            return;
        this.done = true;
        const info = { opened: this.opened, ...extra };
        if (this.status !== undefined)
            info.status = this.status;
        if (this.network && !this.opened)
            info.network = true;
        if (this.error !== undefined)
            info.error = this.error;
        this.h.close(info);
    }
    send(msg) {
        if (!this.done && this.ws.readyState === 1)
            this.ws.send(JSON.stringify(msg));
    }
    close(local) {
        if (this.done)
            return;
        try {
            this.ws.close(1000);
        }
        catch {
            // already closing
        }
        this.finish({ local });
    }
}
/**
 * A set of long-lived HTTP requests (one per subscription group), reading `/stream` frames or
 * `/sse` events. The session is "open" once a request got its 200 response; it closes, whole,
 * when any request fails or ends (the client then reconnects every group).
 */
export class HttpLink {
    transport;
    fetchFn;
    h;
    lastEventIds;
    canSend = false;
    done = false;
    opened = false;
    requests = new Map();
    constructor(transport, fetchFn, h, 
    /** Last SSE event id per request URL: kept by the client across links, sent as Last-Event-ID. */
    lastEventIds = new Map()) {
        this.transport = transport;
        this.fetchFn = fetchFn;
        this.h = h;
        this.lastEventIds = lastEventIds;
    }
    get isOpen() {
        return this.opened && !this.done;
    }
    /** Opens the requests for `groups`, restarting changed ones and closing the others. */
    setGroups(groups) {
        const keep = new Set();
        for (const g of groups) {
            keep.add(g.key);
            const cur = this.requests.get(g.key);
            if (cur && cur.group.url === g.url)
                continue;
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
    restart(key) {
        const r = this.requests.get(key);
        if (r)
            this.start(r.group, false);
    }
    start(group, resume = true) {
        const old = this.requests.get(group.key);
        if (old)
            old.ctl.abort();
        const ctl = new AbortController();
        this.requests.set(group.key, { ctl, group });
        void this.run(group, ctl, resume);
    }
    async run(group, ctl, resume) {
        const headers = {
            Accept: this.transport === "sse" ? "text/event-stream" : "application/octet-stream",
        };
        // Keyed by URL: an id is only offered back for the very same subscription.
        const last = this.lastEventIds.get(group.url);
        if (this.transport === "sse" && resume && last !== undefined)
            headers["Last-Event-ID"] = last;
        if (!resume)
            this.lastEventIds.delete(group.url);
        let res;
        try {
            res = await this.fetchFn(group.url, { headers, signal: ctl.signal, cache: "no-store" });
        }
        catch (e) {
            if (ctl.signal.aborted)
                return;
            this.fail({ network: true, error: String(e?.message ?? e) });
            return;
        }
        if (ctl.signal.aborted)
            return;
        if (res.status !== 200 || !res.body) {
            try {
                await res.body?.cancel();
            }
            catch {
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
                if (ctl.signal.aborted || this.done)
                    return;
                if (done)
                    break;
                this.h.activity();
                parse(value);
            }
        }
        catch (e) {
            if (ctl.signal.aborted || this.done)
                return;
            this.fail({ error: String(e?.message ?? e) });
            return;
        }
        this.fail({ error: "stream ended" });
    }
    /** `/stream` frames: {u32 length LE, u8 type, payload}; type 1 binary batch, 2 JSON control. */
    frameParser(key, stop) {
        let buf = new Uint8Array(0);
        const dec = new TextDecoder();
        return (chunk) => {
            if (buf.length === 0)
                buf = chunk;
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
                if (buf.length - off - 5 < len)
                    break;
                const payload = buf.subarray(off + 5, off + 5 + len);
                off += 5 + len;
                if (type === 1)
                    this.h.binary(payload);
                else if (type === 2) {
                    let msg;
                    try {
                        msg = JSON.parse(dec.decode(payload));
                    }
                    catch {
                        continue;
                    }
                    this.h.control(msg, key);
                }
                if (stop())
                    return;
            }
            buf = off === buf.length ? new Uint8Array(0) : buf.subarray(off);
        };
    }
    /** text/event-stream: named events are control messages, unnamed ones data records. */
    sseParser(key, url, stop) {
        const dec = new TextDecoder();
        let text = "";
        let event = "";
        let data = [];
        let id;
        const dispatch = () => {
            if (id !== undefined)
                this.lastEventIds.set(url, id);
            if (data.length > 0) {
                const d = data.join("\n");
                if (event === "" || event === "message") {
                    this.h.json(d);
                }
                else {
                    let msg;
                    try {
                        msg = JSON.parse(d);
                    }
                    catch {
                        msg = {};
                    }
                    if (typeof msg.op !== "string")
                        msg.op = event;
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
                if (nl < 0)
                    break;
                let line = text.slice(start, nl);
                start = nl + 1;
                if (line.endsWith("\r"))
                    line = line.slice(0, -1);
                if (line === "") {
                    dispatch();
                    if (stop())
                        return;
                    continue;
                }
                if (line.charCodeAt(0) === 58 /* : */)
                    continue; // comment / keep-alive
                const c = line.indexOf(":");
                const field = c < 0 ? line : line.slice(0, c);
                let value = c < 0 ? "" : line.slice(c + 1);
                if (value.charCodeAt(0) === 32)
                    value = value.slice(1);
                if (field === "data")
                    data.push(value);
                else if (field === "event")
                    event = value;
                else if (field === "id")
                    id = value;
            }
            text = text.slice(start);
        };
    }
    fail(info) {
        if (this.done)
            return;
        this.done = true;
        for (const r of this.requests.values())
            r.ctl.abort();
        this.requests.clear();
        const ci = { opened: this.opened, ...info };
        if (this.opened)
            delete ci.network;
        this.h.close(ci);
    }
    send() {
        // No upstream channel: the subscription is in the query string.
    }
    close(local) {
        if (this.done)
            return;
        this.fail({ local });
    }
}
