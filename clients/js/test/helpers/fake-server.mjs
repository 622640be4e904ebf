// A small fake tickcast speaking the version 1.1 contract (shared/protocol.md §3.1 resume and
// epoch, §3.2 checksums, §3.4 /stream and /sse) that today's daemon does not serve yet, with
// switches a test proxy would have: refuse or hang the upgrade, reset connections, corrupt or
// drop a record, go silent, close with a code. Books are whole books (any depth is served as
// depth 0); checksums are computed here independently with zlib's crc32.
import http from "node:http";
import zlib from "node:zlib";
import { WebSocketServer } from "ws";
import { encodeBatch, encodeJsonRecord, formatScaled } from "../../dist/index.js";

const D = { pxDecimals: 2, qtyDecimals: 3 };

function crcOf(book) {
  const parts = [];
  for (const side of [sorted(book.bids, true), sorted(book.asks, false)]) {
    for (const [p, q] of side.slice(0, 10)) {
      const b = Buffer.alloc(16);
      b.writeBigInt64LE(BigInt(p), 0);
      b.writeBigInt64LE(BigInt(q), 8);
      parts.push(b);
    }
  }
  return zlib.crc32(Buffer.concat(parts));
}

function sorted(m, desc) {
  return [...m.entries()].sort((a, b) => (desc ? b[0] - a[0] : a[0] - b[0]));
}
const flat = (levels) => levels.flat();

export class FakeServer {
  constructor({ symbols = ["AAA-USD", "BBB-USD"], seed = 1, epoch = "e1" } = {}) {
    this.epoch = epoch;
    this.rand = seed;
    this.sids = new Map(symbols.map((s, i) => [s, i + 1]));
    this.books = new Map();
    this.log = []; // {n, symbol, rec}
    this.n = 0;
    for (const s of symbols) {
      const bids = new Map();
      const asks = new Map();
      for (let i = 0; i < 15; i++) {
        bids.set(99900 - i * 10, 1000 + i);
        asks.set(100100 + i * 10, 2000 + i);
      }
      this.books.set(s, { bids, asks, seq: 100 });
    }
    // Switches.
    this.mode = { ws: "accept", stream: "accept", sse: "accept", silent: false, closeBeforeReply: 0 };
    this.corrupt = new Set(); // symbols whose next delta is corrupted (wrong quantity, true checksum)
    this.drop = new Set(); // symbols whose next delta is not sent
    this.wsConns = new Set();
    this.httpConns = new Set();
    this.requests = []; // every request line: "GET /sse?..." / "UPGRADE /ws?..."
    this.subscribes = []; // every subscribe control message received
    this.lastEventIds = [];
    this.wss = new WebSocketServer({ noServer: true });
    this.server = http.createServer((req, res) => this.onHttp(req, res));
    this.server.on("upgrade", (req, sock, head) => this.onUpgrade(req, sock, head));
    this.sockets = new Set();
    this.server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
  }

  listen() {
    return new Promise((r) => this.server.listen(0, "127.0.0.1", () => r(this)));
  }
  get port() {
    return this.server.address().port;
  }
  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  async close() {
    clearInterval(this.timer);
    for (const c of this.wsConns) c.ws.terminate();
    for (const c of this.httpConns) c.res.destroy();
    for (const s of this.sockets) s.destroy();
    this.wss.close();
    await new Promise((r) => this.server.close(r));
  }

  random() {
    this.rand = (this.rand * 1103515245 + 12345) % 2147483648;
    return this.rand / 2147483648;
  }

  /** Applies `count` random updates, one every `everyMs`; resolves when done. */
  run(count, everyMs = 2) {
    return new Promise((resolve) => {
      let left = count;
      this.timer = setInterval(() => {
        for (let k = 0; k < 5 && left > 0; k++, left--) this.step();
        if (left <= 0) {
          clearInterval(this.timer);
          resolve();
        }
      }, everyMs);
    });
  }

