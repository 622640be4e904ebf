//! The sans-IO core of the client: one [`Session`] holds what the client follows across
//! connections (symbols, books, positions, the server's epoch) and turns the server's messages
//! into [`Event`]s and the client's requests into JSON text to send.
//!
//! It does no IO and reads no clock: the caller (the tokio driver in [`crate::Client`], or a
//! test) passes messages and the current time in, and takes out what to send
//! ([`poll_transmit`](Session::poll_transmit)), what to report ([`poll_event`](Session::poll_event))
//! and when to call back ([`poll_timeout`](Session::poll_timeout)).
//!
//! Call order for one connection:
//!
//! 1. [`handle_connected`](Session::handle_connected) once the WebSocket is open: queues the
//!    subscribe of every symbol followed, with `resume` positions when the server gave an epoch;
//! 2. [`handle_text`](Session::handle_text) / [`handle_binary`](Session::handle_binary) for each
//!    message, [`handle_timeout`](Session::handle_timeout) when [`poll_timeout`](Session::poll_timeout)
//!    passes; after each, drain `poll_transmit` and `poll_event`;
//! 3. [`handle_disconnected`](Session::handle_disconnected) when it ends (books and positions are
//!    kept for resume).
//!
//! ```
//! use std::time::Instant;
//! use tickcast_client::{Event, Session, SessionConfig};
//!
//! let mut s = Session::new(SessionConfig { depth: 10, ..SessionConfig::default() });
//! s.subscribe(["BTC-USD"]);
//! s.handle_connected(Instant::now());
//! let request = s.poll_transmit().expect("a subscribe");
//! assert!(request.contains(r#""op":"subscribe""#) && request.contains("BTC-USD"));
//! s.handle_text(
//!     Instant::now(),
//!     r#"{"op":"subscribed","id":1,"symbols":[{"symbol":"BTC-USD","sid":7,"px_decimals":2,"qty_decimals":6}]}"#,
//! )?;
//! assert!(matches!(s.poll_event(), Some(Event::Connection(_))));
//! # Ok::<(), tickcast_client::wire::DecodeError>(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::book::{Book, BookView};
use crate::event::{
    BookUpdate, ConnectionState, Event, Resumed, Resync, ResyncCause, ServerError, Status, Trade,
};
use crate::wire::{Body, DecodeError, JsonBatch, Kind, Record, decode_binary};

/// A data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Book snapshots and deltas.
    Book,
    /// Trades.
    Trades,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Self::Book => "book",
            Self::Trades => "trades",
        }
    }
}

/// What a [`Session`] subscribes with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Levels per side: 1, 10, 25, 100, or 0 for the whole book.
    pub depth: u16,
    /// Channels of every symbol.
    pub channels: Vec<Channel>,
    /// Access token (sent by the driver in the upgrade request; replaced by
    /// [`Session::refresh`]).
    pub token: Option<String>,
    /// Highest rate of book updates wanted, per second (protocol 1.1, §3.3: the server then
    /// sends conflated snapshots, at most this many a second); `None` for every delta.
    pub max_hz: Option<u32>,
}

impl Default for SessionConfig {
    /// Depth 25 (the server's default), books and trades, no token.
    fn default() -> Self {
        Self {
            depth: 25,
            channels: vec![Channel::Book, Channel::Trades],
            token: None,
            max_hz: None,
        }
    }
}

/// Delay before a subscribe refused with `not_ready` (the server's feed is not up yet) is sent
/// again.
pub const NOT_READY_RETRY: Duration = Duration::from_millis(200);
/// Delay before a subscribe refused with `rate_limited` is sent again.
pub const RATE_LIMITED_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct SymbolState {
    name: Arc<str>,
    /// sid in the current connection, once the server answered.
    sid: Option<u32>,
    px_decimals: u8,
    qty_decimals: u8,
    book: Arc<Book>,
    /// The book is whole: a snapshot (or a recovered resume) started it and every delta since
    /// was applied in order. Its seq is then a valid resume position.
    synced: bool,
    /// Last trade seq received, the trade stream's resume position.
    trades_seq: Option<u64>,
    /// Touched by the current data message (for one `Book` event per message).
    changed: bool,
    snapshot_in_message: bool,
}

#[derive(Debug, Clone)]
enum Pending {
    Subscribe {
        symbols: Vec<Arc<str>>,
        /// The subscribe sent on connect (its reply completes the (re)subscription).
        initial: bool,
        /// Symbols sent with a resume position.
        resumed: Vec<Arc<str>>,
    },
    Unsubscribe,
    Refresh,
}

/// The client's protocol state machine, without IO; see the [module docs](self).
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    symbols: Vec<SymbolState>,
    by_name: HashMap<Arc<str>, usize>,
    by_sid: HashMap<u32, usize>,
    epoch: Option<String>,
    connected: bool,
    /// Subscribed once on some connection: later subscriptions are resumes.
    ever_subscribed: bool,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// Subscribes to send again at a time (refused with `not_ready` or `rate_limited`).
    retries: Vec<(Instant, Vec<Arc<str>>, bool)>,
    transmit: VecDeque<String>,
    events: VecDeque<Event>,
    changed: Vec<usize>,
    /// Symbols found wrong in the current message, resubscribed together at its end.
    resyncs: Vec<Arc<str>>,
    checksums_seen: u64,
}

