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

/** Histogram bucket edges in ms (log-spaced), shared by the panel and its canvas. */
export const HIST_EDGES = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

/**
 * Latency samples over a sliding time window, in fixed-size ring buffers (no allocation per
 * sample). Two series: now − exch_ts and now − recv_ts, in milliseconds.
 */
export class LatencyWindow {
  constructor(windowMs = 10_000, capacity = 65_536) {
    this.windowMs = windowMs;
    this.cap = capacity;
    this.t = new Float64Array(capacity);
    this.ex = new Float64Array(capacity);
    this.rx = new Float64Array(capacity);
    this.head = 0; // next write
    this.len = 0;
  }
  add(tMs, exMs, rxMs) {
    this.t[this.head] = tMs;
    this.ex[this.head] = exMs;
    this.rx[this.head] = rxMs;
    this.head = (this.head + 1) % this.cap;
    if (this.len < this.cap) this.len++;
  }
  /** Drops samples older than the window; returns {n, ex50, ex99, rx50, rx99, hist}. */
  stats(nowMs) {
    const from = nowMs - this.windowMs;
    while (this.len > 0) {
      const tail = (this.head - this.len + this.cap) % this.cap;
      if (this.t[tail] >= from) break;
      this.len--;
    }
    const n = this.len;
    const ex = new Float64Array(n), rx = new Float64Array(n);
    const hist = new Array(HIST_EDGES.length + 1).fill(0);
    for (let i = 0; i < n; i++) {
      const j = (this.head - n + i + this.cap) % this.cap;
      ex[i] = this.ex[j];
      rx[i] = this.rx[j];
      let b = 0;
      while (b < HIST_EDGES.length && this.ex[j] > HIST_EDGES[b]) b++;
      hist[b]++;
    }
    ex.sort();
    rx.sort();
    const q = (a, p) => (a.length ? a[Math.min(a.length - 1, Math.floor(p * a.length))] : NaN);
    return { n, ex50: q(ex, 0.5), ex99: q(ex, 0.99), rx50: q(rx, 0.5), rx99: q(rx, 0.99), hist };
  }
}
