// Small pure helpers of the screen: decimal formatting and a latency window.

/**
 * Formats a scaled integer (BigInt or integral Number) as a decimal string with exactly
 * `decimals` fraction digits, as the daemon's format=json does: (150, 2) → "1.50",
 * (5, 3) → "0.005", (-5, 3) → "-0.005", (7, 0) → "7".
 */
export function fmtScaled(value, decimals) {
  const neg = value < 0;
  let s = (neg ? -value : value).toString();
  if (decimals > 0) {
    if (s.length <= decimals) s = '0'.repeat(decimals - s.length + 1) + s;
    s = s.slice(0, s.length - decimals) + '.' + s.slice(s.length - decimals);
  }
  return neg ? '-' + s : s;
}

/** A scaled integer as a float, for drawing. */
export function toFloat(value, decimals) {
  return Number(value) / 10 ** decimals;
}

/** Nanoseconds since the epoch, now (BigInt-free; precise to well under a microsecond). */
export function nowNs() {
  return (performance.timeOrigin + performance.now()) * 1e6;
}

/** Formats milliseconds for the latency panel. */
export function fmtMs(ms) {
  if (!Number.isFinite(ms)) return '—';
  if (ms < 1) return (ms * 1000).toFixed(0) + ' µs';
  if (ms < 100) return ms.toFixed(2) + ' ms';
  return ms.toFixed(0) + ' ms';
}

/** Histogram bucket edges in ms (log-spaced) of the panel's small histogram. */
export const HIST_EDGES = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

// Fine buckets for the percentiles: 0.01 ms · 1.04^i, i < 400 (up to ~6.6e4 ms), ±2 %.
const FINE = 400;
const FINE_BASE = 0.01;
const FINE_LOG = Math.log(1.04);
const fineIndex = (ms) => (ms <= FINE_BASE ? 0 : Math.min(FINE - 1, Math.floor(Math.log(ms / FINE_BASE) / FINE_LOG) + 1));
const fineValue = (i) => (i === 0 ? FINE_BASE : FINE_BASE * Math.pow(1.04, i - 0.5));

/**
 * Latency over a sliding time window, with constant cost per sample at any rate: the window is
 * cut into slots of 100 ms, each holding log-bucket counts of two series (now − exch_ts and
 * now − recv_ts, in ms) and a coarse histogram. Percentiles are read off the merged buckets.
 */
export class LatencyWindow {
  constructor(windowMs = 10_000, slotMs = 100) {
    this.slotMs = slotMs;
    this.slots = Math.ceil(windowMs / slotMs);
    this.ex = new Uint32Array(this.slots * FINE);
    this.rx = new Uint32Array(this.slots * FINE);
    this.coarse = new Uint32Array(this.slots * (HIST_EDGES.length + 1));
    this.stamp = new Float64Array(this.slots).fill(-1); // slot number each slot holds
  }
  slot(tMs) {
    const n = Math.floor(tMs / this.slotMs);
    const i = n % this.slots;
    if (this.stamp[i] !== n) {
      this.stamp[i] = n;
      this.ex.fill(0, i * FINE, (i + 1) * FINE);
      this.rx.fill(0, i * FINE, (i + 1) * FINE);
      const c = HIST_EDGES.length + 1;
      this.coarse.fill(0, i * c, (i + 1) * c);
    }
    return i;
  }
  add(tMs, exMs, rxMs) {
    const i = this.slot(tMs);
    this.ex[i * FINE + fineIndex(exMs)]++;
    if (Number.isFinite(rxMs)) this.rx[i * FINE + fineIndex(rxMs)]++;
    let b = 0;
    while (b < HIST_EDGES.length && exMs > HIST_EDGES[b]) b++;
    this.coarse[i * (HIST_EDGES.length + 1) + b]++;
  }
  /** {n, ex50, ex99, rx50, rx99, hist} over the window ending at `nowMs`. */
  stats(nowMs) {
    const now = Math.floor(nowMs / this.slotMs);
    const ex = new Float64Array(FINE), rx = new Float64Array(FINE);
    const nc = HIST_EDGES.length + 1;
    const hist = new Array(nc).fill(0);
    for (let i = 0; i < this.slots; i++) {
      const age = now - this.stamp[i];
      if (this.stamp[i] < 0 || age < 0 || age >= this.slots) continue;
      for (let k = 0; k < FINE; k++) {
        ex[k] += this.ex[i * FINE + k];
        rx[k] += this.rx[i * FINE + k];
      }
      for (let k = 0; k < nc; k++) hist[k] += this.coarse[i * nc + k];
    }
    const q = (a, p) => {
      let total = 0;
      for (let k = 0; k < FINE; k++) total += a[k];
      if (total === 0) return NaN;
      const want = Math.ceil(p * total);
      let acc = 0;
      for (let k = 0; k < FINE; k++) {
        acc += a[k];
        if (acc >= want) return fineValue(k);
      }
      return fineValue(FINE - 1);
    };
    const n = hist.reduce((a, b) => a + b, 0);
    return { n, ex50: q(ex, 0.5), ex99: q(ex, 0.99), rx50: q(rx, 0.5), rx99: q(rx, 0.99), hist };
  }
}
