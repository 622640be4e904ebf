import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "../../dist/index.js";

test("full jitter: each delay in [0, min(cap, base * 2^n)), capped, not all equal", () => {
  const b = new Backoff({ baseMs: 500, capMs: 20000 });
  const delays = [];
  for (let i = 0; i < 40; i++) {
    const ceiling = b.ceiling(i);
    const d = b.next();
    assert.ok(d >= 0 && d < ceiling, `attempt ${i}: ${d} not in [0, ${ceiling})`);
    assert.ok(d <= 20000);
    delays.push(d);
  }
  assert.equal(b.ceiling(0), 500);
  assert.equal(b.ceiling(3), 4000);
  assert.equal(b.ceiling(6), 20000);
  assert.equal(b.ceiling(1000), 20000);
  assert.ok(new Set(delays).size > 30, "delays are spread");
  assert.equal(b.attempt, 40);
  b.reset();
  assert.equal(b.attempt, 0);
  assert.ok(b.next() < 500);
});

test("the random source is injectable", () => {
  const b = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0.999999 });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next()], [99, 199, 399, 799, 999]);
  assert.throws(() => new Backoff({ baseMs: 0 }), RangeError);
  assert.throws(() => new Backoff({ baseMs: 10, capMs: 5 }), RangeError);
});
