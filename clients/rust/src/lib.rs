//! A client for tickcast, the market-data WebSocket fan-out daemon, that never leaves you
//! with a wrong order book.
//!
//! The client connects to one of several endpoints, subscribes, rebuilds each symbol's book
//! from snapshots and deltas, and checks every record: a gap in a book's `seq`, or a book
//! checksum that disagrees (protocol 1.1), resubscribes that symbol alone. When the
//! connection fails it reconnects with exponential back-off and full jitter, and resumes from
//! the positions it holds where the server supports it (protocol 1.1, `recovered: true`: the
//! missed records follow and no snapshot is needed). A connection that says nothing for longer
//! than the server's ping interval plus slack is deemed dead. Refusals that retrying cannot
//! fix (HTTP 401/403 on upgrade, close 1008) stop the client.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tickcast_client::{Client, ConnectionState, Event};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, mut events) = Client::builder(["ws://127.0.0.1:8080/ws", "ws://10.0.0.2:8080/ws"])
//!     .depth(10)
//!     .symbols(["BTC-USD"])
//!     .backoff(Duration::from_millis(500), Duration::from_secs(20))
//!     .build()?;
//! client.subscribe(["ETH-USD"])?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Book(update) => {
//!             let book = &update.book;
//!             println!("{} seq {}: {:?} / {:?}", book.symbol(), book.seq(), book.best_bid(), book.best_ask());
//!         }
//!         Event::Trade(t) => println!("{} traded {} @ {}", t.symbol, t.qty, t.price),
//!         Event::Connection(ConnectionState::Reconnecting { delay, cause, .. }) => {
//!             eprintln!("reconnecting in {delay:?}: {cause}");
//!         }
//!         Event::Connection(ConnectionState::Closed { cause }) => {
//!             eprintln!("stopped: {cause:?}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! The protocol logic is sans-IO, usable and testable without sockets or a runtime:
//!
//! - [`wire`]: decoders of binary and JSON data batches, decimal strings;
//! - [`book`]: the book and its checksum;
//! - [`session`]: the state machine of subscriptions, sequence checks, resyncs and resume
//!   positions ([`Session`]);
//! - [`backoff`]: the reconnect delays.
//!
//! The [`Client`] drives a [`Session`] over tokio-tungstenite in a task of its own and hands
//! out [`Event`]s through [`Events`].

#![warn(missing_docs)]

pub mod backoff;
pub mod book;
mod client;
mod event;
pub mod session;
pub mod wire;

pub use book::{Book, BookView};
pub use client::{
    BuildError, Client, ClientBuilder, ClientClosed, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DEAD_AFTER,
    DEFAULT_PING_INTERVAL, Events, Format,
};
pub use event::{
    BookUpdate, CloseCause, ConnectionState, Event, Resumed, Resync, ResyncCause, ServerError,
    Status, Trade,
};
pub use session::{Channel, Session, SessionConfig};
pub use wire::Side;
