//! The input side of a run, paced by the bench so that it controls the rate:
//!
//! - [`FeedServer`]: a feed for tickcast (`ws://127.0.0.1:PORT/feed`), the
//!   simulated exchange of `feed-sim` ([`feed_sim::Exchange`]) served at a rate the
//!   bench sets per step, with optional bursts.
//! - [`Publisher`]: for a peer broadcast server, a publisher connection (`/pub`)
//!   that sends binary batches in tickcast's record format ([`RecordGen`]),
//!   stamped when sent, so that the same client code checks sequences and
//!   measures latency for both.
//!
//! Both tick every millisecond, sending what is due since the last tick (the
//! cadence of `feed-sim`'s own generator). The publisher runs on the caller's
//! `LocalSet`; the feed server has a thread of its own, so that the load's own
//! work (opening 20,000 connections, say) never holds the feed back — a silent
//! feed makes the engine resync every book, which is not what a run measures.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use feed_sim::Exchange;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval};
use tokio_tungstenite::tungstenite::Message;

use crate::runner::realtime_ns;
use crate::wire::{BATCH_HEADER_LEN, KIND_DELTA, KIND_SNAPSHOT, KIND_TRADE, VERSION};

/// The pacing tick.
pub const TICK: Duration = Duration::from_millis(1);
/// Initial levels per side of the feed's books.
const FEED_DEPTH: usize = 150;
/// Levels per side in a publisher snapshot.
const SNAPSHOT_LEVELS: usize = 10;
/// Most records in one published batch (the record count is a u16).
const MAX_BATCH_RECORDS: usize = 65_535;

/// Periodic bursts: `factor` × the rate for `len_ms` out of every `every_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Burst {
    /// Rate multiplier inside a burst.
    pub factor: f64,
    /// Burst length, ms.
    pub len_ms: u64,
    /// Burst period, ms.
    pub every_ms: u64,
}

/// A value shared between the bench's thread and the feed server's: `get`/`set`.
#[derive(Debug, Default)]
pub struct Shared<T>(Mutex<T>);

impl<T: Copy> Shared<T> {
    /// The current value.
    pub fn get(&self) -> T {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the value.
    pub fn set(&self, value: T) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = value;
    }
}

/// Shared pacing controls: the base rate and the burst shape.
#[derive(Debug, Default)]
pub struct Pace {
    /// Events per second outside bursts.
    pub rate: Shared<f64>,
    /// Burst shape, if any.
    pub burst: Shared<Option<Burst>>,
    /// Events sent so far.
    pub sent: Shared<u64>,
}

/// Turns elapsed time into a number of events due, following [`Pace`].
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    last: Instant,
    budget: f64,
}

impl Pacer {
    /// A pacer starting now.
    pub fn new(now: Instant) -> Self {
        Self {
            start: now,
            last: now,
            budget: 0.0,
        }
    }

    /// The rate in force at `now`.
    pub fn rate_at(&self, pace: &Pace, now: Instant) -> f64 {
        let base = pace.rate.get().max(0.0);
        match pace.burst.get() {
            Some(b) if b.every_ms > 0 => {
                let t = now.duration_since(self.start).as_millis() as u64 % b.every_ms;
                if t < b.len_ms { base * b.factor } else { base }
            }
            _ => base,
        }
    }

    /// Events due since the last call (at most 50 ms worth: a stalled sender does
    /// not catch up with a flood).
    pub fn due(&mut self, pace: &Pace, now: Instant) -> u64 {
        let rate = self.rate_at(pace, now);
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.budget = (self.budget + rate * dt).min((rate * 0.05).max(1.0));
        let n = self.budget.floor().max(0.0);
        self.budget -= n;
        n as u64
    }
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Listening or connecting failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The publisher could not connect.
    #[error("publisher cannot connect to {url}: {reason}")]
    Connect {
        /// Peer URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// A running feed for tickcast; dropped, it stops.
#[derive(Debug)]
pub struct FeedServer {
    /// `ws://127.0.0.1:PORT/feed`.
    pub url: String,
    /// Rate (l2updates per second) and bursts.
    pub pace: Arc<Pace>,
    stop: watch::Sender<bool>,
}

impl FeedServer {
    /// Listens on `addr` and serves `symbols` simulated symbols to every feed
    /// connection (normally one: the engine's ingester).
    pub async fn start(addr: &str, symbols: usize, seed: u64) -> Result<Self, SourceError> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let url = format!("ws://{}/feed", std_listener.local_addr()?);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let pace = Arc::new(Pace::default());
        let (stop, stop_rx) = watch::channel(false);
        let p = pace.clone();
        std::thread::Builder::new()
            .name(String::from("bench-feed"))
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let ex = Rc::new(RefCell::new(Exchange::new(symbols, FEED_DEPTH, seed)));
                    let mut stop_rx = stop_rx;
                    loop {
                        tokio::select! {
                            _ = stop_rx.changed() => return,
                            accepted = listener.accept() => {
                                let Ok((tcp, _)) = accepted else { continue };
                                let _ = tcp.set_nodelay(true);
                                let (p, ex, s) = (p.clone(), ex.clone(), stop_rx.clone());
                                tokio::task::spawn_local(feed_session(tcp, p, ex, s));
                            }
                        }
                    }
                });
            })?;
        Ok(Self { url, pace, stop })
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Splits generated feed text (one JSON message per line) into text frames.
fn lines_to_messages(buf: &[u8], out: &mut Vec<Message>) {
    for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        out.push(Message::text(String::from_utf8_lossy(line).into_owned()));
    }
}

