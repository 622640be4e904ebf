import assert from "node:assert/strict";
import { test } from "node:test";
import zlib from "node:zlib";
import { bookChecksum, crc32, OrderBook } from "../../dist/index.js";

test("CRC-32 check value", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
  assert.equal(crc32(new TextEncoder().encode("6789"), crc32(new TextEncoder().encode("12345"))), 0xcbf43926);
});

function reference(depth, bids, asks) {
  const n = depth === 0 ? 10 : Math.min(10, depth);
  const parts = [];
  for (const side of [bids, asks]) {
    for (const [p, q] of side.slice(0, n)) {
      const b = Buffer.alloc(16);
      b.writeBigInt64LE(BigInt(p), 0);
      b.writeBigInt64LE(BigInt(q), 8);
      parts.push(b);
    }
  }
  return zlib.crc32(Buffer.concat(parts));
}

test("book checksum matches zlib over the top min(10, depth) levels (§3.2)", () => {
  const bids = Array.from({ length: 14 }, (_, i) => [6500010 - i * 3, 1000 + i]);
  const asks = Array.from({ length: 3 }, (_, i) => [6500020 + i, 2 ** 40 + i]);
  bids[2][0] = -7; // negative values are two's complement
  for (const depth of [0, 1, 10, 25, 100]) {
    const want = reference(depth, bids, asks);
    const got = bookChecksum(depth, bids.map((l) => l[0]), bids.map((l) => l[1]), bids.length, asks.map((l) => l[0]), asks.map((l) => l[1]), asks.length);
    assert.equal(got, want, `depth ${depth}`);
  }
  assert.equal(new OrderBook("X", 10, 0, 0).checksum(), 0, "an empty book is the CRC of no bytes");
  // A known vector: bid 65000.10 x 1.5, ask 65000.20 x 0.25 (scaled 2 and 6 decimals).
  const b = new OrderBook("BTC-USD", 10, 2, 6);
  b.apply({ kind: 1, flags: 1, sid: 1, symbol: "", seq: 1, exchTs: 0n, recvTs: 0n, bids: [6500010, 1500000], asks: [6500020, 250000], checksum: undefined });
  assert.equal(b.checksum(), reference(10, [[6500010, 1500000]], [[6500020, 250000]]));
});