  step() {
    const syms = [...this.books.keys()];
    const symbol = syms[Math.floor(this.random() * syms.length)];
    const book = this.books.get(symbol);
    const bid = this.random() < 0.5;
    const px = bid ? 99990 - Math.floor(this.random() * 20) * 10 : 100010 + Math.floor(this.random() * 20) * 10;
    const qty = this.random() < 0.3 ? 0 : 1 + Math.floor(this.random() * 5000);
    const side = bid ? book.bids : book.asks;
    if (qty === 0) side.delete(px);
    else side.set(px, qty);
    book.seq++;
    const rec = {
      kind: 2,
      flags: 2,
      sid: this.sids.get(symbol),
      symbol,
      seq: book.seq,
      exchTs: 1763700000000000000n + BigInt(this.n),
      recvTs: 1763700000000000001n + BigInt(this.n),
      bids: bid ? [px, qty] : [],
      asks: bid ? [] : [px, qty],
      checksum: crcOf(book),
    };
    this.n++;
    const entry = { n: this.n, symbol, rec };
    this.log.push(entry);
    let out = rec;
    if (this.drop.has(symbol)) {
      this.drop.delete(symbol);
      out = null;
    } else if (this.corrupt.has(symbol)) {
      this.corrupt.delete(symbol);
      out = { ...rec, bids: bid ? [px, qty + 1] : [], asks: bid ? [] : [px, qty + 1] };
    }
    if (out && !this.mode.silent) this.broadcast(entry, out);
  }

  snapshot(symbol) {
    const b = this.books.get(symbol);
    return {
      kind: 1,
      flags: 3,
      sid: this.sids.get(symbol),
      symbol,
      seq: b.seq,
      exchTs: 1n,
      recvTs: 2n,
      bids: flat(sorted(b.bids, true)),
      asks: flat(sorted(b.asks, false)),
      checksum: crcOf(b),
    };
  }

  truth(symbol) {
    const b = this.books.get(symbol);
    const f = (l) => [formatScaled(l[0], D.pxDecimals), formatScaled(l[1], D.qtyDecimals)];
    return { bids: sorted(b.bids, true).map(f), asks: sorted(b.asks, false).map(f) };
  }

  info(symbol, extra = {}) {
    return { symbol, sid: this.sids.get(symbol), px_decimals: D.pxDecimals, qty_decimals: D.qtyDecimals, ...extra };
  }

  /** Replies to a subscription (with resume, if any); returns the records to send first. */
  subscribeReply(id, symbols, resume) {
    const first = [];
    const infos = [];
    for (const s of symbols) {
      const pos = resume && resume.epoch === this.epoch ? resume.streams?.[s]?.book : undefined;
      if (resume && resume.streams?.[s] !== undefined) {
        // This fake keeps its whole history: any position of this epoch can be recovered.
        const recovered = pos !== undefined && pos >= 100 && pos <= this.books.get(s).seq;
        infos.push(this.info(s, { recovered }));
        if (recovered) {
          for (const e of this.log) if (e.symbol === s && e.rec.seq > pos) first.push({ rec: e.rec, n: e.n });
          continue;
        }
      } else infos.push(this.info(s));
      first.push({ rec: this.snapshot(s), n: this.n });
    }
    return { reply: { op: "subscribed", id, epoch: this.epoch, symbols: infos }, first };
  }

  broadcast(entry, rec) {
    for (const c of this.wsConns) {
      if (c.symbols.has(entry.symbol)) c.ws.send(encodeBatch([rec]));
    }
    for (const c of this.httpConns) {
      if (!c.symbols.has(entry.symbol)) continue;
      if (c.kind === "stream") c.res.write(frame(1, encodeBatch([rec])));
      else c.res.write(`id: ${entry.n}\ndata: ${encodeJsonRecord(rec, entry.symbol, D)}\n\n`);
    }
  }

