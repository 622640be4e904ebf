// The real daemon behind a test proxy: connection resets, a corrupted book record, a proxy that
// refuses the WebSocket upgrade (and /stream), and an SSE client coming back with Last-Event-ID.
// What the daemon does not serve yet (resume and epoch, checksums, /stream, /sse: protocol 1.1)
// is probed first; those assertions switch on by themselves once it does, and meanwhile the
// tests check what today's daemon gives (fresh snapshots, 404 for /stream and /sse).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { TickcastClient, decodeBatch } from "../../dist/index.js";
import { Proxy } from "../helpers/proxy.mjs";
import { binariesPresent, cut, startDaemon, startFeedSim, waitFor } from "../helpers/procs.mjs";

const skip = binariesPresent() ? false : "tickcast/feed-sim binaries not built (cargo build --release -p tickcast -p feed-sim)";

/** `ws` without permessage-deflate, so that the proxy can rewrite frames. */
class PlainWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { perMessageDeflate: false });
  }
}

/** What the daemon serves of protocol 1.1. */
async function probe(addr) {
  const caps = { epoch: false, checksums: false, stream: false, sse: false };
  const ws = new WebSocket(`ws://${addr}/ws`);
  await new Promise((res, rej) => {
    const timer = setTimeout(res, 3000);
    ws.on("error", rej);
    ws.on("open", () => ws.send(JSON.stringify({ op: "subscribe", id: 1, symbols: ["BTC-USD"], channels: ["book"], depth: 10 })));
    ws.on("message", (d, binary) => {
      if (!binary) {
        const m = JSON.parse(d.toString());
        if (m.op === "subscribed") caps.epoch = typeof m.epoch === "string";
        return;
      }
      decodeBatch(new Uint8Array(d), (r) => {
        if (r.kind === 1) caps.checksums = (r.flags & 2) !== 0;
      });
      clearTimeout(timer);
      res();
    });
  });
  ws.close();
  for (const t of ["stream", "sse"]) {
    const ctl = new AbortController();
    const r = await fetch(`http://${addr}/${t}?symbols=BTC-USD&depth=1&channels=book`, { signal: ctl.signal });
    caps[t] = r.status === 200;
    ctl.abort();
  }
  return caps;
}

async function converge(sim, client, cases, ms = 20000) {
  await waitFor("books equal to truth", ms, async () => {
    for (const [symbol, depth] of cases) {
      const b = client.book(symbol);
      if (!b?.synced) throw new Error(`${symbol} not synced`);
      const want = cut(await sim.truth(symbol), depth);
      const have = b.toJSON();
      assert.deepEqual({ bids: have.bids, asks: have.asks }, want, symbol);
    }
    return true;
  }, 200);
}

function track(client) {
  const ev = { snapshots: 0, subscribed: [], resync: [] };
  client.on("book", (e) => e.snapshot && ev.snapshots++);
  client.on("state", (s) => s.state === "subscribed" && ev.subscribed.push(s));
  client.on("resync", (r) => ev.resync.push(r));
  return ev;
}

