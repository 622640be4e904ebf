//! The NATS bus between an ingest node and its edge nodes (`--role ingest|edge`,
//! docs/protocol.md §7, docs/architecture.md "Roles").
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

use bytes::{BufMut, Bytes, BytesMut};

use crate::book::DEPTHS;
use crate::fanout::{Format, STREAMS_PER_SYMBOL, Topic};
use crate::ring::SymbolTable;
use crate::wire::SymbolMeta;

/// Largest stream batch the ingest node publishes (NATS' default `max_payload` is 1 MiB).
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

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
    /// `<p>.<sid>.trades.<bin|json>`.
    pub fn stream(&self, topic: Topic) -> String {
        let fmt = match topic.format {
            Format::Binary => "bin",
            Format::Json => "json",
        };
        if topic.is_book() {
            let depth = DEPTHS[usize::from(topic.stream)];
            format!("{}.{}.book.{depth}.{fmt}", self.prefix, topic.sid)
        } else {
            format!("{}.{}.trades.{fmt}", self.prefix, topic.sid)
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
