//! Small-scale measurements for docs/benchmarks.md ("Conflation"), ignored by default:
//!
//! ```sh
//! nice cargo test --release -p tickcast --test conflation_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `slow_readers`: N subscribers of every symbol, 10 % of them slow readers (4 KiB receive
//!   window, reading at a limited byte rate), against the same run without them: the daemon's
//!   delivery latency p99 (feed read → `writev`, every delivered delta and trade), the slow
//!   readers' staleness (now − `exch_ts` of the latest snapshot or delta they applied, sampled
//!   every 100 ms per symbol), engine CPU and RSS.
//! - `ui_subscribers`: N subscribers of every symbol at depth 10, full deltas against
//!   `max_hz: 10`: bytes and engine CPU per second.
//!
//! Sizes come from `TICKCAST_CB_SUBS` (default 100), `TICKCAST_CB_SECS` (default 10), the feed
//! rate from `TICKCAST_CB_RATE` (l2updates/s over 50 symbols, default 2000) and the out-buffer
//! bound from `TICKCAST_CB_OUTBUF` (default 4 MiB); `TICKCAST_CB_REPS` alternated pairs
//! (default 1), `TICKCAST_CB_SLOW_BPS` the slow readers' byte rate (default 50,000).

#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Daemon, simulator};
use serde_json::json;
use tickcast_bench::wire::decode_batch;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) the process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

struct Sub {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    /// Bytes per second this reader takes (0: as fast as it can).
    rate: f64,
    bytes: u64,
    /// Latest applied book record's exch_ts, by sid.
    held: HashMap<u32, u64>,
    closed: Option<String>,
}

fn connect(d: &Daemon, small_window: bool) -> WebSocket<MaybeTlsStream<TcpStream>> {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    if small_window {
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
    }
    sock.connect(&d.addr.into()).expect("connect");
    let (ws, _) = tungstenite::client(d.url(""), MaybeTlsStream::Plain(sock.into())).expect("ws");
    ws
}

