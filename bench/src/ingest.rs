//! The `ingest` scenario: how many feed updates per second one tickcast core sustains, end to
//! end, with no subscribers.
//!
//! For each offered rate and each target build (alternated within a rate, so that every build
//! sees the same machine state), the scenario starts `feed-sim --pregen` (the stream generated
//! ahead, sent with plain socket writes at the rate) pinned to one CPU and the daemon
//! (`--feed ws://…`, one shard) pinned to another, waits for the feed to flow, lets it warm up,
//! then measures over a window: updates applied (`tickcast_feed_updates_total`), feed
//! reconnects (`tickcast_feed_connects_total`), gaps, the daemon's CPU (user and system, from
//! `/proc`), feed-sim's CPU, and feed-sim's own slow-consumer evictions (`GET /stats`): a daemon
//! that falls 64 MiB behind the schedule is disconnected, as the live generator does.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::procstat::{self, CpuUse};

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `(label, command)`: the daemon builds to compare (the command's path; flags are added).
    pub targets: Vec<(String, String)>,
    /// The `feed-sim` binary.
    pub feed_sim: String,
    /// Offered rates, updates per second.
    pub rates: Vec<f64>,
    /// Symbols of the feed.
    pub symbols: usize,
    /// Seconds between the feed flowing and the window.
    pub warmup: f64,
    /// Measured window, seconds.
    pub window: f64,
    /// CPU the daemon is pinned to.
    pub engine_cpu: usize,
    /// CPU feed-sim is pinned to.
    pub feed_cpu: usize,
    /// Repetitions of the whole ramp.
    pub runs: usize,
}

/// One measured step.
#[derive(Debug, Clone, Serialize)]
pub struct IngestStep {
    /// Target label.
    pub label: String,
    /// Repetition.
    pub run: usize,
    /// Offered rate, updates/s.
    pub offered: f64,
    /// Updates applied per second over the window.
    pub sustained: f64,
    /// feed-sim's slow-consumer evictions during the step.
    pub evictions: u64,
    /// Feed connections the daemon made beyond the first.
    pub reconnects: u64,
    /// Feed gaps counted by the daemon.
    pub gaps: u64,
    /// Daemon CPU over the window.
    pub engine_cpu: CpuUse,
    /// feed-sim CPU over the window, percent of a core.
    pub feed_cpu_pct: f64,
    /// 1-minute load average at the end of the window.
    pub loadavg: f64,
}

/// A free loopback port.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A blocking HTTP GET on loopback: `(status, body)`.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    http_get(addr, "/metrics")
        .map(|(_, body)| procstat::parse_metrics(&body))
        .unwrap_or_default()
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> u64 {
    m.get(name).copied().unwrap_or(0.0) as u64
}

fn feed_evictions(addr: SocketAddr) -> u64 {
    http_get(addr, "/stats")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|v| v["evictions"].as_u64())
        .unwrap_or(0)
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cpu: usize, program: &str, args: &[String]) -> Result<Proc, String> {
    Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Proc)
        .map_err(|e| format!("cannot start {program}: {e}"))
}

