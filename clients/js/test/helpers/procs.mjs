// Starts the real `tickcast` daemon and the real `feed-sim` for the integration tests, on free
// loopback ports, and kills them when the test ends. Binaries: TICKCAST_BIN and FEED_SIM_BIN,
// by default ../../target/release/{tickcast,feed-sim} (relative to clients/js).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const TICKCAST_BIN = process.env.TICKCAST_BIN ?? resolve(root, "../../target/release/tickcast");
export const FEED_SIM_BIN = process.env.FEED_SIM_BIN ?? resolve(root, "../../target/release/feed-sim");

export function binariesPresent() {
  return existsSync(TICKCAST_BIN) && existsSync(FEED_SIM_BIN);
}

const live = new Set();
process.on("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves `fn()` once it returns a truthy value; rejects after `ms`. */
export async function waitFor(what, ms, fn, every = 50) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last?.message ?? JSON.stringify(last)?.slice(0, 500)})`);
    await sleep(every);
  }
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

function track(child, name) {
  live.add(child);
  let out = "";
  const onData = (d) => {
    out += d.toString();
    if (out.length > 200000) out = out.slice(-100000);
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const exited = new Promise((r) => child.on("exit", (code, sig) => (live.delete(child), r({ code, sig }))));
  return {
    child,
    name,
    output: () => out,
    exited,
    async kill(sig = "SIGKILL") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(sig);
      await exited;
    },
  };
}

/** feed-sim on a free port; `done` resolves when it reached --updates. */
export async function startFeedSim({ symbols = 4, rate = 2000, updates, seed = 7 } = {}) {
  const args = ["--listen", "127.0.0.1:0", "--symbols", String(symbols), "--rate", String(rate), "--seed", String(seed)];
  if (updates !== undefined) args.push("--updates", String(updates));
  const child = spawn(FEED_SIM_BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "info", NO_COLOR: "1" } });
  const p = track(child, "feed-sim");
  const m = await waitFor("feed-sim's address", 15000, () => /url=ws:\/\/([\d.]+:\d+)\/feed/.exec(p.output()));
  p.addr = m[1];
  p.feedUrl = `ws://${p.addr}/feed`;
  p.isDone = () => p.output().includes("update limit reached");
  p.done = (ms = 60000) => waitFor("feed-sim to reach --updates", ms, () => p.isDone(), 100);
  p.truth = async (symbol) => {
    const r = await fetch(`http://${p.addr}/book/${symbol}`);
    if (r.status !== 200) throw new Error(`GET /book/${symbol}: ${r.status}`);
    return r.json();
  };
  return p;
}

/** tickcast fed by `feedUrl`, on `port` (0: a free one); resolves once /healthz says 200. */
export async function startDaemon({ feedUrl, port = 0, extra = [] }) {
  const args = ["--feed", feedUrl, "--listen", `127.0.0.1:${port}`, "--shards", "1", ...extra];
  const child = spawn(TICKCAST_BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn", NO_COLOR: "1" } });
  const p = track(child, "tickcast");
  const m = await waitFor("tickcast's address", 15000, () => {
    if (child.exitCode !== null) throw new Error(`tickcast exited: ${p.output()}`);
    return /tickcast listening on ws:\/\/([\d.]+:\d+)\/ws/.exec(p.output());
  });
  p.addr = m[1];
  p.url = `ws://${p.addr}/ws`;
  await waitFor("tickcast /healthz", 15000, async () => (await fetch(`http://${p.addr}/healthz`)).status === 200, 100);
  return p;
}

/** The truth's top `depth` levels (0: all) in the client's toJSON shape. */
export function cut(truth, depth) {
  const n = depth === 0 ? Infinity : depth;
  return { bids: truth.bids.slice(0, n), asks: truth.asks.slice(0, n) };
}
