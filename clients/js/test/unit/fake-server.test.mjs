// The client against a fake server speaking what the daemon does not serve yet (resume and
// epoch, checksums, /stream, /sse) and misbehaving on purpose like a test proxy would.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { WebSocket } from "ws";
import { TickcastClient } from "../../dist/index.js";
import { FakeServer } from "../helpers/fake-server.mjs";
import { freePort, sleep, waitFor } from "../helpers/procs.mjs";

const SYMS = ["AAA-USD", "BBB-USD"];
const open = [];
after(async () => {
  for (const x of open) await x.close?.();
});

async function fake(opts) {
  const f = await new FakeServer(opts).listen();
  open.push(f);
  return f;
}

function client(f, opts = {}) {
  const lines = [];
  const c = new TickcastClient({
    endpoints: f.url,
    WebSocket,
    backoff: { baseMs: 20, capMs: 200 },
    connectTimeoutMs: 1000,
    log: (l) => lines.push(l),
    ...opts,
  });
  c.lines = lines;
  c.events = { snapshots: {}, states: [], resync: [] };
  c.on("book", (e) => {
    if (e.snapshot) c.events.snapshots[e.symbol] = (c.events.snapshots[e.symbol] ?? 0) + 1;
  });
  c.on("state", (s) => c.events.states.push(s));
  c.on("resync", (r) => c.events.resync.push(r));
  open.push(c);
  return c;
}

async function equalTruth(f, c, symbols = SYMS, ms = 10000) {
  await waitFor("books equal to the fake's truth", ms, () => {
    for (const s of symbols) {
      const b = c.book(s);
      if (!b?.synced) throw new Error(`${s} not synced`);
      const have = b.toJSON();
      assert.deepEqual({ bids: have.bids, asks: have.asks }, f.truth(s), s);
    }
    return true;
  });
}

const subscribedStates = (c) => c.events.states.filter((s) => s.state === "subscribed");

test("a reset connection resumes with recovered: true and no snapshot", async () => {
  const f = await fake();
  const c = client(f);
  c.connect();
  await c.subscribe(SYMS, { depth: 0 });
  await f.run(300);
  await equalTruth(f, c);
  assert.equal(c.stats.checksumsVerified > 200, true, "checksums are verified");
  f.resetAll();
  const running = f.run(300);
  await waitFor("subscribed again", 5000, () => subscribedStates(c).length === 2);
  await running;
  await equalTruth(f, c);
  const resub = f.subscribes.at(-1);
  assert.equal(resub.resume.epoch, "e1");
  assert.deepEqual(Object.keys(resub.resume.streams).sort(), SYMS);
  assert.ok(resub.resume.streams["AAA-USD"].book > 100);
  assert.deepEqual(subscribedStates(c)[1].recovered, { "AAA-USD": true, "BBB-USD": true });
  assert.equal(subscribedStates(c)[1].resumed, true);
  assert.deepEqual(c.events.snapshots, { "AAA-USD": 1, "BBB-USD": 1 }, "no snapshot after the resume");
  assert.equal(c.stats.reconnects, 1);
  assert.equal(c.stats.resumed, 1);
  assert.equal(c.stats.gaps + c.stats.checksumMismatches, 0);
});

test("a new epoch is not recovered: fresh snapshots", async () => {
  const f = await fake();
  const c = client(f);
  c.connect();
  await c.subscribe(SYMS, { depth: 0 });
  await f.run(100);
  await equalTruth(f, c);
  f.epoch = "e2";
  f.resetAll();
  await waitFor("subscribed again", 5000, () => subscribedStates(c).length === 2);
  await f.run(100);
  await equalTruth(f, c);
  assert.deepEqual(subscribedStates(c)[1].recovered, { "AAA-USD": false, "BBB-USD": false });
  assert.equal(c.stats.resumed, 0);
  assert.deepEqual(c.events.snapshots, { "AAA-USD": 2, "BBB-USD": 2 });
});

