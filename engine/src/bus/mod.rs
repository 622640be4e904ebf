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
pub mod pending;
pub mod replica;
pub mod resume;

use bytes::{BufMut, Bytes, BytesMut};

use crate::book::DEPTHS;
use crate::fanout::{Format, STREAMS_PER_SYMBOL, Topic};
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

/// A stream batch: `u32 epoch` then, per record, `u64 seq`, `u32 len`, the record (all
/// little-endian).
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

    /// The message payload.
    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// A stream batch parsed: its epoch and records (`seq`, record bytes sharing `payload`).
/// `None` when malformed.
pub fn parse_batch(payload: &Bytes) -> Option<(u32, Vec<(u64, Bytes)>)> {
    let epoch = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let mut at = 4;
    let mut out = Vec::new();
    while at < payload.len() {
        let seq = u64::from_le_bytes(payload.get(at..at + 8)?.try_into().ok()?);
        let len = u32::from_le_bytes(payload.get(at + 8..at + 12)?.try_into().ok()?) as usize;
        let start = at + 12;
        if payload.len() < start + len {
            return None;
        }
        out.push((seq, payload.slice(start..start + len)));
        at = start + len;
    }
    Some((epoch, out))
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
/// `{"epoch":"3f9c0a17","symbols":[{"symbol":"BTC-USD","sid":0,"px_decimals":2,"qty_decimals":4},..]}`.
pub fn encode_symbols(epoch: u32, table: &SymbolTable) -> Bytes {
    let symbols: Vec<serde_json::Value> = table
        .symbols
        .iter()
        .map(|m| {
            serde_json::json!({"symbol": m.symbol, "sid": m.sid,
                "px_decimals": m.px_decimals, "qty_decimals": m.qty_decimals})
        })
        .collect();
    let v = serde_json::json!({"epoch": format!("{epoch:08x}"), "symbols": symbols});
    Bytes::from(v.to_string())
}

/// The symbol table message parsed: epoch and table (sids must be 0, 1, 2, … in order).
pub fn parse_symbols(p: &[u8]) -> Option<(u32, SymbolTable)> {
    let v: serde_json::Value = serde_json::from_slice(p).ok()?;
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
        let p = w.finish();
        let (epoch, recs) = parse_batch(&p).unwrap();
        assert_eq!(epoch, 0xdead_beef);
        assert_eq!(
            recs,
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
