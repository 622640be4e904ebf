//! The NATS bus between an ingest node and its edge nodes (`--role ingest|edge`,
//! docs/protocol.md §8, docs/architecture.md "Roles").
//!
//! This module is sans-IO: subjects, and the layout of every bus message (stream batches,
//! statuses, the symbol table, snapshot requests and replies), encoded and parsed without a
//! socket. The two IO drivers are [`ingest`] (the ingest node's publisher, fed by a ring like a
//! shard's) and [`edge`] (the edge node's subscriber, which takes the ingester's place and feeds
//! the shards' rings). Each runs `async-nats` on a tokio runtime confined to its own thread;
//! the shards stay mio and never see async code.
//!
//! Every record on the bus is the very record the ingest node's ingester encoded (binary or
//! JSON, with its seq and checksum): an edge forwards it to its shards as it is, so a client of
//! an edge gets byte for byte what a client of the ingest node gets, with the same seqs.

#[cfg(not(loom))]
pub mod edge;
#[cfg(not(loom))]
pub mod ingest;
pub mod leases;
pub mod pending;
pub mod replica;
pub mod resume;

use bytes::{BufMut, Bytes, BytesMut};

use crate::book::DEPTHS;
use crate::fanout::{CONFLATED_BASE, Format, STREAMS_PER_SYMBOL, Topic};
use crate::ring::SymbolTable;
use crate::wire::SymbolMeta;

/// Largest stream batch the ingest node publishes (NATS' default `max_payload` is 1 MiB).
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Largest replay reply the ingest node sends; a replay that would not fit is answered as a
/// miss (NATS' default `max_payload` is 1 MiB).
pub const MAX_REPLAY_REPLY_BYTES: usize = 768 * 1024;

/// A bus message that does not parse: logged and dropped (never trusted, never a panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The message ends before a field or a record it announces.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// A field holds a value the layout does not allow (a format, stream or reply kind).
    #[error("bad {0}")]
    BadField(&'static str),
    /// The ingest node speaks another version of the bus layout (its symbol table's `"bus"`).
    #[error("bus version {0}, this node speaks {BUS_VERSION}")]
    Version(u64),
    /// A replay's records do not follow the asked position one by one.
    #[error("replay record seq {got}, expected {expected}")]
    OutOfOrder {
        /// The seq the next record must have.
        expected: u64,
        /// The seq it has.
        got: u64,
    },
}

/// The subjects of one cluster (all under one prefix token).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix` (one token, e.g. `tickcast`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// One stream in one format: `<p>.<sid>.book.<depth>.<bin|json>` or
    /// `<p>.<sid>.trades.<bin|json>` (a conflated tier, never published today:
    /// `<p>.<sid>.book.<depth>.<hz>hz.<bin|json>`).
    pub fn stream(&self, topic: Topic) -> String {
        let fmt = match topic.format {
            Format::Binary => "bin",
            Format::Json => "json",
        };
        match (topic.depth_idx(), topic.conflation()) {
            (Some(d), None) => format!("{}.{}.book.{}.{fmt}", self.prefix, topic.sid, DEPTHS[d]),
            (Some(d), Some((_, tier))) => format!(
                "{}.{}.book.{}.{}hz.{fmt}",
                self.prefix,
                topic.sid,
                DEPTHS[d],
                crate::fanout::TIERS_HZ[tier]
            ),
            _ => format!("{}.{}.trades.{fmt}", self.prefix, topic.sid),
        }
    }

    /// Status records of every symbol: `<p>.status`.
    pub fn status(&self) -> String {
        format!("{}.status", self.prefix)
    }

    /// The symbol table, published on change and every second (the ingest node's heartbeat):
    /// `<p>.symbols`.
    pub fn symbols(&self) -> String {
        format!("{}.symbols", self.prefix)
    }

    /// Interest announcements of the edges (the streams each wants, with a lease):
    /// `<p>.interest`.
    pub fn interest(&self) -> String {
        format!("{}.interest", self.prefix)
    }

    /// Request/reply: the symbol table now: `<p>.symbols.get`.
    pub fn symbols_get(&self) -> String {
        format!("{}.symbols.get", self.prefix)
    }

    /// Request/reply: a snapshot of one book stream: `<p>.snapshot`.
    pub fn snapshot(&self) -> String {
        format!("{}.snapshot", self.prefix)
    }

    /// Request/reply: the records of one stream after a seq, from the ingest node's replay
    /// windows: `<p>.replay`.
    pub fn replay(&self) -> String {
        format!("{}.replay", self.prefix)
    }
}

