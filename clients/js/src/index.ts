// @tickcast/client: a client for the tickcast market-data fan-out (browser and Node 20+).

export { TickcastClient, SubscribeError } from "./client.js";
export type {
  BookEvent,
  Channel,
  ClientEvents,
  ClientOptions,
  ClientStats,
  ConnectionState,
  Format,
  ResyncEvent,
  ServerErrorEvent,
  StateEvent,
  StatusEvent,
  SubscribeOptions,
  SymbolInfo,
  TradeEvent,
} from "./client.js";
export { OrderBook } from "./book.js";
export type { ApplyResult, BookView, Level } from "./book.js";
export { Backoff } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { bookChecksum, crc32 } from "./crc32.js";
export * from "./wire.js";
export type { CloseInfo, FetchLike, TransportName, WebSocketConstructor, WebSocketLike } from "./transport.js";
