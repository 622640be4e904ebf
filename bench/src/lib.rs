//! tickcast-bench: the load and latency instrument for tickcast, and an
//! independent client of its wire protocol (`shared/protocol.md`).
//!
//! - [`wire`]: decoding of binary and JSON data batches.
//! - [`book`]: the sequence rule ([`book::SeqTracker`]) and client-side books
//!   rebuilt from records ([`book::StreamState`]).
//! - [`control`]: typed control messages (subscribe, symbols, replies).
//! - [`runner`]: the plain bench run (no subcommand); [`report`]: its result.
//! - [`scenario`]: the scenarios (`fanout`, `connections`, `slow`, `burst`)
//!   against tickcast or a broadcast peer, built from [`client`] (a small
//!   WebSocket client), [`load`] (many connections, over several processes),
//!   [`source`] (the paced input: a feed for tickcast, a publisher for peers),
//!   [`procstat`] (CPU and RSS from `/proc`, `/metrics`) and [`hist`]
//!   (histograms, `.hgrm`, SVG plots); [`summary`] turns result files into the
//!   tables of `docs/benchmarks.md`; [`reconnect`] is the resume-vs-snapshot storm;
//!   [`ingest`] measures the feed path end to end (`feed-sim --pregen` to a daemon).
//!
//! The decoder is written from the protocol text, not from the engine's encoder,
//! so that the engine's integration tests can use it as a second opinion.

pub mod book;
pub mod client;
pub mod control;
pub mod hist;
pub mod ingest;
pub mod load;
pub mod procstat;
pub mod reconnect;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod source;
pub mod summary;
pub mod throttle;
pub mod wire;

pub use report::Report;
pub use runner::{BenchError, Config, run};
