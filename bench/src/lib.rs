//! tickcast-bench: the load and latency instrument for tickcast, and an
//! independent client of its wire protocol (`shared/protocol.md`).
//!
//! - [`wire`]: decoding of binary and JSON data batches.
//! - [`book`]: the sequence rule ([`book::SeqTracker`]) and client-side books
//!   rebuilt from records ([`book::StreamState`]).
//! - [`control`]: typed control messages (subscribe, symbols, replies).
//! - [`runner`]: the bench run itself; [`report`]: its result.
//!
//! The decoder is written from the protocol text, not from the engine's encoder,
//! so that the engine's integration tests can use it as a second opinion.

pub mod book;
pub mod control;
pub mod report;
pub mod runner;
pub mod wire;

pub use report::Report;
pub use runner::{BenchError, Config, run};
