//! The plain-HTTP transports of protocol §3.4, for clients that cannot upgrade: `GET /stream`
//! and `GET /sse`. Sans-IO, like the rest of the core.
//!
//! Such a connection is an ordinary subscriber of the shard: the query string is its one
//! subscribe request (`?symbols=A,B&depth=10&channels=book,trades[&max_hz=N][&token=..]`), made
//! through the same [`Tables::subscribe`](super::core::Tables) as a `/ws` control request, with
//! the same limits; its records come from the same ring drain, as the same spans of the drain's
//! arena, and it has the same bounded out-buffer and eviction. Only the framing differs:
//!
//! - `/stream` subscribes to the **binary** topics: every batch the drain owes it is one
//!   HTTP chunk holding one frame `{u32 length LE, u8 type = 1, payload}` whose payload is the
//!   very §1 batch a `/ws` subscriber gets (batch header + the shared record bytes:
//!   `fanout::batch::append_owed_stream`). Control messages (the subscribe reply first) are
//!   type 2 frames of JSON.
//! - `/sse` subscribes to the **JSON** topics: each record of the batch becomes one event,
//!   `id: <positions>\ndata: <the record>\n\n`; the record bytes are the shared `format=json`
//!   encoding (its leading comma sliced off), so per subscriber only the `id:`/`data:` framing
//!   is written, into one buffer per batch. Control messages are named events
//!   (`event: subscribed`).
//!
//! Nothing is read from the client after the request head (HTTP/1.1 without pipelining: the
//! connection closes when the stream ends). Keep-alives go out every `min(ping-interval, 30 s)`
//! (an SSE comment line, a `{"op":"keepalive"}` control frame), so that proxies and the
//! client's idle timer (60 s in `clients/js`) see bytes on a quiet stream. A stream that ends
//! (eviction of a slow consumer, shutdown) gets a last control message
//! `{"op":"closing","code":1013|1001,"reason":..}` and the chunked body's terminator.
//!
//! **Event ids** (decided, docs/protocol.md §"Fallback transports"): an `EventSource` sends back
//! only the id of the last event it saw, so each id names the position of the whole
//! subscription: `<epoch>;<sid>:<book seq>:<trades seq>;...` (a seq empty when that stream has
//! no position yet), the streams in sid order. See [`SsePositions`].

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use crate::book::depth_index;
use crate::control::{Channels, ErrorCode, RequestError, SymbolSel, error_reply};
use crate::fanout::arena::{DrainArena, Owed, Piece};
use crate::fanout::outbuf::{OutBuf, Overflow};
use crate::fanout::{ConnId, Format};
use crate::metrics::add;
use crate::proto::handshake::{percent_decode, write_http_response};

use super::conn::Endpoint;
use super::core::ShardCore;

/// The end of a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// `/stream` frame type of a control message (type 1, a binary batch, is framed by
/// `fanout::batch::append_owed_stream`).
pub(crate) const FRAME_CONTROL: u8 = 2;
/// Largest subscription (in symbols) whose SSE events carry ids: an id names every stream of
/// the subscription, so its length grows with it. Larger subscriptions get no ids (a
/// reconnect is a fresh subscription); `/ws` and `/stream` have no such cost.
pub(crate) const MAX_ID_SYMBOLS: usize = 32;
/// Keep-alives on HTTP streams at least this often (the client's idle timer is 60 s).
pub(crate) const MAX_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest `Last-Event-ID` looked at.
const MAX_EVENT_ID: usize = 4096;

/// A subscription request in a `/stream` or `/sse` query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamQuery {
    pub(crate) symbols: SymbolSel,
    pub(crate) channels: Channels,
    pub(crate) depth_idx: usize,
    /// `max_hz` as asked (1 to 1000). Granted as conflation allows (§3.3).
    pub(crate) max_hz: Option<u32>,
}