impl Sub {
    fn new(d: &Daemon, rate: f64, max_hz: Option<u32>) -> Self {
        let mut ws = connect(d, rate > 0.0);
        let mut req = json!({"op":"subscribe","id":1,"symbols":["*"],"depth":10});
        if let Some(hz) = max_hz {
            req["max_hz"] = json!(hz);
        }
        ws.send(Message::text(req.to_string())).expect("send");
        if let MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_nonblocking(true).expect("nonblocking");
        }
        Self {
            ws,
            rate,
            bytes: 0,
            held: HashMap::new(),
            closed: None,
        }
    }

    /// Reads what its rate allows at `elapsed`.
    fn read(&mut self, elapsed: f64) {
        if self.closed.is_some() {
            return;
        }
        loop {
            if self.rate > 0.0 && self.bytes as f64 > self.rate * elapsed {
                return;
            }
            match self.ws.read() {
                Ok(Message::Binary(b)) => {
                    self.bytes += b.len() as u64;
                    if self.rate > 0.0 {
                        for r in decode_batch(&b).expect("batch") {
                            if r.header.kind <= 2 {
                                self.held.insert(r.header.sid, r.header.exch_ts);
                            }
                        }
                    }
                }
                Ok(Message::Close(f)) => {
                    self.closed = Some(format!("{f:?}"));
                    return;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return;
                }
                Err(e) => {
                    self.closed = Some(e.to_string());
                    return;
                }
            }
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// p99 of the daemon's delivery latency histogram between two scrapes (bucket upper bound, ms).
fn latency_p99(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> f64 {
    let mut buckets: Vec<(f64, u64)> = after
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix("le=")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, v - before.get(k).copied().unwrap_or(0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0, |b| b.1);
    let want = (total as f64 * 0.99).ceil() as u64;
    buckets
        .iter()
        .find(|b| b.1 >= want)
        .map_or(f64::NAN, |b| b.0 * 1000.0)
}

/// The latency histogram's cumulative buckets summed over shards, by `le="..."`.
fn latency_buckets(d: &Daemon) -> HashMap<String, u64> {
    let (_, text) = common::http_get(d.addr, "/metrics").expect("metrics");
    let mut out = HashMap::new();
    for line in text.lines() {
        if !line.starts_with("tickcast_delivery_latency_seconds_bucket") {
            continue;
        }
        let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let v: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        *out.entry(format!("le={le}")).or_default() += v;
    }
    out
}

struct Run {
    p99_ms: f64,
    stale_p50_ms: f64,
    stale_p99_ms: f64,
    cpu_pct: f64,
    rss_mib: f64,
    bytes_per_s: f64,
    evicted: u64,
    conflating_moves: u64,
    live_moves: u64,
    held: u64,
}

fn run(n: usize, slow: usize, slow_rate: f64, max_hz: Option<u32>, secs: u64) -> Run {
    let rate = env("TICKCAST_CB_RATE", 2_000) as f64;
    let outbuf = env("TICKCAST_CB_OUTBUF", 4 << 20).to_string();
    let sim = simulator(50, rate, None, 5);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "2",
        "--max-outbuf-bytes",
        &outbuf,
    ]);
    let mut subs: Vec<Sub> = (0..n)
        .map(|i| Sub::new(&d, if i < slow { slow_rate } else { 0.0 }, max_hz))
        .collect();
    // Warm up: snapshots delivered, rates steady.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let e = start.elapsed().as_secs_f64();
        for s in &mut subs {
            s.read(e);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let lat0 = latency_buckets(&d);
    let cpu0 = cpu_secs(d.pid());
    let bytes0 = d.metric("tickcast_bytes_out_total");
    let t0 = Instant::now();
    let mut stale = Vec::new();
    let mut next_sample = t0;
    while t0.elapsed() < Duration::from_secs(secs) {
        let e = start.elapsed().as_secs_f64();
        for s in &mut subs {
            s.read(e);
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_millis(100);
            let now = now_ns();
            for s in subs.iter().take(slow) {
                for ts in s.held.values() {
                    stale.push(now.saturating_sub(*ts) as f64 / 1e6);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(d.pid()) - cpu0;
    let bytes = d.metric("tickcast_bytes_out_total") - bytes0;
    let lat1 = latency_buckets(&d);
    let r = Run {
        p99_ms: latency_p99(&lat0, &lat1),
        stale_p50_ms: pct(&mut stale.clone(), 0.5),
        stale_p99_ms: pct(&mut stale, 0.99),
        cpu_pct: cpu / wall * 100.0,
        rss_mib: d.rss_kib() as f64 / 1024.0,
        bytes_per_s: bytes as f64 / wall,
        evicted: d.metric("tickcast_evictions_total"),
        conflating_moves: d.metric("tickcast_ladder_to_conflating_total"),
        live_moves: d.metric("tickcast_ladder_to_live_total"),
        held: d.metric("tickcast_ladder_held_total"),
    };
    let closed = subs.iter().filter(|s| s.closed.is_some()).count();
    println!(
        "n={n} slow={slow} slow_rate={slow_rate} max_hz={max_hz:?}: delivery p99 {:.1} ms, slow staleness p50 {:.0} ms p99 {:.0} ms, engine CPU {:.0} %, RSS {:.0} MiB, {:.2} MB/s out, evictions {}, to-conflating {}, to-live {}, held {}, clients closed {closed}",
        r.p99_ms,
        r.stale_p50_ms,
        r.stale_p99_ms,
        r.cpu_pct,
        r.rss_mib,
        r.bytes_per_s / 1e6,
        r.evicted,
        r.conflating_moves,
        r.live_moves,
        r.held
    );
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[test]
#[ignore = "measurement for docs/benchmarks.md; run with --ignored --nocapture"]
fn slow_readers() {
    let n = env("TICKCAST_CB_SUBS", 100) as usize;
    let secs = env("TICKCAST_CB_SECS", 10);
    let reps = env("TICKCAST_CB_REPS", 1);
    let slow_bps = env("TICKCAST_CB_SLOW_BPS", 50_000) as f64;
    let mut ratios = Vec::new();
    // Alternated: without, with, without, with, ...
    for rep in 0..reps {
        let base = run(n, 0, 0.0, None, secs);
        let with = run(n, n / 10, slow_bps, None, secs);
        let ratio = with.p99_ms / base.p99_ms;
        println!("rep {rep}: p99 ratio (with slow readers / without): {ratio:.2}");
        ratios.push(ratio);
    }
    println!("median p99 ratio over {reps}: {:.2}", median(ratios));
}

#[test]
#[ignore = "measurement for docs/benchmarks.md; run with --ignored --nocapture"]
fn ui_subscribers() {
    let n = env("TICKCAST_CB_SUBS", 100) as usize;
    let secs = env("TICKCAST_CB_SECS", 10);
    let reps = env("TICKCAST_CB_REPS", 1);
    let (mut bytes, mut cpu) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let full = run(n, 0, 0.0, None, secs);
        let ui = run(n, 0, 0.0, Some(10), secs);
        let (b, c) = (ui.bytes_per_s / full.bytes_per_s, ui.cpu_pct / full.cpu_pct);
        println!("rep {rep}: max_hz 10 / full deltas: bytes {b:.2}x, CPU {c:.2}x");
        bytes.push(b);
        cpu.push(c);
    }
    println!(
        "median over {reps}: bytes {:.2}x, CPU {:.2}x",
        median(bytes),
        median(cpu)
    );
}