describe("the real daemon behind a test proxy", { skip, timeout: 180000 }, () => {
  let sim;
  let daemon;
  let caps;
  const cleanup = [];
  before(async () => {
    sim = await startFeedSim({ symbols: 3, rate: 1000, updates: 200, seed: 5 });
    daemon = await startDaemon({ feedUrl: sim.feedUrl });
    caps = await probe(daemon.addr);
  });
  after(async () => {
    for (const c of cleanup) await c.close();
    await daemon?.kill();
    await sim?.kill();
  });

  /** A fresh simulator (stopping after `updates`), daemon and proxy for one test. */
  async function fresh(updates) {
    const s = await startFeedSim({ symbols: 3, rate: 2000, updates, seed: Math.floor(Math.random() * 1000) });
    const d = await startDaemon({ feedUrl: s.feedUrl });
    const p = await new Proxy(d.addr).listen();
    cleanup.push(p, { close: () => d.kill() }, { close: () => s.kill() });
    return { s, d, p };
  }

  test("probe", (t) => {
    t.diagnostic(`daemon serves: ${JSON.stringify(caps)}`);
  });

  test("a connection reset by the proxy: resumed (recovered: true, no snapshot) when the server can", async (t) => {
    const { s, p } = await fresh(8000);
    const client = new TickcastClient({ endpoints: `ws://${p.addr}/ws`, WebSocket, backoff: { baseMs: 50, capMs: 500 } });
    cleanup.push(client);
    const ev = track(client);
    client.connect();
    await client.subscribe(["BTC-USD", "ETH-USD"], { depth: 10 });
    await waitFor("data", 10000, () => client.book("ETH-USD")?.synced);
    const snapshotsBefore = ev.snapshots;
    p.resetAll();
    await waitFor("subscribed again", 10000, () => ev.subscribed.length >= 2);
    await s.done();
    await converge(s, client, [["BTC-USD", 10], ["ETH-USD", 10]]);
    assert.equal(client.stats.reconnects, 1);
    if (caps.epoch) {
      assert.equal(ev.subscribed[1].resumed, true);
      assert.deepEqual(ev.subscribed[1].recovered, { "BTC-USD": true, "ETH-USD": true });
      assert.equal(ev.snapshots, snapshotsBefore, "no snapshot after a recovered resume");
      assert.equal(client.stats.resumed, 1);
    } else {
      t.diagnostic("no epoch in this daemon's replies: resume not served yet; the client resubscribed from fresh snapshots");
      assert.equal(ev.subscribed[1].resumed, false);
      assert.equal(ev.snapshots, snapshotsBefore + 2);
    }
  });

  test("a corrupted book record: checksum mismatch, that symbol resyncs, equal to truth", async (t) => {
    if (!caps.checksums) {
      t.skip("this daemon sends no book checksums yet (record flag bit 1)");
      return;
    }
    const { s, p } = await fresh(8000);
    const client = new TickcastClient({ endpoints: `ws://${p.addr}/ws`, WebSocket: PlainWebSocket });
    cleanup.push(client);
    const ev = track(client);
    client.connect();
    await client.subscribe(["BTC-USD", "ETH-USD"], { depth: 10 });
    await waitFor("data", 10000, () => client.book("ETH-USD")?.synced);
    p.corruptBook = 1;
    await waitFor("the corruption", 10000, () => p.corrupted === 1);
    await s.done();
    await converge(s, client, [["BTC-USD", 10], ["ETH-USD", 10]]);
    assert.equal(client.stats.checksumMismatches, 1);
    assert.equal(ev.resync.length, 1);
    assert.equal(client.stats.reconnects, 0);
  });

  test("a proxy refusing the upgrade: /stream (then /sse) when the server serves them", async (t) => {
    const { s, p } = await fresh(6000);
    p.refuseUpgrade = true;
    const lines = [];
    const client = new TickcastClient({ endpoints: `ws://${p.addr}/ws`, WebSocket, backoff: { baseMs: 100, capMs: 400 }, log: (l) => lines.push(l) });
    cleanup.push(client);
    client.connect();
    const sub = client.subscribe(["BTC-USD"], { depth: 10 });
    sub.catch(() => {});
    if (!caps.stream) {
      // Today: the client tries /stream, then /sse (404 from the daemon), then backs off.
      await waitFor("a round of transports", 10000, () => p.requests.filter((r) => r.includes("/sse")).length >= 1);
      const order = p.requests.map((r) => r.split(" ")[1].split("?")[0]);
      assert.deepEqual(order.slice(0, 3), ["/ws", "/stream", "/sse"]);
      assert.match(p.requests[1], /symbols=BTC-USD&depth=10&channels=book,trades/);
      await waitFor("a reconnect delay", 5000, () => lines.some((l) => /reconnecting in/.test(l)));
      t.diagnostic("this daemon serves no /stream or /sse yet (404): the fallback is tested against the fake server");
      client.close();
      return;
    }
    await sub;
    assert.equal(client.transport, "stream");
    await s.done();
    await converge(s, client, [["BTC-USD", 10]]);
    if (caps.sse) {
      p.refusePaths = ["/stream"];
      const c2 = new TickcastClient({ endpoints: `ws://${p.addr}/ws`, WebSocket });
      cleanup.push(c2);
      c2.connect();
      await c2.subscribe(["BTC-USD"], { depth: 10 });
      assert.equal(c2.transport, "sse");
      await converge(s, c2, [["BTC-USD", 10]]);
    }
  });

  test("an SSE client reconnecting with Last-Event-ID ends equal to truth", async (t) => {
    if (!caps.sse) {
      t.skip("this daemon serves no /sse yet");
      return;
    }
    const { s, p } = await fresh(8000);
    const client = new TickcastClient({ endpoints: `ws://${p.addr}/ws`, transports: ["sse"], backoff: { baseMs: 50, capMs: 500 } });
    cleanup.push(client);
    const ev = track(client);
    client.connect();
    await client.subscribe(["BTC-USD", "ETH-USD"], { depth: 10 });
    await waitFor("data", 10000, () => client.book("ETH-USD")?.synced);
    p.resetAll();
    await waitFor("subscribed again", 10000, () => ev.subscribed.length >= 2);
    await s.done();
    await converge(s, client, [["BTC-USD", 10], ["ETH-USD", 10]]);
  });
});
