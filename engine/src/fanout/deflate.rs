//! permessage-deflate for the data streams, compressed once and shared (sans-IO).
//!
//! # The problem
//!
//! A record is encoded once by the ingester and the same `Bytes` goes to every subscriber.
//! Compressing each connection's batch on its own would undo that: the shard's CPU would grow
//! with the number of deflate subscribers instead of the number of records.
//!
//! # The design: shared, independent DEFLATE pieces
//!
//! A DEFLATE stream may be a concatenation of pieces that each start with an empty window and
//! end with a sync flush ([`Deflater::compress_piece`]): each ends byte-aligned, none sets
//! BFINAL, none refers to bytes outside itself. Since tickcast never uses context takeover on
//! its side (always allowed by RFC 7692), such a piece can be placed in *any* connection's
//! message. So, per ring drain:
//!
//! - every record of a topic that has at least one deflate subscriber is appended, in ring
//!   order, to that topic's **run** for this drain ([`SharedDeflate::push`]); a run is cut into
//!   **chunks** of up to [`CHUNK_BYTES`] (and the batch limits);
//! - a chunk is compressed the first time a connection needs it, once per window size (the
//!   negotiated `server_max_window_bits`: the parameter set that changes the bytes), and the
//!   compressed `Bytes` is then shared by every subscriber of the topic with that window size;
//! - a connection's message is `[frame header, RSV1][stored block: the 8-byte batch header]`
//!   then its pieces: shared compressed chunks, and stored (uncompressed, RFC 1951 §3.2.4)
//!   blocks for what is the connection's own (snapshots and status records, which are not part
//!   of a topic run; a snapshot of at least [`OWN_COMPRESS_MIN`] bytes is compressed on its own,
//!   once per drain for a given record) and for the part of a chunk it must not get whole;
//!   the message's last four bytes `00 00 ff ff` are removed (RFC 7692 §7.2.1) by slicing the
//!   last shared piece, without a copy, or a single `00` closes a message ending in a stored
//!   block so that the receiver's appended tail forms an empty stored block.
//!
//! The cost of compression is per (chunk, window size), whatever the number of subscribers.
//!
//! # Order and joins
//!
//! A run holds the records of one topic, so within a compressed message a connection's
//! records are **grouped by stream** (each stream's group placed where its first record was
//! in ring order, the connection's own records in their ring positions). Order within a stream
//! is kept; the order between streams of one message is not. A connection whose snapshot
//! arrived in the middle of this drain gets only the suffix of the run that follows its
//! snapshot: the chunk that straddles its join point goes to it as stored records, the later
//! chunks shared. A connection's pending list is checked against the runs; anything that is not
//! a suffix of its run falls back to the plain (uncompressed) message.
//!
//! # When not to compress
//!
//! A batch whose uncompressed payload is below the threshold goes as a plain message (RSV1
//! clear, allowed per message by RFC 7692), and so does one whose compressed form would not
//! be smaller. A chunk that does not shrink is sent as stored blocks instead of compressed.

use std::collections::HashMap;

use bytes::Bytes;

use super::batch::{BatchLimits, append_batch, batch_wire_len};
use super::outbuf::{INLINE_CAP, OutBuf, Overflow};
use super::{Format, Topic};
use crate::proto::deflate::{Deflater, SYNC_TAIL, stored_block_header};
use crate::proto::frame::{MAX_HEADER_LEN, OpCode, RSV1, encode_header_with_rsv};
use crate::wire::{BATCH_HEADER_LEN, batch_header};

/// Largest uncompressed size of one shared chunk. Within the 32 KiB window, so a chunk
/// compresses as well as the data allows, and small enough that a message can be cut between
/// chunks.
pub const CHUNK_BYTES: usize = 32 * 1024;

/// A connection's own record (a snapshot) of at least this many bytes is compressed on its own;
/// smaller ones (status records) go stored.
pub const OWN_COMPRESS_MIN: usize = 256;

/// zlib level of the shared compressor: 1, zlib's fastest. Market-data records are small and
/// repetitive; higher levels cost several times the CPU for a few percent (see
/// docs/architecture.md, "Compression").
pub const LEVEL: u32 = 1;

/// Largest stored block (its length is 16 bits).
const MAX_STORED: usize = u16::MAX as usize;

