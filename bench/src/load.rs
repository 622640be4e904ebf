//! The subscriber load of a scenario: many connections in one process, measured
//! in windows the caller opens and closes.
//!
//! Connection tasks on the caller's `LocalSet` connect, upgrade and subscribe;
//! each then hands its socket to the process's reader thread (`reader`: one mio
//! poll over every subscribed connection), which does all the reading. The
//! figures sit behind one lock that the reader takes once per poll round.
//!
//! Every record is sequence-checked from the first one on. Inside a window, each
//! binary message adds to the window's records, bytes and latency histograms
//! (book deltas and trades; `now - recv_ts` and `now - exch_ts`, read once per
//! socket read). Connections marked as *stoppers* (every `stop_every`-th) stop
//! reading on [`Phase::Stopped`] and are kept out of the window's figures.
//! Connections marked as *slow readers* (every `slow_every`-th, never a stopper)
//! read at most `slow_read_bps` bytes per second throughout (a token bucket,
//! [`crate::throttle`]); they are kept out of the window's latency and counted
//! apart: their records, the conflated snapshots and `conflating`/`live` messages
//! the ladder of protocol 1.1 §3.3 sends them, their evictions, and their
//! *staleness* (now − `exch_ts` of the latest book record held, per symbol,
//! sampled every [`STALENESS_EVERY`]).
//!
//! [`LoadGroup`] spreads a load over several processes (`--procs`): this one and
//! workers (`tickcast-bench worker`) driven over stdin/stdout with JSON lines.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use crate::book::{SeqError, SeqTracker, Step};
use crate::client::{ClientError, ConnectOptions, Frame, Target, WsConn};
use crate::control::{Channel, Reply, Request};
use crate::hist;
use crate::report::Connections;
use crate::wire::{self, KIND_DELTA, KIND_TRADE};

mod reader;

/// Close code of a slow-consumer eviction.
pub const CLOSE_EVICTED: u16 = 1013;
/// Id of each connection's subscribe request.
const SUBSCRIBE_ID: u64 = 1;
/// Distinct failure reasons kept.
const MAX_REASONS: usize = 16;
/// Integrity error messages kept.
const MAX_ERRORS: usize = 10;
/// Time the connections have to finish after [`Phase::Finish`].
const FINISH_GRACE: Duration = Duration::from_secs(5);
/// How often the slow readers' staleness is sampled during a window.
pub const STALENESS_EVERY: Duration = Duration::from_millis(100);
/// Highest symbol id whose staleness a slow reader keeps (sids index a vector).
const MAX_STALE_SID: u32 = 1 << 16;

/// What the connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// tickcast: subscribe, wait for `subscribed`, then read.
    Tickcast,
    /// A broadcast peer: read from the upgrade on (nothing to subscribe).
    Peer,
}

/// One process's share of a load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSpec {
    /// Server URL for subscribers.
    pub url: String,
    /// Protocol of the server.
    pub kind: ClientKind,
    /// The server's symbols (tickcast), for per-connection assignment.
    pub symbols: Vec<String>,
    /// Symbols per connection, round-robin over `symbols`; 0 subscribes to `*`.
    pub symbols_per_conn: usize,
    /// Book depth to subscribe with.
    pub depth: u32,
    /// Global index of this share's first connection.
    pub first: usize,
    /// Connections in this share.
    pub count: usize,
    /// Connections opened per second by this share.
    pub connect_rate: f64,
    /// Source addresses 127.0.0.1 ..= 127.0.0.N used round-robin (1: let the kernel pick).
    pub source_ips: u8,
    /// Every `stop_every`-th connection (global index) is a stopper; 0 for none.
    pub stop_every: usize,
    /// `SO_RCVBUF` of stoppers, bytes.
    pub stopper_rcvbuf: Option<u32>,
    /// Time to connect, upgrade and get the subscribe reply, ms.
    pub connect_timeout_ms: u64,
    /// Pause of the reader thread before each poll, µs (0: none).
    #[serde(default)]
    pub read_pause_us: u64,
    /// Every `slow_every`-th connection (global index `i` with `i % slow_every ==
    /// slow_every - 1`) that is not a stopper reads slowly; 0 for none.
    #[serde(default)]
    pub slow_every: usize,
    /// Bytes per second a slow reader reads.
    #[serde(default)]
    pub slow_read_bps: u64,
}

impl LoadSpec {
    /// The symbols connection `i` subscribes to (`["*"]` when `symbols_per_conn` is 0).
    pub fn symbols_for(&self, i: usize) -> Vec<String> {
        if self.symbols_per_conn == 0 {
            vec![String::from("*")]
        } else {
            crate::runner::assign_symbols(&self.symbols, i, self.symbols_per_conn)
        }
    }

    /// Whether connection `i` stops reading on [`Phase::Stopped`].
    pub fn is_stopper(&self, i: usize) -> bool {
        self.stop_every > 0 && i % self.stop_every == 0
    }

    /// Whether connection `i` reads at `slow_read_bps` (a stopper never does).
    pub fn is_slow(&self, i: usize) -> bool {
        self.slow_every > 0 && i % self.slow_every == self.slow_every - 1 && !self.is_stopper(i)
    }

    fn role(&self, i: usize) -> Role {
        if self.is_stopper(i) {
            Role::Stopper
        } else if self.is_slow(i) {
            Role::Slow
        } else {
            Role::Reader
        }
    }

    /// The source address connection `i` binds, if any.
    pub fn source_for(&self, i: usize) -> Option<IpAddr> {
        (self.source_ips > 1).then(|| {
            let n = (i % usize::from(self.source_ips)) as u8 + 1;
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
        })
    }

    /// Splits a load of `count` connections into `procs` shares.
    pub fn split(&self, procs: usize) -> Vec<Self> {
        let procs = procs.max(1);
        let (each, extra) = (self.count / procs, self.count % procs);
        let mut first = self.first;
        (0..procs)
            .map(|p| {
                let count = each + usize::from(p < extra);
                let share = Self {
                    first,
                    count,
                    connect_rate: self.connect_rate / procs as f64,
                    ..self.clone()
                };
                first += count;
                share
            })
            .filter(|s| s.count > 0)
            .collect()
    }
}

