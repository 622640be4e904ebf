// Against the real daemon and the real feed-sim: books equal GET /book truth at depth 10 and 0
// (binary and JSON), the example prints the truth, and a daemon killed and restarted mid-run is
// survived with backoff and jitter.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { TickcastClient } from "../../dist/index.js";
import { binariesPresent, cut, freePort, sleep, startDaemon, startFeedSim, waitFor } from "../helpers/procs.mjs";

const skip = binariesPresent() ? false : "tickcast/feed-sim binaries not built (cargo build --release -p tickcast -p feed-sim)";

/** Waits until every (client, symbol, depth) holds the truth's top levels; returns the last diff on timeout. */
async function converge(sim, cases, ms = 20000) {
  await waitFor("books equal to truth", ms, async () => {
    for (const [client, symbol, depth] of cases) {
      const b = client.book(symbol);
      if (!b || !b.synced) throw new Error(`${symbol}@${depth}: not synced`);
      const want = cut(await sim.truth(symbol), depth);
      const have = b.toJSON();
      try {
        assert.deepEqual({ bids: have.bids, asks: have.asks }, want);
      } catch {
        throw new Error(`${symbol}@${depth}: client ${JSON.stringify(have.bids.slice(0, 2))} ${JSON.stringify(have.asks.slice(0, 2))} truth ${JSON.stringify(want.bids.slice(0, 2))} ${JSON.stringify(want.asks.slice(0, 2))}`);
      }
    }
    return true;
  }, 200);
}

describe("against the real daemon", { skip, timeout: 120000 }, () => {
  let sim;
  let daemon;
  const clients = [];
  before(async () => {
    sim = await startFeedSim({ symbols: 4, rate: 2000, updates: 5000 });
    daemon = await startDaemon({ feedUrl: sim.feedUrl });
  });
  after(async () => {
    for (const c of clients) c.close();
    await daemon?.kill();
    await sim?.kill();
  });

  test("books equal GET /book truth at depth 10 and 0, binary and JSON", { timeout: 60000 }, async () => {
    const bin = new TickcastClient({ endpoints: daemon.url, WebSocket });
    const json = new TickcastClient({ endpoints: [daemon.url], WebSocket, format: "json" });
    clients.push(bin, json);
    let books = 0;
    let trades = 0;
    bin.on("book", () => books++);
    bin.on("trade", () => trades++);
    const states = [];
    bin.on("state", (s) => states.push(s.state));
    bin.connect();
    json.connect();
    const infos = await bin.subscribe(["BTC-USD"], { depth: 10 });
    assert.equal(infos[0].symbol, "BTC-USD");
    assert.equal(infos[0].pxDecimals, 2);
    await bin.subscribe(["ETH-USD"], { depth: 0, channels: ["book"] });
    await json.subscribe(["SOL-USD", "ETH-USD"], { depth: 0 });
    await json.subscribe(["BTC-USD"], { depth: 10 });
    await sim.done();
    await converge(sim, [
      [bin, "BTC-USD", 10],
      [bin, "ETH-USD", 0],
      [json, "SOL-USD", 0],
      [json, "ETH-USD", 0],
      [json, "BTC-USD", 10],
    ]);
    assert.deepEqual(states.slice(0, 3), ["connecting", "open", "subscribed"]);
    assert.equal(bin.transport, "ws");
    assert.ok(books > 100, `${books} book events`);
    assert.ok(trades > 0, "trades arrive");
    assert.equal(bin.stats.gaps + json.stats.gaps, 0);
    assert.equal(bin.book("BTC-USD").bidCount, 10);
    assert.ok(bin.book("ETH-USD").bidCount > 10, "depth 0 holds the whole book");
  });

  test("the example prints the book as the truth, in format=json decimals", { timeout: 30000 }, async () => {
    await sim.done();
    const example = fileURLToPath(new URL("../../examples/book.mjs", import.meta.url));
    for (const depth of [10, 0]) {
      const out = await new Promise((res, rej) =>
        execFile(process.execPath, [example, "--url", daemon.url, "--symbol", "ETH-USD", "--depth", String(depth), "--seconds", "1.5"], { timeout: 20000 }, (e, so, se) =>
          e ? rej(new Error(`${e.message}\n${se}`)) : res(so),
        ),
      );
      const line = JSON.parse(out.trim());
      const want = cut(await sim.truth("ETH-USD"), depth);
      assert.equal(line.symbol, "ETH-USD");
      assert.equal(typeof line.seq, "number");
      assert.deepEqual(line.bids, want.bids, `depth ${depth}`);
      assert.deepEqual(line.asks, want.asks, `depth ${depth}`);
      assert.equal(line.reconnects, 0);
      assert.equal(line.resumed, 0);
    }
  });
});

