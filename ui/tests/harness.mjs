// Processes and servers for the browser tests: the real feed-sim and tickcast binaries, a tiny
// static server for ui/ and the client library (until the daemon serves them), and Chromium.
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { readFile, mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const UI_DIR = path.resolve(here, '..');
export const REPO = path.resolve(UI_DIR, '..');
export const SCREENSHOTS = path.join(here, 'screenshots');
const BIN = process.env.TICKCAST_BIN_DIR || path.join(REPO, 'target', 'release');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// Where the page comes from. The daemon serves ui/ at `/` and the library at
// /lib/tickcast-client/: set UI_SERVED_BY_DAEMON=1 to load the page from the daemon itself;
// otherwise a static server in the test serves the same layout and the page is pointed at the
// daemon with ?ws=.
export const SERVED_BY_DAEMON = process.env.UI_SERVED_BY_DAEMON === '1';

/** URL layout the daemon must serve (the static server below mirrors it). */
export const LAYOUT = [
  { prefix: '/lib/tickcast-client/', dir: path.join(REPO, 'clients', 'js', 'dist') },
  { prefix: '/', dir: UI_DIR },
];
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

const children = new Set();
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** GET with a timeout; resolves {status, body} or null when nothing answers. */
export async function httpGet(url, ms = 2000) {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(ms) });
    return { status: r.status, body: await r.text() };
  } catch {
    return null;
  }
}

async function until(what, fn, ms = 30_000, every = 50) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}

function launch(name, args) {
  const bin = path.join(BIN, name);
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  children.add(child);
  child.log = '';
  const keep = (d) => { child.log = (child.log + d).slice(-20_000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.exited = new Promise((r) => child.on('exit', (code, sig) => { children.delete(child); r({ code, sig }); }));
  return child;
}

/** Kills a child (SIGKILL) and waits for it. */
export async function kill(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGKILL');
  await child.exited;
}

/** Kills every process this module started (the tests' after hooks call it). */
export async function killAll() {
  await Promise.all([...children].map(kill));
}
process.on('exit', () => { for (const c of children) try { c.kill('SIGKILL'); } catch { /* gone */ } });

/** feed-sim on a free port; resolves once GET /book answers. */
export async function startFeedSim({ symbols = 8, rate = 2000, updates, seed = 7, depth = 150 } = {}) {
  const port = await freePort();
  const args = ['--listen', `127.0.0.1:${port}`, '--symbols', String(symbols), '--rate', String(rate),
    '--seed', String(seed), '--depth', String(depth)];
  if (updates !== undefined) args.push('--updates', String(updates));
  const child = launch('feed-sim', args);
  const http = `http://127.0.0.1:${port}`;
  await until('feed-sim', async () => (await httpGet(`${http}/book/BTC-USD`))?.status === 200, 30_000);
  return { child, port, http, feed: `ws://127.0.0.1:${port}/feed` };
}

/** The simulator's truth for a symbol: {seq, bids, asks} of decimal strings, best first. */
export async function truth(sim, symbol) {
  const r = await httpGet(`${sim.http}/book/${symbol}`);
  if (!r || r.status !== 200) throw new Error(`GET /book/${symbol}: ${r && r.status}`);
  return JSON.parse(r.body);
}

/** tickcast on `port` (a free one by default) fed by `feed`; resolves once /healthz says 200. */
export async function startDaemon({ feed, port, tokensFile, extra = [] }) {
  port = port || (await freePort());
  const args = ['--listen', `127.0.0.1:${port}`, '--feed', feed, '--shards', '1', ...extra];
  if (tokensFile) args.push('--tokens-file', tokensFile);
  const child = launch('tickcast', args);
  const http = `http://127.0.0.1:${port}`;
  await until('tickcast /healthz', async () => {
    if (child.exitCode !== null) throw new Error(`tickcast exited: ${child.log}`);
    return (await httpGet(`${http}/healthz`))?.status === 200;
  }, 30_000);
  return { child, port, http, ws: `ws://127.0.0.1:${port}/ws` };
}

/**
 * A static server with the daemon's URL layout (see LAYOUT). With `wsPort`, a function giving the
 * daemon's port, it also passes WebSocket upgrades of /ws through to the daemon, so that a page
 * loaded from it can find /ws next to itself as it does on the daemon.
 */
export async function startStatic({ wsPort } = {}) {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    let p = decodeURIComponent(url.pathname);
    if (p === '/') p = '/index.html';
    const m = LAYOUT.find((l) => p.startsWith(l.prefix));
    const file = path.join(m.dir, p.slice(m.prefix.length));
    if (!file.startsWith(m.dir + path.sep) || file.includes(`${path.sep}tests${path.sep}`)) {
      res.writeHead(404).end('not found\n');
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream', 'Cache-Control': 'no-cache' });
      res.end(body);
    } catch {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
    }
  });
  const tunnels = new Set();
  server.on('upgrade', (req, sock, head) => {
    if (!wsPort || !req.url.startsWith('/ws')) {
      sock.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const up = net.connect(wsPort(), '127.0.0.1', () => {
      let head0 = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) head0 += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(head0 + '\r\n');
      if (head.length) up.write(head);
      sock.pipe(up).pipe(sock);
    });
    const t = { sock, up };
    tunnels.add(t);
    sock.on('close', () => tunnels.delete(t));
    up.on('error', () => sock.destroy());
    sock.on('error', () => up.destroy());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    server,
    base: `http://127.0.0.1:${port}`,
    /** Resets every WebSocket passed through (both ends), as a network failure would. */
    resetWs() {
      for (const t of tunnels) {
        t.sock.resetAndDestroy?.() ?? t.sock.destroy();
        t.up.resetAndDestroy?.() ?? t.up.destroy();
      }
      tunnels.clear();
    },
    close() {
      for (const t of tunnels) { t.sock.destroy(); t.up.destroy(); }
      return new Promise((r) => server.close(r));
    },
  };
}

/** The page's URL: from the daemon itself, or from the static server pointed at the daemon. */
export function pageUrl(staticBase, daemon, query = {}) {
  const q = new URLSearchParams(query);
  if (SERVED_BY_DAEMON) return `${daemon.http}/?${q}`;
  q.set('ws', daemon.ws);
  return `${staticBase}/?${q}`;
}

/** Debian's chromium through playwright-core (no browser download). */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  await mkdir(SCREENSHOTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 60_000,
  });
}

/** Collects console errors and page errors of a page (those `keep` does not set aside). */
export function watchConsole(page, keep = () => true) {
  const errors = [];
  page.on('console', (m) => {
    const e = `console: ${m.text()}`;
    if (m.type() === 'error' && keep(e)) errors.push(e);
  });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  return errors;
}

/** The ladder as the page shows it: {seq, symbol, bids, asks} with decimal strings. */
export async function readLadder(page) {
  return page.evaluate(() => {
    const el = document.getElementById('ladder');
    const rows = (side) => [...el.querySelectorAll(`[data-side="${side}"]`)].map((r) => [r.dataset.price, r.dataset.qty]);
    return { seq: el.dataset.seq, symbol: el.dataset.symbol, depth: el.dataset.depth, bids: rows('bid'), asks: rows('ask') };
  });
}

export { until };