/// The seq of an encoded record (binary: header bytes 8..16; JSON: its `"seq"` field).
pub fn record_seq(format: Format, record: &[u8]) -> Option<u64> {
    match format {
        Format::Binary => Some(u64::from_le_bytes(record.get(8..16)?.try_into().ok()?)),
        Format::Json => {
            const KEY: &[u8] = b",\"seq\":";
            let at = record.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
            let digits = record[at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            std::str::from_utf8(&record[at..at + digits])
                .ok()?
                .parse()
                .ok()
        }
    }
}

/// The version of the bus layout (§8.2): carried in the symbol table as `"bus"`; an edge
/// serves only an ingest node of its own version. Version 2 added the publish stamp of stream
/// batches and the interest announcements.
pub const BUS_VERSION: u64 = 2;

/// Bytes before the first record of a stream batch: `u32 epoch`, `u64 publish_ts`.
const BATCH_HEAD: usize = 12;

/// A stream batch: `u32 epoch`, `u64 publish_ts` (the ingest node's wall clock, ns since the
/// Unix epoch, when it hands the batch to NATS), then per record `u64 seq`, `u32 len`, the
/// record (all little-endian).
#[derive(Debug)]
pub struct BatchWriter {
    buf: BytesMut,
    records: usize,
}

impl BatchWriter {
    /// An empty batch of `epoch`.
    pub fn new(epoch: u32) -> Self {
        let mut buf = BytesMut::with_capacity(4096);
        buf.put_u32_le(epoch);
        buf.put_u64_le(0);
        Self { buf, records: 0 }
    }

    /// Appends one record.
    pub fn push(&mut self, seq: u64, record: &[u8]) {
        self.buf.put_u64_le(seq);
        self.buf.put_u32_le(record.len() as u32);
        self.buf.extend_from_slice(record);
        self.records += 1;
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Records so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// True when no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The message payload, stamped with `publish_ts` (the caller's clock as it publishes).
    pub fn finish(mut self, publish_ts: u64) -> Bytes {
        self.buf[4..BATCH_HEAD].copy_from_slice(&publish_ts.to_le_bytes());
        self.buf.freeze()
    }
}

/// A stream batch parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The numbering of its records.
    pub epoch: u32,
    /// When the ingest node handed it to NATS (its wall clock, ns since the Unix epoch).
    pub publish_ts: u64,
    /// Its records (`seq`, record bytes sharing the payload).
    pub records: Vec<(u64, Bytes)>,
}

/// A stream batch parsed; `None` when malformed.
pub fn parse_batch(payload: &Bytes) -> Option<Batch> {
    let epoch = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let publish_ts = u64::from_le_bytes(payload.get(4..BATCH_HEAD)?.try_into().ok()?);
    let mut at = BATCH_HEAD;
    let mut records = Vec::new();
    while at < payload.len() {
        let seq = u64::from_le_bytes(payload.get(at..at + 8)?.try_into().ok()?);
        let len = u32::from_le_bytes(payload.get(at + 8..at + 12)?.try_into().ok()?) as usize;
        let start = at + 12;
        if payload.len() < start + len {
            return None;
        }
        records.push((seq, payload.slice(start..start + len)));
        at = start + len;
    }
    Some(Batch {
        epoch,
        publish_ts,
        records,
    })
}

/// The feed's and the ingest node's stamps of an encoded record, `(exch_ts, recv_ts)`
/// (binary: header bytes 16..32; JSON: its `"exch_ts"` and `"recv_ts"` fields).
pub fn record_times(format: Format, record: &[u8]) -> Option<(u64, u64)> {
    match format {
        Format::Binary => Some((
            u64::from_le_bytes(record.get(16..24)?.try_into().ok()?),
            u64::from_le_bytes(record.get(24..32)?.try_into().ok()?),
        )),
        Format::Json => {
            fn field(record: &[u8], key: &[u8]) -> Option<(u64, usize)> {
                let at = record.windows(key.len()).position(|w| w == key)? + key.len();
                let digits = record[at..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let v = std::str::from_utf8(&record[at..at + digits])
                    .ok()?
                    .parse()
                    .ok()?;
                Some((v, at + digits))
            }
            // Written in this order, near the start of every record (wire::encode_*_json).
            let (exch, end) = field(record, b"\"exch_ts\":")?;
            let (recv, _) = field(&record[end..], b"\"recv_ts\":")?;
            Some((exch, recv))
        }
    }
}

/// A snapshot request: `u32 sid`, `u8 stream`, `u8 format` (0 binary, 1 JSON).
pub fn encode_snapshot_request(topic: Topic) -> Bytes {
    let mut b = BytesMut::with_capacity(6);
    b.put_u32_le(topic.sid);
    b.put_u8(topic.stream);
    b.put_u8(topic.format as u8);
    b.freeze()
}

fn format_of(b: u8) -> Option<Format> {
    match b {
        0 => Some(Format::Binary),
        1 => Some(Format::Json),
        _ => None,
    }
}

/// The book stream a snapshot request names; `None` when malformed or not a book stream.
pub fn parse_snapshot_request(p: &[u8]) -> Option<Topic> {
    if p.len() != 6 {
        return None;
    }
    let sid = u32::from_le_bytes(p[0..4].try_into().ok()?);
    let stream = p[4];
    let format = format_of(p[5])?;
    (usize::from(stream) < DEPTHS.len()).then_some(Topic {
        sid,
        stream,
        format,
    })
}

/// A snapshot reply: `u32 epoch`, `u64 seq`, the snapshot record (flagged, with checksum).
pub fn encode_snapshot_reply(epoch: u32, seq: u64, record: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(12 + record.len());
    b.put_u32_le(epoch);
    b.put_u64_le(seq);
    b.extend_from_slice(record);
    b.freeze()
}

/// A snapshot reply parsed: epoch, seq and record. `None` when malformed.
pub fn parse_snapshot_reply(p: &Bytes) -> Option<(u32, u64, Bytes)> {
    let epoch = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?);
    let seq = u64::from_le_bytes(p.get(4..12)?.try_into().ok()?);
    (p.len() > 12).then(|| (epoch, seq, p.slice(12..)))
}

/// A status message: `u32 epoch`, `u32 sid`, `u8 format`, the status record.
pub fn encode_status(epoch: u32, sid: u32, format: Format, record: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(9 + record.len());
    b.put_u32_le(epoch);
    b.put_u32_le(sid);
    b.put_u8(format as u8);
    b.extend_from_slice(record);
    b.freeze()
}

/// A status message parsed: epoch, sid, format and record. `None` when malformed.
pub fn parse_status(p: &Bytes) -> Option<(u32, u32, Format, Bytes)> {
    let epoch = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?);
    let sid = u32::from_le_bytes(p.get(4..8)?.try_into().ok()?);
    let format = format_of(*p.get(8)?)?;
    (p.len() > 9).then(|| (epoch, sid, format, p.slice(9..)))
}