describe("symbols() and setMaxHz() against the real daemon", { skip, timeout: 120000 }, () => {
  let sim;
  let daemon;
  let client;
  before(async () => {
    sim = await startFeedSim({ symbols: 4, rate: 2000, updates: 6000 });
    daemon = await startDaemon({ feedUrl: sim.feedUrl });
  });
  after(async () => {
    client?.close();
    await daemon?.kill();
    await sim?.kill();
  });

  test("lists the symbols, conflates at the granted rate, then back to deltas equal to truth", { timeout: 60000 }, async () => {
    client = new TickcastClient({ endpoints: daemon.url, WebSocket });
    await assert.rejects(client.symbols(), (e) => e.code === "not_connected");
    client.connect();
    await waitFor("open", 10000, async () => client.state === "open" || client.state === "subscribed");
    const list = await client.symbols();
    assert.deepEqual(list.map((i) => i.symbol).sort(), ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"]);
    for (const i of list) assert.ok(Number.isInteger(i.sid) && i.pxDecimals >= 0, JSON.stringify(i));

    await client.subscribe(["BTC-USD", "ETH-USD"], { depth: 10 });
    await assert.rejects(client.setMaxHz(0), RangeError);
    await assert.rejects(client.setMaxHz(1001), RangeError);
    const grants = await client.setMaxHz(5);
    assert.deepEqual(grants.map((g) => [g.symbol, g.maxHz]).sort(), [["BTC-USD", 5], ["ETH-USD", 5]]);
    // Conflated: replacing snapshots only, no deltas (docs/protocol.md §5.1).
    const kinds = new Set();
    const onBook = (ev) => kinds.add(ev.snapshot ? "snapshot" : "delta");
    client.on("book", onBook);
    await sleep(1500);
    client.off("book", onBook);
    assert.ok(kinds.size > 0, "book events arrive while conflated");
    assert.ok(![...kinds].includes("delta"), `only snapshots while conflated, saw ${[...kinds]}`);

    const back = await client.setMaxHz(undefined);
    assert.ok(back.every((g) => g.maxHz === undefined), JSON.stringify(back));
    await sim.done();
    await converge(sim, [
      [client, "BTC-USD", 10],
      [client, "ETH-USD", 10],
    ]);
    assert.equal(client.stats.gaps, 0);
  });
});

describe("the daemon killed and restarted mid-run", { skip, timeout: 120000 }, () => {
  test("reconnects with full-jitter backoff, resubscribes, ends equal to truth", { timeout: 90000 }, async (t) => {
    const sim = await startFeedSim({ symbols: 3, rate: 2000, updates: 16000, seed: 11 });
    const port = await freePort();
    let daemon = await startDaemon({ feedUrl: sim.feedUrl, port });
    const lines = [];
    const baseMs = 100;
    const capMs = 800;
    const client = new TickcastClient({
      endpoints: daemon.url,
      WebSocket,
      backoff: { baseMs, capMs },
      connectTimeoutMs: 2000,
      log: (l) => lines.push(`${Date.now()} ${l}`),
    });
    t.after(async () => {
      client.close();
      await daemon.kill();
      await sim.kill();
    });
    const reconnecting = [];
    const subscribed = [];
    client.on("state", (s) => {
      if (s.state === "reconnecting") reconnecting.push(s);
      if (s.state === "subscribed") subscribed.push(s);
    });
    client.connect();
    await client.subscribe(["BTC-USD"], { depth: 10 });
    await client.subscribe(["ETH-USD"], { depth: 0 });
    await waitFor("data", 10000, () => client.book("ETH-USD")?.synced);
    await sleep(800);
    assert.ok(!sim.isDone(), "the simulator is still running when the daemon dies");
    await daemon.kill("SIGKILL");
    await sleep(3000);
    daemon = await startDaemon({ feedUrl: sim.feedUrl, port });
    await waitFor("subscribed again", 15000, () => subscribed.length >= 2);
    await sim.done();
    await converge(sim, [
      [client, "BTC-USD", 10],
      [client, "ETH-USD", 0],
    ]);
    // The attempts while the daemon was down: each delay in [0, min(cap, base * 2^n)).
    const delays = reconnecting.map((r) => r.delayMs);
    t.diagnostic(`reconnect delays (ms): ${delays.join(", ")}`);
    t.diagnostic(lines.filter((l) => /reconnecting|refused|lost/.test(l)).slice(0, 4).join("\n"));
    assert.ok(delays.length >= 4, `${delays.length} attempts in 3 s`);
    reconnecting.forEach((r, i) => {
      assert.equal(r.attempt, i + 1, "the attempt counter rises until subscribed again");
      assert.ok(r.delayMs >= 0 && r.delayMs < Math.min(capMs, baseMs * 2 ** i), `attempt ${i + 1}: ${r.delayMs} ms`);
    });
    assert.ok(Math.max(...delays) <= capMs);
    assert.ok(new Set(delays).size > 1, "jittered: not all equal");
    assert.ok(lines.some((l) => /reconnecting in \d+ ms/.test(l)), "the client logs its reconnect attempts");
    assert.equal(client.stats.reconnects, 1);
    assert.equal(client.stats.resumed, 0, "a restarted daemon has a new epoch: not recovered, fresh snapshots");
    assert.equal(subscribed[1].resumed, false);
    assert.equal(client.transport, "ws");
  });
});