test("a corrupted record: checksum mismatch resubscribes that symbol alone", async () => {
  const f = await fake();
  const c = client(f);
  c.connect();
  await c.subscribe(SYMS, { depth: 0 });
  await f.run(50);
  f.corrupt.add("AAA-USD");
  await f.run(200);
  await equalTruth(f, c);
  assert.equal(c.stats.checksumMismatches, 1);
  assert.equal(c.events.resync[0].symbol, "AAA-USD");
  assert.equal(c.events.resync[0].reason, "checksum");
  assert.deepEqual(f.subscribes.at(-1).symbols, ["AAA-USD"], "only that symbol");
  assert.equal(f.subscribes.at(-1).resume, undefined, "a fresh snapshot, not a resume");
  assert.deepEqual(c.events.snapshots, { "AAA-USD": 2, "BBB-USD": 1 });
  assert.equal(c.stats.reconnects, 0, "the connection stays up");
});

test("a gap resubscribes that symbol alone", async () => {
  const f = await fake();
  const c = client(f);
  c.connect();
  await c.subscribe(SYMS, { depth: 0 });
  await f.run(50);
  f.drop.add("BBB-USD");
  await f.run(200);
  await equalTruth(f, c);
  assert.equal(c.stats.gaps, 1);
  assert.deepEqual(c.events.resync.map((r) => [r.symbol, r.reason]), [["BBB-USD", "gap"]]);
  assert.deepEqual(f.subscribes.at(-1).symbols, ["BBB-USD"]);
});

test("checksums are skipped when the server sends none, or when disabled", async () => {
  const f = await fake();
  const c = client(f, { checksums: false });
  c.connect();
  await c.subscribe(SYMS, { depth: 0 });
  f.corrupt.add("AAA-USD");
  await f.run(50);
  await sleep(50);
  assert.equal(c.stats.checksumMismatches, 0);
  assert.equal(c.stats.checksumsVerified, 0);
});

test("upgrade refused: falls back to /stream, books equal to truth", async () => {
  const f = await fake();
  f.mode.ws = "refuse";
  const c = client(f);
  c.connect();
  await c.subscribe(SYMS, { depth: 0 });
  assert.equal(c.transport, "stream");
  await f.run(300);
  await equalTruth(f, c);
  assert.ok(f.requests.some((r) => r.startsWith("UPGRADE /ws")));
  const get = f.requests.find((r) => r.startsWith("GET /stream"));
  assert.match(get, /symbols=AAA-USD,BBB-USD&depth=0&channels=book,trades/);
  assert.ok(c.stats.checksumsVerified > 100);
  // A gap on /stream restarts that request (fresh snapshots).
  f.drop.add("AAA-USD");
  await f.run(100);
  await equalTruth(f, c);
  assert.equal(c.stats.gaps, 1);
  assert.equal(c.events.snapshots["AAA-USD"], 2);
});

test("upgrade never completes: falls back to /stream after the connect timeout", async () => {
  const f = await fake();
  f.mode.ws = "hang";
  const c = client(f, { connectTimeoutMs: 1000 });
  c.connect();
  await c.subscribe(SYMS, { depth: 0 });
  assert.equal(c.transport, "stream");
  await f.run(100);
  await equalTruth(f, c);
});

test("upgrade and /stream refused: ends on /sse; Last-Event-ID resumes it", async () => {
  const f = await fake();
  f.mode.ws = "refuse";
  f.mode.stream = "404";
  const c = client(f);
  const states = [];
  c.on("state", (s) => states.push(`${s.state}${s.transport ? ":" + s.transport : ""}`));
  c.connect();
  await c.subscribe(SYMS, { depth: 0 });
  assert.equal(c.transport, "sse");
  assert.deepEqual(states.slice(0, 5), ["connecting:ws", "connecting:stream", "connecting:sse", "open:sse", "subscribed:sse"]);
  await f.run(200);
  await equalTruth(f, c);
  // The SSE connection breaks; the client comes back with Last-Event-ID and is resumed.
  f.resetAll();
  const running = f.run(200);
  await waitFor("subscribed again", 5000, () => subscribedStates(c).length === 2);
  await running;
  await equalTruth(f, c);
  const last = f.lastEventIds.at(-1);
  assert.ok(Number(last) > 0, `Last-Event-ID ${last}`);
  assert.deepEqual(c.events.snapshots, { "AAA-USD": 1, "BBB-USD": 1 }, "resumed without snapshots");
  assert.equal(c.stats.resumed, 1);
  assert.ok(c.stats.checksumsVerified > 100, "JSON crc checked");
  // The next reconnect starts with the transport that worked.
  assert.equal(f.requests.filter((r) => r.startsWith("UPGRADE")).length, 1);
});