/// The symbol table message (JSON):
/// `{"bus":2,"epoch":"3f9c0a17","symbols":[{"symbol":"BTC-USD","sid":0,"px_decimals":2,"qty_decimals":4},..]}`.
pub fn encode_symbols(epoch: u32, table: &SymbolTable) -> Bytes {
    let symbols: Vec<serde_json::Value> = table
        .symbols
        .iter()
        .map(|m| {
            serde_json::json!({"symbol": m.symbol, "sid": m.sid,
                "px_decimals": m.px_decimals, "qty_decimals": m.qty_decimals})
        })
        .collect();
    let v = serde_json::json!({"bus": BUS_VERSION, "epoch": format!("{epoch:08x}"), "symbols": symbols});
    Bytes::from(v.to_string())
}

/// The symbol table message parsed: epoch and table (sids must be 0, 1, 2, … in order).
///
/// # Errors
/// [`BusError::Version`] when the ingest node speaks another bus version (a table without
/// `"bus"` is version 1), [`BusError::BadField`] when it does not parse.
pub fn parse_symbols(p: &[u8]) -> Result<(u32, SymbolTable), BusError> {
    let v: serde_json::Value =
        serde_json::from_slice(p).map_err(|_| BusError::BadField("symbol table"))?;
    let version = match (v.get("bus"), v.get("epoch")) {
        (Some(b), _) => b.as_u64().ok_or(BusError::BadField("bus"))?,
        // Version 1 had no "bus"; without an epoch it is not a table at all.
        (None, Some(_)) => 1,
        (None, None) => return Err(BusError::BadField("symbol table")),
    };
    if version != BUS_VERSION {
        return Err(BusError::Version(version));
    }
    table_of(&v).ok_or(BusError::BadField("symbol table"))
}

