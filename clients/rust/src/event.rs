//! What the client tells its user: [`Event`].

use std::sync::Arc;
use std::time::Duration;

use crate::book::BookView;
use crate::wire::Side;

/// One thing that happened, in the order it happened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The connection changed state.
    Connection(ConnectionState),
    /// A book changed: one event per symbol per data message, after every record of the
    /// message that concerns it was applied.
    Book(BookUpdate),
    /// A trade.
    Trade(Trade),
    /// A status record from the server (feed stale, feed resumed, slow consumer warning).
    Status(Status),
    /// A book was found wrong (a gap in its seq or a checksum mismatch) and is being
    /// resubscribed alone; a [`BookUpdate`] with `snapshot` set follows once it is whole again.
    Resync(Resync),
    /// The trade stream of a symbol skipped `seq` values: trades were lost (they cannot be
    /// recovered by resubscribing, so the stream just continues).
    TradeGap {
        /// The symbol.
        symbol: Arc<str>,
        /// The seq that was due.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// The server refused a request (`{"op":"error",...}`).
    ServerError(ServerError),
    /// The server accepted a new token (`refreshed`); `exp` is its expiry in seconds since
    /// the Unix epoch, when the server gives it.
    Refreshed {
        /// Expiry of the new token.
        exp: Option<u64>,
    },
    /// The server is sending these symbols' books as conflated snapshots (protocol 1.1,
    /// §3.3: the connection fell behind); the books stay whole, they just change less often.
    Conflating {
        /// The symbols.
        symbols: Vec<Arc<str>>,
        /// The rate of snapshots, per second, when the server says it.
        max_hz: Option<u32>,
    },
    /// The server is back to sending every delta for these symbols (after a fresh snapshot).
    Live {
        /// The symbols.
        symbols: Vec<Arc<str>>,
    },
}

/// The state of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Opening a connection to `endpoint`.
    Connecting {
        /// The URL being connected to.
        endpoint: String,
        /// Failed attempts since the client was last subscribed.
        attempt: u32,
    },
    /// The WebSocket is open; the subscribe request is on its way.
    Open {
        /// The URL connected to.
        endpoint: String,
    },
    /// The server answered the (re)subscribe of every symbol the client follows.
    Subscribed {
        /// Whether the client's positions were recovered.
        resumed: Resumed,
        /// The server's stream numbering (protocol 1.1); `None` from a server that does not
        /// support resume, which then never recovers a stream.
        epoch: Option<String>,
    },
    /// The connection failed or was lost; the next attempt starts after `delay`.
    Reconnecting {
        /// The back-off delay before the next attempt.
        delay: Duration,
        /// Attempts since the client was last subscribed, this one included.
        attempt: u32,
        /// Why the connection ended.
        cause: String,
    },
    /// The client stopped for good: refused by the server, or closed by its user.
    Closed {
        /// Why.
        cause: CloseCause,
    },
}

/// Whether a (re)subscription continued the client's streams.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resumed {
    /// A first subscription (or nothing to resume): every book starts from a snapshot.
    Fresh,
    /// The server recovered every stream the client named (`recovered: true`): the missed
    /// records follow, with no snapshot.
    Recovered,
    /// Some streams could not be recovered (the server's replay window passed them, its epoch
    /// changed, or it does not support resume): those books start again from a snapshot and
    /// their trades from the live point.
    NotRecovered {
        /// The symbols that start afresh.
        symbols: Vec<Arc<str>>,
    },
}

/// Why the client stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCause {
    /// The server refused the upgrade with this HTTP status (401 no token, 403 bad token or
    /// origin): retrying would not help.
    Refused(u16),
    /// The server closed with 1008 (policy: bad or expired token, rate limit).
    Policy(String),
    /// [`Client::close`](crate::Client::close) was called.
    ByUser,
}

/// A book after a data message changed it.
#[derive(Debug, Clone)]
pub struct BookUpdate {
    /// The book as of the last record applied.
    pub book: BookView,
    /// True when the message carried a snapshot of it (a fresh base).
    pub snapshot: bool,
}

/// A trade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    /// The symbol.
    pub symbol: Arc<str>,
    /// Seq in the symbol's trade stream.
    pub seq: u64,
    /// Price, scaled by `10^px_decimals`.
    pub price: i64,
    /// Quantity, scaled by `10^qty_decimals`.
    pub qty: i64,
    /// Price decimals of the symbol.
    pub px_decimals: u8,
    /// Quantity decimals of the symbol.
    pub qty_decimals: u8,
    /// Exchange trade id.
    pub trade_id: u64,
    /// Taker side.
    pub side: Side,
    /// Exchange timestamp, ns since the Unix epoch.
    pub exch_ts: u64,
    /// Time tickcast read the trade, ns since the Unix epoch.
    pub recv_ts: u64,
}

/// A status record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The symbol.
    pub symbol: Arc<str>,
    /// The code: 1 feed stale (the book stays as it was until resynced), 2 feed resumed,
    /// 3 slow consumer warning.
    pub code: u16,
    /// When tickcast decided, ns since the Unix epoch.
    pub ts: u64,
}

/// A book being resubscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    /// The symbol.
    pub symbol: Arc<str>,
    /// What was wrong.
    pub cause: ResyncCause,
}

/// What made a book wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResyncCause {
    /// A delta's seq was not the previous one plus one.
    Gap {
        /// The seq that was due.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// The checksum the server sent differs from the client's book (protocol 1.1).
    Checksum {
        /// The seq of the record that carried it.
        seq: u64,
        /// The server's checksum.
        server: u32,
        /// The client's.
        client: u32,
    },
}

/// A request the server refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The stable machine-readable code (`unknown_symbol`, `rate_limited`, ...).
    pub code: String,
    /// The human-readable message.
    pub message: String,
    /// The symbols of the refused request, when it named some.
    pub symbols: Vec<Arc<str>>,
}
