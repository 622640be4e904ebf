#!/usr/bin/env node
// Follows one symbol's book for S seconds (reconnecting as needed), then prints one JSON line:
// {"symbol":..,"seq":..,"bids":[["price","qty"],...],"asks":[...],"reconnects":N,"resumed":N}
//
//   node clients/js/examples/book.mjs --url ws://127.0.0.1:8080/ws --symbol BTC-USD --depth 10 \
//        --seconds 5 [--transport ws|stream|sse] [--format binary|json] [--token T] [--verbose]
//
// In Node 20 (no global WebSocket) it uses the `ws` package when it is installed.
import { TickcastClient } from "../dist/index.js";

function args(argv) {
  const o = { depth: "25", seconds: "5" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) continue;
    const k = a.slice(2);
    if (k === "verbose") o.verbose = true;
    else o[k] = argv[++i];
  }
  return o;
}

const o = args(process.argv.slice(2));
if (!o.url || !o.symbol) {
  console.error("usage: book.mjs --url URL --symbol SYM [--depth D] [--seconds S] [--transport ws|stream|sse] [--format binary|json] [--token T] [--verbose]");
  process.exit(2);
}

let WebSocketCtor = globalThis.WebSocket;
if (!WebSocketCtor) {
  try {
    WebSocketCtor = (await import("ws")).WebSocket;
  } catch {
    if (!o.transport || o.transport === "ws") {
      console.error("no WebSocket in this Node: install the ws package or use --transport stream|sse");
      process.exit(2);
    }
  }
}

const log = o.verbose ? (l) => console.error(`[${new Date().toISOString()}] ${l}`) : undefined;
const client = new TickcastClient({
  endpoints: o.url.split(","),
  WebSocket: WebSocketCtor,
  format: o.format === "json" ? "json" : "binary",
  token: o.token,
  transports: o.transport ? [o.transport] : undefined,
  backoff: {
    baseMs: o["backoff-base-ms"] ? Number(o["backoff-base-ms"]) : undefined,
    capMs: o["backoff-cap-ms"] ? Number(o["backoff-cap-ms"]) : undefined,
  },
  log,
});
client.on("state", (s) => log?.(`state ${JSON.stringify(s)}`));
let terminal;
client.on("state", (s) => {
  if (s.state === "closed" && s.terminal) terminal = s.reason;
});
client.on("error", (e) => console.error(`server error: ${e.code}: ${e.message}`));
client.subscribe([o.symbol], { depth: Number(o.depth), channels: ["book"] }).catch((e) => {
  console.error(`subscribe: ${e.message}`);
  process.exit(1);
});
client.connect();

await new Promise((r) => setTimeout(r, Number(o.seconds) * 1000));
client.close();
const b = client.book(o.symbol);
const j = b ? b.toJSON() : { symbol: o.symbol, seq: 0, bids: [], asks: [] };
console.log(
  JSON.stringify({
    symbol: j.symbol,
    seq: j.seq,
    bids: j.bids,
    asks: j.asks,
    reconnects: client.stats.reconnects,
    resumed: client.stats.resumed,
    transport: client.transport ?? null,
  }),
);
if (terminal) {
  console.error(`refused: ${terminal}`);
  process.exit(1);
}
process.exit(0);