fn table_of(v: &serde_json::Value) -> Option<(u32, SymbolTable)> {
    let epoch = u32::from_str_radix(v.get("epoch")?.as_str()?, 16).ok()?;
    let mut symbols = Vec::new();
    for (i, s) in v.get("symbols")?.as_array()?.iter().enumerate() {
        let sid = u32::try_from(s.get("sid")?.as_u64()?).ok()?;
        if sid as usize != i {
            return None;
        }
        symbols.push(SymbolMeta {
            symbol: s.get("symbol")?.as_str()?.to_owned(),
            sid,
            px_decimals: u8::try_from(s.get("px_decimals")?.as_u64()?).ok()?,
            qty_decimals: u8::try_from(s.get("qty_decimals")?.as_u64()?).ok()?,
        });
    }
    Some((epoch, SymbolTable { symbols }))
}

/// A replay request: the records of `topic` after `after` in numbering `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRequest {
    /// The numbering the position belongs to.
    pub epoch: u32,
    /// The stream (a book stream at one depth, or trades; one format).
    pub topic: Topic,
    /// The seq of the last record the asker holds.
    pub after: u64,
}

/// A replay request: `u32 epoch`, `u32 sid`, `u8 stream` (a depth index, or the trades
/// stream), `u8 format`, `u64 after`.
pub fn encode_replay_request(r: &ReplayRequest) -> Bytes {
    let mut b = BytesMut::with_capacity(18);
    b.put_u32_le(r.epoch);
    b.put_u32_le(r.topic.sid);
    b.put_u8(r.topic.stream);
    b.put_u8(r.topic.format as u8);
    b.put_u64_le(r.after);
    b.freeze()
}

/// A replay request parsed.
///
/// # Errors
/// [`BusError`] when it is not 18 bytes, or names a format or a stream other than a book
/// stream at one depth or trades.
pub fn parse_replay_request(p: &[u8]) -> Result<ReplayRequest, BusError> {
    if p.len() != 18 {
        return Err(BusError::Truncated(p.len().min(18)));
    }
    let u32_at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let mut after = [0u8; 8];
    after.copy_from_slice(&p[10..18]);
    let stream = p[8];
    let format = format_of(p[9]).ok_or(BusError::BadField("format"))?;
    let topic = Topic {
        sid: u32_at(4),
        stream,
        format,
    };
    if usize::from(stream) >= DEPTHS.len() && topic != Topic::trades(topic.sid, format) {
        return Err(BusError::BadField("stream"));
    }
    Ok(ReplayRequest {
        epoch: u32_at(0),
        topic,
        after: u64::from_le_bytes(after),
    })
}

