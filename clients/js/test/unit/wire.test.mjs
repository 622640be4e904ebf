import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeBatch, decodeJsonRecords, encodeBatch, encodeJsonRecord, formatScaled, parseScaled, DecodeError } from "../../dist/index.js";

// A batch encoded by hand (docs/protocol.md §1.2), little-endian throughout:
// a snapshot of sid 7 (seq 100, 1 bid 65000.10 x 1.5, 1 ask 65000.20 x 0.25, checksum flag and
// value 0xdeadbeef), a record of an unknown kind 9 (skipped by its length), a trade and a status.
const hex = [
  "01 00 0400 00000000", // batch: version 1, flags 0, 4 records
  // snapshot: length 72, kind 1, flags 3 (snapshot | checksum), sid 7
  "4800 01 03 07000000",
  "6400000000000000", // seq 100
  "0100000000000080", // exch_ts 2^63 + 1 (needs BigInt)
  "0200000000000000", // recv_ts 2
  "0100 0100 efbeadde", // 1 bid, 1 ask, checksum 0xdeadbeef
  "aa2e630000000000 60e3160000000000", // bid 6500010 x 1500000
  "b42e630000000000 90d0030000000000", // ask 6500020 x 250000
  // unknown kind 9: length 36, 4 body bytes
  "2400 09 00 07000000 0000000000000000 0000000000000000 0000000000000000 aabbccdd",
  // trade: length 64, kind 3, sid 7, seq 42
  "4000 03 00 07000000 2a00000000000000 0300000000000000 0400000000000000",
  "b42e630000000000 1027000000000000 ffffffffffffffff 01 00000000000000", // 65000.20 x 0.01, id 2^64-1, sell
  // status: length 40, kind 4, sid 7, seq 0, code 1
  "2800 04 00 07000000 0000000000000000 0500000000000000 0500000000000000 0100 000000000000",
].join("").replace(/\s+/g, "");
const fixture = Buffer.from(hex, "hex");

test("decodes a hand-encoded batch, skipping unknown kinds", () => {
  const recs = [];
  const n = decodeBatch(new Uint8Array(fixture), (r) => recs.push(r));
  assert.equal(n, 4);
  assert.equal(recs.length, 3);
  const [snap, trade, status] = recs;
  assert.equal(snap.kind, 1);
  assert.equal(snap.flags, 3);
  assert.equal(snap.sid, 7);
  assert.equal(snap.seq, 100);
  assert.equal(snap.exchTs, (1n << 63n) + 1n);
  assert.equal(snap.recvTs, 2n);
  assert.deepEqual(snap.bids, [6500010, 1500000]);
  assert.deepEqual(snap.asks, [6500020, 250000]);
  assert.equal(snap.checksum, 0xdeadbeef);
  assert.equal(trade.kind, 3);
  assert.equal(trade.seq, 42);
  assert.equal(trade.price, 6500020);
  assert.equal(trade.qty, 10000);
  assert.equal(trade.tradeId, (1n << 64n) - 1n);
  assert.equal(trade.side, "sell");
  assert.equal(status.kind, 4);
  assert.equal(status.code, 1);
  assert.equal(status.seq, 0);
});

test("a record without the checksum flag has no checksum", () => {
  const b = Buffer.from(fixture);
  b[8 + 3] = 1; // flags: snapshot only
  const recs = [];
  decodeBatch(b, (r) => recs.push(r));
  assert.equal(recs[0].checksum, undefined);
});

test("negative i64 and an ArrayBuffer slice", () => {
  const rec = { kind: 2, flags: 0, sid: 1, symbol: "", seq: 5, exchTs: 1n, recvTs: 2n, bids: [-5, 0], asks: [2 ** 52, 3], checksum: undefined };
  const bytes = encodeBatch([rec]);
  const padded = new Uint8Array(bytes.length + 3);
  padded.set(bytes, 3);
  const out = [];
  decodeBatch(padded.subarray(3), (r) => out.push(r));
  assert.deepEqual(out[0].bids, [-5, 0]);
  assert.deepEqual(out[0].asks, [2 ** 52, 3]);
});