/// A routed `/stream` or `/sse` request.
#[derive(Debug)]
pub(crate) struct StreamOpen {
    pub(crate) endpoint: Endpoint,
    pub(crate) query: StreamQuery,
    /// `Last-Event-ID` (`/sse`).
    pub(crate) last_event_id: Option<String>,
    /// The allowed `Origin` to echo in `Access-Control-Allow-Origin` (cross-origin pages).
    pub(crate) cors_origin: Option<String>,
    /// What the client's JWT grants (with JWTs configured): the subscription is checked
    /// against it, and the stream ends at its expiry, as on `/ws`.
    pub(crate) grant: Option<crate::fanout::entitle::Grant>,
}

/// Parses the subscription of a `/stream` or `/sse` query string.
///
/// # Errors
/// A [`RequestError`] (code and message) answered with 400.
pub(crate) fn parse_query(query: &str) -> Result<StreamQuery, RequestError> {
    let bad = |code: ErrorCode, m: String| RequestError::new(Value::Null, code, m);
    let mut symbols = None;
    let mut channels = Channels {
        book: true,
        trades: true,
    };
    let mut depth = crate::control::DEFAULT_DEPTH;
    let mut max_hz = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| {
            bad(
                ErrorCode::BadRequest,
                format!("{k}: malformed percent-encoding"),
            )
        })?;
        match k {
            "symbols" => {
                let mut list: Vec<String> = Vec::new();
                for s in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if s == "*" {
                        symbols = Some(SymbolSel::All);
                        break;
                    }
                    if !list.iter().any(|x| x == s) {
                        list.push(s.to_owned());
                    }
                }
                if list.len() > crate::control::MAX_SYMBOLS_PER_REQUEST {
                    return Err(bad(
                        ErrorCode::BadRequest,
                        "too many symbols in one request".into(),
                    ));
                }
                if symbols != Some(SymbolSel::All) {
                    if list.is_empty() {
                        return Err(bad(
                            ErrorCode::BadRequest,
                            "symbols must name at least one symbol (or *)".into(),
                        ));
                    }
                    symbols = Some(SymbolSel::List(list));
                }
            }
            "depth" => {
                depth = v
                    .parse::<u16>()
                    .ok()
                    .filter(|d| depth_index(*d).is_some())
                    .ok_or_else(|| {
                        bad(
                            ErrorCode::InvalidDepth,
                            format!(
                                "depth must be one of {:?} (0 = whole book)",
                                crate::book::DEPTHS
                            ),
                        )
                    })?;
            }
            "channels" => {
                channels = Channels {
                    book: false,
                    trades: false,
                };
                for c in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    match c {
                        "book" => channels.book = true,
                        "trades" => channels.trades = true,
                        _ => {
                            return Err(bad(
                                ErrorCode::InvalidChannel,
                                "channels are book and trades".into(),
                            ));
                        }
                    }
                }
                if !channels.book && !channels.trades {
                    return Err(bad(
                        ErrorCode::InvalidChannel,
                        "channels must not be empty".into(),
                    ));
                }
            }
            "max_hz" => {
                let hz = v
                    .parse::<u32>()
                    .ok()
                    .filter(|hz| (1..=1000).contains(hz))
                    .ok_or_else(|| {
                        bad(
                            ErrorCode::BadRequest,
                            "max_hz must be an integer from 1 to 1000".into(),
                        )
                    })?;
                max_hz = Some(hz);
            }
            // The access token is checked by admission; cache busters and the like are ignored.
            _ => {}
        }
    }
    let Some(symbols) = symbols else {
        return Err(bad(
            ErrorCode::BadRequest,
            "missing symbols (?symbols=BTC-USD,ETH-USD or ?symbols=*)".into(),
        ));
    };
    Ok(StreamQuery {
        symbols,
        channels,
        depth_idx: depth_index(depth).unwrap_or(2),
        max_hz,
    })
}