/// A replay reply: `u8 kind` then `u32 epoch` (the ingest node's); kind 0 (hit) is followed by
/// the records after the asked position, each `u64 seq`, `u32 len`, the record, as in a stream
/// batch (none when nothing followed it); kind 1 is a miss (another epoch, or the window no
/// longer holds the records, or they would not fit in [`MAX_REPLAY_REPLY_BYTES`]).
pub fn encode_replay_reply(epoch: u32, records: Option<&[(u64, Bytes)]>) -> Bytes {
    let Some(records) = records else {
        let mut b = BytesMut::with_capacity(5);
        b.put_u8(1);
        b.put_u32_le(epoch);
        return b.freeze();
    };
    let len: usize = records.iter().map(|(_, r)| 12 + r.len()).sum();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    b.put_u32_le(epoch);
    for (seq, r) in records {
        b.put_u64_le(*seq);
        b.put_u32_le(r.len() as u32);
        b.extend_from_slice(r);
    }
    b.freeze()
}

/// The records of a replay reply (`seq`, record), or `None` for a miss.
pub type ReplayRecords = Option<Vec<(u64, Bytes)>>;

/// A replay reply parsed, for a request of the records after `after`: the ingest node's
/// epoch, and the records (`None`: a miss). The records must be `after + 1`, `after + 2`, …
/// (checked here: a reply that does not continue the position cannot be replayed).
///
/// # Errors
/// [`BusError`] when truncated, of an unknown kind, or out of order.
pub fn parse_replay_reply(p: &Bytes, after: u64) -> Result<(u32, ReplayRecords), BusError> {
    let kind = *p.first().ok_or(BusError::Truncated(0))?;
    let epoch = u32::from_le_bytes(
        p.get(1..5)
            .ok_or(BusError::Truncated(p.len()))?
            .try_into()
            .map_err(|_| BusError::Truncated(p.len()))?,
    );
    match kind {
        1 if p.len() == 5 => return Ok((epoch, None)),
        1 => return Err(BusError::BadField("miss length")),
        0 => {}
        _ => return Err(BusError::BadField("reply kind")),
    }
    let mut at = 5;
    let mut out = Vec::new();
    let mut expected = after.wrapping_add(1);
    while at < p.len() {
        let head = p.get(at..at + 12).ok_or(BusError::Truncated(p.len()))?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&head[..8]);
        let seq = u64::from_le_bytes(seq);
        let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let start = at + 12;
        let end = start.checked_add(len).ok_or(BusError::Truncated(p.len()))?;
        if end > p.len() {
            return Err(BusError::Truncated(p.len()));
        }
        if seq != expected {
            return Err(BusError::OutOfOrder { expected, got: seq });
        }
        out.push((seq, p.slice(start..end)));
        expected = expected.wrapping_add(1);
        at = end;
    }
    Ok((epoch, Some(out)))
}

/// Most streams one interest announcement may name (every delta stream of 100,000 symbols
/// would not fit in NATS' default 1 MiB payload; an edge announces the streams it forwards).
pub const MAX_ANNOUNCED: usize = 100_000;

/// An edge's interest announcement: the delta streams it wants published (all of them: each
/// announcement replaces the previous one of the same edge) for `lease_ms` from its arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The edge process (random per process: a restarted edge is a new one).
    pub edge: u64,
    /// How long the announcement holds without the next one, in milliseconds.
    pub lease_ms: u32,
    /// The streams: book streams at one depth and trade streams, in one format each.
    pub topics: Vec<Topic>,
}

/// An interest announcement: `u64 edge`, `u32 lease_ms`, `u32 count`, then per stream
/// `u32 sid`, `u8 stream` (a depth index, or 5 for trades), `u8 format`.
pub fn encode_announcement(a: &Announcement) -> Bytes {
    let mut b = BytesMut::with_capacity(16 + 6 * a.topics.len());
    b.put_u64_le(a.edge);
    b.put_u32_le(a.lease_ms);
    b.put_u32_le(a.topics.len() as u32);
    for t in &a.topics {
        b.put_u32_le(t.sid);
        b.put_u8(t.stream);
        b.put_u8(t.format as u8);
    }
    b.freeze()
}

