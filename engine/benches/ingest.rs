//! Ingest throughput on one core: the ingester's own message path (`feed::ingest::Replay`):
//! parse the feed message (the decoder's scanner for the feed's hot messages, simd-json for
//! anything it declines), apply it to the book, compute the depth windows, encode the records of
//! every watched stream and push them into a shard ring. The receive time is stamped once per
//! chunk of 512 steps, as the ingester stamps once per socket read.
//!
//! The feed is feed-sim's order flow (`Exchange::step`: 50 symbols with Zipf popularity,
//! ~150 levels per side, 1-4 changes per update, ~8% of updates preceded by trades). One
//! criterion element is one `step`: an `l2update` plus the trades before it, so the figure is
//! l2updates per second with the trades' cost included. What is encoded depends on the case:
//!
//! - `binary_depth25`: one binary stream per symbol (depth 25), the common subscription;
//! - `binary_all_depths`: binary at depths 1, 10, 25, 100 and 0 (every book stream);
//! - `binary_json_all_depths`: every book stream in both formats (the worst case);
//! - `parse_apply_only`: nobody subscribed: parse and apply, nothing encoded;
//! - `decode_only`: the decoder alone, for the breakdown.
//!
//! Group `feed_ws`: the WebSocket read of the same flow (every message one server text frame,
//! all of it in memory, no socket), message by message up to the decoded event, one element per
//! step as above:
//!
//! - `tungstenite_decode_bytes`: the previous feed edge, tungstenite's client reading the
//!   frames (it cuts and copies each payload) and the decoder on the payload
//!   (`decode_bytes`: a second copy for whatever simd-json parses);
//! - `own_codec_decode_in_place`: the engine's client codec (`feed::ws::ClientWs`) finding each
//!   frame where it lies in the buffer and the decoder on it in place (`decode_text`).
//!
//! The ring is drained between chunks of 512 steps, outside the timed region (that is the
//! shards' work). Run: `cargo bench -p tickcast --bench ingest`.

#![allow(missing_docs, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use feed_sim::Exchange;
use tickcast::book::DEPTHS;
use tickcast::clock::Stamp;
use tickcast::config::FeedUrl;
use tickcast::fanout::interest::Interest;
use tickcast::fanout::{Format, Topic};
use tickcast::feed::decode::FeedDecoder;
use tickcast::feed::ingest::{DEFAULT_STALL_TIMEOUT, IngestContext, Replay};
use tickcast::feed::ws::{ClientWs, Input, Next};
use tickcast::metrics::Metrics;
use tickcast::replay::ReplayLimits;
use tickcast::replay::epoch::{Epoch, EpochCell};
use tickcast::ring::{Ring, SymbolDirectory};

const SYMBOLS: usize = 50;
const DEPTH: usize = 150;
const STEPS: usize = 100_000;
const CHUNK: u64 = 512;

/// Feed messages, each a JSON text, in one buffer.
struct Lines {
    buf: Vec<u8>,
    ranges: Vec<(usize, usize)>,
}

impl Lines {
    fn split(buf: Vec<u8>) -> Self {
        let mut ranges = Vec::new();
        let mut start = 0;
        for (i, &b) in buf.iter().enumerate() {
            if b == b'\n' {
                ranges.push((start, i));
                start = i + 1;
            }
        }
        Self { buf, ranges }
    }

    fn get(&self, i: usize) -> &[u8] {
        let (a, b) = self.ranges[i];
        &self.buf[a..b]
    }
}

/// The initial messages (symbols, one snapshot per symbol) and `STEPS` steps of live flow.
struct Feed {
    setup: Lines,
    live: Lines,
    /// Index into `live` of the first message of each step.
    steps: Vec<usize>,
}

fn feed() -> Feed {
    let mut ex = Exchange::new(SYMBOLS, DEPTH, 7);
    let ts = 1_763_700_000_000_000_000u64;
    let mut buf = Vec::new();
    ex.symbols_json(&mut buf);
    for i in 0..SYMBOLS {
        ex.snapshot_json(i, ts, &mut buf);
    }
    let setup = Lines::split(buf);
    let mut buf = Vec::with_capacity(STEPS * 220);
    let mut steps = Vec::with_capacity(STEPS + 1);
    let mut messages = 0;
    for i in 0..STEPS {
        steps.push(messages);
        messages += ex.step(ts + i as u64 * 1_000, &mut buf).messages;
    }
    steps.push(messages);
    Feed {
        setup,
        live: Lines::split(buf),
        steps,
    }
}

struct Rig {
    replay: Replay,
    ring: Arc<Ring>,
    _poll: mio::Poll,
}

