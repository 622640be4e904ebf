// @tickcast/client: a client for the tickcast market-data fan-out (browser and Node 20+).
export { TickcastClient, SubscribeError } from "./client.js";
export { OrderBook } from "./book.js";
export { Backoff } from "./backoff.js";
export { bookChecksum, crc32 } from "./crc32.js";
export * from "./wire.js";