/// The phase the connections are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Everyone reads.
    Run,
    /// Stoppers do not read.
    Stopped,
    /// Close and report.
    Finish,
}

/// Serde helpers carrying histograms as base64 V2 text.
mod hist_serde {
    use hdrhistogram::Histogram;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        h: &Option<Histogram<u64>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match h {
            None => s.serialize_none(),
            Some(h) => {
                let text = crate::hist::to_base64(h).map_err(serde::ser::Error::custom)?;
                s.serialize_some(&text)
            }
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Histogram<u64>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| crate::hist::from_base64(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// What a connection is in the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Reads as fast as it can; measured.
    Reader,
    /// Stops reading on [`Phase::Stopped`]; not measured.
    Stopper,
    /// Reads at a limited byte rate; counted apart ([`SlowStats`]).
    Slow,
}

/// A connection's integrity state: the sequence rule per stream and, for a slow
/// reader, the `exch_ts` of the latest book record it applied per symbol.
#[derive(Debug)]
struct Check {
    seq: SeqTracker,
    role: Role,
    /// `exch_ts` (ns) by sid; 0 for none (slow readers only).
    held: Vec<u64>,
}

impl Check {
    fn new(role: Role) -> Self {
        Self {
            seq: SeqTracker::new(),
            role,
            held: Vec::new(),
        }
    }

    /// A book record of `sid` stamped `exch_ts` was applied.
    fn hold(&mut self, sid: u32, exch_ts: u64) {
        if self.role != Role::Slow || sid >= MAX_STALE_SID {
            return;
        }
        let i = sid as usize;
        if self.held.len() <= i {
            self.held.resize(i + 1, 0);
        }
        if let Some(t) = self.held.get_mut(i) {
            *t = exch_ts;
        }
    }
}

/// What the slow readers received during one window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlowStats {
    /// Records received.
    pub records: u64,
    /// Payload bytes of their binary messages.
    pub bytes: u64,
    /// Sequence gaps and deltas without a snapshot (a broken book: never expected,
    /// conflated or not).
    pub gaps: u64,
    /// Snapshots that moved a book stream's seq: conflated snapshots (or resyncs).
    pub snapshots: u64,
    /// `conflating` messages received.
    pub conflating: u64,
    /// `live` messages received.
    pub live: u64,
    /// Slow readers evicted (1013) during the window.
    pub evicted: u64,
    /// Slow readers closed otherwise or lost during the window.
    pub closed_or_dropped: u64,
    /// Staleness samples: now − `exch_ts` of the latest book record held, per
    /// reader and symbol, every [`STALENESS_EVERY`], µs.
    #[serde(with = "hist_serde", default)]
    pub stale_us: Option<Histogram<u64>>,
}

impl SlowStats {
    fn merge(&mut self, o: &Self) {
        self.records += o.records;
        self.bytes += o.bytes;
        self.gaps += o.gaps;
        self.snapshots += o.snapshots;
        self.conflating += o.conflating;
        self.live += o.live;
        self.evicted += o.evicted;
        self.closed_or_dropped += o.closed_or_dropped;
        merge_hist(&mut self.stale_us, &o.stale_us);
    }
}

/// What the measured connections received during one window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WindowStats {
    /// Records received (stoppers excluded).
    pub records: u64,
    /// Binary messages received.
    pub messages: u64,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// Sequence gaps and deltas without a snapshot.
    pub gaps: u64,
    /// Snapshots that moved a stream's seq (the engine resynchronised it: data was dropped).
    pub resyncs: u64,
    /// Messages that did not decode.
    pub decode_errors: u64,
    /// Measured connections evicted (1013) during the window.
    pub evicted: u64,
    /// Measured connections closed with another code during the window.
    pub closed: u64,
    /// Measured connections lost without a close frame during the window.
    pub dropped: u64,
    /// Records received by stoppers during the window.
    pub stopper_records: u64,
    /// Stoppers evicted (1013) during the window.
    pub stoppers_evicted: u64,
    /// Latency from `recv_ts`, µs.
    #[serde(with = "hist_serde", default)]
    pub recv_us: Option<Histogram<u64>>,
    /// Latency from `exch_ts`, µs.
    #[serde(with = "hist_serde", default)]
    pub exch_us: Option<Histogram<u64>>,
    /// `conflating` messages the measured connections received (they fell behind).
    #[serde(default)]
    pub conflating: u64,
    /// The slow readers.
    #[serde(default)]
    pub slow: SlowStats,
}

fn merge_hist(into: &mut Option<Histogram<u64>>, from: &Option<Histogram<u64>>) {
    match (into.as_mut(), from) {
        (_, None) => {}
        (None, Some(f)) => *into = Some(f.clone()),
        (Some(i), Some(f)) => hist::merge(i, f),
    }
}

impl WindowStats {
    /// Adds another process's window.
    pub fn merge(&mut self, o: &Self) {
        self.records += o.records;
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.gaps += o.gaps;
        self.resyncs += o.resyncs;
        self.decode_errors += o.decode_errors;
        self.evicted += o.evicted;
        self.closed += o.closed;
        self.dropped += o.dropped;
        self.stopper_records += o.stopper_records;
        self.stoppers_evicted += o.stoppers_evicted;
        merge_hist(&mut self.recv_us, &o.recv_us);
        merge_hist(&mut self.exch_us, &o.exch_us);
        self.conflating += o.conflating;
        self.slow.merge(&o.slow);
    }
}

/// Everything a load saw, at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FinalStats {
    /// Connection outcomes.
    pub connections: Connections,
    /// Stoppers closed with 1013 over the whole run.
    pub stoppers_evicted: u64,
    /// Stoppers in the load.
    pub stoppers: u64,
    /// Records sequence-checked.
    pub records_checked: u64,
    /// Gaps over the whole run.
    pub gaps: u64,
    /// Resyncs over the whole run (not counting first snapshots).
    pub resyncs: u64,
    /// Undecodable messages over the whole run.
    pub decode_errors: u64,
    /// The first integrity errors seen.
    pub first_errors: Vec<String>,
    /// Slow readers in the load.
    #[serde(default)]
    pub slow_readers: u64,
    /// Slow readers closed with 1013 over the whole run.
    #[serde(default)]
    pub slow_evicted: u64,
    /// Snapshots that moved a slow reader's book stream (conflated), whole run.
    #[serde(default)]
    pub slow_snapshots: u64,
    /// `conflating` messages slow readers received, whole run.
    #[serde(default)]
    pub slow_conflating: u64,
    /// `live` messages slow readers received, whole run.
    #[serde(default)]
    pub slow_live: u64,
}