impl Session {
    /// A session following no symbol yet.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            symbols: Vec::new(),
            by_name: HashMap::new(),
            by_sid: HashMap::new(),
            epoch: None,
            connected: false,
            ever_subscribed: false,
            next_id: 1,
            pending: HashMap::new(),
            retries: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            changed: Vec::new(),
            resyncs: Vec::new(),
            checksums_seen: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The current access token.
    pub fn token(&self) -> Option<&str> {
        self.config.token.as_deref()
    }

    /// The server's stream numbering, from the last `subscribed` reply that named one.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// Book records that carried a checksum so far (0 against a server before 1.1).
    pub fn checksums_seen(&self) -> u64 {
        self.checksums_seen
    }

    /// The symbols followed.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.symbols.iter().map(|s| &*s.name)
    }

    /// The book of `symbol`, if followed.
    pub fn book(&self, symbol: &str) -> Option<BookView> {
        let i = *self.by_name.get(symbol)?;
        Some(BookView(Arc::clone(&self.symbols[i].book)))
    }

    /// True when `symbol`'s book is whole (started by a snapshot, every delta since applied).
    pub fn is_synced(&self, symbol: &str) -> bool {
        self.by_name
            .get(symbol)
            .is_some_and(|&i| self.symbols[i].synced)
    }

    /// The positions the session would resume from: `(symbol, book seq, trades seq)`.
    pub fn positions(&self) -> Vec<(Arc<str>, Option<u64>, Option<u64>)> {
        self.symbols
            .iter()
            .map(|s| {
                (
                    Arc::clone(&s.name),
                    s.synced.then_some(s.book.seq()),
                    s.trades_seq,
                )
            })
            .collect()
    }

    /// Follows more symbols; sends their subscribe now when connected, else on connect.
    pub fn subscribe<S: AsRef<str>>(&mut self, symbols: impl IntoIterator<Item = S>) {
        let mut new = Vec::new();
        for s in symbols {
            let s = s.as_ref();
            if self.by_name.contains_key(s) {
                continue;
            }
            let name: Arc<str> = Arc::from(s);
            self.by_name.insert(Arc::clone(&name), self.symbols.len());
            self.symbols.push(SymbolState {
                name: Arc::clone(&name),
                sid: None,
                px_decimals: 0,
                qty_decimals: 0,
                book: Arc::new(Book::new(Arc::clone(&name), self.config.depth, 0, 0)),
                synced: false,
                trades_seq: None,
                changed: false,
                snapshot_in_message: false,
            });
            new.push(name);
        }
        if self.connected && !new.is_empty() {
            self.send_subscribe(new, false, false);
        }
    }

    /// Stops following symbols; sends the unsubscribe when connected.
    pub fn unsubscribe<S: AsRef<str>>(&mut self, symbols: impl IntoIterator<Item = S>) {
        let mut gone = Vec::new();
        for s in symbols {
            if let Some(i) = self.by_name.get(s.as_ref()).copied() {
                gone.push(Arc::clone(&self.symbols[i].name));
                self.symbols.swap_remove(i);
                self.reindex();
            }
        }
        if self.connected && !gone.is_empty() {
            let id = self.id();
            self.pending.insert(id, Pending::Unsubscribe);
            let names: Vec<&str> = gone.iter().map(|s| &**s).collect();
            self.transmit
                .push_back(json!({"op":"unsubscribe","id":id,"symbols":names}).to_string());
        }
    }

    /// Replaces the access token: used by the next connection, and sent now
    /// (`{"op":"refresh",...}`) when connected.
    pub fn refresh(&mut self, token: impl Into<String>) {
        let token = token.into();
        if self.connected {
            let id = self.id();
            self.pending.insert(id, Pending::Refresh);
            self.transmit
                .push_back(json!({"op":"refresh","id":id,"token":token}).to_string());
        }
        self.config.token = Some(token);
    }

    /// A connection is open: queues the subscribe of every symbol followed, with `resume`
    /// positions when the server named an epoch before.
    pub fn handle_connected(&mut self, _now: Instant) {
        self.connected = true;
        self.pending.clear();
        self.retries.clear();
        self.by_sid.clear();
        let all: Vec<Arc<str>> = self.symbols.iter().map(|s| Arc::clone(&s.name)).collect();
        if all.is_empty() {
            let resumed = Resumed::Fresh;
            self.ever_subscribed = true;
            self.events
                .push_back(Event::Connection(ConnectionState::Subscribed {
                    resumed,
                    epoch: self.epoch.clone(),
                }));
        } else {
            self.send_subscribe(all, true, true);
        }
    }

    /// The connection ended. Books and positions stay for the next connection's resume.
    pub fn handle_disconnected(&mut self) {
        self.connected = false;
        self.pending.clear();
        self.retries.clear();
        self.by_sid.clear();
        for s in &mut self.symbols {
            s.sid = None;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retries.iter().map(|r| r.0).min()
    }

    /// Sends what was due by `now` (subscribes the server asked to retry).
    pub fn handle_timeout(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition(|r| r.0 <= now);
        self.retries = later;
        for (_, symbols, initial) in due {
            let symbols: Vec<Arc<str>> = symbols
                .into_iter()
                .filter(|s| self.by_name.contains_key(s))
                .collect();
            if !symbols.is_empty() || initial {
                self.send_subscribe(symbols, initial, initial);
            }
        }
    }

    /// The next request to send, as a text frame payload.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.transmit.pop_front()
    }

    /// The next event to report.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A text message: a control reply, or a JSON data batch (`format=json`).
    ///
    /// # Errors
    /// A [`DecodeError`] when the message is neither; the connection cannot be trusted then.
    pub fn handle_text(&mut self, now: Instant, text: &str) -> Result<(), DecodeError> {
        if text.trim_start().starts_with('[') {
            let batch = JsonBatch::parse(text, |sym| {
                let i = *self.by_name.get(sym)?;
                let s = &self.symbols[i];
                s.sid.map(|_| (s.px_decimals, s.qty_decimals))
            });
            // JSON records name their symbol (the sid came later in the protocol): key by name.
            for (sym, rec) in batch?.records() {
                if let Some(&i) = self.by_name.get(sym) {
                    self.apply_at(i, &rec);
                }
            }
            self.finish_message();
            return Ok(());
        }
        let reply: Reply =
            serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
        self.handle_reply(now, reply);
        Ok(())
    }

    /// A binary data batch (`format=binary`).
    ///
    /// # Errors
    /// A [`DecodeError`] when the batch is malformed (nothing of it is applied then).
    pub fn handle_binary(&mut self, buf: &[u8]) -> Result<(), DecodeError> {
        for rec in decode_binary(buf)? {
            if let Some(&i) = self.by_sid.get(&rec.header.sid) {
                self.apply_at(i, &rec);
            }
        }
        self.finish_message();
        Ok(())
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn reindex(&mut self) {
        self.by_name = self
            .symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (Arc::clone(&s.name), i))
            .collect();
        self.by_sid = self
            .symbols
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s.sid?, i)))
            .collect();
    }

    fn send_subscribe(&mut self, symbols: Vec<Arc<str>>, initial: bool, with_resume: bool) {
        let id = self.id();
        let names: Vec<&str> = symbols.iter().map(|s| &**s).collect();
        let channels: Vec<&str> = self.config.channels.iter().map(|c| c.name()).collect();
        let mut req = json!({
            "op": "subscribe",
            "id": id,
            "symbols": names,
            "channels": channels,
            "depth": self.config.depth,
        });
        if let Some(hz) = self.config.max_hz {
            req["max_hz"] = json!(hz);
        }
        let mut resumed = Vec::new();
        if let (true, Some(epoch)) = (with_resume && self.ever_subscribed, &self.epoch) {
            let mut streams = serde_json::Map::new();
            for name in &symbols {
                let Some(&i) = self.by_name.get(name) else {
                    continue;
                };
                let s = &self.symbols[i];
                let mut pos = serde_json::Map::new();
                if s.synced && self.config.channels.contains(&Channel::Book) {
                    pos.insert("book".into(), json!(s.book.seq()));
                }
                if let Some(t) = s.trades_seq {
                    pos.insert("trades".into(), json!(t));
                }
                if !pos.is_empty() {
                    streams.insert(name.to_string(), Value::Object(pos));
                    resumed.push(Arc::clone(name));
                }
            }
            if !streams.is_empty() {
                req["resume"] = json!({"epoch": epoch, "streams": streams});
            }
        }
        self.pending.insert(
            id,
            Pending::Subscribe {
                symbols,
                initial,
                resumed,
            },
        );
        self.transmit.push_back(req.to_string());
    }

    fn handle_reply(&mut self, now: Instant, reply: Reply) {
        let pending = reply.id.and_then(|id| self.pending.remove(&id));
        match reply.op.as_str() {
            "subscribed" => {
                if let Some(epoch) = reply.epoch {
                    self.epoch = Some(epoch);
                }
                let (initial, resumed) = match pending {
                    Some(Pending::Subscribe {
                        initial, resumed, ..
                    }) => (initial, resumed),
                    _ => (false, Vec::new()),
                };
                let mut lost = Vec::new();
                let infos = reply
                    .symbols
                    .into_iter()
                    .filter_map(|v| serde_json::from_value::<SymbolInfo>(v).ok());
                for info in infos {
                    let Some(&i) = self.by_name.get(info.symbol.as_str()) else {
                        continue;
                    };
                    let s = &mut self.symbols[i];
                    if let Some(old) = s.sid.take() {
                        self.by_sid.remove(&old);
                    }
                    s.sid = Some(info.sid);
                    s.px_decimals = info.px_decimals;
                    s.qty_decimals = info.qty_decimals;
                    Arc::make_mut(&mut s.book).set_decimals(info.px_decimals, info.qty_decimals);
                    self.by_sid.insert(info.sid, i);
                    let asked = resumed.iter().any(|r| **r == *s.name);
                    if asked && info.recovered == Some(true) {
                        // The missed records follow from each position, no snapshot.
                        continue;
                    }
                    // A fresh subscription: the book waits for its snapshot, trades start
                    // from the live point.
                    if self.ever_subscribed && (s.synced || s.trades_seq.is_some()) {
                        lost.push(Arc::clone(&s.name));
                    }
                    s.synced = false;
                    s.trades_seq = None;
                }
                if initial {
                    let resumed =
                        if !self.ever_subscribed || (lost.is_empty() && resumed.is_empty()) {
                            Resumed::Fresh
                        } else if lost.is_empty() {
                            Resumed::Recovered
                        } else {
                            Resumed::NotRecovered { symbols: lost }
                        };
                    self.ever_subscribed = true;
                    self.events
                        .push_back(Event::Connection(ConnectionState::Subscribed {
                            resumed,
                            epoch: self.epoch.clone(),
                        }));
                }
            }
            "error" => {
                let (symbols, initial) = match pending {
                    Some(Pending::Subscribe {
                        symbols, initial, ..
                    }) => (symbols, initial),
                    _ => (Vec::new(), false),
                };
                let code = reply.code.unwrap_or_default();
                let retry = match code.as_str() {
                    "not_ready" => Some(NOT_READY_RETRY),
                    "rate_limited" => Some(RATE_LIMITED_RETRY),
                    _ => None,
                };
                match retry {
                    Some(after) if !symbols.is_empty() => {
                        self.retries.push((now + after, symbols, initial));
                        return;
                    }
                    _ => {}
                }
                if initial {
                    // Refused whole (e.g. a symbol the restarted server no longer lists): the
                    // connection is still usable; report both.
                    self.ever_subscribed = true;
                    self.events
                        .push_back(Event::Connection(ConnectionState::Subscribed {
                            resumed: Resumed::Fresh,
                            epoch: self.epoch.clone(),
                        }));
                }
                self.events.push_back(Event::ServerError(ServerError {
                    code,
                    message: reply.message.unwrap_or_default(),
                    symbols,
                }));
            }
            "refreshed" => self.events.push_back(Event::Refreshed { exp: reply.exp }),
            op @ ("conflating" | "live") => {
                let symbols = reply
                    .symbols
                    .iter()
                    .filter_map(Value::as_str)
                    .map(Arc::from)
                    .collect();
                self.events.push_back(if op == "live" {
                    Event::Live { symbols }
                } else {
                    Event::Conflating {
                        symbols,
                        max_hz: reply.max_hz,
                    }
                });
            }
            // unsubscribed, pong, symbols, and ops of later revisions.
            _ => {}
        }
    }

    fn resync(&mut self, i: usize, cause: ResyncCause) {
        let s = &mut self.symbols[i];
        s.synced = false;
        let name = Arc::clone(&s.name);
        self.events.push_back(Event::Resync(Resync {
            symbol: Arc::clone(&name),
            cause,
        }));
        if !self.resyncs.contains(&name) {
            self.resyncs.push(name);
        }
    }

    fn apply_at(&mut self, i: usize, rec: &Record<'_>) {
        let h = &rec.header;
        match &rec.body {
            Body::Book(body) => {
                let s = &mut self.symbols[i];
                if h.kind == Kind::Snapshot {
                    Arc::make_mut(&mut s.book).replace(h.seq, body.bids(), body.asks());
                    s.synced = true;
                    s.snapshot_in_message = true;
                } else {
                    if !s.synced {
                        // Waiting for the snapshot of a resubscription.
                        return;
                    }
                    let expected = s.book.seq().wrapping_add(1);
                    if h.seq != expected {
                        let cause = ResyncCause::Gap {
                            expected,
                            got: h.seq,
                        };
                        self.resync(i, cause);
                        return;
                    }
                    Arc::make_mut(&mut s.book).apply(h.seq, body.bids(), body.asks());
                }
                if !s.changed {
                    s.changed = true;
                    self.changed.push(i);
                }
                if let Some(server) = body.checksum() {
                    self.checksums_seen += 1;
                    let client = s.book.checksum();
                    if client != server {
                        let cause = ResyncCause::Checksum {
                            seq: h.seq,
                            server,
                            client,
                        };
                        self.resync(i, cause);
                    }
                }
            }
            Body::Trade(t) => {
                let s = &mut self.symbols[i];
                if let Some(last) = s.trades_seq {
                    let expected = last.wrapping_add(1);
                    if h.seq != expected {
                        self.events.push_back(Event::TradeGap {
                            symbol: Arc::clone(&s.name),
                            expected,
                            got: h.seq,
                        });
                    }
                }
                s.trades_seq = Some(h.seq);
                self.events.push_back(Event::Trade(Trade {
                    symbol: Arc::clone(&s.name),
                    seq: h.seq,
                    price: t.price,
                    qty: t.qty,
                    px_decimals: s.px_decimals,
                    qty_decimals: s.qty_decimals,
                    trade_id: t.trade_id,
                    side: t.side,
                    exch_ts: h.exch_ts,
                    recv_ts: h.recv_ts,
                }));
            }
            Body::Status(code) => {
                self.events.push_back(Event::Status(Status {
                    symbol: Arc::clone(&self.symbols[i].name),
                    code: *code,
                    ts: h.recv_ts,
                }));
            }
            Body::Unknown => {}
        }
    }

    /// One `Book` event per symbol the message changed and left whole; one subscribe for the
    /// symbols it found wrong (each resubscribed alone, but in one request, which matters
    /// against the server's control-message rate limit).
    fn finish_message(&mut self) {
        let resyncs = std::mem::take(&mut self.resyncs);
        if self.connected && !resyncs.is_empty() {
            // Not connected: the subscribe on connect covers them.
            self.send_subscribe(resyncs, false, false);
        }
        for i in std::mem::take(&mut self.changed) {
            let Some(s) = self.symbols.get_mut(i) else {
                continue;
            };
            s.changed = false;
            let snapshot = std::mem::take(&mut s.snapshot_in_message);
            if s.synced {
                self.events.push_back(Event::Book(BookUpdate {
                    book: BookView(Arc::clone(&s.book)),
                    snapshot,
                }));
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct Reply {
    op: String,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
    /// Objects in `subscribed`, names in `unsubscribed`, `conflating` and `live`.
    #[serde(default)]
    symbols: Vec<Value>,
    #[serde(default)]
    max_hz: Option<u32>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct SymbolInfo {
    symbol: String,
    sid: u32,
    px_decimals: u8,
    qty_decimals: u8,
    #[serde(default)]
    recovered: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::checksum;
    use crate::wire::tests::{batch, book_body, record};
    use crate::wire::{FLAG_CHECKSUM, FLAG_SNAPSHOT, Level};

    fn session(symbols: &[&str]) -> (Session, Instant) {
        let mut s = Session::new(SessionConfig {
            depth: 10,
            ..SessionConfig::default()
        });
        s.subscribe(symbols);
        (s, Instant::now())
    }

    fn sent(s: &mut Session) -> Vec<Value> {
        std::iter::from_fn(|| s.poll_transmit())
            .map(|t| serde_json::from_str(&t).expect("json request"))
            .collect()
    }

    fn events(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn subscribed(id: u64, epoch: Option<&str>, syms: &[(&str, u32, Option<bool>)]) -> String {
        let symbols: Vec<Value> = syms
            .iter()
            .map(|(n, sid, rec)| {
                let mut v = json!({"symbol":n,"sid":sid,"px_decimals":2,"qty_decimals":6});
                if let Some(r) = rec {
                    v["recovered"] = json!(r);
                }
                v
            })
            .collect();
        let mut v = json!({"op":"subscribed","id":id,"symbols":symbols});
        if let Some(e) = epoch {
            v["epoch"] = json!(e);
        }
        v.to_string()
    }

    fn snap(sid: u32, seq: u64, bids: &[Level], asks: &[Level]) -> Vec<u8> {
        record(1, FLAG_SNAPSHOT, sid, seq, &book_body(bids, asks, None))
    }

    fn delta(sid: u32, seq: u64, bids: &[Level], asks: &[Level]) -> Vec<u8> {
        record(2, 0, sid, seq, &book_body(bids, asks, None))
    }

    fn trade(sid: u32, seq: u64) -> Vec<u8> {
        let mut b = vec![0u8; 32];
        b[..8].copy_from_slice(&100i64.to_le_bytes());
        record(3, 0, sid, seq, &b)
    }

    fn book_events(ev: &[Event]) -> Vec<(String, u64, bool)> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Book(u) => Some((u.book.symbol().to_owned(), u.book.seq(), u.snapshot)),
                _ => None,
            })
            .collect()
    }

    /// Connects and answers the initial subscribe; returns the events of the reply.
    fn connect(
        s: &mut Session,
        now: Instant,
        epoch: Option<&str>,
        syms: &[(&str, u32, Option<bool>)],
    ) -> (Value, Vec<Event>) {
        s.handle_connected(now);
        let req = sent(s).pop().expect("subscribe");
        let id = req["id"].as_u64().expect("id");
        s.handle_text(now, &subscribed(id, epoch, syms))
            .expect("reply");
        (req, events(s))
    }

    #[test]
    fn max_hz_is_asked_for_when_set() {
        let mut s = Session::new(SessionConfig {
            max_hz: Some(10),
            ..SessionConfig::default()
        });
        s.subscribe(["A"]);
        s.handle_connected(Instant::now());
        assert_eq!(sent(&mut s)[0]["max_hz"], json!(10));
    }

    #[test]
    fn first_subscription_then_snapshot_and_deltas() {
        let (mut s, now) = session(&["A", "B"]);
        let (req, ev) = connect(&mut s, now, None, &[("A", 1, None), ("B", 2, None)]);
        assert_eq!(req["symbols"], json!(["A", "B"]));
        assert_eq!(req["depth"], json!(10));
        assert_eq!(req["channels"], json!(["book", "trades"]));
        assert!(req.get("resume").is_none(), "nothing to resume yet");
        assert!(matches!(
            ev.as_slice(),
            [Event::Connection(ConnectionState::Subscribed {
                resumed: Resumed::Fresh,
                epoch: None
            })]
        ));
        s.handle_binary(&batch(&[
            snap(1, 10, &[(100, 1)], &[(101, 1)]),
            delta(1, 11, &[(99, 2)], &[]),
            snap(2, 5, &[], &[(7, 7)]),
        ]))
        .expect("batch");
        let ev = events(&mut s);
        assert_eq!(
            book_events(&ev),
            vec![("A".into(), 11, true), ("B".into(), 5, true)],
            "one event per symbol per message"
        );
        let a = s.book("A").expect("book");
        assert_eq!(a.bids().collect::<Vec<_>>(), vec![(100, 1), (99, 2)]);
        assert_eq!(a.px_decimals(), 2);
        assert!(s.is_synced("A"));
    }

    #[test]
    fn a_gap_resubscribes_that_symbol_alone() {
        let (mut s, now) = session(&["A", "B"]);
        connect(&mut s, now, None, &[("A", 1, None), ("B", 2, None)]);
        s.handle_binary(&batch(&[
            snap(1, 10, &[(100, 1)], &[]),
            snap(2, 5, &[(5, 5)], &[]),
        ]))
        .expect("batch");
        events(&mut s);
        s.handle_binary(&batch(&[
            delta(1, 12, &[(100, 2)], &[]),
            delta(2, 6, &[(5, 6)], &[]),
        ]))
        .expect("batch");
        let ev = events(&mut s);
        assert!(ev.iter().any(|e| matches!(e, Event::Resync(Resync { symbol, cause: ResyncCause::Gap { expected: 11, got: 12 } }) if &**symbol == "A")));
        assert_eq!(book_events(&ev), vec![("B".into(), 6, false)]);
        let req = sent(&mut s);
        assert_eq!(req.len(), 1);
        assert_eq!(req[0]["op"], "subscribe");
        assert_eq!(req[0]["symbols"], json!(["A"]));
        assert!(!s.is_synced("A"));
        // Deltas before the new snapshot are ignored; the snapshot makes it whole.
        let id = req[0]["id"].as_u64().expect("id");
        s.handle_text(now, &subscribed(id, None, &[("A", 1, None)]))
            .expect("reply");
        s.handle_binary(&batch(&[delta(1, 13, &[(1, 1)], &[])]))
            .expect("batch");
        assert!(book_events(&events(&mut s)).is_empty());
        s.handle_binary(&batch(&[snap(1, 20, &[(100, 9)], &[])]))
            .expect("batch");
        assert_eq!(book_events(&events(&mut s)), vec![("A".into(), 20, true)]);
        assert_eq!(
            s.book("A").map(|b| b.bids().collect::<Vec<_>>()),
            Some(vec![(100, 9)])
        );
    }

    #[test]
    fn gaps_in_one_message_resubscribe_those_symbols_in_one_request() {
        let (mut s, now) = session(&["A", "B", "C"]);
        connect(
            &mut s,
            now,
            None,
            &[("A", 1, None), ("B", 2, None), ("C", 3, None)],
        );
        s.handle_binary(&batch(&[
            snap(1, 1, &[], &[]),
            snap(2, 1, &[], &[]),
            snap(3, 1, &[], &[]),
        ]))
        .expect("batch");
        s.handle_binary(&batch(&[
            delta(1, 5, &[], &[]),
            delta(2, 2, &[], &[]),
            delta(3, 9, &[], &[]),
        ]))
        .expect("batch");
        let req = sent(&mut s);
        assert_eq!(req.len(), 1);
        assert_eq!(req[0]["symbols"], json!(["A", "C"]));
        assert!(s.is_synced("B"));
        // A JSON record of a symbol not followed does not spoil the batch.
        s.handle_text(
            now,
            r#"[{"kind":"delta","symbol":"Z","sid":9,"seq":1,"bids":[["1.00","1"]],"asks":[]},
                {"kind":"delta","symbol":"B","sid":2,"seq":3,"bids":[["1.00","1"]],"asks":[]}]"#,
        )
        .expect("json");
        assert_eq!(
            book_events(&events(&mut s)).last(),
            Some(&("B".into(), 3, false))
        );
    }

    #[test]
    fn checksums_are_checked_when_present() {
        let (mut s, now) = session(&["A"]);
        connect(&mut s, now, None, &[("A", 1, None)]);
        let good = checksum(10, [(100, 1)], [(101, 2)]);
        s.handle_binary(&batch(&[record(
            1,
            FLAG_SNAPSHOT | FLAG_CHECKSUM,
            1,
            10,
            &book_body(&[(100, 1)], &[(101, 2)], Some(good)),
        )]))
        .expect("batch");
        assert_eq!(book_events(&events(&mut s)).len(), 1);
        assert_eq!(s.checksums_seen(), 1);
        // A delta whose level was corrupted on the way: the checksum disagrees.
        let after_true_delta = checksum(10, [(100, 3)], [(101, 2)]);
        s.handle_binary(&batch(&[record(
            2,
            FLAG_CHECKSUM,
            1,
            11,
            &book_body(&[(100, 4)], &[], Some(after_true_delta)),
        )]))
        .expect("batch");
        let ev = events(&mut s);
        assert!(ev.iter().any(|e| matches!(
            e,
            Event::Resync(Resync { cause: ResyncCause::Checksum { seq: 11, server, .. }, .. }) if *server == after_true_delta
        )));
        assert!(book_events(&ev).is_empty(), "a wrong book is not reported");
        assert_eq!(sent(&mut s)[0]["symbols"], json!(["A"]));
        // Without flag bit 1 (a server before 1.1) the reserved field is not a checksum.
        let (mut s, now) = session(&["A"]);
        connect(&mut s, now, None, &[("A", 1, None)]);
        s.handle_binary(&batch(&[record(
            1,
            FLAG_SNAPSHOT,
            1,
            1,
            &book_body(&[(1, 1)], &[], Some(12345)),
        )]))
        .expect("batch");
        assert!(!events(&mut s).iter().any(|e| matches!(e, Event::Resync(_))));
        assert_eq!(s.checksums_seen(), 0);
    }

    #[test]
    fn json_batches_apply_like_binary_ones() {
        let (mut s, now) = session(&["BTC-USD"]);
        connect(&mut s, now, None, &[("BTC-USD", 7, None)]);
        let crc = checksum(10, [(6_500_010, 1_500_000)], []);
        let text = format!(
            r#"[{{"kind":"snapshot","symbol":"BTC-USD","sid":7,"seq":100,"exch_ts":1,"recv_ts":2,"bids":[["65000.10","1.500000"]],"asks":[],"crc":{crc}}},
               {{"kind":"delta","symbol":"BTC-USD","sid":7,"seq":101,"exch_ts":1,"recv_ts":2,"bids":[],"asks":[["65000.20","0.250000"]]}}]"#
        );
        s.handle_text(now, &text).expect("json batch");
        assert_eq!(
            book_events(&events(&mut s)),
            vec![("BTC-USD".into(), 101, true)]
        );
        let (bids, asks) = s.book("BTC-USD").expect("book").to_decimal_strings();
        assert_eq!(bids, vec![["65000.10".to_owned(), "1.500000".to_owned()]]);
        assert_eq!(asks, vec![["65000.20".to_owned(), "0.250000".to_owned()]]);
    }

    #[test]
    fn reconnect_resumes_from_the_positions_held() {
        let (mut s, now) = session(&["A", "B"]);
        connect(&mut s, now, Some("ep1"), &[("A", 1, None), ("B", 2, None)]);
        s.handle_binary(&batch(&[
            snap(1, 10, &[(100, 1)], &[]),
            delta(1, 11, &[(99, 1)], &[]),
            trade(1, 500),
            snap(2, 3, &[(5, 5)], &[]),
        ]))
        .expect("batch");
        events(&mut s);
        s.handle_disconnected();
        assert_eq!(s.epoch(), Some("ep1"));
        // Reconnect: resume carries the epoch and each stream's last seq.
        let (req, ev) = connect(
            &mut s,
            now,
            Some("ep1"),
            &[("A", 4, Some(true)), ("B", 5, Some(true))],
        );
        assert_eq!(
            req["resume"],
            json!({"epoch":"ep1","streams":{"A":{"book":11,"trades":500},"B":{"book":3}}})
        );
        assert!(ev.iter().any(|e| matches!(
            e,
            Event::Connection(ConnectionState::Subscribed {
                resumed: Resumed::Recovered,
                epoch: Some(e),
            }) if e == "ep1"
        )));
        // Recovered: the replay continues the book with no snapshot, under the new sids.
        s.handle_binary(&batch(&[delta(4, 12, &[(98, 1)], &[]), trade(4, 501)]))
            .expect("batch");
        let ev = events(&mut s);
        assert_eq!(book_events(&ev), vec![("A".into(), 12, false)]);
        assert!(
            !ev.iter()
                .any(|e| matches!(e, Event::TradeGap { .. } | Event::Resync(_)))
        );
        assert_eq!(
            s.book("A").map(|b| b.bids().collect::<Vec<_>>()),
            Some(vec![(100, 1), (99, 1), (98, 1)])
        );
    }

    #[test]
    fn not_recovered_starts_from_a_snapshot() {
        let (mut s, now) = session(&["A", "B"]);
        connect(&mut s, now, Some("ep1"), &[("A", 1, None), ("B", 2, None)]);
        s.handle_binary(&batch(&[
            snap(1, 10, &[(100, 1)], &[]),
            snap(2, 3, &[(5, 5)], &[]),
        ]))
        .expect("batch");
        s.handle_disconnected();
        // A restarted server: new epoch, A not recovered, B recovered.
        let (_, ev) = connect(
            &mut s,
            now,
            Some("ep2"),
            &[("A", 1, Some(false)), ("B", 2, Some(true))],
        );
        assert!(ev.iter().any(|e| matches!(e, Event::Connection(ConnectionState::Subscribed { resumed: Resumed::NotRecovered { symbols }, .. }) if symbols.len() == 1 && &*symbols[0] == "A")));
        assert_eq!(s.epoch(), Some("ep2"));
        assert!(!s.is_synced("A"));
        assert!(s.is_synced("B"));
        s.handle_binary(&batch(&[delta(1, 11, &[(1, 1)], &[])]))
            .expect("batch");
        assert!(
            book_events(&events(&mut s)).is_empty(),
            "waits for a snapshot"
        );
        // A server before 1.1 (no epoch): no resume is sent, every book starts afresh.
        let (mut s, now) = session(&["A"]);
        connect(&mut s, now, None, &[("A", 1, None)]);
        s.handle_binary(&batch(&[snap(1, 10, &[(100, 1)], &[])]))
            .expect("batch");
        s.handle_disconnected();
        let (req, ev) = connect(&mut s, now, None, &[("A", 1, None)]);
        assert!(req.get("resume").is_none());
        assert!(ev.iter().any(|e| matches!(
            e,
            Event::Connection(ConnectionState::Subscribed {
                resumed: Resumed::NotRecovered { .. },
                epoch: None,
            })
        )));
        assert!(!s.is_synced("A"));
    }

    #[test]
    fn not_ready_is_retried_and_other_errors_reported() {
        let (mut s, now) = session(&["A"]);
        s.handle_connected(now);
        let id = sent(&mut s)[0]["id"].as_u64().expect("id");
        s.handle_text(
            now,
            &json!({"op":"error","id":id,"code":"not_ready","message":"x"}).to_string(),
        )
        .expect("reply");
        assert!(events(&mut s).is_empty());
        assert_eq!(s.poll_timeout(), Some(now + NOT_READY_RETRY));
        s.handle_timeout(now + NOT_READY_RETRY);
        let again = sent(&mut s);
        assert_eq!(again[0]["symbols"], json!(["A"]));
        let id = again[0]["id"].as_u64().expect("id");
        s.handle_text(
            now,
            &json!({"op":"error","id":id,"code":"unknown_symbol","message":"A"}).to_string(),
        )
        .expect("reply");
        let ev = events(&mut s);
        assert!(matches!(
            &ev[0],
            Event::Connection(ConnectionState::Subscribed { .. })
        ));
        assert!(matches!(&ev[1], Event::ServerError(e) if e.code == "unknown_symbol"));
    }

    #[test]
    fn unsubscribe_refresh_and_trades() {
        let (mut s, now) = session(&["A", "B"]);
        connect(&mut s, now, None, &[("A", 1, None), ("B", 2, None)]);
        s.handle_binary(&batch(&[trade(2, 7), trade(2, 9)]))
            .expect("batch");
        let ev = events(&mut s);
        assert!(
            matches!(&ev[0], Event::Trade(t) if t.seq == 7 && t.price == 100 && t.px_decimals == 2)
        );
        assert!(matches!(&ev[2], Event::Trade(t) if t.seq == 9));
        assert!(matches!(
            &ev[1],
            Event::TradeGap {
                expected: 8,
                got: 9,
                ..
            }
        ));
        s.unsubscribe(["A"]);
        let req = sent(&mut s);
        assert_eq!(req[0]["op"], "unsubscribe");
        assert_eq!(s.symbols().collect::<Vec<_>>(), vec!["B"]);
        // Records of B still land after the reindex; A's are ignored.
        s.handle_binary(&batch(&[
            snap(2, 1, &[(1, 1)], &[]),
            snap(1, 1, &[(1, 1)], &[]),
        ]))
        .expect("batch");
        assert_eq!(book_events(&events(&mut s)), vec![("B".into(), 1, true)]);
        s.handle_text(now, r#"{"op":"conflating","symbols":["B"],"max_hz":5}"#)
            .expect("op");
        s.handle_text(now, r#"{"op":"live","symbols":["B"]}"#)
            .expect("op");
        let ev = events(&mut s);
        assert!(
            matches!(&ev[0], Event::Conflating { symbols, max_hz: Some(5) } if &*symbols[0] == "B")
        );
        assert!(matches!(&ev[1], Event::Live { symbols } if &*symbols[0] == "B"));
        s.refresh("t2");
        assert_eq!(sent(&mut s)[0]["token"], "t2");
        assert_eq!(s.token(), Some("t2"));
        s.handle_text(now, r#"{"op":"refreshed","id":3,"exp":99}"#)
            .expect("reply");
        assert!(matches!(
            events(&mut s)[0],
            Event::Refreshed { exp: Some(99) }
        ));
    }
}
