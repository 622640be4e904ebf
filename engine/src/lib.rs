//! tickcast: a market-data fan-out engine.
//!
//! One ingester thread reads an exchange feed, keeps the L2 book of every symbol, encodes each
//! book change and trade once, and publishes the records into one lock-free ring per shard.
//! Each shard thread owns a mio `Poll`, its own `SO_REUSEPORT` listener and its connections; it
//! drains its ring, appends the shared records to its subscribers' bounded out-buffers and
//! writes each connection once per wake. See `docs/architecture.md` for the whole data path.
//!
//! Rooms, and the rule that keeps them testable: only [`shard`] and [`feed::ingest`] touch
//! sockets, and only [`clock`] reads the clocks. Everything else ([`proto`], [`book`],
//! [`wire`], [`fanout`], [`control`]) takes bytes and time and returns bytes and events.

pub mod book;
pub mod bus;
pub mod clock;
pub mod config;
pub mod control;
pub mod fanout;
pub mod feed;
pub mod metrics;
pub mod proto;
pub mod replay;
pub mod ring;
pub mod server;
pub mod shard;
pub mod tls;
pub mod wire;