/// Where one record a connection is owed sits in this drain's runs, or [`RunRef::OWN`] for a
/// record of its own (snapshot, status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRef {
    run: u32,
    idx: u32,
}

impl RunRef {
    /// A record that is not part of a topic run: sent stored or compressed on its own.
    pub const OWN: Self = Self {
        run: u32::MAX,
        idx: 0,
    };

    fn is_own(self) -> bool {
        self.run == u32::MAX
    }
}

/// Counters of the shared compressor (for tests and benchmarks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeflateStats {
    /// Pieces compressed (chunks per window size, own records, echoed messages).
    pub pieces: u64,
    /// Uncompressed bytes given to the compressor.
    pub bytes_in: u64,
    /// Compressed bytes it produced.
    pub bytes_out: u64,
    /// Compressed messages queued.
    pub messages: u64,
}

/// One chunk of a run: records `start..end` of the run.
#[derive(Debug)]
struct Chunk {
    start: usize,
    end: usize,
    /// Sum of the records' lengths.
    bytes: usize,
    /// Compressed forms by window bits; `None`: compressing does not pay, send it stored.
    z: Vec<(u8, Option<Bytes>)>,
}

/// The records of one topic in this drain that deflate subscribers get.
#[derive(Debug)]
struct Run {
    topic: Topic,
    records: Vec<Bytes>,
    chunks: Vec<Chunk>,
    /// Last connection stamp that visited this run, and the next index it must own.
    visit_stamp: u64,
    visit_next: usize,
}

/// What goes into a compressed message for one connection, in order.
#[derive(Debug)]
enum Unit {
    /// One record, sent in a stored block.
    Plain(Bytes),
    /// A compressed piece (ends with [`SYNC_TAIL`]) of `records` records, `bytes` raw bytes.
    Piece {
        z: Bytes,
        records: usize,
        bytes: usize,
    },
}

impl Unit {
    fn records(&self) -> usize {
        match self {
            Self::Plain(_) => 1,
            Self::Piece { records, .. } => *records,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::Plain(b) => b.len(),
            Self::Piece { bytes, .. } => *bytes,
        }
    }
}

/// A piece of a message on its way to the out-buffer.
#[derive(Debug)]
enum Seg {
    Small { buf: [u8; 8], len: u8 },
    Shared(Bytes),
}

impl Seg {
    fn small(data: &[u8]) -> Self {
        let mut buf = [0u8; 8];
        let len = data.len().min(8);
        buf[..len].copy_from_slice(&data[..len]);
        Self::Small {
            buf,
            len: len as u8,
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Small { buf, len } => buf.get(..usize::from(*len)).unwrap_or_default(),
            Self::Shared(b) => b,
        }
    }
}

/// Builds one message's DEFLATE payload from stored bytes and compressed pieces.
#[derive(Debug, Default)]
struct MsgBuilder {
    segs: Vec<Seg>,
    /// Stored block being filled: index of its header segment and its length so far.
    open: Option<(usize, usize)>,
}

impl MsgBuilder {
    fn stored(&mut self, seg: Seg) {
        if let Seg::Shared(b) = &seg {
            if b.len() > MAX_STORED {
                // Only a (JSON) record can be this long: split it over several blocks.
                for start in (0..b.len()).step_by(MAX_STORED) {
                    self.stored(Seg::Shared(
                        b.slice(start..(start + MAX_STORED).min(b.len())),
                    ));
                }
                return;
            }
        }
        let n = seg.as_slice().len();
        if n == 0 {
            return;
        }
        match self.open {
            Some((_, len)) if len + n <= MAX_STORED => {}
            _ => {
                self.close_stored();
                self.segs.push(Seg::small(&stored_block_header(0)));
                self.open = Some((self.segs.len() - 1, 0));
            }
        }
        if let Some((_, len)) = self.open.as_mut() {
            *len += n;
        }
        self.segs.push(seg);
    }

    fn close_stored(&mut self) {
        if let Some((at, len)) = self.open.take() {
            if let Some(slot) = self.segs.get_mut(at) {
                // `stored` keeps len <= MAX_STORED.
                *slot = Seg::small(&stored_block_header(len as u16));
            }
        }
    }

