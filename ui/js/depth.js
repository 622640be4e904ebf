// The depth chart: cumulative bids (left) and asks (right) around the mid, on a canvas.
import { toFloat } from './util.js';
import { fitCanvas } from './size.js';

export function drawDepth(canvas, book, meta) {
  const { w, h, dpr } = fitCanvas(canvas);
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, w, h);
  if (!book || !meta || !book.bidCount || !book.askCount) {
    g.fillStyle = '#7d8896';
    g.font = `${12 * dpr}px system-ui, sans-serif`;
    g.fillText('waiting for the book…', 10 * dpr, 20 * dpr);
    return;
  }
  const pd = meta.px_decimals, qd = meta.qty_decimals;
  const bids = [], asks = [];
  for (let i = 0; i < book.bidCount; i++) bids.push([toFloat(book.bidPrice(i), pd), toFloat(book.bidQty(i), qd)]);
  for (let i = 0; i < book.askCount; i++) asks.push([toFloat(book.askPrice(i), pd), toFloat(book.askQty(i), qd)]);
  const mid = (bids[0][0] + asks[0][0]) / 2;
  // Symmetric range around the mid: the farther of the two sides' last levels.
  const half = Math.max(mid - bids[bids.length - 1][0], asks[asks.length - 1][0] - mid) || mid * 0.001;
  const lo = mid - half, hi = mid + half;
  let cb = 0, ca = 0;
  const cumB = bids.map(([p, q]) => [p, (cb += q)]);
  const cumA = asks.map(([p, q]) => [p, (ca += q)]);
  const maxQ = Math.max(cb, ca) || 1;
  const padB = 16 * dpr, padT = 6 * dpr;
  const x = (p) => ((p - lo) / (hi - lo)) * w;
  const y = (q) => h - padB - (q / maxQ) * (h - padB - padT);

  function area(points, stroke, fill, dir) {
    g.beginPath();
    g.moveTo(x(points[0][0]), y(0));
    let prevQ = 0;
    for (const [p, q] of points) {
      g.lineTo(x(p), y(prevQ));
      g.lineTo(x(p), y(q));
      prevQ = q;
    }
    const edge = dir < 0 ? lo : hi;
    g.lineTo(x(edge), y(prevQ));
    g.lineTo(x(edge), y(0));
    g.closePath();
    g.fillStyle = fill;
    g.fill();
    g.strokeStyle = stroke;
    g.lineWidth = 1.5 * dpr;
    g.stroke();
  }
  area(cumB, '#2fbf71', 'rgba(47,191,113,0.18)', -1);
  area(cumA, '#f0565a', 'rgba(240,86,90,0.18)', 1);
  // mid line and axis labels
  g.strokeStyle = '#58a6ff';
  g.setLineDash([4 * dpr, 4 * dpr]);
  g.lineWidth = 1 * dpr;
  g.beginPath();
  g.moveTo(x(mid), padT);
  g.lineTo(x(mid), h - padB);
  g.stroke();
  g.setLineDash([]);
  g.fillStyle = '#7d8896';
  g.font = `${11 * dpr}px ui-monospace, monospace`;
  g.textBaseline = 'bottom';
  g.textAlign = 'left';
  g.fillText(lo.toFixed(pd), 2 * dpr, h - 2 * dpr);
  g.textAlign = 'center';
  g.fillText(mid.toFixed(pd + 1), w / 2, h - 2 * dpr);
  g.textAlign = 'right';
  g.fillText(hi.toFixed(pd), w - 2 * dpr, h - 2 * dpr);
  g.textAlign = 'left';
  g.textBaseline = 'top';
  g.fillText(`max ${maxQ.toFixed(Math.min(qd, 3))}`, 4 * dpr, padT);
}
