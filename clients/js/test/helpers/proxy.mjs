// A TCP proxy between the client and the real daemon that misbehaves on demand: resets every
// connection, refuses WebSocket upgrades (or /stream) like a corporate proxy, or corrupts one
// quantity in a binary book record (uncompressed WebSocket frames only).
import net from "node:net";

export class Proxy {
  constructor(target) {
    const [host, port] = target.split(":");
    this.target = { host, port: Number(port) };
    this.pairs = new Set();
    this.requests = []; // first line of each HTTP request seen
    this.refuseUpgrade = false;
    this.refusePaths = []; // e.g. ["/stream"]
    this.corruptBook = 0; // book records (with a checksum flag) still to corrupt
    this.corrupted = 0;
    this.server = net.createServer((c) => this.onClient(c));
  }

  listen() {
    return new Promise((r) => this.server.listen(0, "127.0.0.1", () => r(this)));
  }
  get addr() {
    return `127.0.0.1:${this.server.address().port}`;
  }

  resetAll() {
    for (const p of this.pairs) {
      p.c.resetAndDestroy?.() ?? p.c.destroy();
      p.s.destroy();
    }
  }

  async close() {
    this.resetAll();
    await new Promise((r) => this.server.close(r));
  }

  onClient(c) {
    c.once("data", (first) => {
      const head = first.toString("latin1");
      const line = head.split("\r\n")[0];
      this.requests.push(line);
      const path = line.split(" ")[1] ?? "";
      const upgrade = /^upgrade:\s*websocket/im.test(head);
      if ((upgrade && this.refuseUpgrade) || this.refusePaths.some((p) => path.startsWith(p))) {
        c.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        return;
      }
      const s = net.connect(this.target.port, this.target.host);
      const pair = { c, s };
      this.pairs.add(pair);
      const done = () => {
        this.pairs.delete(pair);
        c.destroy();
        s.destroy();
      };
      c.on("error", done).on("close", done);
      s.on("error", done).on("close", done);
      s.write(first);
      c.pipe(s);
      if (upgrade) {
        const rewrite = this.frameRewriter();
        s.on("data", (d) => c.write(rewrite(d)));
      } else s.pipe(c);
    });
    c.on("error", () => {});
  }

  /** Passes server→client bytes through, flipping a quantity in a chosen book record. */
  frameRewriter() {
    let buf = Buffer.alloc(0);
    let handshakeDone = false;
    return (d) => {
      buf = Buffer.concat([buf, d]);
      const out = [];
      if (!handshakeDone) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return Buffer.alloc(0);
        out.push(buf.subarray(0, end + 4));
        buf = buf.subarray(end + 4);
        handshakeDone = true;
      }
      for (;;) {
        if (buf.length < 2) break;
        let len = buf[1] & 0x7f;
        let hl = 2;
        if (len === 126) {
          if (buf.length < 4) break;
          len = buf.readUInt16BE(2);
          hl = 4;
        } else if (len === 127) {
          if (buf.length < 10) break;
          len = Number(buf.readBigUInt64BE(2));
          hl = 10;
        }
        if (buf.length < hl + len) break;
        const frame = Buffer.from(buf.subarray(0, hl + len));
        buf = buf.subarray(hl + len);
        const opcode = frame[0] & 0x0f;
        const rsv1 = frame[0] & 0x40;
        if (this.corruptBook > 0 && opcode === 2 && !rsv1) this.corrupt(frame.subarray(hl));
        out.push(frame);
      }
      return Buffer.concat(out);
    };
  }

  /** Flips the low byte of the first level's quantity of a delta that carries a checksum. */
  corrupt(batch) {
    const count = batch.readUInt16LE(2);
    let off = 8;
    for (let i = 0; i < count && off + 32 <= batch.length; i++) {
      const len = batch.readUInt16LE(off);
      const kind = batch[off + 2];
      const flags = batch[off + 3];
      if (kind === 2 && flags & 2) {
        const nb = batch.readUInt16LE(off + 32);
        const na = batch.readUInt16LE(off + 34);
        if (nb + na > 0) {
          batch[off + 40 + 8] ^= 1; // the first level's qty
          this.corruptBook--;
          this.corrupted++;
          return;
        }
      }
      off += len;
    }
  }
}