    fn piece(&mut self, z: Bytes) {
        self.close_stored();
        self.segs.push(Seg::Shared(z));
    }

    /// Ends the payload: a final compressed piece loses its sync tail, a final stored block is
    /// followed by `00` (with the receiver's appended tail: an empty stored block).
    fn finish(&mut self) {
        let ended_stored = self.open.is_some();
        self.close_stored();
        if !ended_stored {
            if let Some(Seg::Shared(z)) = self.segs.last_mut() {
                if z.ends_with(&SYNC_TAIL) {
                    *z = z.slice(..z.len() - SYNC_TAIL.len());
                    return;
                }
            }
        }
        self.segs.push(Seg::small(&[0x00]));
    }

    fn len(&self) -> usize {
        self.segs.iter().map(|s| s.as_slice().len()).sum()
    }
}

/// A shard's shared compression state: this drain's runs, the compressors, and caches.
#[derive(Debug)]
pub struct SharedDeflate {
    deflater: Deflater,
    runs: Vec<Run>,
    /// Runs in use this drain (`runs[live..]` are spares kept for their capacity).
    live: usize,
    by_topic: HashMap<Topic, u32>,
    /// Own records compressed this drain, by (address, length, window bits); the records are
    /// kept alive in `own_keep` so that an address cannot be reused within the drain.
    own_cache: HashMap<(usize, usize, u8), Option<Bytes>>,
    own_keep: Vec<Bytes>,
    stamp: u64,
    units: Vec<Unit>,
    visited: Vec<u32>,
    scratch: Vec<u8>,
    stats: DeflateStats,
}

impl Default for SharedDeflate {
    fn default() -> Self {
        Self::new(LEVEL)
    }
}

impl SharedDeflate {
    /// Shared compression at zlib `level`.
    pub fn new(level: u32) -> Self {
        Self {
            deflater: Deflater::new(level),
            runs: Vec::new(),
            live: 0,
            by_topic: HashMap::new(),
            own_cache: HashMap::new(),
            own_keep: Vec::new(),
            stamp: 0,
            units: Vec::new(),
            visited: Vec::new(),
            scratch: Vec::new(),
            stats: DeflateStats::default(),
        }
    }

    /// Forgets the drain's runs and caches (call after every connection was flushed, or before
    /// a new drain). Keeps the allocations.
    pub fn clear(&mut self) {
        for run in self.runs.iter_mut().take(self.live) {
            run.records.clear();
            run.chunks.clear();
        }
        self.live = 0;
        self.by_topic.clear();
        self.own_cache.clear();
        self.own_keep.clear();
    }

    /// True when no record was pushed since the last [`clear`](Self::clear).
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Counters since the shard started.
    pub fn stats(&self) -> DeflateStats {
        self.stats
    }

    /// Appends `record` of `topic` to the topic's run for this drain; returns where it is, to
    /// be given back with the connection's pending list. Call once per record (not per
    /// subscriber), in ring order, only for topics some deflate connection gets.
    pub fn push(&mut self, topic: Topic, record: &Bytes, limits: BatchLimits) -> RunRef {
        let live = self.live;
        let run_id = *self.by_topic.entry(topic).or_insert(live as u32);
        if run_id as usize == live {
            self.live += 1;
            if self.runs.len() < self.live {
                self.runs.push(Run {
                    topic,
                    records: Vec::new(),
                    chunks: Vec::new(),
                    visit_stamp: 0,
                    visit_next: 0,
                });
            }
            if let Some(run) = self.runs.get_mut(live) {
                run.topic = topic;
                run.visit_stamp = 0;
            }
        }
        let Some(run) = self.runs.get_mut(run_id as usize) else {
            return RunRef::OWN;
        };
        let idx = run.records.len();
        run.records.push(record.clone());
        let (max_records, max_bytes) = chunk_limits(topic.format, limits);
        match run.chunks.last_mut() {
            Some(c) if c.end - c.start < max_records && c.bytes + record.len() <= max_bytes => {
                c.end += 1;
                c.bytes += record.len();
            }
            _ => run.chunks.push(Chunk {
                start: idx,
                end: idx + 1,
                bytes: record.len(),
                z: Vec::new(),
            }),
        }
        RunRef {
            run: run_id,
            idx: idx as u32,
        }
    }

