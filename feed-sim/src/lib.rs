//! `feed-sim`: a simulated exchange serving the feed side of the tickcast wire contract.
//!
//! - [`Exchange`] is the deterministic, sans-IO core: symbol universe, L2 books, order flow
//!   (adds, changes, removes, trades through the spread) and hand-written JSON messages.
//! - [`Simulator`] serves it: `ws://HOST:PORT/feed` (JSON WebSocket stream: `symbols`, one
//!   `snapshot` per symbol, then live `l2update`s and `trade`s), `GET /book/SYMBOL` (the
//!   truth), `GET /healthz`.
//!
//! # Output framing
//!
//! Every message the crate generates is one JSON object on one line followed by one `\n`
//! byte (the JSON never contains a raw newline). [`Exchange::step`] appends zero or more
//! `trade` messages (one per fill, in fill order) and then exactly one `l2update` that applies
//! those fills and any other changes; [`Exchange::snapshot_json`] and
//! [`Exchange::symbols_json`] append one message each. The server sends one WebSocket text
//! frame per line.
//!
//! # Heartbeats
//!
//! Every [`SimConfig::heartbeat`] interval (1 s by default) the server sends
//! `{"type":"heartbeat","symbol":..,"seq":..,"ts":..}` for each symbol that had no `l2update`
//! in the last interval, carrying the seq of that symbol's last update. A consumer learns from
//! it that the feed is alive and whether it missed the last update of a quiet symbol.
//!
//! # Order flow shape and faults
//!
//! Symbol popularity is Zipf-like (symbol 0 busiest); [`Burst`] multiplies the rate for short
//! spells. [`Faults`] switches on dropped, duplicated, reordered, malformed and unknown-symbol
//! updates, periodic disconnects and stalls, all deterministic under the seed (see `faults.rs`).

#![forbid(unsafe_code)]

mod book;
mod config;
mod exchange;
mod faults;
mod http;
mod pregen;
mod server;
mod symbols;
mod wire;

pub use config::{
    Burst, DEFAULT_HEARTBEAT, MAX_BURST_FACTOR, MAX_DEPTH, MAX_PREGEN_UPDATES, MAX_RATE,
    MAX_SYMBOLS, MAX_TOTAL_LEVELS, SimConfig, SimError,
};
pub use exchange::{Exchange, MAX_CHANGES, Side, StepInfo};
pub use faults::{FaultCounts, FaultSpecError, Faults, MAX_FAULT_PERIOD, MAX_HOLD, UNKNOWN_SYMBOL};
pub use server::Simulator;
pub use symbols::SymbolSpec;
pub use wire::parse_decimal;