impl FinalStats {
    /// Adds another process's result.
    pub fn merge(&mut self, o: &Self) {
        let (c, oc) = (&mut self.connections, &o.connections);
        c.attempted += oc.attempted;
        c.ok += oc.ok;
        c.failed += oc.failed;
        c.evicted += oc.evicted;
        c.closed += oc.closed;
        c.dropped += oc.dropped;
        for (k, v) in &oc.closes_by_code {
            *c.closes_by_code.entry(*k).or_default() += v;
        }
        for (k, v) in &oc.failure_reasons {
            add_reason(&mut c.failure_reasons, k.clone(), *v);
        }
        self.stoppers_evicted += o.stoppers_evicted;
        self.stoppers += o.stoppers;
        self.records_checked += o.records_checked;
        self.gaps += o.gaps;
        self.resyncs += o.resyncs;
        self.decode_errors += o.decode_errors;
        self.slow_readers += o.slow_readers;
        self.slow_evicted += o.slow_evicted;
        self.slow_snapshots += o.slow_snapshots;
        self.slow_conflating += o.slow_conflating;
        self.slow_live += o.slow_live;
        for e in &o.first_errors {
            if self.first_errors.len() < MAX_ERRORS && !self.first_errors.contains(e) {
                self.first_errors.push(e.clone());
            }
        }
    }
}

fn add_reason(reasons: &mut BTreeMap<String, u64>, reason: String, n: u64) {
    let key = if reasons.len() < MAX_REASONS || reasons.contains_key(&reason) {
        reason
    } else {
        String::from("(other reasons)")
    };
    *reasons.entry(key).or_default() += n;
}

/// Live counters for progress lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Connections open (subscribed).
    pub open: u64,
    /// Connections still connecting.
    pub pending: u64,
    /// Records received so far.
    pub records: u64,
    /// Gaps so far.
    pub gaps: u64,
    /// Connections closed or lost so far.
    pub ended: u64,
}

#[derive(Debug, Default)]
struct Window {
    active: bool,
    stats: WindowStats,
}

/// What the connection tasks (tokio thread) and the reader thread both update.
#[derive(Debug, Default)]
struct Shared {
    window: Window,
    final_stats: FinalStats,
    progress: Progress,
}

impl Shared {
    fn note_error(&mut self, e: impl FnOnce() -> String) {
        let f = &mut self.final_stats;
        if f.first_errors.len() < MAX_ERRORS {
            let e = e();
            if !f.first_errors.contains(&e) {
                f.first_errors.push(e);
            }
        }
    }

    /// A connection failed before subscribing.
    fn fail(&mut self, reason: String, close: Option<u16>) {
        let f = &mut self.final_stats;
        f.connections.failed += 1;
        if let Some(code) = close {
            *f.connections.closes_by_code.entry(code).or_default() += 1;
        }
        add_reason(&mut f.connections.failure_reasons, reason, 1);
        self.progress.pending = self.progress.pending.saturating_sub(1);
    }

    /// A connection ended after subscribing: `Some(code)` for a close frame.
    fn ended(&mut self, role: Role, close: Result<Option<u16>, String>) {
        let stopper = role == Role::Stopper;
        let slow = role == Role::Slow;
        let w = &mut self.window;
        let active = w.active;
        let f = &mut self.final_stats;
        match close {
            Ok(None) => f.connections.ok += 1,
            Ok(Some(code)) => {
                *f.connections.closes_by_code.entry(code).or_default() += 1;
                let evicted = code == CLOSE_EVICTED;
                if evicted {
                    f.connections.evicted += 1;
                    if stopper {
                        f.stoppers_evicted += 1;
                    }
                    if slow {
                        f.slow_evicted += 1;
                    }
                } else {
                    f.connections.closed += 1;
                }
                if active {
                    match (role, evicted) {
                        (Role::Stopper, true) => w.stats.stoppers_evicted += 1,
                        (Role::Stopper, false) => {}
                        (Role::Slow, true) => w.stats.slow.evicted += 1,
                        (Role::Slow, false) => w.stats.slow.closed_or_dropped += 1,
                        (Role::Reader, true) => w.stats.evicted += 1,
                        (Role::Reader, false) => w.stats.closed += 1,
                    }
                }
            }
            Err(reason) => {
                f.connections.dropped += 1;
                add_reason(&mut f.connections.failure_reasons, reason, 1);
                if active {
                    match role {
                        Role::Reader => w.stats.dropped += 1,
                        Role::Slow => w.stats.slow.closed_or_dropped += 1,
                        Role::Stopper => {}
                    }
                }
            }
        }
        let p = &mut self.progress;
        p.open = p.open.saturating_sub(1);
        p.ended += 1;
    }

