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
//! - [`ladder`]: when a conflating connection may go live again (its drain and live rates).

pub mod admission;
pub mod arena;
pub mod batch;
pub mod deflate;
pub mod entitle;
pub mod interest;
pub mod keepalive;
pub mod ladder;
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

/// Rate tiers of conflated book streams (book messages per second per stream): a `max_hz`
/// request is granted the highest tier at or below it and the server's ceiling
/// (docs/protocol.md §5).
pub const TIERS_HZ: [u16; 10] = [1, 2, 5, 10, 20, 50, 100, 250, 500, 1000];
/// Number of rate tiers.
pub const TIER_COUNT: usize = TIERS_HZ.len();

/// The tier granted for a request of `max_hz` under a ceiling of `ceiling_hz`: the highest
/// tier at or below both (tier 0, 1 Hz, at the least).
pub fn grant_tier(max_hz: u32, ceiling_hz: u32) -> usize {
    let cap = max_hz.min(ceiling_hz);
    TIERS_HZ
        .iter()
        .rposition(|&t| u32::from(t) <= cap)
        .unwrap_or(0)
}

/// Number of streams per symbol: one per supported book depth, then trades, then one
/// conflated book stream per (depth, rate tier).
pub const STREAMS_PER_SYMBOL: usize =
    CONFLATED_BASE as usize + crate::book::DEPTHS.len() * TIER_COUNT;
/// Stream number of the trades channel.
pub const TRADES_STREAM: u8 = crate::book::DEPTHS.len() as u8;
/// Stream number of the first conflated book stream.
pub const CONFLATED_BASE: u8 = TRADES_STREAM + 1;

/// One stream of records (symbol, channel, depth) in one format.
///
/// Streams `0..DEPTHS.len()` are the book at `DEPTHS[stream]`; [`TRADES_STREAM`] is trades;
/// from [`CONFLATED_BASE`] on, the conflated book (replacing snapshots at a rate tier) at each
/// depth: `CONFLATED_BASE + depth_idx * TIER_COUNT + tier`.
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

    /// The conflated book stream of `sid` at depth index `depth_idx` and rate tier `tier`
    /// (an index into [`TIERS_HZ`]): replacing snapshots, at most `TIERS_HZ[tier]` a second.
    pub fn conflated(sid: u32, depth_idx: usize, tier: usize, format: Format) -> Self {
        debug_assert!(depth_idx < crate::book::DEPTHS.len() && tier < TIER_COUNT);
        Self {
            sid,
            stream: CONFLATED_BASE + (depth_idx * TIER_COUNT + tier) as u8,
            format,
        }
    }

    /// (depth index, tier) of a conflated book stream.
    pub fn conflation(&self) -> Option<(usize, usize)> {
        let k = usize::from(self.stream.checked_sub(CONFLATED_BASE)?);
        Some((k / TIER_COUNT, k % TIER_COUNT))
    }

    /// The depth index of a book stream, conflated or not.
    pub fn depth_idx(&self) -> Option<usize> {
        if self.stream < TRADES_STREAM {
            Some(usize::from(self.stream))
        } else {
            self.conflation().map(|(d, _)| d)
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

    /// True for a book stream (deltas or conflated).
    pub fn is_book(&self) -> bool {
        self.stream != TRADES_STREAM
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
        let c = Topic::conflated(2, 3, 7, Format::Binary);
        assert!(c.is_book());
        assert_eq!(c.conflation(), Some((3, 7)));
        assert_eq!(c.depth_idx(), Some(3));
        assert_eq!(Topic::book(2, 4, Format::Binary).depth_idx(), Some(4));
        assert_eq!(
            Topic::conflated(0, 4, 9, Format::Json).stream as usize,
            STREAMS_PER_SYMBOL - 1
        );
    }

    #[test]
    fn tiers_grant_the_highest_at_or_below_request_and_ceiling() {
        assert_eq!(TIERS_HZ[grant_tier(1, 1000)], 1);
        assert_eq!(TIERS_HZ[grant_tier(7, 1000)], 5);
        assert_eq!(TIERS_HZ[grant_tier(10, 1000)], 10);
        assert_eq!(TIERS_HZ[grant_tier(999, 1000)], 500);
        assert_eq!(TIERS_HZ[grant_tier(1000, 1000)], 1000);
        assert_eq!(TIERS_HZ[grant_tier(1000, 30)], 20);
        assert_eq!(TIERS_HZ[grant_tier(5, 1)], 1);
    }
}
