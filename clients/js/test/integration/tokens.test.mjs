// Access tokens against the real daemon (--tokens-file): in the query string or as a
// subprotocol; a missing (401) or wrong (403) token is a terminal refusal, not retried.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { TickcastClient } from "../../dist/index.js";
import { binariesPresent, sleep, startDaemon, startFeedSim, waitFor } from "../helpers/procs.mjs";

const skip = binariesPresent() ? false : "tickcast/feed-sim binaries not built (cargo build --release -p tickcast -p feed-sim)";

describe("tokens", { skip, timeout: 60000 }, () => {
  let sim;
  let daemon;
  const clients = [];
  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), "tickcast-js-"));
    writeFileSync(join(dir, "tokens"), "good-token\n");
    sim = await startFeedSim({ symbols: 2, rate: 200, updates: 200 });
    daemon = await startDaemon({ feedUrl: sim.feedUrl, extra: ["--tokens-file", join(dir, "tokens")] });
  });
  after(async () => {
    for (const c of clients) c.close();
    await daemon?.kill();
    await sim?.kill();
  });

  for (const tokenInSubprotocol of [false, true]) {
    test(`a good token ${tokenInSubprotocol ? "as a subprotocol" : "in the query string"}`, async () => {
      const c = new TickcastClient({ endpoints: daemon.url, WebSocket, token: "good-token", tokenInSubprotocol });
      clients.push(c);
      c.connect();
      await c.subscribe(["BTC-USD"], { depth: 1 });
      await waitFor("a book", 5000, () => c.book("BTC-USD")?.synced);
      c.close();
    });
  }

  for (const [token, status] of [[undefined, 401], ["bad-token", 403]]) {
    test(`${token ? "a wrong" : "no"} token: HTTP ${status}, terminal, not retried`, async () => {
      const lines = [];
      const c = new TickcastClient({ endpoints: daemon.url, WebSocket, token, backoff: { baseMs: 10, capMs: 50 }, log: (l) => lines.push(l) });
      clients.push(c);
      const states = [];
      c.on("state", (s) => states.push(s));
      c.connect();
      await assert.rejects(c.subscribe(["BTC-USD"]), /closed/);
      const last = states.at(-1);
      assert.equal(last.state, "closed");
      assert.equal(last.terminal, true);
      assert.match(last.reason, new RegExp(`HTTP ${status}`));
      await sleep(300);
      assert.equal(states.filter((s) => s.state === "reconnecting").length, 0, lines.join("\n"));
    });
  }
});