async fn feed_session(
    tcp: tokio::net::TcpStream,
    pace: Arc<Pace>,
    exchange: Rc<RefCell<Exchange>>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let mut buf = Vec::with_capacity(64 << 10);
    let mut msgs = Vec::new();
    {
        let ex = exchange.borrow();
        ex.symbols_json(&mut buf);
        let ts = realtime_ns();
        for i in 0..ex.symbols().len() {
            ex.snapshot_json(i, ts, &mut buf);
        }
    }
    lines_to_messages(&buf, &mut msgs);
    for m in msgs.drain(..) {
        if sink.feed(m).await.is_err() {
            return;
        }
    }
    if sink.flush().await.is_err() {
        return;
    }
    let mut pacer = Pacer::new(Instant::now());
    let mut tick = interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        buf.clear();
        tokio::select! {
            _ = stop.changed() => return,
            now = tick.tick() => {
                let n = pacer.due(&pace, now);
                if n == 0 {
                    continue;
                }
                {
                    let mut ex = exchange.borrow_mut();
                    let ts = realtime_ns();
                    for _ in 0..n {
                        ex.step(ts, &mut buf);
                    }
                }
                pace.sent.set(pace.sent.get() + n);
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    // {"op":"snapshot","symbol":"X"}: resend that book, in order.
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                    if v.get("op").and_then(|o| o.as_str()) != Some("snapshot") {
                        continue;
                    }
                    let ex = exchange.borrow();
                    if let Some(i) = v.get("symbol").and_then(|s| s.as_str()).and_then(|s| ex.symbol_index(s)) {
                        ex.snapshot_json(i, realtime_ns(), &mut buf);
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return,
            }
        }
        lines_to_messages(&buf, &mut msgs);
        for m in msgs.drain(..) {
            if sink.feed(m).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// Generates binary batches in tickcast's record format (protocol §1.2) for the
/// peers: a snapshot of every symbol first, then book deltas of 1 to 4 levels
/// and trades (8 %), on symbols drawn at random, with per-stream seqs that rise
/// by one.
#[derive(Debug, Clone)]
pub struct RecordGen {
    book_seq: Vec<u64>,
    trade_seq: Vec<u64>,
    rng: u64,
}

fn header(out: &mut Vec<u8>, len: usize, kind: u8, sid: u32, seq: u64, ts: u64) {
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.push(kind);
    out.push(u8::from(kind == KIND_SNAPSHOT));
    out.extend_from_slice(&sid.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
}

fn levels(out: &mut Vec<u8>, bids: usize, asks: usize, base: i64) {
    out.extend_from_slice(&(bids as u16).to_le_bytes());
    out.extend_from_slice(&(asks as u16).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for i in 0..bids + asks {
        let px = if i < bids {
            base - i as i64
        } else {
            base + 1 + (i - bids) as i64
        };
        out.extend_from_slice(&px.to_le_bytes());
        out.extend_from_slice(&(1_000 + i as i64).to_le_bytes());
    }
}

impl RecordGen {
    /// A generator for `symbols` symbols (sids 0..symbols), seeded.
    pub fn new(symbols: usize, seed: u64) -> Self {
        Self {
            book_seq: vec![0; symbols.max(1)],
            trade_seq: vec![0; symbols.max(1)],
            rng: seed | 1,
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn batch_header(out: &mut Vec<u8>, count: usize) {
        out.push(VERSION);
        out.push(0);
        out.extend_from_slice(&(count as u16).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
    }

    /// A batch holding one snapshot per symbol.
    pub fn snapshots(&self, ts: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Self::batch_header(&mut out, self.book_seq.len());
        for (sid, seq) in self.book_seq.iter().enumerate() {
            let len = 40 + 16 * 2 * SNAPSHOT_LEVELS;
            header(&mut out, len, KIND_SNAPSHOT, sid as u32, *seq, ts);
            levels(&mut out, SNAPSHOT_LEVELS, SNAPSHOT_LEVELS, 100_000);
        }
        out
    }

    /// A batch of `n` records (at most 65,535) stamped `ts`.
    pub fn batch(&mut self, n: usize, ts: u64) -> Vec<u8> {
        let n = n.min(MAX_BATCH_RECORDS);
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + n * 72);
        Self::batch_header(&mut out, n);
        let symbols = self.book_seq.len() as u64;
        for _ in 0..n {
            let r = self.next();
            let i = (r % symbols) as usize;
            let sid = i as u32;
            if (r >> 32) % 100 < 8 {
                let seq = self.trade_seq.get(i).copied().unwrap_or(0) + 1;
                if let Some(s) = self.trade_seq.get_mut(i) {
                    *s = seq;
                }
                header(&mut out, 64, KIND_TRADE, sid, seq, ts);
                out.extend_from_slice(&100_000i64.to_le_bytes());
                out.extend_from_slice(&5i64.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
                out.push(((r >> 40) & 1) as u8);
                out.extend_from_slice(&[0; 7]);
            } else {
                // 1 to 4 levels, as feed-sim's order flow: 50 %, 25 %, 15 %, 10 %.
                let count = match (r >> 48) % 20 {
                    0..10 => 1,
                    10..15 => 2,
                    15..18 => 3,
                    _ => 4,
                };
                let bids = ((r >> 56) as usize) % (count + 1);
                let seq = self.book_seq.get(i).copied().unwrap_or(0) + 1;
                if let Some(s) = self.book_seq.get_mut(i) {
                    *s = seq;
                }
                header(&mut out, 40 + 16 * count, KIND_DELTA, sid, seq, ts);
                levels(&mut out, bids, count - bids, 100_000);
            }
        }
        out
    }
}

/// A running publisher; dropped, it stops.
#[derive(Debug)]
pub struct Publisher {
    /// Rate (records per second) and bursts.
    pub pace: Arc<Pace>,
    stop: watch::Sender<bool>,
}

impl Publisher {
    /// Connects to `url` (the peer's `/pub`), sends the snapshots, then records at
    /// `pace`'s rate until dropped.
    pub async fn start(url: &str, symbols: usize, pace: Arc<Pace>) -> Result<Self, SourceError> {
        let (ws, _) =
            tokio_tungstenite::connect_async(url)
                .await
                .map_err(|e| SourceError::Connect {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        let (stop, mut stop_rx) = watch::channel(false);
        let p = pace.clone();
        tokio::task::spawn_local(async move {
            let (mut sink, mut stream) = ws.split();
            let mut generator = RecordGen::new(symbols, 0x5eed);
            let first = generator.snapshots(realtime_ns());
            if sink.send(Message::binary(first)).await.is_err() {
                return;
            }
            let mut pacer = Pacer::new(Instant::now());
            let mut tick = interval(TICK);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => {
                        let _ = sink.close().await;
                        return;
                    }
                    now = tick.tick() => {
                        let mut n = pacer.due(&p, now);
                        p.sent.set(p.sent.get() + n);
                        while n > 0 {
                            let take = n.min(MAX_BATCH_RECORDS as u64);
                            n -= take;
                            let batch = generator.batch(take as usize, realtime_ns());
                            if sink.send(Message::binary(batch)).await.is_err() {
                                return;
                            }
                        }
                    }
                    msg = stream.next() => if matches!(msg, None | Some(Err(_))) { return },
                }
            }
        });
        Ok(Self { pace, stop })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::SeqTracker;
    use crate::wire::{Body, decode_batch};

    #[test]
    fn generated_batches_decode_and_keep_the_sequence_rule() -> Result<(), crate::wire::WireError> {
        let mut generator = RecordGen::new(5, 42);
        let mut seq = SeqTracker::new();
        let snaps = decode_batch(&generator.snapshots(7))?;
        assert_eq!(snaps.len(), 5);
        let mut kinds = [0usize; 4];
        for r in snaps {
            assert!(seq.observe(&r.header).is_ok());
        }
        for _ in 0..50 {
            for r in decode_batch(&generator.batch(100, 9))? {
                assert!(seq.observe(&r.header).is_ok(), "{:?}", r.header);
                assert_eq!((r.header.exch_ts, r.header.recv_ts), (9, 9));
                kinds[usize::from(r.header.kind)] += 1;
                if let Body::Book { bids, asks, .. } = r.body {
                    assert!((1..=4).contains(&(bids.len() + asks.len())));
                }
            }
        }
        let trades = kinds[usize::from(KIND_TRADE)];
        assert!((200..=600).contains(&trades), "{kinds:?}");
        assert_eq!(trades + kinds[usize::from(KIND_DELTA)], 5000);
        Ok(())
    }

    #[test]
    fn pacer_follows_rate_and_bursts() {
        let pace = Pace::default();
        pace.rate.set(1000.0);
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let total: u64 = (1..=1000)
            .map(|ms| p.due(&pace, t0 + Duration::from_millis(ms)))
            .sum();
        assert!((999..=1000).contains(&total), "{total}");
        pace.burst.set(Some(Burst {
            factor: 10.0,
            len_ms: 100,
            every_ms: 1000,
        }));
        let mut p = Pacer::new(t0);
        let total: u64 = (1..=1000)
            .map(|ms| p.due(&pace, t0 + Duration::from_millis(ms)))
            .sum();
        // 100 ms at 10 000/s and 900 ms at 1 000/s.
        assert!((1890..=1900).contains(&total), "{total}");
        // A stall does not turn into a flood.
        let mut p = Pacer::new(t0);
        pace.burst.set(None);
        assert_eq!(p.due(&pace, t0 + Duration::from_secs(10)), 50);
    }
}
