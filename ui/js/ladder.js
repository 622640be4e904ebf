// The ladder: one DOM row per level, reused from frame to frame; text is only rewritten where a
// level changed, and changed levels flash (Web Animations, no forced layout).
import { fmtScaled } from './util.js';

// Opacity of an overlay only: the compositor runs it, the main thread does no style work per frame.
const FLASH = [{ opacity: 1 }, { opacity: 0 }];
const FLASH_OPTS = { duration: 400, easing: 'ease-out' };

function makeRow(side) {
  const el = document.createElement('div');
  el.className = 'row';
  el.dataset.side = side;
  el.innerHTML = '<i class="bar"></i><b class="fl"></b><span class="px"></span><span class="qty"></span><span class="cum"></span>';
  return { el, bar: el.children[0], fl: el.children[1], px: el.children[2], qty: el.children[3], cum: el.children[4], rp: null, rq: null, w: '', anim: null };
}

function sideRows(view, key, parent, n, side) {
  const rows = view[key];
  while (rows.length < n) {
    const r = makeRow(side);
    parent.appendChild(r.el);
    rows.push(r);
  }
  while (rows.length > n) rows.pop().el.remove();
  return rows;
}

/**
 * Draws `book` (the client library's BookView: scaled integers, best first) into the ladder
 * element. `view` holds the rows between calls. A null book empties the ladder.
 */
export function renderLadder(root, view, book, meta, depth, symbol) {
  const asksEl = root.querySelector('#asks');
  const bidsEl = root.querySelector('#bids');
  const fresh = view.symbol !== symbol || view.depth !== depth;
  view.symbol = symbol;
  view.depth = depth;
  if (!book || !meta) {
    sideRows(view, 'bids', bidsEl, 0, 'bid');
    sideRows(view, 'asks', asksEl, 0, 'ask');
    view.prev.bids.clear();
    view.prev.asks.clear();
    return;
  }
  const nb = Math.min(book.bidCount, depth);
  const na = Math.min(book.askCount, depth);
  // Cumulative sizes, as floats for the bars only.
  let tb = 0, ta = 0;
  const scale = 10 ** meta.qty_decimals;
  const cumB = new Float64Array(nb), cumA = new Float64Array(na);
  for (let i = 0; i < nb; i++) cumB[i] = tb += book.bidQty(i) / scale;
  for (let i = 0; i < na; i++) cumA[i] = ta += book.askQty(i) / scale;
  const max = Math.max(tb, ta) || 1;
  const cumDigits = Math.min(meta.qty_decimals, 4);
  fill(sideRows(view, 'bids', bidsEl, nb, 'bid'), (i) => book.bidPrice(i), (i) => book.bidQty(i), cumB, view.prev.bids);
  fill(sideRows(view, 'asks', asksEl, na, 'ask'), (i) => book.askPrice(i), (i) => book.askQty(i), cumA, view.prev.asks);

  function fill(rows, priceAt, qtyAt, cum, prev) {
    const seen = fresh ? null : prev;
    const next = new Map();
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      const p = priceAt(i);
      const q = qtyAt(i);
      const key = p;
      next.set(key, q);
      if (r.rp !== p) {
        r.rp = p;
        const s = fmtScaled(p, meta.px_decimals);
        r.el.dataset.price = s;
        r.px.textContent = s;
      }
      if (r.rq !== q) {
        r.rq = q;
        const s = fmtScaled(q, meta.qty_decimals);
        r.el.dataset.qty = s;
        r.qty.textContent = s;
      }
      if (seen && seen.get(key) !== q) {
        // One flash at a time per row: a busy level restarts its flash rather than stacking them.
        if (r.anim && r.anim.playState === 'running') r.anim.currentTime = 0;
        else r.anim = r.fl.animate(FLASH, FLASH_OPTS);
      }
      const c = cum[i].toFixed(cumDigits);
      if (r.cum.textContent !== c) r.cum.textContent = c;
      // Bars scale (a transform: no layout) rather than change width.
      const w = (cum[i] / max).toFixed(3);
      if (r.w !== w) { r.w = w; r.bar.style.transform = `scaleX(${w})`; }
    }
    prev.clear();
    for (const [k, v] of next) prev.set(k, v);
  }
}
