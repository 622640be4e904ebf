import assert from "node:assert/strict";
import { test } from "node:test";
import { OrderBook } from "../../dist/index.js";

const rec = (kind, seq, bids, asks, checksum) => ({ kind, flags: kind === 1 ? 1 : 0, sid: 1, symbol: "X", seq, exchTs: 0n, recvTs: 0n, bids, asks, checksum });

test("snapshot then deltas: update, insert in order, remove", () => {
  const b = new OrderBook("X", 0, 2, 3);
  assert.equal(b.synced, false);
  assert.equal(b.apply(rec(1, 10, [100, 1, 98, 2], [101, 3, 103, 4])), "ok");
  assert.equal(b.synced, true);
  assert.equal(b.apply(rec(2, 11, [99, 5, 100, 0, 97, 1], [102, 6, 101, 7])), "ok");
  assert.deepEqual(b.bids(), [[99, 5], [98, 2], [97, 1]]);
  assert.deepEqual(b.asks(), [[101, 7], [102, 6], [103, 4]]);
  assert.deepEqual(b.bids(1), [[99, 5]]);
  assert.equal(b.seq, 11);
  assert.equal(b.bidPrice(0), 99);
  assert.equal(b.askQty(2), 4);
  assert.equal(b.askPrice(3), undefined);
  // Removing a level that is not there is a no-op.
  assert.equal(b.apply(rec(2, 12, [50, 0], [])), "ok");
  assert.equal(b.bidCount, 3);
  assert.deepEqual(b.toJSON(2), { symbol: "X", seq: 12, bids: [["0.99", "0.005"], ["0.98", "0.002"]], asks: [["1.01", "0.007"], ["1.02", "0.006"]] });
});

test("the seq rule: a gap leaves the book as it was and awaits a snapshot", () => {
  const b = new OrderBook("X", 10, 0, 0);
  b.apply(rec(1, 10, [100, 1], [101, 1]));
  assert.equal(b.apply(rec(2, 12, [100, 9], [])), "gap");
  assert.equal(b.synced, false);
  assert.deepEqual(b.bids(), [[100, 1]]);
  // Further deltas are ignored until a snapshot (a resubscribe is under way) ...
  assert.equal(b.apply(rec(2, 13, [100, 9], [])), "ignored");
  assert.equal(b.apply(rec(2, 10, [100, 9], [])), "ignored");
  // ... which is a new base, whatever its seq.
  assert.equal(b.apply(rec(1, 500, [90, 1], [91, 1])), "ok");
  assert.equal(b.apply(rec(2, 501, [90, 2], [])), "ok");
  assert.equal(b.synced, true);
  // A duplicate is a gap too.
  assert.equal(b.apply(rec(2, 501, [90, 2], [])), "gap");
});

test("deltas before the first snapshot are ignored", () => {
  const b = new OrderBook("X", 10, 0, 0);
  assert.equal(b.apply(rec(2, 1, [1, 1], [])), "ignored");
  assert.equal(b.bidCount, 0);
});

test("after a resume the book continues; a non-recovered one still accepts seq + 1", () => {
  const b = new OrderBook("X", 10, 0, 0);
  b.apply(rec(1, 10, [100, 1], [101, 1]));
  b.desync(); // a resubscribe with the positions held was sent
  assert.equal(b.apply(rec(2, 12, [100, 2], [])), "ignored");
  b.resumeOk(); // recovered: true
  assert.equal(b.apply(rec(2, 11, [100, 2], [])), "ok");
  b.desync();
  assert.equal(b.apply(rec(2, 12, [100, 3], [])), "ok", "continuity proven by seq");
  assert.equal(b.synced, true);
});

test("checksum: a matching one is verified, a mismatch invalidates the book", () => {
  const b = new OrderBook("X", 10, 0, 0);
  const snap = rec(1, 1, [100, 1], [101, 1]);
  b.apply(snap);
  const good = b.checksum();
  const b2 = new OrderBook("X", 10, 0, 0);
  assert.equal(b2.apply({ ...snap, checksum: good }), "ok");
  assert.equal(b2.checksumsVerified, 1);
  assert.equal(b2.apply(rec(2, 2, [100, 2], [], 12345)), "checksum");
  assert.equal(b2.synced, false);
  assert.equal(b2.valid, false);
  // An invalid book takes nothing but a snapshot.
  assert.equal(b2.apply(rec(2, 3, [100, 2], [])), "ignored");
  assert.equal(b2.apply(rec(1, 7, [100, 1], [101, 1], good)), "ok");
});
