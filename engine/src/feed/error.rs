//! What can go wrong at the feed edge, as types.
//!
//! [`FeedMisbehaved`] is one feed message the ingester could not use (the model is rustls's
//! `PeerMisbehaved`): each variant names the label it is counted under in `/metrics`
//! (`tickcast_feed_faults_total{kind="..."}`). [`FeedError`] is why a feed session ended.

use std::io;
use std::time::Duration;

use crate::book::BookError;
use crate::feed::decode::DecodeError;
use crate::feed::ws::{FeedProtocolError, HandshakeFailure};

/// A feed message the ingester could not use. None of them ends the session: the message is
/// dropped and counted, and a symbol whose book may have missed data is resynced from a fresh
/// snapshot (see the `feed::ingest` module docs).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedMisbehaved {
    /// The message did not decode (malformed JSON, missing or bad field, unknown type or
    /// symbol); label `malformed`.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// The feed sent a binary WebSocket message (the feed is JSON text); label `binary`.
    #[error("the feed sent a binary message")]
    BinaryMessage,
    /// A message for a symbol beyond `max-symbols` (announced, but not tracked); label
    /// `untracked_symbol`.
    #[error("{kind} for untracked symbol {sid}")]
    UntrackedSymbol {
        /// The message type (`snapshot`, `update`, `trade`, `heartbeat`).
        kind: &'static str,
        /// The symbol's index in the feed's symbol list.
        sid: u32,
    },
    /// A snapshot the book refused to load; another is requested; label `bad_snapshot`.
    #[error("{symbol}: bad snapshot: {source}")]
    BadSnapshot {
        /// The symbol.
        symbol: String,
        /// What the book refused.
        source: BookError,
    },
    /// An update whose feed seq is not the next one (nor one ahead, held for reordering):
    /// the symbol goes stale and is resynced; label `gap`.
    #[error("{symbol}: feed gap, expected seq {expected} got {got}")]
    Gap {
        /// The symbol.
        symbol: String,
        /// The seq the book expected.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// An in-sequence update the book refused to apply: the symbol is resynced; label
    /// `book_refused`.
    #[error("{symbol}: update refused by the book: {source}")]
    BookRefused {
        /// The symbol.
        symbol: String,
        /// What the book refused.
        source: BookError,
    },
    /// A heartbeat showing a later seq than the book's: updates were lost, the symbol is
    /// resynced; label `heartbeat_ahead`.
    #[error("{symbol}: heartbeat at seq {heartbeat}, book at {book}: updates were lost")]
    HeartbeatAhead {
        /// The symbol.
        symbol: String,
        /// The heartbeat's seq.
        heartbeat: u64,
        /// The book's seq.
        book: u64,
    },
    /// An update held back for its missing predecessor for the whole reorder window: the
    /// predecessor is lost, the symbol is resynced; label `reorder_expired`.
    #[error("{symbol}: seq {missing} never arrived before {held}")]
    ReorderExpired {
        /// The symbol.
        symbol: String,
        /// The seq that never came.
        missing: u64,
        /// The seq held back.
        held: u64,
    },
}

impl FeedMisbehaved {
    /// Every metric label, in [`index`](Self::index) order.
    pub const LABELS: [&'static str; 8] = [
        "malformed",
        "binary",
        "untracked_symbol",
        "bad_snapshot",
        "gap",
        "book_refused",
        "heartbeat_ahead",
        "reorder_expired",
    ];

    /// The position of this fault's label in [`LABELS`](Self::LABELS).
    pub fn index(&self) -> usize {
        match self {
            Self::Malformed(_) => 0,
            Self::BinaryMessage => 1,
            Self::UntrackedSymbol { .. } => 2,
            Self::BadSnapshot { .. } => 3,
            Self::Gap { .. } => 4,
            Self::BookRefused { .. } => 5,
            Self::HeartbeatAhead { .. } => 6,
            Self::ReorderExpired { .. } => 7,
        }
    }

    /// The label this fault is counted under: `tickcast_feed_faults_total{kind="<label>"}`.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

/// Why a feed session ended; the ingester marks every symbol stale and reconnects with
/// back-off (except on [`FeedError::Shutdown`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The feed's host name did not resolve (to anything): check `feed`.
    #[error("cannot resolve the feed address {authority}: {source}")]
    Resolve {
        /// `HOST:PORT` of the feed.
        authority: String,
        /// Why it did not resolve.
        source: io::Error,
    },
    /// No TCP connection could be made to any address of the feed: is it up?
    #[error("cannot connect to the feed at {authority}: {source}")]
    Connect {
        /// `HOST:PORT` of the feed.
        authority: String,
        /// The last address's error.
        source: io::Error,
    },
    /// The WebSocket handshake with the feed failed (wrong path, not a WebSocket server).
    #[error("feed WebSocket handshake failed: {0}")]
    Handshake(#[source] HandshakeFailure),
    /// The socket failed.
    #[error("feed socket error: {0}")]
    Io(#[from] io::Error),
    /// The feed closed the connection with a close frame (its code and reason, if it had a
    /// code).
    #[error("the feed closed the connection{}", .0.as_ref().map(|(code, reason)| format!(" ({code} {reason})")).unwrap_or_default())]
    Closed(Option<(u16, String)>),
    /// The feed closed the TCP connection without a close frame.
    #[error("feed connection lost: the feed closed the TCP connection")]
    Eof,
    /// The feed broke the WebSocket protocol (we sent a close frame with the code).
    #[error("feed connection lost: {0}")]
    Protocol(#[from] FeedProtocolError),
    /// The feed sent nothing for longer than the stall timeout.
    #[error("feed stalled: nothing received for {0:?}")]
    Stalled(Duration),
    /// Shutdown was requested.
    #[error("shutting down")]
    Shutdown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_has_its_own_label() {
        let faults = [
            FeedMisbehaved::Malformed(DecodeError::NotAnObject),
            FeedMisbehaved::BinaryMessage,
            FeedMisbehaved::UntrackedSymbol {
                kind: "trade",
                sid: 9,
            },
            FeedMisbehaved::BadSnapshot {
                symbol: "A".into(),
                source: BookError::SnapshotQty {
                    side: crate::book::Side::Bid,
                    px: 1,
                    qty: 0,
                },
            },
            FeedMisbehaved::Gap {
                symbol: "A".into(),
                expected: 2,
                got: 5,
            },
            FeedMisbehaved::BookRefused {
                symbol: "A".into(),
                source: BookError::NegativeQty {
                    side: crate::book::Side::Ask,
                    px: 1,
                    qty: -1,
                },
            },
            FeedMisbehaved::HeartbeatAhead {
                symbol: "A".into(),
                heartbeat: 9,
                book: 3,
            },
            FeedMisbehaved::ReorderExpired {
                symbol: "A".into(),
                missing: 4,
                held: 5,
            },
        ];
        let labels: Vec<_> = faults.iter().map(FeedMisbehaved::label).collect();
        assert_eq!(labels, FeedMisbehaved::LABELS);
        assert_eq!(faults[4].to_string(), "A: feed gap, expected seq 2 got 5");
        assert_eq!(faults[0].to_string(), "message is not a JSON object");
    }

    #[test]
    fn close_frames_are_shown() {
        let e = FeedError::Closed(Some((1001, "bye".into())));
        assert_eq!(e.to_string(), "the feed closed the connection (1001 bye)");
        assert_eq!(
            FeedError::Closed(None).to_string(),
            "the feed closed the connection"
        );
    }
}