/// The `200` head of a stream response (chunked, never cached, never buffered by proxies).
pub(crate) fn response_head(endpoint: Endpoint, cors_origin: Option<&str>) -> Vec<u8> {
    let ctype = match endpoint {
        Endpoint::Sse => "text/event-stream; charset=utf-8",
        _ => "application/octet-stream",
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: ");
    out.extend_from_slice(ctype.as_bytes());
    out.extend_from_slice(
        b"\r\nCache-Control: no-store\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\
          X-Accel-Buffering: no\r\nX-Content-Type-Options: nosniff\r\n",
    );
    if let Some(o) = cors_origin.filter(|o| !o.bytes().any(|b| b == b'\r' || b == b'\n')) {
        out.extend_from_slice(b"Access-Control-Allow-Origin: ");
        out.extend_from_slice(o.as_bytes());
        out.extend_from_slice(b"\r\nVary: Origin\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The answer to `HEAD /stream` or `HEAD /sse`: the head a `GET` gets, no body.
pub(crate) fn response_head_only(endpoint: Endpoint) -> Vec<u8> {
    let ctype = match endpoint {
        Endpoint::Sse => "text/event-stream; charset=utf-8",
        _ => "application/octet-stream",
    };
    let mut out = Vec::with_capacity(160);
    write_http_response(200, ctype, b"", &[("Cache-Control", "no-store")], &mut out);
    out
}

/// A JSON error response (`{"op":"error","code":..,"message":..}`) with `status`.
pub(crate) fn error_response(status: u16, e: &RequestError, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut body = error_reply(&Value::Null, e.code, &e.message);
    body.push(b'\n');
    let mut out = Vec::with_capacity(256 + body.len());
    write_http_response(status, "application/json", &body, extra, &mut out);
    out
}

/// The HTTP chunk size line for `n` bytes, into `out`.
fn chunk_size_line(out: &mut Vec<u8>, n: usize) {
    let _ = write!(HexOut(out), "{n:x}");
    out.extend_from_slice(b"\r\n");
}

struct HexOut<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for HexOut<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// One HTTP chunk holding `parts`.
fn chunk(parts: &[&[u8]]) -> Bytes {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(n + 12);
    chunk_size_line(&mut out, n);
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// A control message as one HTTP chunk: a type 2 frame on `/stream`, an event named after its
/// `op` on `/sse`.
pub(crate) fn control_chunk(endpoint: Endpoint, json: &[u8]) -> Bytes {
    match endpoint {
        Endpoint::Sse => {
            let op = serde_json::from_slice::<Value>(json)
                .ok()
                .and_then(|v| v.get("op").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "control".into());
            chunk(&[b"event: ", op.as_bytes(), b"\ndata: ", json, b"\n\n"])
        }
        _ => {
            let len = (json.len() as u32).to_le_bytes();
            chunk(&[&len, &[FRAME_CONTROL], json])
        }
    }
}

/// A keep-alive: an SSE comment, or a `{"op":"keepalive"}` control frame.
pub(crate) fn keepalive_chunk(endpoint: Endpoint) -> Bytes {
    match endpoint {
        Endpoint::Sse => chunk(&[b": keepalive\n\n"]),
        _ => control_chunk(endpoint, br#"{"op":"keepalive"}"#),
    }
}

/// `{"op":"closing","code":..,"reason":..}`: why the server ends a stream.
pub(crate) fn closing_message(code: u16, reason: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"op":"closing","code":code,"reason":reason}))
        .unwrap_or_default()
}

// ---- SSE event ids ----------------------------------------------------------------------------

/// What the event ids of one `/sse` connection say: the epoch and, per subscribed symbol, the
/// seq of the last book record (at the subscription's depth) and trade it was sent.
///
/// Format, **(decided)**: `<epoch>;<sid>:<book>:<trades>;<sid>:<book>:<trades>...`, symbols in
/// sid order, a seq left empty while its stream has no position (and for a channel not
/// subscribed). An `EventSource` sends back only the last id it saw (`Last-Event-ID`): that one
/// id is the whole subscription's position, the `resume` of §3.1. The epoch is empty while the
/// server reports none: such an id never resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SsePositions {
    epoch: String,
    /// (sid, book, trades), sorted by sid.
    streams: Vec<(u32, Option<u64>, Option<u64>)>,
    /// Events carry ids (the subscription is at most [`MAX_ID_SYMBOLS`] symbols).
    ids: bool,
}

impl SsePositions {
    /// Positions of a subscription to `sids`, none known yet.
    pub(crate) fn new(epoch: &str, sids: impl IntoIterator<Item = u32>) -> Self {
        let mut streams: Vec<_> = sids.into_iter().map(|s| (s, None, None)).collect();
        streams.sort_unstable_by_key(|s| s.0);
        streams.dedup_by_key(|s| s.0);
        Self {
            epoch: epoch.to_owned(),
            ids: streams.len() <= MAX_ID_SYMBOLS,
            streams,
        }
    }

    /// True when events carry ids.
    pub(crate) fn ids(&self) -> bool {
        self.ids
    }

    /// Notes a record sent: `kind` as in `format=json`.
    fn note(&mut self, kind: &[u8], sid: u32, seq: u64) {
        let Ok(i) = self.streams.binary_search_by_key(&sid, |s| s.0) else {
            return;
        };
        match kind {
            b"snapshot" | b"delta" => self.streams[i].1 = Some(seq),
            b"trade" => self.streams[i].2 = Some(seq),
            _ => {}
        }
    }

    /// Appends the current id.
    fn write_id(&self, out: &mut BytesMut) {
        out.extend_from_slice(self.epoch.as_bytes());
        let mut num = itoa_buf();
        for &(sid, book, trades) in &self.streams {
            if book.is_none() && trades.is_none() {
                continue;
            }
            out.extend_from_slice(b";");
            out.extend_from_slice(fmt_u64(&mut num, u64::from(sid)));
            out.extend_from_slice(b":");
            if let Some(b) = book {
                out.extend_from_slice(fmt_u64(&mut num, b));
            }
            out.extend_from_slice(b":");
            if let Some(t) = trades {
                out.extend_from_slice(fmt_u64(&mut num, t));
            }
        }
    }

    /// The current id, as a string (tests and logs).
    #[cfg(test)]
    pub(crate) fn id(&self) -> String {
        let mut b = BytesMut::new();
        self.write_id(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// A position parsed from a `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventIdPosition {
    pub(crate) epoch: String,
    /// (sid, book, trades), in id order.
    pub(crate) streams: Vec<(u32, Option<u64>, Option<u64>)>,
}

/// Parses a `Last-Event-ID` made by [`SsePositions`]; `None` when it is not one.
pub(crate) fn parse_event_id(id: &str) -> Option<EventIdPosition> {
    if id.len() > MAX_EVENT_ID {
        return None;
    }
    let mut parts = id.split(';');
    let epoch = parts.next()?.to_owned();
    if epoch.len() > crate::control::MAX_EPOCH_LEN || epoch.contains(':') {
        return None;
    }
    let seq = |s: &str| -> Option<Option<u64>> {
        if s.is_empty() {
            Some(None)
        } else {
            s.parse::<u64>().ok().map(Some)
        }
    };
    let mut streams = Vec::new();
    for p in parts {
        let mut f = p.split(':');
        let sid = f.next()?.parse::<u32>().ok()?;
        let book = seq(f.next()?)?;
        let trades = seq(f.next()?)?;
        if f.next().is_some() || (book.is_none() && trades.is_none()) {
            return None;
        }
        streams.push((sid, book, trades));
    }
    Some(EventIdPosition { epoch, streams })
}

impl EventIdPosition {
    /// The `resume` (protocol §4.4) this position stands for, for a subscription to `query`:
    /// sids named by their symbols in `table`, limited to the symbols and channels the query
    /// subscribes (a position for anything else is dropped, not an error: the id came from a
    /// browser). `None` when nothing is left.
    pub(crate) fn to_resume(
        &self,
        table: &crate::ring::SymbolTable,
        query: &StreamQuery,
    ) -> Option<crate::control::Resume> {
        let streams: Vec<crate::control::ResumeStream> = self
            .streams
            .iter()
            .filter_map(|&(sid, book, trades)| {
                let m = table.symbols.get(sid as usize).filter(|m| m.sid == sid)?;
                if let SymbolSel::List(list) = &query.symbols {
                    if !list.contains(&m.symbol) {
                        return None;
                    }
                }
                let book = book.filter(|_| query.channels.book);
                let trades = trades.filter(|_| query.channels.trades);
                (book.is_some() || trades.is_some()).then(|| crate::control::ResumeStream {
                    symbol: m.symbol.clone(),
                    book,
                    trades,
                })
            })
            .collect();
        (!streams.is_empty()).then(|| crate::control::Resume {
            epoch: self.epoch.clone(),
            streams,
        })
    }
}

impl SsePositions {
    /// Starts from the positions a `Last-Event-ID` named (those of subscribed symbols): a
    /// resumed stream's id is right before its first new record. A stream that is not recovered
    /// moves on with its snapshot (book) or its next trade.
    pub(crate) fn seed(&mut self, from: &EventIdPosition) {
        for &(sid, book, trades) in &from.streams {
            if let Ok(i) = self.streams.binary_search_by_key(&sid, |s| s.0) {
                self.streams[i].1 = book;
                self.streams[i].2 = trades;
            }
        }
    }
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn fmt_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// (kind, sid, seq) of a `format=json` record (`{"kind":"delta","symbol":..,"sid":7,"seq":..`).
fn json_record_position(record: &[u8]) -> Option<(&[u8], u32, u64)> {
    let rest = record.strip_prefix(b"{\"kind\":\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let kind = &rest[..end];
    // A `,"` cannot occur inside a JSON string (its quote would be escaped).
    let sid = number_after(record, b",\"sid\":")?;
    let seq = number_after(record, b",\"seq\":")?;
    Some((kind, u32::try_from(sid).ok()?, seq))
}

fn number_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = hay.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = hay[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&hay[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Appends what `owed` holds (spans of the sealed `arena` of `format=json` records, each with
/// its leading comma) to `out` as one HTTP chunk of SSE events, one event per record; notes
/// each record's position in `pos` and gives each event the id that follows. Returns the number
/// of chunks (0 or 1), or queues nothing when they would pass the buffer's bound.
///
/// # Errors
/// [`Overflow`] when the chunk does not fit.
pub(crate) fn append_sse(
    out: &mut OutBuf,
    arena: &DrainArena,
    owed: &Owed,
    mut pos: Option<&mut SsePositions>,
) -> Result<usize, Overflow> {
    if owed.is_empty() {
        return Ok(0);
    }
    // The framing of every event, in one buffer (one allocation per batch); the records are
    // the drain's shared bytes.
    let mut framing = BytesMut::with_capacity(owed.records() * 64);
    // (end of the framing before the record, the record).
    let mut parts: Vec<(usize, Bytes)> = Vec::with_capacity(owed.records());
    let mut add_record = |framing: &mut BytesMut, rec: Bytes| {
        let body = rec.slice(usize::from(rec.first() == Some(&b','))..);
        if !parts.is_empty() {
            framing.extend_from_slice(b"\n\n");
        }
        if let Some(p) = pos.as_deref_mut() {
            if let Some((kind, sid, seq)) = json_record_position(&body) {
                p.note(kind, sid, seq);
            }
            if p.ids() {
                framing.extend_from_slice(b"id: ");
                p.write_id(framing);
                framing.extend_from_slice(b"\n");
            }
        }
        framing.extend_from_slice(b"data: ");
        parts.push((framing.len(), body));
    };
    for piece in owed.pieces() {
        match piece {
            Piece::Own(b) => add_record(&mut framing, b.clone()),
            Piece::Span(span) => {
                let mut rest = *span;
                while !rest.is_empty() {
                    let (head, n, tail) = arena.split(rest, 0, 1, true);
                    if n == 0 {
                        break;
                    }
                    add_record(&mut framing, arena.slice(head));
                    rest = tail;
                }
            }
        }
    }
    framing.extend_from_slice(b"\n\n");
    let framing = framing.freeze();
    let body_len = framing.len() + parts.iter().map(|(_, b)| b.len()).sum::<usize>();
    let mut size_line = Vec::with_capacity(12);
    chunk_size_line(&mut size_line, body_len);
    out.reserve(size_line.len() + body_len + 2)?;
    out.push_small(&size_line, false);
    let mut from = 0;
    for (to, body) in parts {
        out.push_shared(framing.slice(from..to), false);
        out.push_shared(body, false);
        from = to;
    }
    out.push_shared(framing.slice(from..), false);
    out.push_small(b"\r\n", true);
    Ok(1)
}

// ---- opening a stream -------------------------------------------------------------------------

impl ShardCore {
    /// A routed `/stream` or `/sse` request: subscribe as the query says and start the
    /// response (the subscribe reply first), or answer the error (400, 503 before the feed
    /// announced its symbols) and close.
    pub(crate) fn open_stream(&mut self, idx: u32, mut open: StreamOpen) {
        // The token's grant first: the subscribe below is checked against it, and the stream
        // ends at its expiry, as on `/ws`.
        self.grant(idx, open.grant.take());
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            return;
        };
        let generation = slot.generation;
        let Some(c) = slot.conn.as_mut() else { return };
        let id = ConnId {
            index: idx,
            generation,
        };
        let format = match open.endpoint {
            Endpoint::Sse => Format::Json,
            _ => Format::Binary,
        };
        c.consume_input(usize::MAX);
        // Subscribed in the format first (the subscription tables read it), answered below.
        c.open_http_stream(open.endpoint, format);
        let q = &open.query;
        // Last-Event-ID: the position the browser holds, as the `resume` of the subscribe
        // (protocol §4.4): recovered streams continue with no snapshot, the others start afresh.
        let table = self.t.ctx.symbols.load();
        let last = open.last_event_id.as_deref().and_then(parse_event_id);
        let resume = last.as_ref().and_then(|p| p.to_resume(&table, q));
        let resuming = resume.is_some();
        let reply = self.t.subscribe(
            c,
            id,
            Value::Null,
            &q.symbols,
            q.channels,
            q.depth_idx,
            // Validated: 1 to 1000.
            q.max_hz.and_then(|hz| u16::try_from(hz).ok()),
            resume,
        );
        let shard = &self.t.ctx.metrics.shards[self.t.ctx.id];
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                add(&shard.request_errors, 1);
                let (status, extra): (u16, &[(&str, &str)]) = match e.code {
                    ErrorCode::NotReady => (503, &[("Retry-After", "1")]),
                    // The token is valid but does not cover a symbol asked for (§3.5).
                    ErrorCode::NotEntitled => (403, &[]),
                    _ => (400, &[]),
                };
                tracing::debug!(peer = %c.peer(), error = %e, "stream subscription refused");
                c.respond(error_response(status, &e, extra));
                self.to_write.push(idx);
                return;
            }
        };
        let head = response_head(open.endpoint, open.cors_origin.as_deref());
        c.out_mut().push_shared(Bytes::from(head), true);
        // A resuming subscribe's reply is held until the ingester's answer comes out of the
        // ring (`dispatch.rs`), then queued through `Conn::queue_reply` like this one.
        if let Some(reply) = reply {
            c.queue_reply(&reply);
        }
        if open.endpoint == Endpoint::Sse {
            let epoch = self.t.ctx.epoch.get().to_string();
            let mut pos = SsePositions::new(&epoch, c.subscriptions().iter().map(|s| s.sid));
            if let Some(last) = last.as_ref().filter(|l| resuming && l.epoch == epoch) {
                pos.seed(last);
            }
            c.set_sse_positions(pos);
        }
        if let Some(t) = c.transport_index() {
            add(&shard.transport_connections[t], 1);
        }
        tracing::debug!(peer = %c.peer(), endpoint = ?open.endpoint, resuming, "http stream open");
        self.to_write.push(idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_bad_ones_say_why() {
        let q =
            parse_query("symbols=BTC-USD,ETH-USD&depth=10&channels=book&max_hz=5&token=x").unwrap();
        assert_eq!(
            q.symbols,
            SymbolSel::List(vec!["BTC-USD".into(), "ETH-USD".into()])
        );
        assert_eq!((q.channels.book, q.channels.trades), (true, false));
        assert_eq!(crate::book::DEPTHS[q.depth_idx], 10);
        assert_eq!(q.max_hz, Some(5));
        let q = parse_query("symbols=%2A").unwrap();
        assert_eq!(q.symbols, SymbolSel::All);
        assert_eq!(crate::book::DEPTHS[q.depth_idx], 25);
        for (bad, code) in [
            ("", ErrorCode::BadRequest),
            ("symbols=", ErrorCode::BadRequest),
            ("symbols=A&depth=7", ErrorCode::InvalidDepth),
            ("symbols=A&depth=x", ErrorCode::InvalidDepth),
            ("symbols=A&channels=book,x", ErrorCode::InvalidChannel),
            ("symbols=A&channels=", ErrorCode::InvalidChannel),
            ("symbols=A&max_hz=0", ErrorCode::BadRequest),
            ("symbols=A&max_hz=1001", ErrorCode::BadRequest),
            ("symbols=%zz", ErrorCode::BadRequest),
        ] {
            assert_eq!(parse_query(bad).unwrap_err().code, code, "{bad}");
        }
    }

    #[test]
    fn event_ids_carry_every_position_and_parse_back() {
        let mut p = SsePositions::new("3f9c0a17", [8, 7, 9]);
        assert_eq!(p.id(), "3f9c0a17");
        p.note(b"snapshot", 7, 1234);
        p.note(b"trade", 7, 567);
        p.note(b"delta", 8, 99);
        p.note(b"status", 9, 5);
        assert_eq!(p.id(), "3f9c0a17;7:1234:567;8:99:");
        let parsed = parse_event_id(&p.id()).unwrap();
        assert_eq!(parsed.epoch, "3f9c0a17");
        assert_eq!(
            parsed.streams,
            vec![(7, Some(1234), Some(567)), (8, Some(99), None)]
        );
        for bad in ["x;7", "x;7:1", "x;7::", "x;a:1:", "x;7:1:2:3", "x;7:-1:"] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
        assert!(!SsePositions::new("", 0..=MAX_ID_SYMBOLS as u32).ids());
    }

    #[test]
    fn an_event_id_is_the_resume_of_the_subscription_it_came_from() {
        let meta = |sid: u32| crate::wire::SymbolMeta {
            symbol: format!("S{sid}"),
            sid,
            px_decimals: 2,
            qty_decimals: 4,
        };
        let table = crate::ring::SymbolTable {
            symbols: (0..4).map(meta).collect(),
        };
        let q = parse_query("symbols=S1,S2&channels=book").unwrap();
        let p = parse_event_id("e1;1:10:4;2::5;3:7:;9:1:1").unwrap();
        let r = p.to_resume(&table, &q).unwrap();
        assert_eq!(r.epoch, "e1");
        // S2 had only a trades position (not subscribed now), S3 is not subscribed, sid 9 is
        // unknown: only S1's book is left.
        assert_eq!(
            r.streams,
            vec![crate::control::ResumeStream {
                symbol: "S1".into(),
                book: Some(10),
                trades: None
            }]
        );
        let all = parse_query("symbols=*").unwrap();
        assert_eq!(p.to_resume(&table, &all).unwrap().streams.len(), 3);
        assert!(
            parse_event_id("e1")
                .unwrap()
                .to_resume(&table, &all)
                .is_none()
        );
        let mut pos = SsePositions::new("e1", [1, 2]);
        pos.seed(&p);
        assert_eq!(pos.id(), "e1;1:10:4;2::5");
    }

    #[test]
    fn json_positions_are_read_from_the_record_prefix() {
        let r = br#"{"kind":"delta","symbol":"A,\"sid\":1","sid":7,"seq":42,"exch_ts":1}"#;
        assert_eq!(json_record_position(r), Some((&b"delta"[..], 7, 42)));
    }
}