test("a forced transport (sse only)", async () => {
  const f = await fake();
  const c = client(f, { transports: ["sse"] });
  c.connect();
  await c.subscribe(["AAA-USD"], { depth: 10, channels: ["book"] });
  await f.run(100);
  await equalTruth(f, c, ["AAA-USD"]);
  assert.equal(c.transport, "sse");
  assert.ok(!f.requests.some((r) => r.startsWith("UPGRADE")));
});

test("401 on the upgrade is terminal once the fallbacks do not get through: no retry", async () => {
  for (const [stream, sse, n] of [["401", "401", 2], ["404", "404", 3]]) {
    const f = await fake();
    f.mode.ws = "401";
    f.mode.stream = stream;
    f.mode.sse = sse;
    const c = client(f);
    c.connect();
    await assert.rejects(c.subscribe(SYMS), /closed/);
    const last = c.events.states.at(-1);
    assert.equal(last.state, "closed");
    assert.equal(last.terminal, true);
    assert.match(last.reason, /HTTP 401/);
    await sleep(200);
    assert.equal(f.requests.length, n, f.requests.join(" "));
  }
});

test("403 on the upgrade from a proxy that refuses WebSocket: /stream gets through", async () => {
  const f = await fake();
  f.mode.ws = "403";
  const c = client(f);
  c.connect();
  await c.subscribe(SYMS, { depth: 0 });
  assert.equal(c.transport, "stream");
  await f.run(50);
  await equalTruth(f, c);
});

test("a forced ws transport: 403 is terminal at once", async () => {
  const f = await fake();
  f.mode.ws = "403";
  const c = client(f, { transports: ["ws"] });
  c.connect();
  await assert.rejects(c.subscribe(SYMS), /closed/);
  assert.equal(c.events.states.at(-1).terminal, true);
  assert.equal(f.requests.length, 1);
});

test("close 1008 is terminal: no retry", async () => {
  const f = await fake();
  const c = client(f);
  c.connect();
  await c.subscribe(SYMS);
  f.closeAll(1008, "token expired");
  await waitFor("closed", 3000, () => c.state === "closed");
  assert.equal(c.events.states.at(-1).terminal, true);
  assert.match(c.events.states.at(-1).reason, /1008 token expired/);
  await sleep(200);
  assert.equal(f.requests.length, 1);
});

test("a silent connection is found dead by the ping timer and replaced", async () => {
  const f = await fake();
  const c = client(f, { pingIntervalMs: 100, pongTimeoutMs: 150 });
  c.connect();
  await c.subscribe(SYMS, { depth: 0 });
  f.mode.silent = true; // no data, no pongs
  await waitFor("declared dead", 3000, () => c.lines.some((l) => /dead/.test(l)));
  f.mode.silent = false;
  await waitFor("subscribed again", 3000, () => subscribedStates(c).length === 2);
  await f.run(50);
  await equalTruth(f, c);
});

test("pings keep a quiet connection alive", async () => {
  const f = await fake();
  const c = client(f, { pingIntervalMs: 150, pongTimeoutMs: 600 });
  let pongs = 0;
  c.on("control", (m) => m.op === "pong" && pongs++);
  c.connect();
  await c.subscribe(SYMS);
  await sleep(1500);
  assert.ok(pongs >= 2, `${pongs} pongs`);
  assert.equal(subscribedStates(c).length, 1, "no reconnect while pongs come back");
});

test("the attempt counter is reset only once subscribed again", async () => {
  const f = await fake();
  const c = client(f);
  c.connect();
  await c.subscribe(SYMS);
  f.mode.closeBeforeReply = 3; // the socket opens, but closes before the subscribe reply
  f.resetAll();
  await waitFor("subscribed again", 5000, () => subscribedStates(c).length === 2);
  const attempts = c.events.states.filter((s) => s.state === "reconnecting").map((s) => s.attempt);
  assert.deepEqual(attempts, [1, 2, 3, 4]);
  f.resetAll();
  await waitFor("subscribed a third time", 5000, () => subscribedStates(c).length === 3);
  const after = c.events.states.filter((s) => s.state === "reconnecting").map((s) => s.attempt);
  assert.deepEqual(after, [1, 2, 3, 4, 1]);
});