    /// Compresses one whole message payload on its own (the echo endpoint): returns the
    /// message payload (tail removed) to send with RSV1, or `None` if compression failed.
    pub fn compress_message(&mut self, window_bits: u8, payload: &[u8]) -> Option<Bytes> {
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        self.deflater
            .compress_piece(window_bits, &[payload], &mut out)
            .ok()?;
        self.stats.pieces += 1;
        self.stats.bytes_in += payload.len() as u64;
        self.stats.bytes_out += out.len() as u64;
        out.truncate(out.len().saturating_sub(SYNC_TAIL.len()));
        Some(Bytes::from(out))
    }

    /// Appends one connection's batch to `out`: compressed messages (RSV1) made of the drain's
    /// shared pieces when that pays, else plain messages exactly as
    /// [`super::batch::append_batch`] would. Returns the number of messages.
    ///
    /// `records` is the connection's pending list in ring order and `refs` says where each
    /// record sits in the runs ([`push`](Self::push)'s return, or [`RunRef::OWN`]).
    /// `window_bits` is the connection's negotiated server window; batches whose uncompressed
    /// payload is below `threshold` bytes are sent plain.
    ///
    /// # Errors
    /// [`Overflow`] when the batch does not fit the out-buffer's bound; nothing was queued.
    #[allow(clippy::too_many_arguments)]
    pub fn append_batch(
        &mut self,
        out: &mut OutBuf,
        format: Format,
        records: &[Bytes],
        refs: &[RunRef],
        window_bits: u8,
        limits: BatchLimits,
        threshold: usize,
    ) -> Result<usize, Overflow> {
        if records.is_empty() {
            return Ok(0);
        }
        let base = base_len(format);
        let raw: usize = base + records.iter().map(Bytes::len).sum::<usize>();
        if raw < threshold
            || refs.len() != records.len()
            || !self.plan(format, records, refs, window_bits)
        {
            return append_batch(out, format, records, limits);
        }
        let messages = self.build_messages(format, limits);
        let wire: usize = messages
            .iter()
            .map(|(_, m)| {
                let n = m.len();
                n + header_len(n)
            })
            .sum();
        if wire >= batch_wire_len(format, records, limits) {
            return append_batch(out, format, records, limits);
        }
        out.reserve(wire)?;
        let opcode = match format {
            Format::Binary => OpCode::Binary,
            Format::Json => OpCode::Text,
        };
        for (_, m) in &messages {
            push_message(out, opcode, m);
        }
        self.stats.messages += messages.len() as u64;
        Ok(messages.len())
    }

    /// Fills `self.units` with the connection's message content in order; false when its
    /// pending list does not match the runs (then it gets plain messages).
    fn plan(&mut self, format: Format, records: &[Bytes], refs: &[RunRef], bits: u8) -> bool {
        self.stamp += 1;
        let stamp = self.stamp;
        let mut units = std::mem::take(&mut self.units);
        let mut visited = std::mem::take(&mut self.visited);
        units.clear();
        visited.clear();
        let mut ok = true;
        for (record, r) in records.iter().zip(refs) {
            if r.is_own() {
                units.push(self.own_unit(format, record, bits));
                continue;
            }
            let run_id = r.run as usize;
            let idx = r.idx as usize;
            let Some(run) = self.runs.get_mut(run_id).filter(|_| run_id < self.live) else {
                ok = false;
                break;
            };
            if run.visit_stamp == stamp {
                // Already placed with the run's first record; it must follow on.
                if idx != run.visit_next {
                    ok = false;
                    break;
                }
                run.visit_next += 1;
                continue;
            }
            run.visit_stamp = stamp;
            run.visit_next = idx + 1;
            visited.push(r.run);
            if !self.run_units(run_id, idx, bits, &mut units) {
                ok = false;
                break;
            }
        }
        // Every run must have been owned to its end: the units hold the whole suffix.
        ok = ok
            && visited.iter().all(|&r| {
                self.runs
                    .get(r as usize)
                    .is_some_and(|run| run.visit_next == run.records.len())
            });
        self.units = units;
        self.visited = visited;
        ok
    }

