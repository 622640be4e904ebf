//! Fan-out policy, sans-IO: who gets which record, how records are cut into WebSocket messages,
//! how much a connection may owe, and how fast it may ask.
//!
//! - [`Topic`]: one stream of records in one format, the unit the ingester encodes once.
//! - [`interest`]: per-shard subscriber counts the ingester reads to skip unwatched streams.
//! - [`subs`]: a shard's topic → connections table.
//! - [`outbuf`]: a connection's bounded queue of shared chunks, written with `writev`.
//! - [`arena`]: a drain's records copied once into one buffer; what a connection is owed as
//!   spans of it.
//! - [`batch`]: cuts the records a connection is owed from one ring drain into messages.
//! - [`deflate`]: the same for permessage-deflate connections, from compressed pieces shared by
//!   every subscriber of a stream (compressed once per drain, not once per subscriber).
//! - [`limit`]: a token bucket for control messages.
//! - [`admission`]: origin allowlist and access tokens, decided before the upgrade.
//! - [`keepalive`]: when to ping a client and when to give up on it.

pub mod admission;
pub mod arena;
pub mod batch;
pub mod deflate;
pub mod entitle;
pub mod interest;
pub mod keepalive;
pub mod limit;
pub mod outbuf;
pub mod subs;

/// Encoding of data messages a connection asked for (`format=` on the upgrade request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Binary batches of records (protocol.md §1, the default).
    Binary = 0,
    /// JSON text frames: an array of record objects.
    Json = 1,
}

impl Format {
    /// Parses the `format` query parameter.
    pub fn from_query(value: &str) -> Option<Self> {
        match value {
            "binary" => Some(Self::Binary),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Number of streams per symbol: one per supported book depth, then trades.
pub const STREAMS_PER_SYMBOL: usize = crate::book::DEPTHS.len() + 1;
/// Stream number of the trades channel.
pub const TRADES_STREAM: u8 = crate::book::DEPTHS.len() as u8;

/// One stream of records (symbol, channel, depth) in one format.
///
/// Streams `0..DEPTHS.len()` are the book at `DEPTHS[stream]`; [`TRADES_STREAM`] is trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Topic {
    /// Symbol id.
    pub sid: u32,
    /// Stream number within the symbol.
    pub stream: u8,
    /// Encoding.
    pub format: Format,
}

impl Topic {
    /// The book stream of `sid` at depth index `depth_idx` (an index into `book::DEPTHS`).
    pub fn book(sid: u32, depth_idx: usize, format: Format) -> Self {
        debug_assert!(depth_idx < crate::book::DEPTHS.len());
        Self {
            sid,
            stream: depth_idx as u8,
            format,
        }
    }

    /// The trades stream of `sid`.
    pub fn trades(sid: u32, format: Format) -> Self {
        Self {
            sid,
            stream: TRADES_STREAM,
            format,
        }
    }

    /// True for a book stream.
    pub fn is_book(&self) -> bool {
        self.stream < TRADES_STREAM
    }

    /// Dense index of this topic among all topics of `sid < max_symbols`.
    pub fn index(&self) -> usize {
        (self.sid as usize * STREAMS_PER_SYMBOL + self.stream as usize) * 2 + self.format as usize
    }

    /// Number of dense indexes for `symbols` symbols.
    pub fn count(symbols: usize) -> usize {
        symbols * STREAMS_PER_SYMBOL * 2
    }
}

/// A connection within a shard: slot index plus a generation, so that an answer addressed to a
/// connection that has gone (and whose slot was reused) is recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// Slot index in the shard's connection table.
    pub index: u32,
    /// Generation of the slot when the request was made.
    pub generation: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_indexes_are_dense_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for sid in 0..3 {
            for stream in 0..STREAMS_PER_SYMBOL as u8 {
                for format in [Format::Binary, Format::Json] {
                    let t = Topic {
                        sid,
                        stream,
                        format,
                    };
                    assert!(t.index() < Topic::count(3));
                    assert!(seen.insert(t.index()));
                }
            }
        }
        assert_eq!(seen.len(), Topic::count(3));
        assert!(Topic::book(1, 2, Format::Json).is_book());
        assert!(!Topic::trades(1, Format::Json).is_book());
    }
}