/// An interest announcement parsed.
///
/// # Errors
/// [`BusError`] when its length does not match its count (or the count is past
/// [`MAX_ANNOUNCED`]), or a stream is not a delta stream (a book depth or trades) in a known
/// format.
pub fn parse_announcement(p: &[u8]) -> Result<Announcement, BusError> {
    let head = p.get(..16).ok_or(BusError::Truncated(p.len()))?;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut edge = [0u8; 8];
    edge.copy_from_slice(&head[..8]);
    let count = u32_at(head, 12) as usize;
    if count > MAX_ANNOUNCED {
        return Err(BusError::BadField("count"));
    }
    if p.len() != 16 + 6 * count {
        return Err(BusError::Truncated(p.len()));
    }
    let mut topics = Vec::with_capacity(count);
    for e in p[16..].chunks_exact(6) {
        let format = format_of(e[5]).ok_or(BusError::BadField("format"))?;
        let t = Topic {
            sid: u32_at(e, 0),
            stream: e[4],
            format,
        };
        if t.stream >= CONFLATED_BASE {
            return Err(BusError::BadField("stream"));
        }
        topics.push(t);
    }
    Ok(Announcement {
        edge: u64::from_le_bytes(edge),
        lease_ms: u32_at(head, 8),
        topics,
    })
}