/// Waits until `ok` holds, polling every 50 ms, at most `limit`.
fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs one step: `label`'s daemon fed at `rate`.
fn step(
    cfg: &IngestConfig,
    run: usize,
    label: &str,
    cmd: &str,
    rate: f64,
) -> Result<IngestStep, String> {
    let feed_port = free_port()?;
    let feed_addr = SocketAddr::from(([127, 0, 0, 1], feed_port));
    // Enough stream for the warm-up, the window and the connection's start, with margin.
    let updates = (rate * (cfg.warmup + cfg.window + 4.0)).ceil() as u64;
    let _feed = spawn(
        cfg.feed_cpu,
        &cfg.feed_sim,
        &[
            "--listen".into(),
            feed_addr.to_string(),
            "--symbols".into(),
            cfg.symbols.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--updates".into(),
            updates.to_string(),
            "--pregen".into(),
        ],
    )?;
    let feed_pid = _feed.0.id();
    if !wait_for(Duration::from_secs(120), || {
        http_get(feed_addr, "/healthz").is_some()
    }) {
        return Err("feed-sim did not start".into());
    }
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let _daemon = spawn(
        cfg.engine_cpu,
        cmd,
        &[
            "--listen".into(),
            addr.to_string(),
            "--feed".into(),
            format!("ws://{feed_addr}/feed"),
            "--shards".into(),
            "1".into(),
        ],
    )?;
    let pid = _daemon.0.id();
    if !wait_for(Duration::from_secs(20), || {
        metric(&metrics(addr), "tickcast_feed_updates_total") > 0
    }) {
        return Err(format!("{label}: the feed never flowed"));
    }
    std::thread::sleep(Duration::from_secs_f64(cfg.warmup));
    let m0 = metrics(addr);
    let (p0, f0) = (procstat::sample(pid), procstat::sample(feed_pid));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(cfg.window));
    let m1 = metrics(addr);
    let secs = t0.elapsed().as_secs_f64();
    let (p1, f1) = (procstat::sample(pid), procstat::sample(feed_pid));
    let evictions = feed_evictions(feed_addr);
    let engine_cpu = match (&p0, &p1) {
        (Some(a), Some(b)) => CpuUse::between(a, b, secs),
        _ => CpuUse::default(),
    };
    let feed_cpu_pct = match (&f0, &f1) {
        (Some(a), Some(b)) => CpuUse::between(a, b, secs).total_pct,
        _ => 0.0,
    };
    let d = |name: &str| metric(&m1, name).saturating_sub(metric(&m0, name));
    Ok(IngestStep {
        label: label.to_owned(),
        run,
        offered: rate,
        sustained: d("tickcast_feed_updates_total") as f64 / secs,
        evictions,
        reconnects: metric(&m1, "tickcast_feed_connects_total").saturating_sub(1),
        gaps: metric(&m1, "tickcast_feed_gaps_total"),
        engine_cpu,
        feed_cpu_pct,
        loadavg: loadavg(),
    })
}

/// A line of the report.
#[must_use]
pub fn line(s: &IngestStep) -> String {
    format!(
        "run {} {:>10} offered {:>9.0}/s sustained {:>9.0}/s ({:>5.1} %)  evictions {}  reconnects {}  gaps {}  engine CPU {:>5.1} % (user {:.1}, sys {:.1}, run-queue wait {:.1})  feed-sim CPU {:>5.1} %  load {:.2}",
        s.run,
        s.label,
        s.offered,
        s.sustained,
        s.sustained / s.offered * 100.0,
        s.evictions,
        s.reconnects,
        s.gaps,
        s.engine_cpu.total_pct,
        s.engine_cpu.user_pct,
        s.engine_cpu.sys_pct,
        s.engine_cpu.runq_wait_pct,
        s.feed_cpu_pct,
        s.loadavg,
    )
}

/// Runs the ramp (`runs` times; targets alternated within each rate), printing each step.
///
/// # Errors
/// A process that does not start or a feed that never flows.
pub fn run(cfg: &IngestConfig) -> Result<Vec<IngestStep>, String> {
    let mut out = Vec::new();
    for run in 0..cfg.runs {
        for &rate in &cfg.rates {
            // Alternate the order between runs too.
            let mut order: Vec<&(String, String)> = cfg.targets.iter().collect();
            if run % 2 == 1 {
                order.reverse();
            }
            for (label, cmd) in order {
                let s = step(cfg, run, label, cmd, rate)?;
                println!("{}", line(&s));
                out.push(s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_the_ratio_and_the_evictions() {
        let s = IngestStep {
            label: "new".into(),
            run: 0,
            offered: 1_000_000.0,
            sustained: 990_000.0,
            evictions: 2,
            reconnects: 2,
            gaps: 0,
            engine_cpu: CpuUse {
                total_pct: 80.0,
                ..CpuUse::default()
            },
            feed_cpu_pct: 20.0,
            loadavg: 1.5,
        };
        let l = line(&s);
        assert!(l.contains("sustained    990000/s ( 99.0 %)"), "{l}");
        assert!(l.contains("evictions 2"), "{l}");
    }
}