test("malformed batches are refused", () => {
  assert.throws(() => decodeBatch(new Uint8Array(4), () => {}), DecodeError);
  const b = Buffer.from(fixture);
  b[0] = 2;
  assert.throws(() => decodeBatch(b, () => {}), /version/);
  assert.throws(() => decodeBatch(fixture.subarray(0, 60), () => {}), DecodeError);
  const c = Buffer.from(fixture);
  c.writeUInt16LE(9, 8 + 32); // bid count 9 does not fit
  assert.throws(() => decodeBatch(c, () => {}), /levels/);
});

test("decimals are formatted exactly like the server's JSON", () => {
  // The cases of engine/src/wire/tests.rs write_decimal_cases.
  assert.equal(formatScaled(0, 0), "0");
  assert.equal(formatScaled(0, 3), "0.000");
  assert.equal(formatScaled(150, 2), "1.50");
  assert.equal(formatScaled(5, 3), "0.005");
  assert.equal(formatScaled(-5, 3), "-0.005");
  assert.equal(formatScaled(-1234, 0), "-1234");
  assert.equal(formatScaled(9223372036854775807n, 18), "9.223372036854775807");
  assert.equal(formatScaled(-9223372036854775808n, 19), "-0.9223372036854775808");
  assert.equal(formatScaled(6500010, 2), "65000.10");
  assert.equal(formatScaled(95000, 10), "0.0000095000");
});

test("decimal strings parse to scaled integers", () => {
  assert.equal(parseScaled("65000.10", 2), 6500010);
  assert.equal(parseScaled("1.5", 6), 1500000);
  assert.equal(parseScaled("1.500000000", 2), 150);
  assert.equal(parseScaled("007", 0), 7);
  assert.equal(parseScaled("-0.005", 3), -5);
  for (const bad of ["", "-", "1.", ".5", "1e3", "+1", "1.234"]) assert.throws(() => parseScaled(bad, 2), DecodeError, bad);
});

test("JSON batches keep u64 timestamps exact and carry crc", () => {
  const text =
    '[{"kind":"snapshot","symbol":"BTC-USD","sid":7,"seq":100,"exch_ts":1763700000000100001,"recv_ts":1763700000000150003,"bids":[["65000.10","1.500000"]],"asks":[["65000.20","0.250000"]],"crc":3735928559},' +
    '{"kind":"trade","symbol":"BTC-USD","sid":7,"seq":42,"exch_ts":1,"recv_ts":2,"price":"65000.20","qty":"0.010000","trade_id":18446744073709551615,"side":"sell"},' +
    '{"kind":"status","symbol":"BTC-USD","sid":7,"seq":0,"exch_ts":3,"recv_ts":3,"code":2},' +
    '{"kind":"delta","symbol":"OTHER","sid":8,"seq":1,"exch_ts":3,"recv_ts":3,"bids":[],"asks":[]}]';
  const recs = [];
  decodeJsonRecords(text, (s) => (s === "BTC-USD" ? { pxDecimals: 2, qtyDecimals: 6 } : undefined), (r) => recs.push(r));
  assert.equal(recs.length, 3, "records of unknown symbols are skipped");
  assert.equal(recs[0].exchTs, 1763700000000100001n);
  assert.equal(recs[0].flags & 1, 1);
  assert.deepEqual(recs[0].bids, [6500010, 1500000]);
  assert.equal(recs[0].checksum, 0xdeadbeef);
  assert.equal(recs[1].tradeId, 18446744073709551615n);
  assert.equal(recs[1].qty, 10000);
  assert.equal(recs[2].code, 2);
});

test("a JSON record round-trips through encodeJsonRecord", () => {
  const d = { pxDecimals: 2, qtyDecimals: 6 };
  const rec = { kind: 2, flags: 0, sid: 7, symbol: "BTC-USD", seq: 9, exchTs: 1763700000000100001n, recvTs: 5n, bids: [6500010, 0], asks: [6500020, 1], checksum: 12 };
  const out = [];
  decodeJsonRecords(encodeJsonRecord(rec, "BTC-USD", d), () => d, (r) => out.push(r));
  assert.deepEqual(out[0], rec);
});