/// A replay with one shard whose subscribers watch `streams` (depth index, format) of every
/// symbol.
fn rig(feed: &Feed, streams: &[(usize, Format)]) -> Rig {
    let poll = mio::Poll::new().expect("poll");
    let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker");
    let ring = Arc::new(Ring::new(1 << 16, waker));
    let interest = Arc::new(Interest::new(1, SYMBOLS));
    let (_tx, rx) = crossbeam_channel::unbounded();
    let ctx = IngestContext {
        feed: FeedUrl::parse("ws://127.0.0.1:1/feed").expect("url"),
        rings: vec![ring.clone()],
        interest: interest.clone(),
        symbols: Arc::new(SymbolDirectory::default()),
        requests: rx,
        metrics: Arc::new(Metrics::new(1)),
        shutdown: Arc::new(AtomicBool::new(false)),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(5),
        stall_timeout: DEFAULT_STALL_TIMEOUT,
        epoch: Arc::new(EpochCell::new(Epoch::generate())),
        replay: ReplayLimits::default(),
    };
    let mut replay = Replay::new(ctx).expect("replay");
    for i in 0..feed.setup.ranges.len() {
        replay.message(feed.setup.get(i), Stamp::now());
    }
    for sid in 0..SYMBOLS as u32 {
        for &(d, format) in streams {
            interest.add(0, Topic::book(sid, d, format));
        }
    }
    Rig {
        replay,
        ring,
        _poll: poll,
    }
}

/// Runs `iters` steps, timing only the message path; the ring is drained between chunks and the
/// books are reset from the initial snapshots when the flow runs out.
fn run(rig: &mut Rig, feed: &Feed, next: &mut usize, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        if *next == STEPS {
            // Snapshots of the same books restart the flow (its seqs follow them again).
            for i in 1..feed.setup.ranges.len() {
                rig.replay.message(feed.setup.get(i), Stamp::now());
            }
            *next = 0;
        }
        let n = left.min(CHUNK).min((STEPS - *next) as u64) as usize;
        let (from, to) = (feed.steps[*next], feed.steps[*next + n]);
        let started = Instant::now();
        // The ingester reads the wall clock once per socket read (`feed/stamped.rs`): at high
        // rates one read of tungstenite's 128 KiB buffer holds hundreds of messages, as one
        // chunk here (512 steps, ~100 KiB of JSON) does.
        let at = Stamp::now();
        for m in from..to {
            rig.replay.message(black_box(feed.live.get(m)), at);
        }
        total += started.elapsed();
        *next += n;
        left -= n as u64;
        while let Some(msg) = rig.ring.pop() {
            black_box(msg);
        }
    }
    total
}

/// The cases: name and the (depth index, format) streams every symbol's subscribers watch.
fn cases() -> Vec<(&'static str, Vec<(usize, Format)>)> {
    let all = |formats: &[Format]| -> Vec<(usize, Format)> {
        (0..DEPTHS.len())
            .flat_map(|d| formats.iter().map(move |&f| (d, f)))
            .collect()
    };
    vec![
        ("parse_apply_only", vec![]),
        ("binary_depth25", vec![(2, Format::Binary)]),
        ("binary_all_depths", all(&[Format::Binary])),
        (
            "binary_json_all_depths",
            all(&[Format::Binary, Format::Json]),
        ),
    ]
}

fn assert_in_sync(r: &mut Rig) {
    r.replay.serve_requests();
    let m = &r.replay.metrics().ingest;
    assert_eq!(
        m.gaps.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the replayed flow must stay in sync"
    );
}

/// The decoder alone on the same messages, as the ingester calls it, `iters` steps.
fn decode_only(dec: &mut FeedDecoder, feed: &Feed, next: &mut usize, iters: u64) -> Duration {
    let mut left = iters;
    let started = Instant::now();
    while left > 0 {
        if *next == STEPS {
            *next = 0;
        }
        let n = left.min((STEPS - *next) as u64) as usize;
        for m in feed.steps[*next]..feed.steps[*next + n] {
            black_box(dec.decode_bytes(black_box(feed.live.get(m))).is_ok());
        }
        *next += n;
        left -= n as u64;
    }
    started.elapsed()
}

fn decoder(feed: &Feed) -> FeedDecoder {
    let mut dec = FeedDecoder::new();
    let mut symbols = feed.setup.get(0).to_vec();
    assert!(dec.decode(&mut symbols).is_ok());
    dec
}

