// The screen's one door to the wire: the tickcast client library (clients/js). It turns the
// library's events into the few calls app.js needs and keeps the subscription in line with what
// the screen wants (symbol → depth).
import { TickcastClient } from 'tickcast-client';

/**
 * Lists the server's symbols with the `symbols` op before the screen's client connects (the
 * library's `symbols()` needs its connection open, and the screen wants the list first, even
 * when the feed connection is being retried): a short-lived WebSocket of its own (format=json,
 * same URL and token) asks and closes.
 */
function listSymbols(url, timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    u.searchParams.set('format', 'json');
    const ws = new WebSocket(u.toString());
    let settled = false;
    const done = (f, v) => {
      if (settled) return;
      settled = true;
      clearTimeout(t);
      try { ws.close(1000); } catch { /* closing */ }
      f(v);
    };
    const t = setTimeout(() => done(reject, new Error('symbols: no answer')), timeoutMs);
    ws.onopen = () => ws.send(JSON.stringify({ op: 'symbols', id: 1 }));
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string' || ev.data[0] !== '{') return;
      const m = JSON.parse(ev.data);
      if (m.op === 'symbols') done(resolve, m.symbols);
      else if (m.op === 'error') done(reject, new Error(`${m.code}: ${m.message}`));
    };
    ws.onerror = () => done(reject, new Error('symbols: connection failed'));
    ws.onclose = (ev) => done(reject, new Error(`symbols: closed (${ev.code})`));
  });
}

/**
 * Opens the client. `h` receives:
 *   onState({state: 'connecting'|'open'|'reconnecting'|'closed', transport, retryAt, resumed, reason})
 *   onBook(symbol, bookView, snapshot, exchNs, recvNs)   after every applied book record
 *   onTrade(symbol, {price, qty, priceText, qtyText, side, id, exchNs, recvNs})
 *   onStatus(symbol, code)                        1 feed stale, 2 feed resumed
 *   onConflating(symbols, on)
 *   onInfo([{symbol, pxDecimals, qtyDecimals}])  from subscribe replies
 *   onError(error)
 */
export function openFeed(h) {
  const u = new URL(h.url);
  const token = u.searchParams.get('token') || undefined;
  u.searchParams.delete('token');
  // Options are kept by reference by the client, which reads maxHz when it (re)subscribes.
  const options = { endpoints: [u.toString()], token, maxHz: undefined };
  const client = new TickcastClient(options);
  let everOpen = false;
  let transport = '';

  client.on('state', (ev) => {
    // The transport shown is the one last established, not each one tried while reconnecting.
    if (ev.state === 'open' || ev.state === 'subscribed') transport = ev.transport;
    switch (ev.state) {
      case 'connecting':
        // A connection attempt after a lost one is still "reconnecting" to the person watching.
        h.onState({ state: everOpen ? 'reconnecting' : 'connecting', transport, retryAt: 0 });
        break;
      case 'open':
        h.onState({ state: 'open', transport, resumed: null });
        break;
      case 'subscribed':
        everOpen = true;
        h.onState({ state: 'open', transport, resumed: ev.resumed });
        break;
      case 'reconnecting':
        h.onState({ state: 'reconnecting', transport, retryAt: Date.now() + ev.delayMs, reason: ev.reason });
        break;
      case 'closed':
        h.onState({ state: 'closed', transport, reason: ev.reason });
        break;
      default:
        break;
    }
  });
  client.on('book', (ev) => h.onBook(ev.symbol, ev.book, ev.snapshot, Number(ev.exchTs), Number(ev.recvTs)));
  client.on('trade', (ev) => h.onTrade(ev.symbol, {
    price: ev.price,
    qty: ev.qty,
    priceText: ev.priceText,
    qtyText: ev.qtyText,
    side: ev.side,
    id: String(ev.tradeId),
    exchNs: Number(ev.exchTs),
    recvNs: Number(ev.recvTs),
  }));
  client.on('status', (ev) => h.onStatus(ev.symbol, ev.code));
  client.on('control', (m) => {
    if (m.op === 'conflating' && Array.isArray(m.symbols)) h.onConflating(m.symbols, true);
    else if (m.op === 'live' && Array.isArray(m.symbols)) h.onConflating(m.symbols, false);
  });
  client.on('error', (ev) => h.onError?.(ev));
  client.connect();

  // What is subscribed now: symbol → depth.
  const have = new Map();
  let haveHz = undefined;

  return {
    client,
    /** The server's symbols: [{symbol, sid, px_decimals, qty_decimals}] (one try). */
    symbols() {
      return listSymbols(h.url);
    },
    /** Makes the subscription `want` (symbol → depth); maxHz > 0 asks for conflated books. */
    want(want, maxHz) {
      const hz = maxHz > 0 ? maxHz : undefined;
      const all = hz !== haveHz; // a new rate applies to every symbol
      haveHz = hz;
      options.maxHz = hz;
      const gone = [...have.keys()].filter((s) => !want.has(s));
      if (gone.length) client.unsubscribe(gone);
      for (const s of gone) have.delete(s);
      const byDepth = new Map();
      for (const [s, d] of want) {
        if (!all && have.get(s) === d) continue;
        have.set(s, d);
        if (!byDepth.has(d)) byDepth.set(d, []);
        byDepth.get(d).push(s);
      }
      for (const [d, syms] of byDepth) {
        client.subscribe(syms, { depth: d, channels: ['book', 'trades'] })
          .then((infos) => h.onInfo?.(infos))
          .catch((e) => h.onError?.(e));
      }
    },
  };
}
