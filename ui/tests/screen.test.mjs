// The trading screen in Debian's chromium against the real daemon and feed-sim: the ladder equals
// the simulator's truth once it stops, keyboard navigation, the daemon killed and restarted, no
// console errors. Screenshots go to ui/tests/screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtemp, writeFile } from 'node:fs/promises';
import {
  startFeedSim, startDaemon, startStatic, launchBrowser, pageUrl, watchConsole, readLadder,
  truth, kill, killAll, until, sleep, httpGet, SCREENSHOTS, SERVED_BY_DAEMON,
} from './harness.mjs';

const UPDATES = 16000; // 8 s of order flow at 2,000 updates/s
// The daemon requires an access token: the page must pass ?token= on to its connections.
const TOKEN = 'ui-test-token';
let tokensFile;
let sim, daemon, stat, browser, page, errors;
// The browser itself logs refused connections (the WebSocket, the library's /stream and /sse
// fallbacks) while the daemon is down: expected then, and nowhere else.
const allowed = [];
let outage = false;
const REFUSED = /ERR_CONNECTION_REFUSED|WebSocket connection to .* failed/;

before(async () => {
  browser = await launchBrowser(); // first: the simulator's order flow is for the page
  sim = await startFeedSim({ symbols: 8, rate: 2000, updates: UPDATES });
  tokensFile = path.join(await mkdtemp(path.join(os.tmpdir(), 'tickcast-ui-')), 'tokens');
  await writeFile(tokensFile, `${TOKEN}\n`);
  daemon = await startDaemon({ feed: sim.feed, tokensFile });
  stat = await startStatic({ wsPort: () => daemon.port });
  page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
  errors = watchConsole(page, (e) => {
    if (outage && REFUSED.test(e)) {
      allowed.push(e);
      return false;
    }
    return true;
  });
}, { timeout: 90_000 });

after(async () => {
  await browser?.close().catch(() => {});
  await stat?.close();
  await killAll();
});

/** Waits until the simulator has stopped changing books: seq unchanged over half a second. */
async function simStopped(symbol) {
  let last = null;
  await until('feed-sim to stop', async () => {
    const t = await truth(sim, symbol);
    const same = last !== null && t.seq === last;
    last = t.seq;
    return same;
  }, 60_000, 500);
}

/** Waits until the ladder shows `symbol` at `depth` and equals the truth's top levels. */
async function ladderEqualsTruth(symbol, depth, ms = 20_000) {
  let l, want;
  try {
    await until(`ladder of ${symbol} at depth ${depth} to equal GET /book`, async () => {
      const t = await truth(sim, symbol);
      want = { bids: t.bids.slice(0, depth), asks: t.asks.slice(0, depth) };
      l = await readLadder(page);
      return l.symbol === symbol && l.depth === String(depth) && l.seq !== ''
        && JSON.stringify(l.bids) === JSON.stringify(want.bids)
        && JSON.stringify(l.asks) === JSON.stringify(want.asks);
    }, ms, 200);
  } catch (e) {
    assert.deepEqual({ symbol: l?.symbol, depth: l?.depth, bids: l?.bids, asks: l?.asks },
      { symbol, depth: String(depth), ...want }, e.message);
  }
  return l;
}

const shot = (name) => page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
const badge = () => page.evaluate(() => ({
  state: document.getElementById('badge').dataset.state,
  text: document.getElementById('badge-text').textContent,
}));