    /// Units for records `from..` of a run: the chunk holding `from` as stored records unless
    /// it starts there, the following chunks as shared compressed pieces.
    fn run_units(&mut self, run_id: usize, from: usize, bits: u8, units: &mut Vec<Unit>) -> bool {
        let Some(run) = self.runs.get(run_id) else {
            return false;
        };
        let format = run.topic.format;
        let Some(first) = run.chunks.iter().position(|c| c.end > from) else {
            return false;
        };
        for ci in first..run.chunks.len() {
            let (start, end) = match self.runs.get(run_id).and_then(|r| r.chunks.get(ci)) {
                Some(c) => (c.start, c.end),
                None => return false,
            };
            let z = if start >= from {
                self.chunk_z(run_id, ci, bits, format)
            } else {
                None
            };
            let Some(run) = self.runs.get(run_id) else {
                return false;
            };
            match z {
                Some(z) => units.push(Unit::Piece {
                    z,
                    records: end - start,
                    bytes: run.records[start..end].iter().map(Bytes::len).sum(),
                }),
                None => {
                    let s = start.max(from);
                    units.extend(run.records[s..end].iter().cloned().map(Unit::Plain));
                }
            }
        }
        true
    }

    /// The compressed form of chunk `ci` of a run at `bits`, compressed on first use; `None`
    /// when it does not shrink (or compression failed): send it stored.
    fn chunk_z(&mut self, run_id: usize, ci: usize, bits: u8, format: Format) -> Option<Bytes> {
        let run = self.runs.get_mut(run_id)?;
        let chunk = run.chunks.get_mut(ci)?;
        if let Some((_, z)) = chunk.z.iter().find(|(b, _)| *b == bits) {
            return z.clone();
        }
        let recs = run.records.get(chunk.start..chunk.end)?;
        // JSON records carry a leading comma; a piece starts without it (the message puts
        // separators between pieces).
        let mut parts: Vec<&[u8]> = recs.iter().map(|r| &r[..]).collect();
        if format == Format::Json {
            if let Some(first) = parts.first_mut() {
                *first = first.get(1..).unwrap_or_default();
            }
        }
        let raw: usize = parts.iter().map(|p| p.len()).sum();
        self.scratch.clear();
        let z = match self
            .deflater
            .compress_piece(bits, &parts, &mut self.scratch)
        {
            Ok(()) => {
                self.stats.pieces += 1;
                self.stats.bytes_in += raw as u64;
                self.stats.bytes_out += self.scratch.len() as u64;
                // Stored costs 5 bytes per 64 KiB; compressed must beat that.
                (self.scratch.len() < raw).then(|| Bytes::copy_from_slice(&self.scratch))
            }
            Err(_) => None,
        };
        chunk.z.push((bits, z.clone()));
        z
    }

    /// A connection's own record: compressed on its own when large enough (once per drain per
    /// record and window size), else stored.
    fn own_unit(&mut self, format: Format, record: &Bytes, bits: u8) -> Unit {
        if record.len() < OWN_COMPRESS_MIN {
            return Unit::Plain(record.clone());
        }
        let key = (record.as_ptr() as usize, record.len(), bits);
        let z = match self.own_cache.get(&key) {
            Some(z) => z.clone(),
            None => {
                // A JSON record has a leading comma; a piece starts without it.
                let data = match format {
                    Format::Json => record.get(1..).unwrap_or_default(),
                    Format::Binary => &record[..],
                };
                self.scratch.clear();
                let z = match self
                    .deflater
                    .compress_piece(bits, &[data], &mut self.scratch)
                {
                    Ok(()) => {
                        self.stats.pieces += 1;
                        self.stats.bytes_in += data.len() as u64;
                        self.stats.bytes_out += self.scratch.len() as u64;
                        (self.scratch.len() < data.len())
                            .then(|| Bytes::copy_from_slice(&self.scratch))
                    }
                    Err(_) => None,
                };
                self.own_keep.push(record.clone());
                self.own_cache.insert(key, z.clone());
                z
            }
        };
        match z {
            Some(z) => Unit::Piece {
                z,
                records: 1,
                bytes: record.len(),
            },
            None => Unit::Plain(record.clone()),
        }
    }