    /// Sequence-checks one binary message and adds it to the figures; `now` is
    /// when the read that brought it returned (ns since the epoch).
    fn on_binary(&mut self, c: &mut Check, data: &[u8], now: u64) {
        let role = c.role;
        let measuring = self.window.active && role == Role::Reader;
        let stats = &mut self.window.stats;
        let (mut gaps, mut resyncs) = (0u64, 0u64);
        let mut first_error = None;
        let mut lat = LatencyBatch::default();
        // The per-symbol state of a connection is cold (it was last used a
        // message ago, and there are many connections): take its misses together.
        let touched = wire::record_sids(data).fold(0u64, |acc, sid| acc ^ c.seq.touch(sid));
        std::hint::black_box(touched);
        let walked = wire::for_each_header(data, |h| match c.seq.observe(h) {
            Ok(Step::InOrder | Step::FirstTrade) => {
                if measuring && (h.kind == KIND_DELTA || h.kind == KIND_TRADE) {
                    lat.add(stats, now, h.recv_ts, h.exch_ts);
                }
                if h.kind == KIND_DELTA {
                    c.hold(h.sid, h.exch_ts);
                }
            }
            Ok(Step::Resync { .. }) => {
                resyncs += 1;
                c.hold(h.sid, h.exch_ts);
            }
            Ok(Step::Snapshot) => c.hold(h.sid, h.exch_ts),
            Ok(_) => {}
            Err(e @ (SeqError::Gap { .. } | SeqError::DeltaBeforeSnapshot { .. })) => {
                gaps += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(SeqError::BodyMismatch { .. } | SeqError::Checksum { .. }) => {}
        });
        lat.flush(stats);
        let n = match walked {
            Ok(n) => n as u64,
            Err(e) => {
                if measuring {
                    stats.decode_errors += 1;
                }
                self.final_stats.decode_errors += 1;
                self.note_error(|| format!("undecodable batch: {e}"));
                0
            }
        };
        let stats = &mut self.window.stats;
        if measuring {
            stats.records += n;
            stats.messages += 1;
            stats.bytes += data.len() as u64;
            stats.gaps += gaps;
            stats.resyncs += resyncs;
        } else if self.window.active && role == Role::Slow {
            let s = &mut stats.slow;
            s.records += n;
            s.bytes += data.len() as u64;
            s.gaps += gaps;
            s.snapshots += resyncs;
        } else if self.window.active {
            stats.stopper_records += n;
        }
        let f = &mut self.final_stats;
        f.records_checked += n;
        f.gaps += gaps;
        // A slow reader's snapshots that move the seq are the conflation it is owed.
        if role == Role::Slow {
            f.slow_snapshots += resyncs;
        } else {
            f.resyncs += resyncs;
        }
        if let Some(e) = first_error {
            self.note_error(|| e);
        }
        self.progress.records += n;
        self.progress.gaps += gaps;
    }

    /// Handles a text frame (a control reply); `Err` when it refuses the subscription.
    fn on_text(
        &mut self,
        role: Role,
        text: &[u8],
        subscribed: &mut bool,
    ) -> Result<(), ClientError> {
        let active = self.window.active;
        let (w, f) = (&mut self.window.stats, &mut self.final_stats);
        match Reply::parse(&String::from_utf8_lossy(text)) {
            Ok(Reply::Subscribed { id, .. }) if id == SUBSCRIBE_ID => *subscribed = true,
            Ok(Reply::Conflating { .. }) => match role {
                Role::Slow => {
                    f.slow_conflating += 1;
                    w.slow.conflating += u64::from(active);
                }
                Role::Reader => w.conflating += u64::from(active),
                Role::Stopper => {}
            },
            Ok(Reply::Live { .. }) if role == Role::Slow => {
                f.slow_live += 1;
                w.slow.live += u64::from(active);
            }
            Ok(Reply::Error { code, message, .. }) => {
                if !*subscribed {
                    return Err(ClientError::Upgrade(format!(
                        "subscribe refused: {code}: {message}"
                    )));
                }
                self.note_error(|| format!("server error {code}: {message}"));
            }
            _ => {}
        }
        Ok(())
    }
}

impl Shared {
    /// Adds a slow reader's staleness at `now` (ns since the epoch) to the window:
    /// one sample per symbol it holds a book record of.
    fn sample_staleness(&mut self, c: &Check, now: u64) {
        if !self.window.active {
            return;
        }
        if let Some(h) = self.window.stats.slow.stale_us.as_mut() {
            for ts in c.held.iter().filter(|t| **t > 0) {
                h.saturating_record(now.saturating_sub(*ts) / 1000);
            }
        }
    }
}

/// Latencies of consecutive records, recorded as runs: records of one message
/// often share their stamps, and one `record_n` per run is cheaper than one
/// `record` per record.
#[derive(Debug, Default)]
struct LatencyBatch {
    recv_us: u64,
    exch_us: u64,
    run: u64,
}

impl LatencyBatch {
    #[inline]
    fn add(&mut self, stats: &mut WindowStats, now: u64, recv_ts: u64, exch_ts: u64) {
        let recv = now.saturating_sub(recv_ts) / 1000;
        let exch = now.saturating_sub(exch_ts) / 1000;
        if self.run > 0 && recv == self.recv_us && exch == self.exch_us {
            self.run += 1;
            return;
        }
        self.flush(stats);
        (self.recv_us, self.exch_us, self.run) = (recv, exch, 1);
    }

