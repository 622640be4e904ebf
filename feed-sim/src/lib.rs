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
//! # Fault injection
//!
//! [`Faults`] (no switches yet) and the hook in `faults.rs` are where issue 4 adds drop,
//! duplicate, reorder, malformed, unknown-type, disconnect and stall faults.

#![forbid(unsafe_code)]

mod book;
mod config;
mod exchange;
mod faults;
mod http;
mod server;
mod symbols;
mod wire;

pub use config::{MAX_DEPTH, MAX_RATE, MAX_SYMBOLS, MAX_TOTAL_LEVELS, SimConfig, SimError};
pub use exchange::{Exchange, MAX_CHANGES, Side, StepInfo};
pub use faults::Faults;
pub use server::Simulator;
pub use symbols::SymbolSpec;
pub use wire::parse_decimal;
