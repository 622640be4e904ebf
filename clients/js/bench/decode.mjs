#!/usr/bin/env node
// Decode + apply throughput of one client instance: records per second through the whole data
// path of a TickcastClient (decode the batch, apply to its book with the seq rule, emit the
// event), fed pre-encoded batches by an in-process WebSocket stand-in, so no network or server
// cost is counted. Books of 10 symbols at depth 0 (~150 levels per side), deltas of 1-3 levels,
// 1 trade per 10 records, 50 records per batch, like the daemon's batches under load.
//
//   node clients/js/bench/decode.mjs [--records N] [--rounds R]
import { TickcastClient, encodeBatch, encodeJsonRecord } from "../dist/index.js";
import zlib from "node:zlib";

const arg = (k, d) => {
  const i = process.argv.indexOf(`--${k}`);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};
const N = arg("records", 400000);
const ROUNDS = arg("rounds", 3);
const SYMBOLS = 10;
const PER_BATCH = 50;

let rnd = 12345;
const random = () => ((rnd = (rnd * 1103515245 + 12345) % 2147483648) / 2147483648);

function crc(b) {
  const parts = [];
  for (const side of [[...b.bids].sort((x, y) => y[0] - x[0]), [...b.asks].sort((x, y) => x[0] - y[0])]) {
    for (const [p, q] of side.slice(0, 10)) {
      const buf = Buffer.alloc(16);
      buf.writeBigInt64LE(BigInt(p), 0);
      buf.writeBigInt64LE(BigInt(q), 8);
      parts.push(buf);
    }
  }
  return zlib.crc32(Buffer.concat(parts));
}

/** Generates the stream once: snapshots, then N records (deltas and trades). */
function generate(withChecksums) {
  rnd = 12345;
  const books = [];
  const snaps = [];
  for (let s = 0; s < SYMBOLS; s++) {
    const bids = new Map();
    const asks = new Map();
    for (let i = 0; i < 150; i++) {
      bids.set(6500000 - i, 1000 + i);
      asks.set(6500001 + i, 1000 + i);
    }
    books.push({ bids, asks, seq: 1000, tseq: 0 });
    const snap = { kind: 1, flags: 1, sid: s + 1, symbol: "", seq: 1000, exchTs: 1n, recvTs: 2n, bids: [...bids].flat(), asks: [...asks].flat(), checksum: undefined };
    if (withChecksums) {
      snap.flags |= 2;
      snap.checksum = crc(books[s]);
    }
    snaps.push(snap);
  }
  const recs = [];
  for (let n = 0; n < N; n++) {
    const s = Math.floor(random() * SYMBOLS);
    const b = books[s];
    if (n % 10 === 9) {
      recs.push({ kind: 3, flags: 0, sid: s + 1, symbol: "", seq: ++b.tseq, exchTs: 5n, recvTs: 6n, price: 6500000, qty: 10, tradeId: BigInt(n), side: "buy" });
      continue;
    }
    const bidsD = [];
    const asksD = [];
    const k = 1 + Math.floor(random() * 3);
    for (let j = 0; j < k; j++) {
      const bid = random() < 0.5;
      const px = bid ? 6500000 - Math.floor(random() * 40) : 6500001 + Math.floor(random() * 40);
      const side = bid ? b.bids : b.asks;
      const d = bid ? bidsD : asksD;
      if (d.some((x, i) => i % 2 === 0 && x === px)) continue;
      const q = random() < 0.2 ? 0 : 1 + Math.floor(random() * 5000);
      if (q === 0) side.delete(px);
      else side.set(px, q);
      d.push(px, q);
    }
    const r = { kind: 2, flags: 0, sid: s + 1, symbol: "", seq: ++b.seq, exchTs: 3n, recvTs: 4n, bids: bidsD, asks: asksD, checksum: undefined };
    if (withChecksums) {
      r.flags |= 2;
      r.checksum = crc(b);
    }
    recs.push(r);
  }
  const batches = [encodeBatch(snaps)];
  const json = [`[${snaps.map((r, i) => encodeJsonRecord(r, `S${i + 1}`, { pxDecimals: 2, qtyDecimals: 3 })).join(",")}]`];
  for (let i = 0; i < recs.length; i += PER_BATCH) {
    const part = recs.slice(i, i + PER_BATCH);
    batches.push(encodeBatch(part));
    json.push(`[${part.map((r) => encodeJsonRecord(r, `S${r.sid}`, { pxDecimals: 2, qtyDecimals: 3 })).join(",")}]`);
  }
  return { batches: batches.map((b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)), json };
}

/** A WebSocket stand-in: answers the subscribe, then lets the bench push messages. */
class BenchSocket {
  static last;
  constructor() {
    this.binaryType = "arraybuffer";
    this.readyState = 0;
    this.l = {};
    BenchSocket.last = this;
    queueMicrotask(() => {
      this.readyState = 1;
      this.l.open?.({});
    });
  }
  addEventListener(t, f) {
    this.l[t] = f;
  }
  send(text) {
    const m = JSON.parse(text);
    if (m.op === "subscribe") {
      const symbols = m.symbols.map((s) => ({ symbol: s, sid: Number(s.slice(1)), px_decimals: 2, qty_decimals: 3 }));
      queueMicrotask(() => this.l.message({ data: JSON.stringify({ op: "subscribed", id: m.id, symbols }) }));
    }
  }
  close() {}
  push(data) {
    this.l.message({ data });
  }
}

async function run(data, format) {
  const c = new TickcastClient({ endpoints: "ws://bench/ws", WebSocket: BenchSocket, format, pingIntervalMs: 1e9 });
  let events = 0;
  c.on("book", () => events++);
  c.on("trade", () => events++);
  c.connect();
  await c.subscribe(Array.from({ length: SYMBOLS }, (_, i) => `S${i + 1}`), { depth: 0 });
  const sock = BenchSocket.last;
  const t0 = process.hrtime.bigint();
  for (const m of data) sock.push(m);
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  const st = c.stats;
  if (st.gaps || st.checksumMismatches) throw new Error(`bench stream broken: ${JSON.stringify(st)}`);
  c.close();
  return { rate: st.records / dt, records: st.records, events, verified: st.checksumsVerified };
}

const results = {};
for (const [name, withCrc, format] of [
  ["binary", false, "binary"],
  ["binary+checksum", true, "binary"],
  ["json", false, "json"],
]) {
  const g = generate(withCrc);
  const data = format === "json" ? g.json : g.batches;
  const rates = [];
  let last;
  for (let r = 0; r < ROUNDS + 1; r++) {
    last = await run(data, format);
    if (r > 0) rates.push(last.rate); // the first round warms the JIT
  }
  rates.sort((a, b) => a - b);
  results[name] = { median_records_per_s: Math.round(rates[Math.floor(rates.length / 2)]), records: last.records, checksums_verified: last.verified };
  console.log(`${name.padEnd(16)} ${(rates[Math.floor(rates.length / 2)] / 1e6).toFixed(2)} M records/s (median of ${ROUNDS}, ${last.records} records, ${last.verified} checksums verified)`);
}
console.log(JSON.stringify({ node: process.version, ...results }));
