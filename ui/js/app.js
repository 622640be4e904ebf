// The tickcast trading screen: state applied as records arrive, drawing at most once per
// animation frame. Everything it knows of the wire comes from the client library through
// ./feed.js.
import { openFeed } from './feed.js';
import { fmtScaled, nowNs, fmtMs, LatencyWindow } from './util.js';
import { renderLadder } from './ladder.js';
import { drawDepth } from './depth.js';
import { drawHistogram } from './histogram.js';
import { whenResized } from './size.js';

const DEPTHS = [10, 25, 100];
const WATCH_DEPTH = 1; // the watchlist needs the best bid and offer only
const HIDDEN_MAX_HZ = 2; // book rate asked for while the tab is hidden
const TAPE_ROWS = 60;
const $ = (id) => document.getElementById(id);

// ---- state --------------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
const state = {
  meta: new Map(), // symbol → {px_decimals, qty_decimals}
  symbols: [], // names, in the server's order
  selected: params.get('symbol') || null,
  depth: DEPTHS.includes(Number(params.get('depth'))) ? Number(params.get('depth')) : 25,
  watch: [],
  books: new Map(), // symbol → the library's book view (read when drawing)
  last: new Map(), // symbol → last trade
  live: new Map(), // symbol → time (ms) of its last record
  stale: new Set(),
  conflating: new Set(),
  trades: [], // selected symbol's trades, newest first
  conn: { state: 'connecting', transport: '', retryAt: 0, resumed: null },
  hidden: document.visibilityState === 'hidden',
};
const lat = new LatencyWindow(10_000);
const dirty = { ladder: true, watch: true, tape: true, badge: true };
let frameQueued = false;
// Counters for tests and measurements (read by the browser tests, shown nowhere).
const probe = { frames: 0, records: 0, trades: 0, lastFrameMs: 0 };
window.__tickcast = { state, probe };

function markDirty(what) {
  dirty[what] = true;
  if (!frameQueued) {
    frameQueued = true;
    requestAnimationFrame(frame);
  }
}

// ---- connection ---------------------------------------------------------------------------

/** ws(s)://host/ws next to the page (`?ws=URL` overrides it, for development); `?token=` goes along. */
function wsUrl() {
  const override = params.get('ws');
  let u;
  if (override) {
    u = new URL(override, location.href);
  } else {
    u = new URL('ws', location.href); // the page at /  →  /ws
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    u.search = '';
    u.hash = '';
  }
  const token = params.get('token');
  if (token && !u.searchParams.has('token')) u.searchParams.set('token', token);
  return u.toString();
}

const feed = openFeed({
  url: wsUrl(),
  onState(s) {
    Object.assign(state.conn, s);
    if (s.resumed) state.conn.resumedAt = Date.now();
    if (s.state !== 'open') state.conflating.clear();
    markDirty('badge');
    markDirty('ladder');
  },
  onInfo(infos) {
    for (const i of infos) {
      if (!state.meta.has(i.symbol)) {
        state.meta.set(i.symbol, { symbol: i.symbol, px_decimals: i.pxDecimals, qty_decimals: i.qtyDecimals });
        markDirty('ladder');
        markDirty('watch');
      }
    }
  },
  onError(e) {
    const text = e && (e.message || e.code) ? `${e.code ? e.code + ': ' : ''}${e.message || ''}` : String(e);
    $('status-line').textContent = text;
  },
  onBook(symbol, view, snapshot, exchNs, recvNs) {
    state.books.set(symbol, view);
    // A snapshot's timestamps are those of the book's last change, which may be long ago:
    // latency is sampled on deltas and trades only.
    if (snapshot) state.live.set(symbol, Date.now());
    else sample(symbol, exchNs, recvNs);
    if (symbol === state.selected) markDirty('ladder');
    markDirty('watch');
  },
  onTrade(symbol, t) {
    state.last.set(symbol, t);
    sample(symbol, t.exchNs, t.recvNs);
    probe.trades++;
    if (symbol === state.selected) {
      state.trades.unshift(t);
      if (state.trades.length > TAPE_ROWS) state.trades.length = TAPE_ROWS;
      markDirty('tape');
    }
    markDirty('watch');
  },
  onStatus(symbol, code) {
    if (code === 1) state.stale.add(symbol);
    else if (code === 2) state.stale.delete(symbol);
    markDirty('badge');
    markDirty('watch');
    if (symbol === state.selected) markDirty('ladder');
  },
  onConflating(symbols, on) {
    for (const s of symbols) on ? state.conflating.add(s) : state.conflating.delete(s);
    markDirty('badge');
  },
});