fn ingest(c: &mut Criterion) {
    let feed = feed();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    let mut dec = decoder(&feed);
    let mut next = 0;
    g.bench_function("decode_only", |b| {
        b.iter_custom(|iters| decode_only(&mut dec, &feed, &mut next, iters));
    });
    for (name, streams) in cases() {
        let mut r = rig(&feed, &streams);
        let mut next = 0;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| run(&mut r, &feed, &mut next, iters));
        });
        assert_in_sync(&mut r);
    }
    g.finish();
}

/// `TICKCAST_INGEST_STEPS=N cargo bench -p tickcast --bench ingest -- CASE`: runs exactly `N`
/// steps of one case (after one untimed pass to warm up) and prints the wall time per step, for
/// `perf stat` (cycles and instructions per step do not depend on what else the machine runs).
fn fixed(steps: u64) {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let feed = feed();
    if filter.as_deref().is_none_or(|f| "decode_only".contains(f)) {
        let mut dec = decoder(&feed);
        let mut next = 0;
        decode_only(&mut dec, &feed, &mut next, STEPS as u64);
        let cpu = thread_cpu_ns();
        let t = decode_only(&mut dec, &feed, &mut next, steps);
        let cpu = thread_cpu_ns().zip(cpu).map(|(b, a)| b - a);
        report("decode_only", steps, t, cpu);
    }
    for (name, streams) in cases() {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let mut r = rig(&feed, &streams);
        let mut next = 0;
        run(&mut r, &feed, &mut next, STEPS as u64);
        let cpu = thread_cpu_ns();
        let t = run(&mut r, &feed, &mut next, steps);
        let cpu = thread_cpu_ns().zip(cpu).map(|(b, a)| b - a);
        assert_in_sync(&mut r);
        report(name, steps, t, cpu);
    }
}

/// CPU time this thread has run, in ns (the first field of `/proc/thread-self/schedstat`), if
/// the kernel provides it.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Prints the wall time per step of the timed region and, where known, the CPU time per step
/// of the same run (timed region plus the ring draining between chunks).
fn report(name: &str, steps: u64, wall: Duration, cpu: Option<u64>) {
    let per = |ns: f64| ns / steps as f64;
    match cpu {
        Some(cpu) => println!(
            "{name}: {steps} steps, {:.1} ns/step wall, {:.1} ns/step cpu",
            per(wall.as_nanos() as f64),
            per(cpu as f64)
        ),
        None => println!(
            "{name}: {steps} steps, {:.1} ns/step wall",
            per(wall.as_nanos() as f64)
        ),
    }
}

/// The live flow as the feed sends it: one unmasked text frame per message.
fn framed(feed: &Feed) -> Vec<u8> {
    let mut out = Vec::with_capacity(feed.live.buf.len() + 4 * feed.live.ranges.len());
    for i in 0..feed.live.ranges.len() {
        let m = feed.live.get(i);
        out.push(0x81);
        if m.len() <= 125 {
            out.push(m.len() as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(m.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(m);
    }
    out
}

fn feed_ws(c: &mut Criterion) {
    use criterion::BatchSize;
    use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

    let feed = feed();
    let framed = framed(&feed);
    let messages = feed.live.ranges.len();
    let mut g = c.benchmark_group("feed_ws");
    g.throughput(Throughput::Elements(STEPS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(6));
    let mut dec = decoder(&feed);
    g.bench_function("tungstenite_decode_bytes", |b| {
        b.iter_batched(
            || framed.clone(),
            |bytes| {
                let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
                let mut ws = WebSocket::from_raw_socket(
                    std::io::Cursor::new(bytes),
                    Role::Client,
                    Some(config),
                );
                let mut n = 0;
                while let Ok(tungstenite::Message::Text(t)) = ws.read() {
                    black_box(dec.decode_bytes(t.as_bytes()).is_ok());
                    n += 1;
                }
                assert_eq!(n, messages);
            },
            BatchSize::LargeInput,
        );
    });
    let mut dec = decoder(&feed);
    g.bench_function("own_codec_decode_in_place", |b| {
        b.iter_batched(
            || framed.clone(),
            |mut bytes| {
                let mut ws = ClientWs::new([1; 32]);
                let mut out = Vec::new();
                let (mut at, mut n) = (0, 0);
                while let Ok(Next::Frame(input, len)) = ws.next(&bytes[at..], &mut out) {
                    if let Input::Text(r) = input {
                        let msg = &mut bytes[at + r.start..at + r.end];
                        black_box(dec.decode_text(msg).is_ok());
                        n += 1;
                    }
                    at += len;
                }
                assert_eq!(n, messages);
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, ingest, feed_ws);

fn main() {
    match std::env::var("TICKCAST_INGEST_STEPS").map(|v| v.parse::<u64>()) {
        Ok(Ok(n)) => fixed(n),
        _ => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