    fn flush(&mut self, stats: &mut WindowStats) {
        if self.run == 0 {
            return;
        }
        if let Some(h) = stats.recv_us.as_mut() {
            h.saturating_record_n(self.recv_us, self.run);
        }
        if let Some(h) = stats.exch_us.as_mut() {
            h.saturating_record_n(self.exch_us, self.run);
        }
        self.run = 0;
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves plain counters behind: keep them.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The load of one process: connection tasks on the caller's `LocalSet` connect
/// and subscribe, then hand each connection to the process's `reader` thread.
#[derive(Debug)]
pub struct LocalLoad {
    spec: LoadSpec,
    target: Target,
    phase: watch::Sender<Phase>,
    shared: Arc<Mutex<Shared>>,
    reader: RefCell<Option<reader::Handle>>,
    ready: Notify,
    tasks: RefCell<JoinSet<()>>,
}

/// Why a load could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The spec is unusable.
    #[error("{0}")]
    Spec(String),
    /// A worker process failed.
    #[error("worker: {0}")]
    Worker(String),
    /// Histograms could not be created.
    #[error(transparent)]
    Hist(#[from] hist::HistError),
    /// The reader thread could not start.
    #[error("reader thread: {0}")]
    Reader(#[from] std::io::Error),
}

impl LocalLoad {
    /// Starts ramping the connections of `spec` (returns at once).
    pub fn start(spec: LoadSpec) -> Result<Rc<Self>, LoadError> {
        let target = Target::parse(&spec.url).map_err(LoadError::Spec)?;
        if spec.connect_rate <= 0.0 {
            return Err(LoadError::Spec(String::from(
                "connect rate must be positive",
            )));
        }
        let (phase, _) = watch::channel(Phase::Run);
        let stoppers = (spec.first..spec.first + spec.count)
            .filter(|i| spec.is_stopper(*i))
            .count() as u64;
        let slow_readers = (spec.first..spec.first + spec.count)
            .filter(|i| spec.is_slow(*i))
            .count() as u64;
        let shared = Arc::new(Mutex::new(Shared {
            window: Window::default(),
            final_stats: FinalStats {
                connections: Connections {
                    attempted: spec.count as u64,
                    ..Connections::default()
                },
                stoppers,
                slow_readers,
                ..FinalStats::default()
            },
            progress: Progress {
                pending: spec.count as u64,
                ..Progress::default()
            },
        }));
        let pause = Duration::from_micros(spec.read_pause_us);
        let reader = reader::Handle::spawn(shared.clone(), pause)?;
        let load = Rc::new(Self {
            target,
            phase,
            shared,
            reader: RefCell::new(Some(reader)),
            ready: Notify::new(),
            tasks: RefCell::new(JoinSet::new()),
            spec,
        });
        let ramp = load.clone();
        tokio::task::spawn_local(async move {
            let start = Instant::now();
            let rate = ramp.spec.connect_rate;
            for k in 0..ramp.spec.count {
                let at = start + Duration::from_secs_f64(k as f64 / rate);
                if at > Instant::now() {
                    sleep_until(at).await;
                }
                if *ramp.phase.borrow() == Phase::Finish {
                    break;
                }
                let i = ramp.spec.first + k;
                let c = ramp.clone();
                ramp.tasks.borrow_mut().spawn_local(connection(c, i));
            }
        });
        Ok(load)
    }

    fn update(&self, f: impl FnOnce(&mut Shared)) {
        let pending = {
            let mut s = lock(&self.shared);
            let before = s.progress.pending;
            f(&mut s);
            (before > 0).then_some(s.progress.pending)
        };
        if pending == Some(0) {
            self.ready.notify_waiters();
        }
    }

    /// Live counters.
    pub fn progress(&self) -> Progress {
        lock(&self.shared).progress
    }

    /// Waits until every connection has subscribed or failed; returns (ok, failed).
    pub async fn wait_ready(&self) -> (u64, u64) {
        loop {
            let notified = self.ready.notified();
            {
                let s = lock(&self.shared);
                let p = s.progress;
                if p.pending == 0 {
                    return (p.open + p.ended, s.final_stats.connections.failed);
                }
            }
            let _ = timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// Opens a measuring window.
    pub fn window_begin(&self) {
        let stats = WindowStats {
            recv_us: hist::new_us().ok(),
            exch_us: hist::new_us().ok(),
            slow: SlowStats {
                stale_us: hist::new_us().ok(),
                ..SlowStats::default()
            },
            ..WindowStats::default()
        };
        let mut s = lock(&self.shared);
        s.window.active = true;
        s.window.stats = stats;
    }

    /// Closes the window and returns its figures.
    pub fn window_end(&self) -> WindowStats {
        let mut s = lock(&self.shared);
        s.window.active = false;
        std::mem::take(&mut s.window.stats)
    }

    /// Moves the connections to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
        if let Some(r) = self.reader.borrow().as_ref() {
            r.set_phase(phase);
        }
    }

    /// Closes every connection and returns the outcome.
    pub async fn finish(&self) -> FinalStats {
        self.set_phase(Phase::Finish);
        let mut tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        let deadline = Instant::now() + FINISH_GRACE;
        while let Ok(Some(_)) = timeout_at(deadline, tasks.join_next()).await {}
        let mut left = tasks.len() as u64;
        tasks.abort_all();
        let reader = self.reader.borrow_mut().take();
        if let Some(r) = reader {
            if !r.finish(FINISH_GRACE).await {
                left += lock(&self.shared).progress.open;
            }
        }
        let mut f = lock(&self.shared).final_stats.clone();
        if left > 0 {
            f.connections.dropped += left;
            add_reason(
                &mut f.connections.failure_reasons,
                String::from("did not close in time"),
                left,
            );
        }
        f
    }

    fn fail(&self, reason: String, close: Option<u16>) {
        self.update(|s| s.fail(reason, close));
    }
}

/// What a read pass ended with.
enum Next {
    /// Keep reading.
    More,
    /// The server closed (code).
    Closed(u16),
}

/// Handles every frame already buffered, before the connection goes to the reader.
async fn drain_frames(
    conn: &mut WsConn,
    check: &mut Check,
    now: u64,
    load: &LocalLoad,
    subscribed: &mut bool,
) -> Result<Next, ClientError> {
    let mut pong: Option<Vec<u8>> = None;
    let mut closed = None;
    while let Some(frame) = conn.next_frame()? {
        match frame {
            Frame::Binary(data) => lock(&load.shared).on_binary(check, data, now),
            Frame::Text(text) => lock(&load.shared).on_text(check.role, text, subscribed)?,
            Frame::Ping(p) => pong = Some(p.to_vec()),
            Frame::Pong => {}
            Frame::Close(code) => {
                closed = Some(code);
                break;
            }
        }
    }
    if let Some(p) = pong {
        conn.pong(&p).await?;
    }
    if let Some(code) = closed {
        let _ = timeout(Duration::from_millis(200), conn.close(code)).await;
        return Ok(Next::Closed(code));
    }
    Ok(Next::More)
}

/// Connects, subscribes, and hands the connection to the reader thread.
async fn connection(load: Rc<LocalLoad>, i: usize) {
    let spec = &load.spec;
    let role = spec.role(i);
    let options = ConnectOptions {
        source: spec.source_for(i),
        recv_buffer: if role == Role::Reader {
            None
        } else {
            spec.stopper_rcvbuf
        },
    };
    let limit = Duration::from_millis(spec.connect_timeout_ms);
    let deadline = Instant::now() + limit;
    let mut conn = match WsConn::connect(&load.target, options, limit, i as u64).await {
        Ok(c) => c,
        Err(e) => return load.fail(format!("connect: {e}"), None),
    };
    let mut check = Check::new(role);
    let mut subscribed = spec.kind == ClientKind::Peer;
    if !subscribed {
        let request = Request::Subscribe {
            id: SUBSCRIBE_ID,
            symbols: spec.symbols_for(i),
            channels: Some(vec![Channel::Book, Channel::Trades]),
            depth: Some(spec.depth),
        };
        if let Err(e) = conn.send_text(&request.to_json()).await {
            return load.fail(format!("subscribe send: {e}"), None);
        }
        while !subscribed {
            let now = match timeout_at(deadline, conn.fill()).await {
                Err(_) => return load.fail(String::from("no subscribe reply in time"), None),
                Ok(Err(e)) => return load.fail(format!("before the subscribe reply: {e}"), None),
                Ok(Ok(now)) => now,
            };
            match drain_frames(&mut conn, &mut check, now, &load, &mut subscribed).await {
                Err(e) => return load.fail(e.to_string(), None),
                Ok(Next::Closed(code)) => {
                    return load.fail(
                        format!("closed with {code} before the subscribe reply"),
                        Some(code),
                    );
                }
                Ok(Next::More) => {}
            }
        }
    }
    let parts = conn.into_parts();
    load.update(|s| {
        s.progress.pending = s.progress.pending.saturating_sub(1);
        s.progress.open += 1;
        if let Err(e) = &parts {
            s.ended(role, Err(format!("handing over to the reader: {e}")));
        }
    });
    let Ok((stream, parser, mask_seed)) = parts else {
        return;
    };
    let bucket = (role == Role::Slow).then(|| {
        crate::throttle::TokenBucket::for_rate(spec.slow_read_bps, std::time::Instant::now())
    });
    let sub = reader::Sub::new(stream, parser, mask_seed, check, bucket);
    match load.reader.borrow().as_ref() {
        Some(r) => r.add(sub),
        None => load.update(|s| s.ended(role, Ok(None))),
    }
}

/// A command to a worker process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum WorkerCmd {
    /// Start the share.
    Start {
        /// The share.
        spec: LoadSpec,
    },
    /// Open a window.
    WindowBegin,
    /// Close the window and report it.
    WindowEnd,
    /// Change phase.
    Phase {
        /// The new phase.
        phase: Phase,
    },
    /// Close everything, report, exit.
    Finish,
}

/// An event from a worker process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum WorkerEv {
    /// Every connection subscribed or failed.
    Ready {
        /// Subscribed.
        ok: u64,
        /// Failed.
        failed: u64,
    },
    /// Live counters (every second).
    Progress {
        /// The counters.
        progress: Progress,
    },
    /// A window's figures.
    Window {
        /// The figures.
        stats: Box<WindowStats>,
    },
    /// The final outcome.
    Done {
        /// The outcome.
        stats: Box<FinalStats>,
    },
    /// The worker cannot go on.
    Error {
        /// Why.
        message: String,
    },
}

fn line(ev: &WorkerEv) -> String {
    let mut s = serde_json::to_string(ev)
        .unwrap_or_else(|e| format!(r#"{{"ev":"error","message":"encode: {e}"}}"#));
    s.push('\n');
    s
}

/// The worker side: reads commands on stdin, runs its share, writes events on
/// stdout. Run inside a `LocalSet`.
pub async fn worker_main() -> Result<(), LoadError> {
    let mut out = tokio::io::stdout();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let spec = match lines.next_line().await {
        Ok(Some(text)) => match serde_json::from_str::<WorkerCmd>(&text) {
            Ok(WorkerCmd::Start { spec }) => spec,
            _ => return Err(LoadError::Worker(String::from("expected a start command"))),
        },
        _ => return Err(LoadError::Worker(String::from("no start command"))),
    };
    let load = LocalLoad::start(spec)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<WorkerEv>();
    {
        let (load, tx) = (load.clone(), tx.clone());
        tokio::task::spawn_local(async move {
            let (ok, failed) = load.wait_ready().await;
            let _ = tx.send(WorkerEv::Ready { ok, failed });
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if tx
                    .send(WorkerEv::Progress {
                        progress: load.progress(),
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    let writer = tokio::task::spawn_local(async move {
        while let Some(ev) = rx.recv().await {
            let done = matches!(ev, WorkerEv::Done { .. });
            if out.write_all(line(&ev).as_bytes()).await.is_err() || out.flush().await.is_err() {
                return;
            }
            if done {
                return;
            }
        }
    });
    while let Ok(Some(text)) = lines.next_line().await {
        match serde_json::from_str::<WorkerCmd>(&text) {
            Ok(WorkerCmd::WindowBegin) => load.window_begin(),
            Ok(WorkerCmd::WindowEnd) => {
                let stats = Box::new(load.window_end());
                let _ = tx.send(WorkerEv::Window { stats });
            }
            Ok(WorkerCmd::Phase { phase }) => load.set_phase(phase),
            Ok(WorkerCmd::Finish) => break,
            Ok(WorkerCmd::Start { .. }) | Err(_) => {
                let _ = tx.send(WorkerEv::Error {
                    message: format!("unexpected command: {text}"),
                });
            }
        }
    }
    let stats = Box::new(load.finish().await);
    let _ = tx.send(WorkerEv::Done { stats });
    let _ = writer.await;
    Ok(())
}

#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::UnboundedReceiver<WorkerEv>,
    progress: Rc<Cell<Progress>>,
}

/// A read-only view of a group's live counters, for a progress task.
#[derive(Debug, Clone)]
pub struct ProgressView {
    local: Option<Rc<LocalLoad>>,
    workers: Vec<Rc<Cell<Progress>>>,
}

impl ProgressView {
    /// Live counters, all processes together.
    pub fn progress(&self) -> Progress {
        let mut all = self
            .local
            .as_ref()
            .map(|l| l.progress())
            .unwrap_or_default();
        for w in &self.workers {
            let p = w.get();
            all.open += p.open;
            all.pending += p.pending;
            all.records += p.records;
            all.gaps += p.gaps;
            all.ended += p.ended;
        }
        all
    }
}

/// A load spread over this process and worker processes.
#[derive(Debug)]
pub struct LoadGroup {
    local: Option<Rc<LocalLoad>>,
    workers: Vec<Worker>,
}

impl LoadGroup {
    /// Starts `spec` over `procs` processes: this one takes the first share and
    /// `procs - 1` workers (this executable, `worker` subcommand) the others.
    pub async fn start(spec: &LoadSpec, procs: usize) -> Result<Self, LoadError> {
        let mut shares = spec.split(procs).into_iter();
        let local = shares.next().map(LocalLoad::start).transpose()?;
        let exe = std::env::current_exe()
            .map_err(|e| LoadError::Worker(format!("cannot find this executable: {e}")))?;
        let mut workers = Vec::new();
        for share in shares {
            let mut child = Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| LoadError::Worker(format!("cannot start a worker: {e}")))?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(LoadError::Worker(String::from("worker pipes missing")));
            };
            let pending = share.count as u64;
            let start = serde_json::to_string(&WorkerCmd::Start { spec: share })
                .map_err(|e| LoadError::Worker(e.to_string()))?;
            stdin
                .write_all(format!("{start}\n").as_bytes())
                .await
                .map_err(|e| LoadError::Worker(e.to_string()))?;
            let (tx, replies) = mpsc::unbounded_channel();
            let progress = Rc::new(Cell::new(Progress {
                pending,
                ..Progress::default()
            }));
            let p = progress.clone();
            tokio::task::spawn_local(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(text)) = lines.next_line().await {
                    match serde_json::from_str::<WorkerEv>(&text) {
                        Ok(WorkerEv::Progress { progress }) => p.set(progress),
                        Ok(ev) => {
                            if tx.send(ev).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(WorkerEv::Error {
                                message: format!("bad line from worker: {e}"),
                            });
                        }
                    }
                }
            });
            workers.push(Worker {
                child,
                stdin,
                replies,
                progress,
            });
        }
        Ok(Self { local, workers })
    }

    /// Process ids of the workers (for their CPU use).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.id()).collect()
    }

    /// A view of the live counters.
    pub fn view(&self) -> ProgressView {
        ProgressView {
            local: self.local.clone(),
            workers: self.workers.iter().map(|w| w.progress.clone()).collect(),
        }
    }

    async fn send(&mut self, cmd: &WorkerCmd) -> Result<(), LoadError> {
        let text = serde_json::to_string(cmd).map_err(|e| LoadError::Worker(e.to_string()))?;
        for w in &mut self.workers {
            w.stdin
                .write_all(format!("{text}\n").as_bytes())
                .await
                .map_err(|e| LoadError::Worker(format!("command not delivered: {e}")))?;
        }
        Ok(())
    }

    async fn reply<T>(
        w: &mut Worker,
        pick: impl Fn(WorkerEv) -> Option<T>,
    ) -> Result<T, LoadError> {
        loop {
            match w.replies.recv().await {
                None => return Err(LoadError::Worker(String::from("worker exited"))),
                Some(WorkerEv::Error { message }) => return Err(LoadError::Worker(message)),
                Some(ev) => {
                    if let Some(v) = pick(ev) {
                        return Ok(v);
                    }
                }
            }
        }
    }

    /// Waits until every connection subscribed or failed; returns (ok, failed).
    pub async fn wait_ready(&mut self) -> Result<(u64, u64), LoadError> {
        let (mut ok, mut failed) = match &self.local {
            Some(l) => l.wait_ready().await,
            None => (0, 0),
        };
        for w in &mut self.workers {
            let (o, f) = Self::reply(w, |ev| match ev {
                WorkerEv::Ready { ok, failed } => Some((ok, failed)),
                _ => None,
            })
            .await?;
            ok += o;
            failed += f;
        }
        Ok((ok, failed))
    }

    /// Opens a window everywhere.
    pub async fn window_begin(&mut self) -> Result<(), LoadError> {
        if let Some(l) = &self.local {
            l.window_begin();
        }
        self.send(&WorkerCmd::WindowBegin).await
    }

    /// Closes the window everywhere; returns the merged figures.
    pub async fn window_end(&mut self) -> Result<WindowStats, LoadError> {
        let mut stats = self
            .local
            .as_ref()
            .map(|l| l.window_end())
            .unwrap_or_default();
        self.send(&WorkerCmd::WindowEnd).await?;
        for w in &mut self.workers {
            let s = Self::reply(w, |ev| match ev {
                WorkerEv::Window { stats } => Some(stats),
                _ => None,
            })
            .await?;
            stats.merge(&s);
        }
        Ok(stats)
    }

    /// Moves every connection to `phase`.
    pub async fn set_phase(&mut self, phase: Phase) -> Result<(), LoadError> {
        if let Some(l) = &self.local {
            l.set_phase(phase);
        }
        self.send(&WorkerCmd::Phase { phase }).await
    }

    /// Closes everything; returns the merged outcome.
    pub async fn finish(mut self) -> Result<FinalStats, LoadError> {
        let mut stats = match &self.local {
            Some(l) => l.finish().await,
            None => FinalStats::default(),
        };
        self.send(&WorkerCmd::Finish).await?;
        for w in &mut self.workers {
            let s = timeout(
                FINISH_GRACE * 2,
                Self::reply(w, |ev| match ev {
                    WorkerEv::Done { stats } => Some(stats),
                    _ => None,
                }),
            )
            .await
            .map_err(|_| LoadError::Worker(String::from("worker did not finish in time")))??;
            stats.merge(&s);
            let _ = timeout(Duration::from_secs(2), w.child.wait()).await;
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(count: usize) -> LoadSpec {
        LoadSpec {
            url: String::from("ws://127.0.0.1:1/ws"),
            kind: ClientKind::Tickcast,
            symbols: (0..5).map(|i| format!("S{i}")).collect(),
            symbols_per_conn: 2,
            depth: 25,
            first: 0,
            count,
            connect_rate: 1000.0,
            source_ips: 3,
            stop_every: 10,
            stopper_rcvbuf: None,
            connect_timeout_ms: 1000,
            read_pause_us: 0,
            slow_every: 0,
            slow_read_bps: 0,
        }
    }

    #[test]
    fn shares_cover_every_connection_once() {
        let shares = spec(10_001).split(3);
        assert_eq!(
            shares
                .iter()
                .map(|s| (s.first, s.count))
                .collect::<Vec<_>>(),
            vec![(0, 3334), (3334, 3334), (6668, 3333)]
        );
        assert!(
            shares
                .iter()
                .all(|s| (s.connect_rate - 1000.0 / 3.0).abs() < 1e-9)
        );
        assert_eq!(spec(2).split(5).len(), 2);
    }

    #[test]
    fn assignment_sources_and_stoppers() {
        let s = spec(100);
        assert_eq!(s.symbols_for(1), vec!["S2", "S3"]);
        let all = LoadSpec {
            symbols_per_conn: 0,
            ..s.clone()
        };
        assert_eq!(all.symbols_for(7), vec!["*"]);
        assert_eq!(
            s.source_for(0),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)))
        );
        assert_eq!(
            s.source_for(5),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        );
        let one = LoadSpec {
            source_ips: 1,
            ..s.clone()
        };
        assert_eq!(one.source_for(5), None);
        assert_eq!((0..100).filter(|i| s.is_stopper(*i)).count(), 10);
    }

    /// A trade record (kind 3) of sid 7.
    fn trade(out: &mut Vec<u8>, seq: u64, ts: u64) {
        out.extend_from_slice(&64u16.to_le_bytes());
        out.extend_from_slice(&[KIND_TRADE, 0]);
        out.extend_from_slice(&7u32.to_le_bytes());
        for v in [seq, ts, ts] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[0; 32]);
    }

    fn batch(seqs: &[u64]) -> Vec<u8> {
        let mut out = vec![wire::VERSION, 0];
        out.extend_from_slice(&(seqs.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let ts = crate::runner::realtime_ns();
        for s in seqs {
            trade(&mut out, *s, ts);
        }
        out
    }

    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    /// One subscriber's server: upgrade, a ping, trades with one gap (split
    /// writes, a fragmented message), then a 1013 close. Returns what the client sent.
    fn serve_one(listener: std::net::TcpListener) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Write};
        let (mut tcp, _) = listener.accept()?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte)?;
            head.extend_from_slice(&byte);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap_or_default();
        let accept = crate::client::accept_key(key.trim());
        write!(
            tcp,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )?;
        tcp.write_all(&server_frame(true, 9, b"hi"))?;
        let mut bytes = server_frame(true, 2, &batch(&[1, 2]));
        bytes.extend(server_frame(true, 2, &batch(&[4])));
        let (a, b) = bytes.split_at(bytes.len() - 5);
        tcp.write_all(a)?;
        tcp.flush()?;
        std::thread::sleep(Duration::from_millis(20));
        tcp.write_all(b)?;
        let last = batch(&[5]);
        let (a, b) = last.split_at(10);
        tcp.write_all(&server_frame(false, 2, a))?;
        tcp.write_all(&server_frame(true, 0, b))?;
        tcp.write_all(&server_frame(true, 8, &CLOSE_EVICTED.to_be_bytes()))?;
        // The client answers the ping and the close (masked frames of 2+4+2 bytes each).
        let mut got = vec![0u8; 16];
        tcp.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn reader_checks_answers_and_counts_a_real_connection() -> Result<(), Box<dyn std::error::Error>>
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let server = std::thread::spawn(move || serve_one(listener));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        let (window, fin) = local.block_on(&rt, async move {
            let load = LocalLoad::start(LoadSpec {
                url: format!("ws://127.0.0.1:{port}/sub"),
                kind: ClientKind::Peer,
                source_ips: 1,
                stop_every: 0,
                read_pause_us: 300,
                ..spec(1)
            })?;
            load.window_begin();
            assert_eq!(load.wait_ready().await, (1, 0));
            while load.progress().ended == 0 {
                sleep_until(Instant::now() + Duration::from_millis(10)).await;
            }
            let window = load.window_end();
            Ok::<_, LoadError>((window, load.finish().await))
        })?;
        let sent = server.join().map_err(|_| "server panicked")??;
        // A masked pong carrying "hi", then a masked close carrying 1013.
        assert_eq!((sent[0], sent[1]), (0x8A, 0x82));
        let unmask = |at: usize, n: usize| -> Vec<u8> {
            (0..n)
                .map(|k| sent[at + 2 + 4 + k] ^ sent[at + 2 + k % 4])
                .collect()
        };
        assert_eq!(unmask(0, 2), b"hi");
        assert_eq!((sent[8], sent[9]), (0x88, 0x82));
        assert_eq!(unmask(8, 2), CLOSE_EVICTED.to_be_bytes());
        assert_eq!(
            (window.records, window.messages, window.gaps, window.evicted),
            (4, 3, 1, 1)
        );
        // The out-of-order trade is counted, not measured.
        assert_eq!(window.recv_us.as_ref().map(Histogram::len), Some(3));
        assert_eq!(window.exch_us.as_ref().map(Histogram::len), Some(3));
        assert_eq!((fin.records_checked, fin.gaps), (4, 1));
        assert_eq!((fin.connections.evicted, fin.connections.ok), (1, 0));
        assert_eq!(fin.first_errors.len(), 1, "{:?}", fin.first_errors);
        Ok(())
    }

    #[test]
    fn window_stats_travel_and_merge() -> Result<(), Box<dyn std::error::Error>> {
        let mut h = hist::new_us()?;
        h.saturating_record(1500);
        let a = WindowStats {
            records: 3,
            gaps: 1,
            recv_us: Some(h.clone()),
            exch_us: None,
            ..WindowStats::default()
        };
        let text = serde_json::to_string(&WorkerEv::Window {
            stats: Box::new(a.clone()),
        })?;
        let back = match serde_json::from_str::<WorkerEv>(&text)? {
            WorkerEv::Window { stats } => *stats,
            other => return Err(format!("{other:?}").into()),
        };
        let mut m = a;
        m.merge(&back);
        assert_eq!((m.records, m.gaps), (6, 2));
        assert_eq!(m.recv_us.as_ref().map(Histogram::len), Some(2));
        assert!(m.exch_us.is_none());
        Ok(())
    }
}