/// The topic of dense index `idx` ([`Topic::index`]).
pub fn topic_of_index(idx: usize) -> Topic {
    let format = if idx % 2 == 0 {
        Format::Binary
    } else {
        Format::Json
    };
    let stream = ((idx / 2) % STREAMS_PER_SYMBOL) as u8;
    let sid = (idx / 2 / STREAMS_PER_SYMBOL) as u32;
    Topic {
        sid,
        stream,
        format,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, RecordHeader, RecordKind};

    fn meta() -> SymbolMeta {
        SymbolMeta {
            symbol: "BTC-USD".into(),
            sid: 3,
            px_decimals: 2,
            qty_decimals: 4,
        }
    }

    #[test]
    fn subjects() {
        let s = Subjects::new("tc");
        assert_eq!(
            s.stream(Topic::book(3, 1, Format::Binary)),
            "tc.3.book.10.bin"
        );
        assert_eq!(
            s.stream(Topic::book(3, 4, Format::Json)),
            "tc.3.book.0.json"
        );
        assert_eq!(s.stream(Topic::trades(7, Format::Json)), "tc.7.trades.json");
        // Every topic has a subject (none panics), conflated tiers their own.
        assert_eq!(
            s.stream(Topic::conflated(3, 1, 2, Format::Binary)),
            "tc.3.book.10.5hz.bin"
        );
        for stream in 0..STREAMS_PER_SYMBOL as u8 {
            let t = Topic {
                sid: 1,
                stream,
                format: Format::Json,
            };
            assert!(s.stream(t).starts_with("tc.1."));
        }
        assert_eq!(s.snapshot(), "tc.snapshot");
    }

    #[test]
    fn seq_of_both_formats() {
        let hdr = RecordHeader {
            kind: RecordKind::Trade,
            flags: 0,
            sid: 3,
            seq: 123_456,
            exch_ts: 1,
            recv_ts: 2,
        };
        let t = wire::Trade {
            px: 100,
            qty: 5,
            trade_id: 42,
            taker_side: crate::book::Side::Bid,
        };
        let mut b = BytesMut::new();
        wire::encode_trade(&mut b, &hdr, &t);
        assert_eq!(record_seq(Format::Binary, &b), Some(123_456));
        let mut j = BytesMut::new();
        j.extend_from_slice(b",");
        wire::encode_trade_json(&mut j, &meta(), &hdr, &t);
        assert_eq!(record_seq(Format::Json, &j), Some(123_456));
    }

    #[test]
    fn batch_round_trip() {
        let mut w = BatchWriter::new(0xdead_beef);
        w.push(5, b"abc");
        w.push(6, b"");
        w.push(7, b"xyz1");
        let p = w.finish(1_764_000_000_123_456_789);
        let b = parse_batch(&p).unwrap();
        assert_eq!(b.epoch, 0xdead_beef);
        assert_eq!(b.publish_ts, 1_764_000_000_123_456_789);
        assert_eq!(
            b.records,
            vec![
                (5, Bytes::from_static(b"abc")),
                (6, Bytes::new()),
                (7, Bytes::from_static(b"xyz1"))
            ]
        );
        assert!(parse_batch(&p.slice(..p.len() - 1)).is_none());
    }

    #[test]
    fn requests_replies_statuses_symbols_round_trip() {
        let t = Topic::book(9, 2, Format::Json);
        assert_eq!(parse_snapshot_request(&encode_snapshot_request(t)), Some(t));
        assert_eq!(
            parse_snapshot_request(&encode_snapshot_request(Topic::trades(9, Format::Json))),
            None
        );
        let r = encode_snapshot_reply(7, 99, b"rec");
        assert_eq!(
            parse_snapshot_reply(&r),
            Some((7, 99, Bytes::from_static(b"rec")))
        );
        let s = encode_status(7, 4, Format::Json, b"st");
        assert_eq!(
            parse_status(&s),
            Some((7, 4, Format::Json, Bytes::from_static(b"st")))
        );
        let mut m = meta();
        m.sid = 0;
        let table = SymbolTable { symbols: vec![m] };
        let (e, back) = parse_symbols(&encode_symbols(0x0102_0304, &table)).unwrap();
        assert_eq!(e, 0x0102_0304);
        assert_eq!(back.symbols, table.symbols);
        // A version-1 ingest node (no "bus") or a later one: refused, by version.
        let v1 = br#"{"epoch":"01020304","symbols":[]}"#;
        assert_eq!(parse_symbols(v1).unwrap_err(), BusError::Version(1));
        let v3 = br#"{"bus":3,"epoch":"01020304","symbols":[]}"#;
        assert_eq!(parse_symbols(v3).unwrap_err(), BusError::Version(3));
        for garbage in [&b"{"[..], b"{}", b"[]", br#"{"bus":"2"}"#] {
            assert!(
                matches!(parse_symbols(garbage), Err(BusError::BadField(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn replay_requests_and_replies_round_trip() {
        let r = ReplayRequest {
            epoch: 0xabcd_0001,
            topic: Topic::book(5, 2, Format::Json),
            after: 41,
        };
        assert_eq!(parse_replay_request(&encode_replay_request(&r)), Ok(r));
        let t = ReplayRequest {
            topic: Topic::trades(5, Format::Binary),
            ..r
        };
        assert_eq!(parse_replay_request(&encode_replay_request(&t)), Ok(t));
        let recs = vec![
            (42, Bytes::from_static(b"a")),
            (43, Bytes::from_static(b"bc")),
        ];
        let hit = encode_replay_reply(7, Some(&recs));
        assert_eq!(parse_replay_reply(&hit, 41), Ok((7, Some(recs))));
        let empty = encode_replay_reply(7, Some(&[]));
        assert_eq!(parse_replay_reply(&empty, 41), Ok((7, Some(vec![]))));
        let miss = encode_replay_reply(7, None);
        assert_eq!(parse_replay_reply(&miss, 41), Ok((7, None)));
    }

    #[test]
    fn malformed_replay_messages_are_errors() {
        let r = encode_replay_request(&ReplayRequest {
            epoch: 1,
            topic: Topic::book(5, 1, Format::Binary),
            after: 9,
        });
        assert_eq!(parse_replay_request(&r[..17]), Err(BusError::Truncated(17)));
        let mut bad = r.to_vec();
        bad[9] = 7;
        assert_eq!(
            parse_replay_request(&bad),
            Err(BusError::BadField("format"))
        );
        let mut conflated = r.to_vec();
        conflated[8] = 200;
        assert_eq!(
            parse_replay_request(&conflated),
            Err(BusError::BadField("stream"))
        );

        let recs = vec![
            (10, Bytes::from_static(b"abc")),
            (11, Bytes::from_static(b"d")),
        ];
        let hit = encode_replay_reply(3, Some(&recs));
        // Cut anywhere inside: an error, never a panic or a short replay.
        for n in 0..hit.len() {
            let cut = hit.slice(..n);
            if n == 5 || n == 5 + 12 + 3 {
                // Whole records: a valid (shorter) reply.
                assert!(parse_replay_reply(&cut, 9).is_ok(), "{n}");
            } else {
                assert!(parse_replay_reply(&cut, 9).is_err(), "{n}");
            }
        }
        // Records that do not continue the asked position.
        assert_eq!(
            parse_replay_reply(&hit, 8),
            Err(BusError::OutOfOrder {
                expected: 9,
                got: 10
            })
        );
        let gap = encode_replay_reply(3, Some(&[(10, Bytes::new()), (12, Bytes::new())]));
        assert_eq!(
            parse_replay_reply(&gap, 9),
            Err(BusError::OutOfOrder {
                expected: 11,
                got: 12
            })
        );
        // A record length past the end (u32::MAX).
        let mut huge = hit.to_vec();
        huge[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            parse_replay_reply(&Bytes::from(huge), 9),
            Err(BusError::Truncated(hit.len()))
        );
        assert_eq!(
            parse_replay_reply(&Bytes::from_static(&[2, 0, 0, 0, 0]), 9),
            Err(BusError::BadField("reply kind"))
        );
        assert_eq!(
            parse_replay_reply(&Bytes::from_static(&[1, 0, 0, 0, 0, 1]), 9),
            Err(BusError::BadField("miss length"))
        );
    }

    #[test]
    fn record_times_of_both_formats() {
        let hdr = RecordHeader {
            kind: RecordKind::Trade,
            flags: 0,
            sid: 3,
            seq: 9,
            exch_ts: 1_764_000_000_000_000_001,
            recv_ts: 1_764_000_000_000_500_002,
        };
        let t = wire::Trade {
            px: 100,
            qty: 5,
            trade_id: 42,
            taker_side: crate::book::Side::Ask,
        };
        let mut b = BytesMut::new();
        wire::encode_trade(&mut b, &hdr, &t);
        let want = Some((hdr.exch_ts, hdr.recv_ts));
        assert_eq!(record_times(Format::Binary, &b), want);
        assert_eq!(record_times(Format::Binary, &b[..31]), None);
        let mut j = BytesMut::new();
        j.extend_from_slice(b",");
        wire::encode_trade_json(&mut j, &meta(), &hdr, &t);
        assert_eq!(record_times(Format::Json, &j), want);
        assert_eq!(record_times(Format::Json, b",{\"kind\":\"trade\"}"), None);
    }

    #[test]
    fn announcements_round_trip_and_garbage_is_an_error() {
        let a = Announcement {
            edge: 0x0123_4567_89ab_cdef,
            lease_ms: 3_000,
            topics: vec![
                Topic::book(0, 1, Format::Binary),
                Topic::trades(7, Format::Json),
                Topic::book(2, 4, Format::Json),
            ],
        };
        let p = encode_announcement(&a);
        assert_eq!(parse_announcement(&p), Ok(a.clone()));
        let empty = Announcement {
            topics: vec![],
            ..a.clone()
        };
        assert_eq!(parse_announcement(&encode_announcement(&empty)), Ok(empty));
        // Cut anywhere, or one byte too many: an error, never a panic.
        for n in 0..p.len() {
            assert!(parse_announcement(&p[..n]).is_err(), "{n}");
        }
        let mut long = p.to_vec();
        long.push(0);
        assert!(parse_announcement(&long).is_err());
        // A conflated tier or an unknown format, a count past the bound.
        let mut tier = p.to_vec();
        tier[16 + 4] = CONFLATED_BASE;
        assert_eq!(parse_announcement(&tier), Err(BusError::BadField("stream")));
        let mut fmt = p.to_vec();
        fmt[16 + 5] = 9;
        assert_eq!(parse_announcement(&fmt), Err(BusError::BadField("format")));
        let mut huge = p.to_vec();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_announcement(&huge), Err(BusError::BadField("count")));
    }

    #[test]
    fn topic_indexes_invert() {
        for sid in [0, 1, 77] {
            for stream in 0..STREAMS_PER_SYMBOL as u8 {
                for format in [Format::Binary, Format::Json] {
                    let t = Topic {
                        sid,
                        stream,
                        format,
                    };
                    assert_eq!(topic_of_index(t.index()), t);
                }
            }
        }
    }
}