test('the ladder equals GET /book truth once the simulator stops', { timeout: 90_000 }, async () => {
  await page.goto(pageUrl(stat.base, daemon, { symbol: 'BTC-USD', depth: '25', token: TOKEN }));
  // Live first: the ladder fills while the simulator runs.
  await until('ladder rows', async () => (await readLadder(page)).bids.length > 0, 20_000);
  // Deltas and trades applied as they come (not only snapshots).
  await until('live records', async () => (await page.evaluate(() => window.__tickcast.probe.records)) > 200, 10_000);
  await sleep(1000);
  await shot('live'); // docs/screenshot.png is this one
  await simStopped('BTC-USD');
  const l = await ladderEqualsTruth('BTC-USD', 25);
  assert.equal(l.bids.length, 25);
  assert.equal(l.asks.length, 25);
  assert.match(l.seq, /^\d+$/);
  const b = await badge();
  assert.equal(b.state, 'connected', b.text);
  // The library checked every book record it could: no gap, no checksum mismatch.
  const stats = await page.evaluate(() => ({ ...window.__tickcast.feed.client.stats, delays: undefined }));
  assert.equal(stats.gaps, 0, JSON.stringify(stats));
  assert.equal(stats.checksumMismatches, 0, JSON.stringify(stats));
  console.log(`library stats: ${JSON.stringify(stats)}`);
  assert.match(page.url(), /[?&]symbol=BTC-USD(&|$)/);
  assert.match(page.url(), /[?&]depth=25(&|$)/);
  // The watchlist shows every watched symbol with a bid and an ask.
  const watch = await page.$$eval('#watchlist tbody tr', (rows) => rows.map((r) => [...r.cells].slice(0, 3).map((c) => c.textContent)));
  assert.ok(watch.length >= 2, 'watchlist rows');
  for (const [s, bid, ask] of watch) {
    const t = await truth(sim, s);
    assert.deepEqual([bid, ask], [t.bids[0][0], t.asks[0][0]], `watchlist ${s}`);
  }
  await shot('truth-btc-25');
});

test('depth 100 and 10 from the depth buttons', { timeout: 60_000 }, async () => {
  await page.click('.depth-pick button[data-depth="100"]');
  await ladderEqualsTruth('BTC-USD', 100);
  assert.match(page.url(), /[?&]depth=100(&|$)/);
  await page.click('.depth-pick button[data-depth="10"]');
  await ladderEqualsTruth('BTC-USD', 10);
  assert.match(page.url(), /[?&]depth=10(&|$)/);
  // An empty tape says so (CSS shows this text while the tape has no rows).
  assert.equal(await page.$eval('#tape', (e) => e.dataset.empty), 'No trades in BTC-USD since you opened it');
});

test('the keyboard moves between watched symbols (URL and ladder follow)', { timeout: 60_000 }, async () => {
  const order = await page.$$eval('#watchlist tbody tr', (rows) => rows.map((r) => r.dataset.symbol));
  const from = order.indexOf('BTC-USD');
  const next = order[(from + 1) % order.length];
  await page.locator('body').press('j');
  await until('URL to follow', async () => new URL(page.url()).searchParams.get('symbol') === next, 5000);
  await ladderEqualsTruth(next, 10);
  await page.keyboard.press('ArrowDown');
  const after2 = order[(from + 2) % order.length];
  await until('URL to follow ArrowDown', async () => new URL(page.url()).searchParams.get('symbol') === after2, 5000);
  await ladderEqualsTruth(after2, 10);
  await shot(`keyboard-${after2}`);
  await page.keyboard.press('k');
  await until('URL to follow k', async () => new URL(page.url()).searchParams.get('symbol') === next, 5000);
  await page.keyboard.press('ArrowUp');
  await until('URL back to BTC-USD', async () => new URL(page.url()).searchParams.get('symbol') === 'BTC-USD', 5000);
  await page.keyboard.press('2'); // depth 25
  await ladderEqualsTruth('BTC-USD', 25);
});

test('the search picks a symbol from the symbols list', { timeout: 30_000 }, async () => {
  const order = await page.$$eval('#watchlist tbody tr', (rows) => rows.map((r) => r.dataset.symbol));
  const target = order[order.length - 1];
  await page.fill('#search', target.toLowerCase());
  await page.waitForSelector(`#search-results li[data-symbol="${target}"]`, { timeout: 5000 });
  await page.keyboard.press('Enter');
  await ladderEqualsTruth(target, 25);
  await page.keyboard.press('/');
  await page.keyboard.type('btc-usd');
  await page.waitForSelector('#search-results li[data-symbol="BTC-USD"]', { timeout: 5000 });
  await page.keyboard.press('Enter');
  await ladderEqualsTruth('BTC-USD', 25);
});