    /// Cuts `self.units` into messages within `limits`; returns (record count, payload).
    fn build_messages(&mut self, format: Format, limits: BatchLimits) -> Vec<(usize, MsgBuilder)> {
        let max_records = limits.max_records.clamp(1, usize::from(u16::MAX));
        let base = base_len(format);
        let mut messages = Vec::new();
        let units = std::mem::take(&mut self.units);
        let mut start = 0;
        while start < units.len() {
            let mut end = start;
            let mut count = 0;
            let mut bytes = base;
            while let Some(u) = units.get(end) {
                let fits =
                    count + u.records() <= max_records && bytes + u.bytes() <= limits.max_payload;
                if end > start && !fits {
                    break;
                }
                count += u.records();
                bytes += u.bytes();
                end += 1;
            }
            let group = units.get(start..end).unwrap_or_default();
            messages.push((count, build_one(format, count, group)));
            start = end;
        }
        self.units = units;
        self.units.clear();
        messages
    }
}

/// One message's DEFLATE payload for `units` (`count` records).
fn build_one(format: Format, count: usize, units: &[Unit]) -> MsgBuilder {
    let mut m = MsgBuilder::default();
    match format {
        Format::Binary => {
            // `build_messages` caps a message at u16::MAX records.
            let n = u16::try_from(count).unwrap_or(u16::MAX);
            m.stored(Seg::small(&batch_header(n)));
        }
        Format::Json => m.stored(Seg::small(b"[")),
    }
    for (i, u) in units.iter().enumerate() {
        match (format, u) {
            (Format::Binary, Unit::Plain(r)) => m.stored(Seg::Shared(r.clone())),
            (Format::Json, Unit::Plain(r)) => {
                // The record's own leading comma separates it from the previous one.
                let r = if i == 0 { r.slice(1..) } else { r.clone() };
                m.stored(Seg::Shared(r));
            }
            (Format::Binary, Unit::Piece { z, .. }) => m.piece(z.clone()),
            (Format::Json, Unit::Piece { z, .. }) => {
                if i > 0 {
                    m.stored(Seg::small(b","));
                }
                m.piece(z.clone());
            }
        }
    }
    if format == Format::Json {
        m.stored(Seg::small(b"]"));
    }
    m.finish();
    m
}

/// Queues one compressed message: frame header (RSV1) and payload segments, small ones packed
/// into inline chunks.
fn push_message(out: &mut OutBuf, opcode: OpCode, m: &MsgBuilder) {
    let len = m.len();
    let mut head = [0u8; MAX_HEADER_LEN];
    let h = encode_header_with_rsv(true, RSV1, opcode, len as u64, &mut head);
    let mut inline = [0u8; INLINE_CAP];
    inline[..h].copy_from_slice(&head[..h]);
    let mut fill = h;
    let last = m.segs.len().saturating_sub(1);
    for (i, seg) in m.segs.iter().enumerate() {
        let eom = i == last;
        match seg {
            Seg::Small { .. } => {
                let s = seg.as_slice();
                if fill + s.len() > INLINE_CAP {
                    out.push_small(&inline[..fill], false);
                    fill = 0;
                }
                inline[fill..fill + s.len()].copy_from_slice(s);
                fill += s.len();
                if eom {
                    out.push_small(&inline[..fill], true);
                    fill = 0;
                }
            }
            Seg::Shared(b) => {
                if fill > 0 {
                    out.push_small(&inline[..fill], false);
                    fill = 0;
                }
                out.push_shared(b.clone(), eom);
            }
        }
    }
    if fill > 0 {
        out.push_small(&inline[..fill], true);
    }
}

/// Uncompressed payload bytes a message has besides its records (as in `batch`).
fn base_len(format: Format) -> usize {
    match format {
        Format::Binary => BATCH_HEADER_LEN,
        Format::Json => 1,
    }
}

/// Record count and byte bound of one chunk: within the batch limits and [`CHUNK_BYTES`].
fn chunk_limits(format: Format, limits: BatchLimits) -> (usize, usize) {
    let records = limits.max_records.clamp(1, usize::from(u16::MAX));
    let bytes = limits
        .max_payload
        .saturating_sub(base_len(format))
        .min(CHUNK_BYTES);
    (records, bytes)
}

fn header_len(payload: usize) -> usize {
    match payload {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

#[cfg(test)]
mod tests;