window.__tickcast.feed = feed;

function sample(symbol, exchNs, recvNs) {
  probe.records++;
  const now = nowNs();
  const nowMs = now / 1e6;
  state.live.set(symbol, Date.now());
  if (exchNs > 0) lat.add(nowMs, (now - exchNs) / 1e6, recvNs > 0 ? (now - recvNs) / 1e6 : NaN);
}

/**
 * The symbol list comes from the `symbols` op. When it cannot be had (the library has no call
 * for it, and the screen's own WebSocket for it may be refused where the library fell back to
 * /stream or /sse), the screen goes on with the symbols it was asked for (URL, saved watchlist,
 * or BTC-USD), learns their decimals from the subscribe replies, and keeps asking in the
 * background to fill the picker.
 */
async function loadSymbols() {
  let list = null;
  for (let i = 0; i < 3 && !list; i++) {
    try {
      list = await feed.symbols();
    } catch (e) {
      $('status-line').textContent = String(e && e.message ? e.message : e);
      await new Promise((r) => setTimeout(r, 300 * 2 ** i));
    }
  }
  if (list) {
    $('status-line').textContent = '';
    setSymbols(list, true);
    return;
  }
  setSymbols(wantedNames().map((symbol) => ({ symbol })), false);
  $('status-line').textContent = 'the symbol list is unavailable: showing the symbols asked for (?symbol=, ?watch=)';
  for (let wait = 2000; !list; wait = Math.min(wait * 2, 30_000)) {
    await new Promise((r) => setTimeout(r, wait));
    try { list = await feed.symbols(); } catch { /* not yet */ }
  }
  $('status-line').textContent = '';
  setSymbols(list, true);
}

let symbolsKnown = false; // the server's list (not just the names asked for)
function setSymbols(list, known) {
  if (symbolsKnown) return;
  symbolsKnown = known;
  state.symbols = list.map((s) => s.symbol);
  for (const s of list) if (s.px_decimals !== undefined) state.meta.set(s.symbol, s);
  const names = new Set(state.symbols);
  initWatch(names);
  if (!state.selected || !names.has(state.selected)) state.selected = state.watch[0] || null;
  if (state.selected && !state.watch.includes(state.selected)) state.watch.unshift(state.selected);
  resubscribe();
  writeUrl();
  buildWatch();
  markDirty('ladder');
}

/** Symbols named by the URL or the saved watchlist, for when the server's list is unknown. */
function wantedNames() {
  const out = [];
  if (state.selected) out.push(state.selected);
  for (const s of savedWatch()) if (!out.includes(s)) out.push(s);
  if (out.length === 0) out.push('BTC-USD');
  return out;
}

function savedWatch() {
  const fromUrl = params.get('watch');
  try {
    return (fromUrl ? fromUrl.split(',') : JSON.parse(localStorage.getItem('tickcast.watch') || '[]'))
      .filter((s) => typeof s === 'string' && s);
  } catch {
    return [];
  }
}

function initWatch(names) {
  state.watch = savedWatch().filter((s) => names.has(s));
  if (state.watch.length === 0) state.watch = state.symbols.slice(0, 8);
}

function saveWatch() {
  try { localStorage.setItem('tickcast.watch', JSON.stringify(state.watch)); } catch { /* private mode */ }
}

/** What the screen wants: the selected symbol at the ladder's depth, the others at depth 1. */
function resubscribe() {
  const want = new Map();
  for (const s of state.watch) want.set(s, WATCH_DEPTH);
  if (state.selected) want.set(state.selected, state.depth);
  feed.want(want, state.hidden ? HIDDEN_MAX_HZ : 0);
}

document.addEventListener('visibilitychange', () => {
  state.hidden = document.visibilityState === 'hidden';
  resubscribe();
});

// ---- selection, URL, keyboard ---------------------------------------------------------------

function writeUrl() {
  const p = new URLSearchParams(location.search);
  if (state.selected) p.set('symbol', state.selected);
  p.set('depth', String(state.depth));
  const next = `${location.pathname}?${p.toString().replace(/%2C/g, ',')}`;
  if (next !== location.pathname + location.search) history.replaceState(null, '', next);
}

function select(symbol) {
  if (!state.symbols.includes(symbol) || symbol === state.selected) return;
  state.selected = symbol;
  if (!state.watch.includes(symbol)) {
    state.watch.push(symbol);
    saveWatch();
    buildWatch();
  }
  state.trades = [];
  resubscribe();
  writeUrl();
  markDirty('ladder');
  markDirty('tape');
  markDirty('watch');
}