test('the daemon killed and restarted: "reconnecting", then back to truth', { timeout: 90_000 }, async () => {
  const port = daemon.port;
  outage = true;
  await kill(daemon.child);
  await until('badge to say reconnecting', async () => /reconnecting/.test((await badge()).text), 15_000, 100);
  const b = await badge();
  assert.equal(b.state, 'reconnecting');
  await shot('reconnecting');
  await sleep(1500);
  daemon = await startDaemon({ feed: sim.feed, port, tokensFile });
  await until('badge to say connected', async () => (await badge()).state === 'connected', 30_000, 100);
  outage = false;
  await ladderEqualsTruth('BTC-USD', 25);
  await shot('recovered');
});

test('a hidden tab asks for max_hz; visible again, back to deltas and truth', { timeout: 30_000 }, async () => {
  // The frames the page sends, seen through the DevTools protocol.
  const sent = [];
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.webSocketFrameSent', (e) => sent.push(e.response.payloadData));
  const setHidden = (hidden) => page.evaluate((h) => {
    Object.defineProperty(document, 'visibilityState', { value: h ? 'hidden' : 'visible', configurable: true });
    Object.defineProperty(document, 'hidden', { value: h, configurable: true });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
  await setHidden(true);
  await until('a subscribe with max_hz', async () => sent.some((m) => /"op":"subscribe"/.test(m) && /"max_hz":\d+/.test(m)), 5000);
  const n = sent.length;
  await setHidden(false);
  await until('a subscribe without max_hz', async () => sent.slice(n).some((m) => /"op":"subscribe"/.test(m) && !/max_hz/.test(m)), 5000);
  await ladderEqualsTruth('BTC-USD', 25);
  await cdp.detach();
});

test('without ?ws= the page connects to /ws next to itself, with its token', { timeout: 30_000 }, async () => {
  // The static server passes /ws through to the daemon, as the daemon serving the page would.
  const p2 = await browser.newPage({ viewport: { width: 900, height: 700 } });
  const errs = watchConsole(p2);
  try {
    await p2.goto(`${SERVED_BY_DAEMON ? daemon.http : stat.base}/?symbol=ETH-USD&depth=10&token=${TOKEN}`);
    const t = await truth(sim, 'ETH-USD');
    await until('ETH-USD ladder from the derived URL', async () => {
      const l = await readLadder(p2);
      return l.symbol === 'ETH-USD' && JSON.stringify(l.bids) === JSON.stringify(t.bids.slice(0, 10))
        && JSON.stringify(l.asks) === JSON.stringify(t.asks.slice(0, 10));
    }, 15_000, 200);
    assert.deepEqual(errs, []);
  } finally {
    await p2.close();
  }
});

test('the connection reset under the page: it reconnects (resuming where the server can) and ends equal to truth', { timeout: 40_000, skip: SERVED_BY_DAEMON && 'needs the test\'s /ws pass-through' }, async () => {
  const p2 = await browser.newPage({ viewport: { width: 900, height: 700 } });
  const errs = watchConsole(p2, (e) => !REFUSED.test(e) && !/ERR_CONNECTION_RESET|WebSocket is closed/.test(e));
  try {
    await p2.goto(`${stat.base}/?symbol=ETH-USD&depth=25&token=${TOKEN}`);
    const t = await truth(sim, 'ETH-USD');
    const same = async () => {
      const l = await readLadder(p2);
      return l.symbol === 'ETH-USD' && JSON.stringify(l.bids) === JSON.stringify(t.bids.slice(0, 25))
        && JSON.stringify(l.asks) === JSON.stringify(t.asks.slice(0, 25));
    };
    await until('ETH-USD ladder', same, 15_000, 200);
    stat.resetWs();
    await until('a reconnect', async () => (await p2.evaluate(() => window.__tickcast.feed.client.stats.reconnects)) >= 1, 15_000, 100);
    await until('ETH-USD ladder after the reset', same, 15_000, 200);
    const b = await p2.evaluate(() => document.getElementById('badge-text').textContent);
    assert.match(b, /^connected/);
    const stats = await p2.evaluate(() => window.__tickcast.feed.client.stats);
    console.log(`after the reset: badge "${b}", reconnects ${stats.reconnects}, resumed ${stats.resumed}`);
    assert.deepEqual(errs, []);
  } finally {
    await p2.close();
  }
});

test('without the symbols op the screen still follows the symbols it was asked for', { timeout: 30_000 }, async () => {
  // The page's own `symbols` request (format=json) is refused; the library's connection is not.
  const p2 = await browser.newPage({ viewport: { width: 900, height: 700 } });
  const errs = watchConsole(p2);
  let refused = 0;
  await p2.routeWebSocket(/format=json/, (ws) => { refused++; ws.close({ code: 1008, reason: 'refused by the test' }); });
  try {
    await p2.goto(pageUrl(stat.base, daemon, { symbol: 'SOL-USD', depth: '10', watch: 'SOL-USD,ETH-USD', token: TOKEN }));
    const t = await truth(sim, 'SOL-USD');
    await until('SOL-USD ladder without the symbol list', async () => {
      const l = await readLadder(p2);
      return l.symbol === 'SOL-USD' && JSON.stringify(l.bids) === JSON.stringify(t.bids.slice(0, 10))
        && JSON.stringify(l.asks) === JSON.stringify(t.asks.slice(0, 10));
    }, 15_000, 200);
    const rows = await p2.$$eval('#watchlist tbody tr', (r) => r.map((x) => x.dataset.symbol));
    assert.deepEqual(rows, ['SOL-USD', 'ETH-USD']);
    assert.ok(refused >= 3, `symbols requests refused: ${refused}`);
    await p2.keyboard.press('j');
    await until('ETH-USD selected', async () => new URL(p2.url()).searchParams.get('symbol') === 'ETH-USD', 5000);
    assert.deepEqual(errs, []);
  } finally {
    await p2.close();
  }
});

test('no console errors', async () => {
  assert.deepEqual(errors, []);
  // The screenshot of the README (committed as docs/screenshot.png) is taken from this run.
  await page.click('.depth-pick button[data-depth="25"]').catch(() => {});
  await sleep(300);
  await shot('screen');
  // Readable on a phone: one column, the same ladder.
  await page.setViewportSize({ width: 390, height: 844 });
  await ladderEqualsTruth('BTC-USD', 25);
  await shot('phone');
  await page.setViewportSize({ width: 1400, height: 860 });
  const r = await httpGet(`${daemon.http}/healthz`);
  assert.equal(r?.status, 200);
});

test('the feed lost: the badge says which symbols are stale', { timeout: 30_000 }, async () => {
  await kill(sim.child);
  await until('badge to say feed stale', async () => /feed stale/.test((await badge()).text), 20_000, 100);
  assert.equal((await badge()).state, 'stale');
  // The selected symbol's ladder and depth chart are dimmed as stale, not only the badge.
  const sel = await page.evaluate(() => window.__tickcast.state?.selected ?? document.getElementById('ladder').dataset.symbol);
  await until(`ladder of ${sel} dimmed as stale`, async () => page.evaluate(() => ({
    ladder: document.getElementById('ladder').dataset.stale === '1',
    depth: document.getElementById('depth').classList.contains('stale'),
  })).then((v) => v.ladder && v.depth), 5_000, 100);
  // Every watchlist row of a stale symbol is dimmed too (its prices are the last ones sent).
  await until('watchlist rows dimmed as stale', async () => page.evaluate(() => {
    const rows = [...document.querySelectorAll('#watchlist tbody tr')];
    return rows.length > 0 && rows.every((tr) => tr.classList.contains('stale')
      && Number(getComputedStyle(tr.cells[1]).opacity) < 1);
  }), 5_000, 100);
  await shot('stale');
});
