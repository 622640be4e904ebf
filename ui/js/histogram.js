// The latency histogram: samples of now − exch_ts over the last 10 s, log-spaced buckets.
import { HIST_EDGES } from './util.js';
import { fitCanvas } from './size.js';

const LABELS = [...HIST_EDGES.map((e) => '≤' + (e < 1 ? `${e * 1000}µs` : e >= 1000 ? `${e / 1000}s` : `${e}ms`)), '>1s'];

export function drawHistogram(canvas, hist) {
  const { w, h, dpr } = fitCanvas(canvas);
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, w, h);
  if (!hist) return;
  const max = Math.max(1, ...hist);
  const n = hist.length;
  const padB = 14 * dpr;
  const bw = w / n;
  g.font = `${9 * dpr}px ui-monospace, monospace`;
  g.textAlign = 'center';
  g.textBaseline = 'bottom';
  for (let i = 0; i < n; i++) {
    const bh = (hist[i] / max) * (h - padB - 2 * dpr);
    g.fillStyle = '#58a6ff';
    g.fillRect(i * bw + 1 * dpr, h - padB - bh, bw - 2 * dpr, bh);
    if (i % 2 === 1) {
      g.fillStyle = '#7d8896';
      g.fillText(LABELS[i], i * bw + bw / 2, h);
    }
  }
}