function setDepth(d) {
  if (!DEPTHS.includes(d) || d === state.depth) return;
  state.depth = d;
  resubscribe();
  writeUrl();
  markDirty('ladder');
}

function moveSelection(step) {
  if (state.watch.length === 0) return;
  const i = state.watch.indexOf(state.selected);
  const j = i < 0 ? 0 : (i + step + state.watch.length) % state.watch.length;
  select(state.watch[j]);
}

function unwatch(symbol) {
  if (state.watch.length <= 1) return;
  const i = state.watch.indexOf(symbol);
  if (i < 0) return;
  state.watch.splice(i, 1);
  saveWatch();
  if (symbol === state.selected) {
    state.selected = null;
    select(state.watch[Math.min(i, state.watch.length - 1)]);
  } else {
    resubscribe();
  }
  buildWatch();
}

document.addEventListener('keydown', (e) => {
  if (e.target === search || e.altKey || e.ctrlKey || e.metaKey) return;
  switch (e.key) {
    case 'ArrowDown': case 'j': moveSelection(1); break;
    case 'ArrowUp': case 'k': moveSelection(-1); break;
    case '/': search.focus(); break;
    case '1': setDepth(10); break;
    case '2': setDepth(25); break;
    case '3': setDepth(100); break;
    default: return;
  }
  e.preventDefault();
});

for (const b of document.querySelectorAll('.depth-pick button')) {
  b.addEventListener('click', () => setDepth(Number(b.dataset.depth)));
}

// Symbol picker: substring search over the `symbols` list; Enter selects (and watches).
const search = $('search');
const results = $('search-results');
let hits = [];
let hit = 0;
function showResults() {
  const q = search.value.trim().toUpperCase();
  hits = q ? state.symbols.filter((s) => s.includes(q)).slice(0, 50) : [];
  hit = 0;
  results.replaceChildren(...hits.map((s, i) => {
    const li = document.createElement('li');
    li.setAttribute('role', 'option');
    li.dataset.symbol = s;
    li.setAttribute('aria-selected', String(i === hit));
    li.innerHTML = `<span></span><span class="in">${state.watch.includes(s) ? 'watching' : ''}</span>`;
    li.firstChild.textContent = s;
    li.addEventListener('mousedown', (ev) => { ev.preventDefault(); pick(s); });
    return li;
  }));
  results.hidden = hits.length === 0;
}
function pick(s) {
  search.value = '';
  results.hidden = true;
  search.blur();
  select(s);
}
search.addEventListener('input', showResults);
search.addEventListener('blur', () => { results.hidden = true; });
search.addEventListener('keydown', (e) => {
  if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
    if (!hits.length) return;
    hit = (hit + (e.key === 'ArrowDown' ? 1 : -1) + hits.length) % hits.length;
    results.querySelectorAll('li').forEach((li, i) => li.setAttribute('aria-selected', String(i === hit)));
    results.children[hit]?.scrollIntoView({ block: 'nearest' });
    e.preventDefault();
  } else if (e.key === 'Enter') {
    if (hits[hit]) pick(hits[hit]);
    e.preventDefault();
  } else if (e.key === 'Escape') {
    search.value = '';
    results.hidden = true;
    search.blur();
  }
});

// ---- drawing: once per animation frame, only what changed -----------------------------------

