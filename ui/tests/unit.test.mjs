// The screen's pure helpers, in Node (no browser): decimal formatting as the daemon's format=json
// writes it, and the latency window.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fmtScaled, LatencyWindow } from '../js/util.js';
import { formatScaled } from '../../clients/js/dist/index.js';

test('decimals are written as the daemon writes them (engine/src/wire write_decimal cases)', () => {
  const cases = [
    [0, 0, '0'], [0, 3, '0.000'], [150, 2, '1.50'], [5, 3, '0.005'], [-5, 3, '-0.005'],
    [-1234, 0, '-1234'], [6500010, 2, '65000.10'], [1500000, 6, '1.500000'],
    [9223372036854775807n, 18, '9.223372036854775807'], [1n, 25, '0.0000000000000000000000001'],
  ];
  for (const [v, d, want] of cases) {
    assert.equal(fmtScaled(v, d), want, `${v} at ${d}`);
    assert.equal(formatScaled(v, d), want, `library: ${v} at ${d}`);
  }
});

test('latency percentiles over the window, within the buckets\' 4 %', () => {
  const w = new LatencyWindow(10_000, 100);
  const t0 = 1_000_000;
  // 1..1000 ms, evenly, over 5 s
  for (let i = 1; i <= 1000; i++) w.add(t0 + i * 5, i, i / 10);
  const s = w.stats(t0 + 5000);
  assert.equal(s.n, 1000);
  assert.ok(Math.abs(s.ex50 - 500) / 500 < 0.04, `p50 ${s.ex50}`);
  assert.ok(Math.abs(s.ex99 - 990) / 990 < 0.04, `p99 ${s.ex99}`);
  assert.ok(Math.abs(s.rx50 - 50) / 50 < 0.04, `recv p50 ${s.rx50}`);
  assert.equal(s.hist.reduce((a, b) => a + b, 0), 1000);
});

test('samples older than the window drop out', () => {
  const w = new LatencyWindow(10_000, 100);
  w.add(0, 1000, 1000);
  for (let i = 0; i < 10; i++) w.add(10_500 + i, 1, 1);
  const s = w.stats(10_600);
  assert.equal(s.n, 10);
  assert.ok(s.ex99 < 1.1, `p99 ${s.ex99}`);
  assert.ok(Number.isNaN(w.stats(40_000).ex50), 'empty window');
});