  /** Drops every client connection (a reset by a proxy). */
  resetAll() {
    for (const c of this.wsConns) c.ws.terminate();
    for (const c of this.httpConns) c.res.destroy();
  }

  /** Closes every WebSocket with `code`. */
  closeAll(code, reason = "") {
    for (const c of this.wsConns) c.ws.close(code, reason);
  }

  onUpgrade(req, sock, head) {
    this.requests.push(`UPGRADE ${req.url}`);
    const m = this.mode.ws;
    if (m === "hang") return; // never answers
    if (m !== "accept") {
      const status = m === "refuse" ? 400 : Number(m);
      sock.end(`HTTP/1.1 ${status} Refused\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    this.wss.handleUpgrade(req, sock, head, (ws) => {
      const c = { ws, symbols: new Set() };
      this.wsConns.add(c);
      ws.on("close", () => this.wsConns.delete(c));
      ws.on("message", (data) => {
        const msg = JSON.parse(data.toString());
        if (this.mode.silent) return;
        if (msg.op === "ping") return ws.send(JSON.stringify({ op: "pong", id: msg.id }));
        if (msg.op === "refresh") return ws.send(JSON.stringify({ op: "refreshed", id: msg.id, exp: 99 }));
        if (msg.op !== "subscribe") return;
        this.subscribes.push(msg);
        if (this.mode.closeBeforeReply > 0) {
          this.mode.closeBeforeReply--;
          return ws.close(1011, "not now");
        }
        const { reply, first } = this.subscribeReply(msg.id, msg.symbols, msg.resume);
        ws.send(JSON.stringify(reply));
        if (first.length) ws.send(encodeBatch(first.map((f) => f.rec)));
        for (const s of msg.symbols) c.symbols.add(s);
      });
    });
  }

  onHttp(req, res) {
    const u = new URL(req.url, "http://x");
    this.requests.push(`GET ${req.url}`);
    const kind = u.pathname.slice(1);
    if ((kind !== "stream" && kind !== "sse") || this.mode[kind] !== "accept") {
      res.writeHead(kind === "stream" || kind === "sse" ? Number(this.mode[kind]) || 404 : 404);
      return res.end();
    }
    const symbols = (u.searchParams.get("symbols") ?? "").split(",").filter(Boolean);
    const c = { kind, res, symbols: new Set(symbols) };
    res.writeHead(200, { "content-type": kind === "sse" ? "text/event-stream" : "application/octet-stream", "cache-control": "no-store" });
    if (kind === "stream") {
      const { reply, first } = this.subscribeReply(null, symbols);
      res.write(frame(2, Buffer.from(JSON.stringify(reply))));
      res.write(frame(1, encodeBatch(first.map((f) => f.rec))));
    } else {
      const last = req.headers["last-event-id"];
      this.lastEventIds.push(last);
      let resume;
      if (last !== undefined) {
        // Resume the whole subscription from the event id: replay what followed it.
        const after = Number(last);
        resume = { epoch: this.epoch, streams: {} };
        for (const s of symbols) {
          const prev = [...this.log].reverse().find((e) => e.symbol === s && e.n <= after);
          resume.streams[s] = { book: prev ? prev.rec.seq : 100 };
        }
      }
      const { reply, first } = this.subscribeReply(null, symbols, resume);
      res.write(`event: subscribed\ndata: ${JSON.stringify(reply)}\n\n`);
      res.write(": keep-alive comment\n\n");
      for (const { rec, n } of first) res.write(`id: ${n}\ndata: ${encodeJsonRecord(rec, rec.symbol, D)}\n\n`);
    }
    this.httpConns.add(c);
    res.on("close", () => this.httpConns.delete(c));
  }
}

function frame(type, payload) {
  const h = Buffer.alloc(5);
  h.writeUInt32LE(payload.length, 0);
  h.writeUInt8(type, 4);
  return Buffer.concat([h, Buffer.from(payload)]);
}