const watchRows = new Map(); // symbol → {tr, cells}
function buildWatch() {
  const body = $('watchlist').tBodies[0];
  watchRows.clear();
  watchSel = null;
  body.replaceChildren(...state.watch.map((s) => {
    const tr = document.createElement('tr');
    tr.dataset.symbol = s;
    tr.innerHTML = '<td></td><td class="bid"></td><td class="ask"></td><td></td><td></td><td class="live"><i></i> <span class="rm" title="remove">×</span></td>';
    tr.cells[0].textContent = s;
    tr.addEventListener('click', (e) => {
      if (e.target.classList.contains('rm')) unwatch(s);
      else select(s);
    });
    watchRows.set(s, { tr, c: tr.cells, dot: tr.querySelector('.live i'), prev: [] });
    return tr;
  }));
  markDirty('watch');
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

let watchSel = null;
function drawWatch(nowMs) {
  for (const [s, row] of watchRows) {
    const m = state.meta.get(s);
    const b = state.books.get(s);
    const sel = s === state.selected;
    row.tr.classList.toggle('sel', sel);
    if (sel && watchSel !== s) {
      watchSel = s;
      row.tr.scrollIntoView({ block: 'nearest' });
    }
    if (!m) continue;
    const bid = b && b.synced && b.bidCount ? b.bidPrice(0) : null;
    const ask = b && b.synced && b.askCount ? b.askPrice(0) : null;
    setText(row.c[1], bid === null ? '—' : fmtScaled(bid, m.px_decimals));
    setText(row.c[2], ask === null ? '—' : fmtScaled(ask, m.px_decimals));
    setText(row.c[3], bid === null || ask === null ? '—' : fmtScaled(ask - bid, m.px_decimals));
    const t = state.last.get(s);
    setText(row.c[4], t ? t.priceText : '—');
    row.c[4].className = t ? (t.side === 'buy' ? 'bid' : 'ask') : '';
    const seen = state.live.get(s) || 0;
    const stale = state.stale.has(s);
    // A stale row's prices are the last the exchange sent: dimmed like the ladder, not bright.
    row.tr.classList.toggle('stale', stale);
    row.dot.className = stale ? 'stale' : nowMs - seen < 2000 ? 'on' : '';
  }
}

const ladderEl = $('ladder');
let centred = '';
const ladderView = { bids: [], asks: [], prev: { bids: new Map(), asks: new Map() }, symbol: null, depth: 0 };
function drawLadder() {
  const s = state.selected;
  const m = s && state.meta.get(s);
  setText($('ladder-title'), s || '—');
  const b = s ? state.books.get(s) : null;
  // The book shown must be the one at the chosen depth (a depth-1 view of the watchlist may
  // still be current right after a switch).
  // While a resubscribe or reconnect is under way the last book stays, dimmed.
  // (`valid`: the book holds a snapshot's content; BookView promises `synced` only.)
  const ok = b && m && (b.synced || b.valid === true) && b.depth === state.depth;
  if (!ok) {
    ladderEl.classList.remove('stale');
    ladderEl.dataset.stale = '';
    $('depth').classList.remove('stale');
    renderLadder(ladderEl, ladderView, null, m, state.depth, s);
    ladderEl.dataset.seq = '';
    ladderEl.dataset.symbol = s || '';
    ladderEl.dataset.depth = String(state.depth);
    setText($('mid'), '—');
    setText($('spread-val'), '');
    setText($('ladder-meta'), `depth ${state.depth}`);
    return null;
  }
  renderLadder(ladderEl, ladderView, b, m, state.depth, s);
  ladderEl.dataset.seq = String(b.seq);
  ladderEl.classList.toggle('unsynced', !b.synced || state.conn.state !== 'open');
  // The feed for this symbol is stale (status 1): the book is the last one the exchange sent,
  // kept on screen but dimmed with the depth chart so nobody trades off it by mistake.
  const stale = state.stale.has(s);
  ladderEl.classList.toggle('stale', stale);
  ladderEl.dataset.stale = stale ? '1' : '';
  $('depth').classList.toggle('stale', stale);
  ladderEl.dataset.symbol = s;
  ladderEl.dataset.depth = String(state.depth);
  if (b.bidCount && b.askCount) {
    const bid = b.bidPrice(0);
    const ask = b.askPrice(0);
    // mid = (bid + ask) / 2, one more decimal so it stays exact
    setText($('mid'), fmtScaled((bid + ask) * 5, m.px_decimals + 1));
    const spread = ask - bid;
    const bps = spread / (bid + ask) * 2e4;
    setText($('spread-val'), `spread ${fmtScaled(spread, m.px_decimals)} (${bps >= 1 ? bps.toFixed(1) : bps.toPrecision(2)} bp)`);
  } else {
    setText($('mid'), '—');
    setText($('spread-val'), '');
  }
  setText($('ladder-meta'), `depth ${state.depth} · seq ${b.seq}`);
  // A new symbol or depth: centre the spread in view once.
  const key = `${s}|${state.depth}`;
  if (centred !== key && b.bidCount && b.askCount) {
    centred = key;
    const sp = $('spread');
    ladderEl.scrollTop = sp.offsetTop - ladderEl.offsetTop - (ladderEl.clientHeight - sp.offsetHeight) / 2;
  }
  return b;
}

/** Local time of day with milliseconds: 17:25:07.808. */
function clock(ms) {
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

const tapeEl = $('tape');
let tapeSymbol = null;
let tapeTop = null; // the newest trade shown
/** New trades go in at the top and old ones drop off the bottom: no row is rewritten. */
function drawTape() {
  const s = state.selected;
  if (tapeSymbol !== s) {
    tapeSymbol = s;
    tapeTop = null;
    tapeEl.replaceChildren();
    // Shown by CSS while the tape is empty: a quiet symbol is not a broken screen.
    tapeEl.dataset.empty = s ? `No trades in ${s} since you opened it` : 'Pick a symbol';
  }
  let n = 0;
  while (n < state.trades.length && state.trades[n] !== tapeTop) n++;
  if (n === 0) return;
  const frag = document.createDocumentFragment();
  for (let i = 0; i < n && i < TAPE_ROWS; i++) {
    const t = state.trades[i];
    const row = document.createElement('div');
    row.className = 't ' + t.side;
    row.dataset.side = t.side;
    const time = document.createElement('span');
    time.textContent = clock(t.exchNs / 1e6);
    const px = document.createElement('span');
    px.textContent = t.priceText;
    const qty = document.createElement('span');
    qty.textContent = t.qtyText;
    row.append(time, px, qty);
    frag.appendChild(row);
  }
  tapeTop = state.trades[0];
  tapeEl.prepend(frag);
  while (tapeEl.childElementCount > TAPE_ROWS) tapeEl.lastElementChild.remove();
}

function drawBadge(nowMs) {
  const c = state.conn;
  let st, text;
  if (c.state === 'open') {
    if (state.conflating.size) { st = 'conflating'; text = 'conflating'; }
    else if (c.resumed && nowMs - (c.resumedAt || 0) < 10_000) { st = 'resumed'; text = 'connected · resumed'; }
    else { st = 'connected'; text = 'connected'; }
  } else if (c.state === 'reconnecting') {
    const secs = Math.max(0, Math.ceil((c.retryAt - nowMs) / 1000));
    st = 'reconnecting';
    text = secs > 0 ? `reconnecting in ${secs} s` : 'reconnecting…';
  } else if (c.state === 'closed') {
    st = 'closed'; text = c.reason ? `closed: ${c.reason}` : 'closed';
  } else {
    st = 'connecting'; text = 'connecting';
  }
  const stale = [...state.stale];
  if (stale.length && c.state === 'open') {
    st = 'stale';
    text += ` · feed stale: ${stale.slice(0, 3).join(', ')}${stale.length > 3 ? ` +${stale.length - 3}` : ''}`;
  }
  const badge = $('badge');
  if (badge.dataset.state !== st) badge.dataset.state = st;
  setText($('badge-text'), text);
  setText($('badge-transport'), c.transport || '');
  // A countdown needs redrawing while it runs.
  return c.state === 'reconnecting';
}

let latAt = 0;
let latHist = null;
function drawLatency(nowMs) {
  if (nowMs - latAt < 250) return;
  latAt = nowMs;
  const s = lat.stats(Date.now());
  setText($('lat-ex-50'), fmtMs(s.ex50));
  setText($('lat-ex-99'), fmtMs(s.ex99));
  setText($('lat-rx-50'), fmtMs(s.rx50));
  setText($('lat-rx-99'), fmtMs(s.rx99));
  setText($('lat-n'), String(s.n));
  latHist = s.hist;
  drawHistogram($('lat-hist'), latHist);
}

for (const b of document.querySelectorAll('.depth-pick button')) {
  b.classList.toggle('on', Number(b.dataset.depth) === state.depth);
}

function frame(ts) {
  frameQueued = false;
  probe.frames++;
  probe.lastFrameMs = ts;
  const nowMs = performance.now();
  if (dirty.ladder) {
    dirty.ladder = false;
    const b = drawLadder();
    for (const btn of document.querySelectorAll('.depth-pick button')) {
      btn.classList.toggle('on', Number(btn.dataset.depth) === state.depth);
    }
    drawDepth($('depth'), b, state.meta.get(state.selected));
  }
  if (dirty.watch) { dirty.watch = false; drawWatch(Date.now()); }
  if (dirty.tape) { dirty.tape = false; drawTape(); }
  if (dirty.badge) { dirty.badge = false; if (drawBadge(Date.now())) setTimeout(() => markDirty('badge'), 250); }
  drawLatency(nowMs);
}

// Slow things (liveness dots, latency figures, countdowns) refresh on a timer, not per record.
setInterval(() => { markDirty('watch'); markDirty('badge'); }, 500);
whenResized(() => { latAt = 0; markDirty('ladder'); });
markDirty('badge');
loadSymbols();