test("endpoints: a dead one is skipped for the next", async () => {
  const f = await fake();
  const dead = `ws://127.0.0.1:${await freePort()}/ws`;
  const c = client(f, { endpoints: [dead, f.url] });
  c.connect();
  await c.subscribe(SYMS);
  assert.equal(c.endpoint, f.url);
  assert.equal(c.transport, "ws");
});

test("refresh sends the token; unsubscribe drops the book", async () => {
  const f = await fake();
  const c = client(f, { token: "t1" });
  c.connect();
  await c.subscribe(SYMS);
  assert.match(f.requests[0], /token=t1/);
  const r = await c.refresh("t2");
  assert.equal(r.op, "refreshed");
  c.unsubscribe(["AAA-USD"]);
  assert.equal(c.book("AAA-USD"), undefined);
  f.resetAll();
  await waitFor("subscribed again", 5000, () => subscribedStates(c).length === 2);
  assert.match(f.requests.at(-1), /token=t2/);
  assert.deepEqual(f.subscribes.at(-1).symbols, ["BBB-USD"]);
});

test("the integration tests' corrupting proxy works (checked here on the fake, which sends checksums)", async () => {
  const { Proxy } = await import("../helpers/proxy.mjs");
  const f = await fake();
  const p = await new Proxy(`127.0.0.1:${f.port}`).listen();
  open.push(p);
  class PlainWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { perMessageDeflate: false });
    }
  }
  const c = client(f, { endpoints: `ws://${p.addr}/ws`, WebSocket: PlainWebSocket });
  c.connect();
  await c.subscribe(SYMS, { depth: 0 });
  await f.run(50);
  p.corruptBook = 1;
  await f.run(200);
  await equalTruth(f, c);
  assert.equal(p.corrupted, 1);
  assert.equal(c.stats.checksumMismatches, 1);
  assert.equal(c.events.resync.length, 1);
  p.resetAll();
  await waitFor("subscribed again", 5000, () => subscribedStates(c).length === 2);
  assert.equal(subscribedStates(c)[1].resumed, true, "a reset through the proxy resumes");
});

test("a subscribe in flight when the connection drops is answered by the next connection", async () => {
  const f = await fake();
  const c = client(f);
  c.connect();
  await c.subscribe(["AAA-USD"]);
  f.mode.closeBeforeReply = 1;
  const p = c.subscribe(["BBB-USD"], { depth: 0 });
  const infos = await p;
  assert.deepEqual(infos.map((i) => i.symbol), ["BBB-USD"]);
  await f.run(50);
  await equalTruth(f, c, ["BBB-USD"]);
});

test("the token can travel as a subprotocol", async () => {
  const f = await fake();
  const protos = [];
  f.wss.on("headers", (_h, req) => protos.push(req.headers["sec-websocket-protocol"]));
  const c = client(f, { token: "s3cret", tokenInSubprotocol: true });
  c.connect();
  await c.subscribe(SYMS);
  assert.deepEqual(protos[0].split(",").map((p) => p.trim()), ["tickcast.v1", "token.s3cret"]);
  assert.doesNotMatch(f.requests[0], /token=/);
});

test("the example follows a book on each forced transport and prints it in format=json decimals", async () => {
  const { execFile } = await import("node:child_process");
  const { fileURLToPath } = await import("node:url");
  const example = fileURLToPath(new URL("../../examples/book.mjs", import.meta.url));
  const f = await fake();
  await f.run(400);
  for (const transport of ["ws", "stream", "sse"]) {
    const out = await new Promise((res, rej) =>
      execFile(process.execPath, [example, "--url", f.url, "--symbol", "AAA-USD", "--depth", "0", "--seconds", "1", "--transport", transport], { timeout: 15000 }, (e, so, se) =>
        e ? rej(new Error(`${e.message}\n${se}`)) : res(so),
      ),
    );
    const line = JSON.parse(out);
    assert.equal(line.transport, transport);
    assert.equal(line.symbol, "AAA-USD");
    assert.equal(line.seq, f.books.get("AAA-USD").seq);
    assert.deepEqual({ bids: line.bids, asks: line.asks }, f.truth("AAA-USD"));
    assert.equal(line.reconnects, 0);
  }
});
