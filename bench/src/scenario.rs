//! Scenarios: a target server (tickcast or a broadcast peer), an input the bench
//! paces, a subscriber load, and measured windows ("steps").
//!
//! - `fanout`: a rate ramp at fixed connections; each step settles, then measures;
//!   the ramp stops at the first step that loses data or passes the p99 bound.
//! - `connections`: idle subscribers; target RSS before and after, per connection.
//! - `slow`: a baseline window, then the stoppers stop reading and a second
//!   window measures the others; stoppers then read again to collect their close codes.
//!   Slow readers (`--slow-readers`, reading `--slow-read-bps` bytes/s all along) are
//!   reported apart in every window: their staleness, the conflation they got, and
//!   the daemon's ladder counters.
//! - `burst`: one window with periodic input bursts.
//!
//! The bench starts the target itself from a command template (`{port}`, `{feed}`)
//! so that it knows its pid for `/proc`, and kills it at the end.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep};

use crate::hist;
use crate::load::{ClientKind, FinalStats, LoadGroup, LoadSpec, Phase, ProgressView, WindowStats};
use crate::procstat::{self, CpuUse, ProcSample};
use crate::report::Percentiles;
use crate::source::{Burst, FeedServer, Pace, Publisher};

/// Which scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Rate ramp at fixed connections.
    Fanout,
    /// Idle subscribers: memory per connection.
    Connections,
    /// A share of subscribers stops reading.
    Slow,
    /// Input bursts.
    Burst,
}

impl Scenario {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fanout => "fanout",
            Self::Connections => "connections",
            Self::Slow => "slow",
            Self::Burst => "burst",
        }
    }
}

/// What a scenario runs against and how.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    /// The scenario.
    pub scenario: Scenario,
    /// Name of this case in reports and file names (e.g. `ramp-1k`).
    pub case: String,
    /// tickcast or a broadcast peer.
    pub kind: ClientKind,
    /// Label of the target (`tickcast`, `tokio-broadcast`, `node-ws`).
    pub label: String,
    /// Command that starts the target; `{port}` and `{feed}` are replaced.
    pub target_cmd: Option<String>,
    /// Port for the target (0: pick a free one).
    pub port: u16,
    /// URL of an already running target (instead of `target_cmd`).
    pub url: Option<String>,
    /// Pid of an already running target, for `/proc` figures.
    pub target_pid: Option<u32>,
    /// Subscriber connections.
    pub conns: usize,
    /// Symbols of the input (feed or publisher).
    pub symbols: usize,
    /// Symbols per connection (tickcast); 0 for all (`*`).
    pub symbols_per_conn: usize,
    /// Book depth (tickcast).
    pub depth: u32,
    /// Load processes (0: as many as the open-file limit needs).
    pub procs: usize,
    /// Connections opened per second.
    pub connect_rate: f64,
    /// Source addresses (0: as many as ports need).
    pub source_ips: u8,
    /// Input rates, one per step: l2updates/s (tickcast) or records/s (peers).
    pub rates: Vec<f64>,
    /// Measured window per step.
    pub window: Duration,
    /// Unmeasured time before each window.
    pub settle: Duration,
    /// A step fails when p99 recv_ts → client passes this, ms.
    pub p99_bound_ms: f64,
    /// Share of subscribers that stop reading (slow).
    pub stop_share: f64,
    /// SO_RCVBUF of stoppers and slow readers, bytes.
    pub stopper_rcvbuf: u32,
    /// Share of subscribers that read at `slow_read_bps` all along (slow).
    pub slow_share: f64,
    /// Bytes per second a slow reader reads.
    pub slow_read_bps: u64,
    /// Bursts (burst).
    pub burst: Option<Burst>,
    /// Time a connection has to connect and subscribe.
    pub connect_timeout: Duration,
    /// Pause of each load process's reader before each poll (zero: none).
    pub read_pause: Duration,
    /// Time the target has to become ready.
    pub ready_timeout: Duration,
    /// Directory for JSON, .hgrm, .svg and the target's log.
    pub out: Option<PathBuf>,
    /// Print progress on stderr every second.
    pub progress: bool,
    /// Extra measurements of a step that failed on latency alone (no loss).
    pub retries: u32,
    /// The bench's own command line, recorded in the report.
    pub command_line: String,
}

/// Latency of one window, both stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageLatency {
    /// `recv_ts` → client.
    pub recv_to_client: Percentiles,
    /// `exch_ts` → client.
    pub exch_to_client: Percentiles,
}

/// What the slow readers got in one window (see [`crate::load::SlowStats`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlowReport {
    /// Records received, per second (all slow readers together).
    pub records_per_sec: f64,
    /// Payload bytes per second (all slow readers together).
    pub bytes_per_sec: f64,
    /// Gaps and deltas without a snapshot (a broken book).
    pub gaps: u64,
    /// Snapshots that moved a book stream's seq (conflated).
    pub snapshots: u64,
    /// `conflating` messages.
    pub conflating: u64,
    /// `live` messages.
    pub live: u64,
    /// Slow readers evicted (1013).
    pub evicted: u64,
    /// Slow readers closed otherwise or lost.
    pub closed_or_dropped: u64,
    /// Staleness, now − `exch_ts` of the latest book record held, per reader and
    /// symbol, sampled every 100 ms, µs.
    pub staleness_us: Percentiles,
}

/// One measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepReport {
    /// Step name (`rate 2000`, `baseline`, ...).
    pub name: String,
    /// Input rate asked for (events/s; see the report's `input_unit`).
    pub offered_rate: f64,
    /// Input events actually sent per second during the window.
    pub input_rate: f64,
    /// Window length, s.
    pub window_secs: f64,
    /// Records delivered to measured subscribers.
    pub records: u64,
    /// Delivered records per second (all measured subscribers together).
    pub records_per_sec: f64,
    /// Messages per second.
    pub messages_per_sec: f64,
    /// Payload bytes per second.
    pub bytes_per_sec: f64,
    /// Average bytes per record (payload / records).
    pub bytes_per_record: f64,
    /// Sequence gaps seen by measured subscribers.
    pub gaps: u64,
    /// Resynchronising snapshots (data dropped by the server).
    pub resyncs: u64,
    /// Undecodable messages.
    pub decode_errors: u64,
    /// Measured subscribers evicted with 1013.
    pub evicted: u64,
    /// Measured subscribers closed otherwise or lost.
    pub closed_or_dropped: u64,
    /// Records stoppers received.
    pub stopper_records: u64,
    /// Stoppers evicted during the window.
    pub stoppers_evicted: u64,
    /// `conflating` messages the measured subscribers got (they fell behind).
    #[serde(default)]
    pub conflating: u64,
    /// The slow readers, when there are any.
    #[serde(default)]
    pub slow: Option<SlowReport>,
    /// The daemon's `tickcast_ladder_conflating_connections` at the window's end.
    #[serde(default)]
    pub ladder_conflating_end: Option<f64>,
    /// Latency, µs.
    pub latency_us: StageLatency,
    /// Target CPU over the window.
    pub target_cpu: Option<CpuUse>,
    /// Target RSS at the window's start, bytes.
    pub target_rss_start: u64,
    /// Target RSS at the window's end, bytes.
    pub target_rss_end: u64,
    /// Largest target RSS sampled (every second), bytes.
    pub target_rss_max: u64,
    /// CPU of the load processes (this one and workers), % of one core.
    pub load_cpu_pct: f64,
    /// Change of the target's counters over the window (tickcast `/metrics`).
    pub metrics_delta: BTreeMap<String, f64>,
    /// No loss, nobody evicted or lost, p99 under the bound.
    pub pass: bool,
    /// Why it did not pass.
    pub failures: Vec<String>,
    /// `/proc/loadavg` (1-minute) at the window's start and end: the machine is shared.
    pub loadavg: (f64, f64),
    /// Times this step was measured (a step failing on latency alone is measured once more).
    pub attempts: u32,
    /// Base64 V2 histogram of recv_ts → client, µs.
    pub recv_hist: Option<String>,
    /// Base64 V2 histogram of exch_ts → client, µs.
    pub exch_hist: Option<String>,
}

/// The result of one scenario run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub scenario: String,
    /// Case name.
    pub case: String,
    /// Target label.
    pub label: String,
    /// `tickcast` or `peer`.
    pub kind: String,
    /// What the input rate counts: `l2updates/s` or `records/s`.
    pub input_unit: String,
    /// The target's command as run.
    pub target_command: String,
    /// The bench's command line.
    pub bench_command: String,
    /// Subscriber connections asked for.
    pub conns: usize,
    /// Input symbols.
    pub symbols: usize,
    /// Symbols per connection (0: all).
    pub symbols_per_conn: usize,
    /// Book depth.
    pub depth: u32,
    /// Load processes.
    pub procs: usize,
    /// Source addresses.
    pub source_ips: u8,
    /// p99 bound of a passing step, ms.
    pub p99_bound_ms: f64,
    /// Seconds to open and subscribe every connection.
    pub ramp_secs: f64,
    /// Connections subscribed.
    pub subscribed: u64,
    /// Connections that failed to subscribe.
    pub failed: u64,
    /// Target RSS before the subscribers connected, bytes.
    pub rss_before_conns: u64,
    /// Target RSS after they connected and settled, bytes.
    pub rss_after_conns: u64,
    /// (after − before) / subscribed, bytes.
    pub rss_per_conn: f64,
    /// The steps, in order.
    pub steps: Vec<StepReport>,
    /// The last passing step of a ramp (index into `steps`).
    pub best_step: Option<usize>,
    /// Connection outcomes and run-long integrity counters.
    pub final_stats: FinalStats,
}

/// Why a scenario could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The target did not start or become ready.
    #[error("target: {0}")]
    Target(String),
    /// The input source failed.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// The load failed.
    #[error(transparent)]
    Load(#[from] crate::load::LoadError),
    /// The symbols request failed.
    #[error(transparent)]
    Bench(#[from] crate::runner::BenchError),
    /// Writing results failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
}

/// A target process the bench started; killed on drop.
#[derive(Debug)]
struct TargetProc {
    child: Child,
}

impl Drop for TargetProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, ScenarioError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ScenarioError::Target(format!("no free port: {e}")))
}

/// Open-file limit after raising the soft limit to the hard one.
pub fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// Load processes needed for `conns` connections under an open-file limit.
pub fn procs_for(conns: usize, nofile: u64) -> usize {
    let per = (nofile.saturating_sub(200)).max(100) as usize;
    conns.div_ceil(per).max(1)
}

/// Source addresses needed for `conns` connections (about 25,000 ports each).
pub fn source_ips_for(conns: usize) -> u8 {
    u8::try_from(conns.div_ceil(25_000).max(1)).unwrap_or(u8::MAX)
}

/// The 1-minute load average.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn rss(pid: Option<u32>) -> u64 {
    pid.and_then(procstat::sample).map_or(0, |s| s.rss)
}

struct Run<'a> {
    cfg: &'a ScenarioConfig,
    pid: Option<u32>,
    http: Option<SocketAddr>,
    pace: std::sync::Arc<Pace>,
    group: LoadGroup,
    phase_label: Rc<RefCell<String>>,
}

impl Run<'_> {
    async fn metrics(&self) -> BTreeMap<String, f64> {
        match self.http {
            Some(addr) => procstat::http_get(addr, "/metrics", Duration::from_secs(3))
                .await
                .map(|(_, body)| procstat::parse_metrics(&body))
                .unwrap_or_default(),
            None => BTreeMap::new(),
        }
    }

    fn load_ticks(&self) -> u64 {
        std::iter::once(std::process::id())
            .chain(self.group.worker_pids())
            .filter_map(procstat::sample)
            .map(|s| s.utime + s.stime)
            .sum()
    }

    /// Measures a step; one that fails on latency alone (no loss, nobody
    /// evicted) is measured again up to `retries` times, since the machine is
    /// shared and a stall elsewhere can push one window's p99.
    async fn step(&mut self, name: String, offered_rate: f64) -> Result<StepReport, ScenarioError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut r = self.step_once(name.clone(), offered_rate).await?;
            r.attempts = attempts;
            let latency_only = !r.pass && r.failures.iter().all(|f| f.starts_with("p99"));
            if !latency_only || attempts > self.cfg.retries {
                return Ok(r);
            }
        }
    }

    async fn step_once(
        &mut self,
        name: String,
        offered_rate: f64,
    ) -> Result<StepReport, ScenarioError> {
        self.phase_label.replace(format!("settle {name}"));
        sleep(self.cfg.settle).await;
        let m0 = self.metrics().await;
        let p0: Option<ProcSample> = self.pid.and_then(procstat::sample);
        let l0 = self.load_ticks();
        let sent0 = self.pace.sent.get();
        let load0 = loadavg();
        let t0 = Instant::now();
        self.group.window_begin().await?;
        self.phase_label.replace(format!("measure {name}"));
        let mut rss_max = p0.as_ref().map_or(0, |s| s.rss);
        let end = t0 + self.cfg.window;
        while Instant::now() < end {
            sleep((end - Instant::now()).min(Duration::from_secs(1))).await;
            rss_max = rss_max.max(rss(self.pid));
        }
        let stats = self.group.window_end().await?;
        let secs = t0.elapsed().as_secs_f64();
        let p1 = self.pid.and_then(procstat::sample);
        let l1 = self.load_ticks();
        let sent1 = self.pace.sent.get();
        let m1 = self.metrics().await;
        let metrics_delta = m1
            .iter()
            .filter(|(k, _)| k.ends_with("_total"))
            .map(|(k, v)| (k.clone(), v - m0.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, d)| *d != 0.0)
            .collect();
        let target_cpu = match (&p0, &p1) {
            (Some(a), Some(b)) => Some(CpuUse::between(a, b, secs)),
            _ => None,
        };
        let mut report = step_report(name, offered_rate, secs, &stats);
        report.input_rate = (sent1 - sent0) as f64 / secs;
        report.target_cpu = target_cpu;
        report.target_rss_start = p0.as_ref().map_or(0, |s| s.rss);
        report.target_rss_end = p1.as_ref().map_or(0, |s| s.rss);
        report.target_rss_max = rss_max.max(report.target_rss_end);
        report.load_cpu_pct = l1.saturating_sub(l0) as f64 / procstat::TICKS_PER_SEC / secs * 100.0;
        report.metrics_delta = metrics_delta;
        report.ladder_conflating_end = m1.get("tickcast_ladder_conflating_connections").copied();
        report.loadavg = (load0, loadavg());
        judge(&mut report, self.cfg.p99_bound_ms);
        if self.cfg.progress {
            eprintln!("{}", step_line(&report));
        }
        Ok(report)
    }
}

/// The figures of one window (without target figures).
pub fn step_report(name: String, offered_rate: f64, secs: f64, s: &WindowStats) -> StepReport {
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let pct = |h: &Option<hdrhistogram::Histogram<u64>>| {
        h.as_ref()
            .map(Percentiles::from_histogram)
            .unwrap_or_default()
    };
    StepReport {
        name,
        offered_rate,
        window_secs: secs,
        records: s.records,
        records_per_sec: per_sec(s.records),
        messages_per_sec: per_sec(s.messages),
        bytes_per_sec: per_sec(s.bytes),
        bytes_per_record: if s.records > 0 {
            s.bytes as f64 / s.records as f64
        } else {
            0.0
        },
        gaps: s.gaps,
        resyncs: s.resyncs,
        decode_errors: s.decode_errors,
        evicted: s.evicted,
        closed_or_dropped: s.closed + s.dropped,
        stopper_records: s.stopper_records,
        stoppers_evicted: s.stoppers_evicted,
        conflating: s.conflating,
        slow: slow_report(secs, &s.slow),
        latency_us: StageLatency {
            recv_to_client: pct(&s.recv_us),
            exch_to_client: pct(&s.exch_us),
        },
        recv_hist: s.recv_us.as_ref().and_then(|h| hist::to_base64(h).ok()),
        exch_hist: s.exch_us.as_ref().and_then(|h| hist::to_base64(h).ok()),
        ..StepReport::default()
    }
}

/// The slow readers' figures of a window; `None` when none read in it.
fn slow_report(secs: f64, s: &crate::load::SlowStats) -> Option<SlowReport> {
    let staleness_us = s
        .stale_us
        .as_ref()
        .map(Percentiles::from_histogram)
        .unwrap_or_default();
    if s.records == 0 && staleness_us.count == 0 && s.evicted + s.closed_or_dropped == 0 {
        return None;
    }
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    Some(SlowReport {
        records_per_sec: per_sec(s.records),
        bytes_per_sec: per_sec(s.bytes),
        gaps: s.gaps,
        snapshots: s.snapshots,
        conflating: s.conflating,
        live: s.live,
        evicted: s.evicted,
        closed_or_dropped: s.closed_or_dropped,
        staleness_us,
    })
}

/// Share of the offered input rate a passing step must have sent: the source
/// waits when the target does not read, so a target that cannot take the input
/// shows as a lower input rate.
pub const INPUT_SHARE: f64 = 0.9;

/// Sets `pass` and `failures`: no loss, nobody measured evicted or lost, p99
/// recv_ts → client within the bound, at least 90 % of the input sent, something
/// delivered.
pub fn judge(r: &mut StepReport, p99_bound_ms: f64) {
    let mut f = Vec::new();
    if r.records == 0 {
        f.push(String::from("nothing delivered"));
    }
    if r.gaps > 0 {
        f.push(format!("{} gaps", r.gaps));
    }
    if let Some(s) = r.slow.as_ref().filter(|s| s.gaps > 0) {
        f.push(format!("{} gaps in slow readers' streams", s.gaps));
    }
    if r.resyncs > 0 {
        f.push(format!("{} resyncs (server dropped data)", r.resyncs));
    }
    if r.decode_errors > 0 {
        f.push(format!("{} undecodable messages", r.decode_errors));
    }
    if r.evicted > 0 {
        f.push(format!("{} subscribers evicted", r.evicted));
    }
    if r.closed_or_dropped > 0 {
        f.push(format!(
            "{} subscribers closed or lost",
            r.closed_or_dropped
        ));
    }
    if r.offered_rate > 0.0 && r.input_rate < INPUT_SHARE * r.offered_rate {
        f.push(format!(
            "input throttled: {:.0}/s sent of {:.0}/s (the target did not take it)",
            r.input_rate, r.offered_rate
        ));
    }
    let p99_ms = r.latency_us.recv_to_client.p99 as f64 / 1000.0;
    if p99_ms > p99_bound_ms {
        f.push(format!("p99 {p99_ms:.1} ms > {p99_bound_ms} ms"));
    }
    r.pass = f.is_empty();
    r.failures = f;
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// One line per step for the console (two with slow readers or ladder moves).
pub fn step_line(r: &StepReport) -> String {
    let mut line = step_main_line(r);
    let ladder = ["to_conflating", "to_live", "held"]
        .map(|k| metric(r, &format!("tickcast_ladder_{k}_total")));
    let skips = metric(r, "tickcast_conflated_skips_total");
    if r.slow.is_some() || ladder.iter().any(|v| *v > 0.0) || r.conflating > 0 {
        line.push_str(&format!(
            "\n    ladder: to conflating {:.0}, to live {:.0}, held {:.0}, conflated ticks skipped {:.0}, conflating at the end {:.0}; others got {} conflating",
            ladder[0],
            ladder[1],
            ladder[2],
            skips,
            r.ladder_conflating_end.unwrap_or(0.0),
            r.conflating,
        ));
    }
    if let Some(s) = &r.slow {
        let st = &s.staleness_us;
        line.push_str(&format!(
            "\n    slow readers: {:.0} rec/s {:.1} KiB/s, staleness p50 {:.0} p99 {:.0} max {:.0} ms ({} samples), conflated snapshots {}, conflating {}, live {}, gaps {}, evicted {}, closed {}",
            s.records_per_sec,
            s.bytes_per_sec / 1024.0,
            st.p50 as f64 / 1000.0,
            st.p99 as f64 / 1000.0,
            st.max as f64 / 1000.0,
            st.count,
            s.snapshots,
            s.conflating,
            s.live,
            s.gaps,
            s.evicted,
            s.closed_or_dropped,
        ));
    }
    line
}

/// A counter's change over the step (0 when absent).
fn metric(r: &StepReport, name: &str) -> f64 {
    r.metrics_delta.get(name).copied().unwrap_or(0.0)
}

fn step_main_line(r: &StepReport) -> String {
    let l = &r.latency_us.recv_to_client;
    format!(
        "  step {:<16} {}in {:>9.0}/s  out {:>11.0} rec/s  {:>7.1} MiB/s  p50 {:>8.2} p99 {:>8.2} p99.9 {:>8.2} max {:>8.2} ms  gaps {} resyncs {} evicted {}  cpu {:>5.1}% (runq wait {:.0}%)  rss {:.1}->{:.1} MiB  load {:>5.1}%  loadavg {:.1}  {}",
        r.name,
        if r.attempts > 1 {
            format!("(try {}) ", r.attempts)
        } else {
            String::new()
        },
        r.input_rate,
        r.records_per_sec,
        r.bytes_per_sec / (1024.0 * 1024.0),
        l.p50 as f64 / 1000.0,
        l.p99 as f64 / 1000.0,
        l.p999 as f64 / 1000.0,
        l.max as f64 / 1000.0,
        r.gaps,
        r.resyncs,
        r.evicted,
        r.target_cpu.as_ref().map_or(0.0, |c| c.total_pct),
        r.target_cpu.as_ref().map_or(0.0, |c| c.runq_wait_pct),
        mib(r.target_rss_start),
        mib(r.target_rss_end),
        r.load_cpu_pct,
        r.loadavg.1,
        if r.pass {
            String::from("PASS")
        } else {
            format!("FAIL: {}", r.failures.join("; "))
        }
    )
}

async fn wait_target(
    cfg: &ScenarioConfig,
    child: &mut Option<TargetProc>,
    addr: SocketAddr,
) -> Result<(), ScenarioError> {
    let deadline = Instant::now() + cfg.ready_timeout;
    loop {
        if let Some(t) = child.as_mut() {
            if let Ok(Some(status)) = t.child.try_wait() {
                return Err(ScenarioError::Target(format!(
                    "exited with {status} before it was ready (see its log)"
                )));
            }
        }
        let ready = match cfg.kind {
            ClientKind::Tickcast => procstat::http_get(addr, "/healthz", Duration::from_secs(1))
                .await
                .is_some_and(|(status, _)| status == 200),
            ClientKind::Peer => tokio::net::TcpStream::connect(addr).await.is_ok(),
        };
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ScenarioError::Target(format!(
                "not ready within {:?} at {addr}",
                cfg.ready_timeout
            )));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

fn progress_task(view: ProgressView, pid: Option<u32>, label: Rc<RefCell<String>>, total: usize) {
    tokio::task::spawn_local(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut last_records, mut last_at) = (0u64, Instant::now());
        let mut last_proc = pid.and_then(procstat::sample);
        loop {
            tick.tick().await;
            let p = view.progress();
            let now = Instant::now();
            let secs = now.duration_since(last_at).as_secs_f64();
            let rate = if secs > 0.0 {
                p.records.saturating_sub(last_records) as f64 / secs
            } else {
                0.0
            };
            (last_records, last_at) = (p.records, now);
            let sample = pid.and_then(procstat::sample);
            let target = match (&last_proc, &sample) {
                (Some(a), Some(b)) => format!(
                    "  target cpu {:>5.1}% rss {:>7.1} MiB",
                    CpuUse::between(a, b, secs).total_pct,
                    mib(b.rss)
                ),
                _ => String::new(),
            };
            last_proc = sample;
            eprintln!(
                "[{:>4}s] {:<22} open {}/{total} (pending {}, ended {})  rec/s {rate:>11.0}  gaps {}{target}",
                start.elapsed().as_secs(),
                label.borrow(),
                p.open,
                p.pending,
                p.ended,
                p.gaps,
            );
        }
    });
}

/// Runs a scenario (inside a `LocalSet`) and returns its report.
pub async fn run(cfg: &ScenarioConfig) -> Result<ScenarioReport, ScenarioError> {
    if cfg.rates.is_empty() || cfg.rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(ScenarioError::Config(String::from(
            "--rates: need at least one positive rate",
        )));
    }
    if cfg.conns == 0 || cfg.symbols == 0 {
        return Err(ScenarioError::Config(String::from(
            "--conns and --symbols must be at least 1",
        )));
    }
    if let Some(dir) = &cfg.out {
        std::fs::create_dir_all(dir).map_err(|e| ScenarioError::Write {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    let nofile = raise_nofile();
    let procs = if cfg.procs == 0 {
        procs_for(cfg.conns, nofile)
    } else {
        cfg.procs
    };
    let source_ips = if cfg.source_ips == 0 {
        source_ips_for(cfg.conns)
    } else {
        cfg.source_ips
    };
    if cfg.conns / procs + 100 > nofile as usize {
        return Err(ScenarioError::Config(format!(
            "{} connections over {procs} process(es) exceed the open-file limit {nofile}: raise --procs",
            cfg.conns
        )));
    }

    // Input first: tickcast's command needs the feed's address.
    let pace;
    let mut feed = None;
    match cfg.kind {
        ClientKind::Tickcast => {
            let f = FeedServer::start("127.0.0.1:0", cfg.symbols, 1).await?;
            pace = f.pace.clone();
            feed = Some(f);
        }
        ClientKind::Peer => pace = std::sync::Arc::new(Pace::default()),
    }
    pace.rate.set(cfg.rates.first().copied().unwrap_or(1.0));

    // The target.
    let mut target = None;
    let mut target_command = String::new();
    let (url, pid) = match (&cfg.target_cmd, &cfg.url) {
        (Some(template), _) => {
            let port = if cfg.port == 0 {
                free_port()?
            } else {
                cfg.port
            };
            let feed_url = feed.as_ref().map(|f| f.url.clone()).unwrap_or_default();
            let cmd = template
                .replace("{port}", &port.to_string())
                .replace("{feed}", &feed_url);
            let log = match &cfg.out {
                Some(dir) => {
                    let path = dir.join(format!("{}-{}.log", cfg.case, cfg.label));
                    File::create(&path).map_err(|e| ScenarioError::Write {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?
                }
                None => File::create("/dev/null").map_err(|e| ScenarioError::Write {
                    path: String::from("/dev/null"),
                    reason: e.to_string(),
                })?,
            };
            let err = log
                .try_clone()
                .map_err(|e| ScenarioError::Target(e.to_string()))?;
            let child = Command::new("sh")
                .arg("-c")
                .arg(format!("exec {cmd}"))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .map_err(|e| ScenarioError::Target(format!("cannot start {cmd:?}: {e}")))?;
            let pid = child.id();
            target = Some(TargetProc { child });
            target_command = cmd;
            let path = match cfg.kind {
                ClientKind::Tickcast => "/ws",
                ClientKind::Peer => "/sub",
            };
            (format!("ws://127.0.0.1:{port}{path}"), Some(pid))
        }
        (None, Some(url)) => (url.clone(), cfg.target_pid),
        (None, None) => {
            return Err(ScenarioError::Config(String::from(
                "give --target-cmd (the bench starts the target) or --url",
            )));
        }
    };
    let endpoint = crate::client::Target::parse(&url).map_err(ScenarioError::Config)?;
    if cfg.progress {
        eprintln!(
            "{} {} against {} at {url}{}",
            cfg.scenario.name(),
            cfg.case,
            cfg.label,
            feed.as_ref()
                .map(|f| format!(" (feed {})", f.url))
                .unwrap_or_default()
        );
    }
    wait_target(cfg, &mut target, endpoint.addr).await?;

    let names = match cfg.kind {
        ClientKind::Tickcast => crate::runner::fetch_symbols(&url, cfg.connect_timeout)
            .await?
            .into_iter()
            .map(|s| s.symbol)
            .collect(),
        ClientKind::Peer => Vec::new(),
    };
    if cfg.kind == ClientKind::Tickcast && cfg.symbols_per_conn > names.len() {
        return Err(ScenarioError::Config(format!(
            "--symbols-per-conn {} exceeds the {} symbols the server lists",
            cfg.symbols_per_conn,
            names.len()
        )));
    }
    sleep(Duration::from_millis(500)).await;
    let rss_before_conns = rss(pid);

    let stop_every = if cfg.scenario == Scenario::Slow && cfg.stop_share > 0.0 {
        (1.0 / cfg.stop_share).round().max(1.0) as usize
    } else {
        0
    };
    let slow_every = if cfg.scenario == Scenario::Slow && cfg.slow_share > 0.0 {
        (1.0 / cfg.slow_share).round().max(1.0) as usize
    } else {
        0
    };
    let spec = LoadSpec {
        url: url.clone(),
        kind: cfg.kind,
        symbols: names,
        symbols_per_conn: cfg.symbols_per_conn,
        depth: cfg.depth,
        first: 0,
        count: cfg.conns,
        connect_rate: cfg.connect_rate,
        source_ips,
        stop_every,
        stopper_rcvbuf: (stop_every + slow_every > 0).then_some(cfg.stopper_rcvbuf),
        slow_every,
        slow_read_bps: cfg.slow_read_bps,
        connect_timeout_ms: cfg.connect_timeout.as_millis() as u64,
        read_pause_us: cfg.read_pause.as_micros() as u64,
    };
    let ramp_start = Instant::now();
    let mut group = LoadGroup::start(&spec, procs).await?;
    let phase_label = Rc::new(RefCell::new(String::from("ramp")));
    if cfg.progress {
        progress_task(group.view(), pid, phase_label.clone(), cfg.conns);
    }
    let (subscribed, failed) = group.wait_ready().await?;
    let ramp_secs = ramp_start.elapsed().as_secs_f64();

    // Peers: the publisher starts once every subscriber is registered.
    let mut publisher = None;
    if cfg.kind == ClientKind::Peer {
        sleep(Duration::from_secs(1)).await;
        let pub_url = format!("ws://{}/pub", endpoint.host);
        publisher = Some(Publisher::start(&pub_url, cfg.symbols, pace.clone()).await?);
    }

    let mut run = Run {
        cfg,
        pid,
        http: (cfg.kind == ClientKind::Tickcast).then_some(endpoint.addr),
        pace: pace.clone(),
        group,
        phase_label: phase_label.clone(),
    };
    let mut steps = Vec::new();
    let mut best_step = None;
    let mut rss_after_conns = 0;
    match cfg.scenario {
        Scenario::Fanout => {
            for (i, rate) in cfg.rates.iter().enumerate() {
                pace.rate.set(*rate);
                let step = run.step(format!("rate {rate}"), *rate).await?;
                let pass = step.pass;
                steps.push(step);
                if !pass {
                    break;
                }
                best_step = Some(i);
            }
        }
        Scenario::Connections => {
            phase_label.replace(String::from("settle idle"));
            sleep(cfg.settle).await;
            rss_after_conns = rss(pid);
            steps.push(run.step(String::from("idle"), pace.rate.get()).await?);
        }
        Scenario::Slow => {
            steps.push(run.step(String::from("baseline"), pace.rate.get()).await?);
            run.group.set_phase(Phase::Stopped).await?;
            steps.push(run.step(String::from("stopped"), pace.rate.get()).await?);
            // Stoppers read again: they drain what was sent and see their close.
            run.group.set_phase(Phase::Run).await?;
            phase_label.replace(String::from("drain stoppers"));
            sleep(Duration::from_secs(3)).await;
        }
        Scenario::Burst => {
            pace.burst.set(cfg.burst);
            steps.push(run.step(String::from("burst"), pace.rate.get()).await?);
            pace.burst.set(None);
        }
    }
    phase_label.replace(String::from("finish"));
    drop(publisher);
    let final_stats = run.group.finish().await?;
    drop(feed);
    drop(target);

    let rss_per_conn = if subscribed > 0 && rss_after_conns > 0 {
        (rss_after_conns as f64 - rss_before_conns as f64) / subscribed as f64
    } else {
        0.0
    };
    let report = ScenarioReport {
        scenario: cfg.scenario.name().to_owned(),
        case: cfg.case.clone(),
        label: cfg.label.clone(),
        kind: match cfg.kind {
            ClientKind::Tickcast => String::from("tickcast"),
            ClientKind::Peer => String::from("peer"),
        },
        input_unit: match cfg.kind {
            ClientKind::Tickcast => String::from("l2updates/s"),
            ClientKind::Peer => String::from("records/s"),
        },
        target_command,
        bench_command: cfg.command_line.clone(),
        conns: cfg.conns,
        symbols: cfg.symbols,
        symbols_per_conn: cfg.symbols_per_conn,
        depth: cfg.depth,
        procs,
        source_ips,
        p99_bound_ms: cfg.p99_bound_ms,
        ramp_secs,
        subscribed,
        failed,
        rss_before_conns,
        rss_after_conns,
        rss_per_conn,
        steps,
        best_step,
        final_stats,
    };
    if let Some(dir) = &cfg.out {
        write_outputs(dir, &report)?;
    }
    Ok(report)
}

fn write(path: PathBuf, text: &str) -> Result<(), ScenarioError> {
    std::fs::write(&path, text).map_err(|e| ScenarioError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `CASE-LABEL.json`, one `.hgrm` per step and stage, and `CASE-LABEL.svg`.
pub fn write_outputs(dir: &std::path::Path, r: &ScenarioReport) -> Result<(), ScenarioError> {
    let base = format!("{}-{}", file_safe(&r.case), file_safe(&r.label));
    let json = serde_json::to_string_pretty(r).map_err(|e| ScenarioError::Write {
        path: base.clone(),
        reason: e.to_string(),
    })?;
    write(dir.join(format!("{base}.json")), &(json + "\n"))?;
    let mut hists = Vec::new();
    for s in &r.steps {
        for (stage, text) in [("recv", &s.recv_hist), ("exch", &s.exch_hist)] {
            if let Some(h) = text.as_deref().and_then(|t| hist::from_base64(t).ok()) {
                write(
                    dir.join(format!("{base}-{}-{stage}.hgrm", file_safe(&s.name))),
                    &hist::hgrm(&h),
                )?;
                if stage == "recv" {
                    hists.push((s.name.clone(), h));
                }
            }
        }
    }
    let series: Vec<hist::Series<'_>> = hists
        .iter()
        .map(|(name, h)| hist::Series {
            label: name.clone(),
            hist: h,
        })
        .collect();
    let title = format!(
        "{} {}: recv_ts → client, {} subscribers",
        r.case, r.label, r.subscribed
    );
    write(
        dir.join(format!("{base}.svg")),
        &hist::svg_plot(&title, &series),
    )
}

/// The report as text: one line per step, then outcomes.
pub fn summary_text(r: &ScenarioReport) -> String {
    let mut out = format!(
        "{} {} against {}: {} subscribers ({} failed) in {:.1} s, {} symbols, {} per conn, depth {}, {} proc(s)\n",
        r.scenario,
        r.case,
        r.label,
        r.subscribed,
        r.failed,
        r.ramp_secs,
        r.symbols,
        if r.symbols_per_conn == 0 {
            String::from("all")
        } else {
            r.symbols_per_conn.to_string()
        },
        r.depth,
        r.procs
    );
    for s in &r.steps {
        out.push_str(&step_line(s));
        out.push('\n');
    }
    if r.rss_after_conns > 0 {
        out.push_str(&format!(
            "  target rss {:.1} MiB before, {:.1} MiB with {} subscribers: {:.0} bytes per subscriber\n",
            mib(r.rss_before_conns),
            mib(r.rss_after_conns),
            r.subscribed,
            r.rss_per_conn
        ));
    }
    if let Some(best) = r.best_step.and_then(|i| r.steps.get(i)) {
        out.push_str(&format!(
            "  best passing step: {} -> {:.0} records/s delivered, p99 {:.2} ms\n",
            best.name,
            best.records_per_sec,
            best.latency_us.recv_to_client.p99 as f64 / 1000.0
        ));
    }
    let f = &r.final_stats;
    let c = &f.connections;
    out.push_str(&format!(
        "  connections: ok {} failed {} evicted {} (stoppers {}/{}) closed {} dropped {}; closes {:?}\n",
        c.ok, c.failed, c.evicted, f.stoppers_evicted, f.stoppers, c.closed, c.dropped, c.closes_by_code
    ));
    for (reason, n) in &c.failure_reasons {
        out.push_str(&format!("  failure: {n} x {reason}\n"));
    }
    if f.slow_readers > 0 {
        out.push_str(&format!(
            "  slow readers: {} (evicted {}); conflating {}, live {}, conflated snapshots {}\n",
            f.slow_readers, f.slow_evicted, f.slow_conflating, f.slow_live, f.slow_snapshots
        ));
    }
    out.push_str(&format!(
        "  run totals: {} records checked, gaps {}, resyncs {}, decode errors {}\n",
        f.records_checked, f.gaps, f.resyncs, f.decode_errors
    ));
    for e in &f.first_errors {
        out.push_str(&format!("  error: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procs_and_sources_follow_limits() {
        assert_eq!(procs_for(1_000, 20_000), 1);
        assert_eq!(procs_for(19_800, 20_000), 1);
        assert_eq!(procs_for(25_000, 20_000), 2);
        assert_eq!(procs_for(5_000, 1024), 7);
        assert_eq!(source_ips_for(20_000), 1);
        assert_eq!(source_ips_for(60_000), 3);
    }

    #[test]
    fn judge_names_every_failure() {
        let mut r = StepReport {
            records: 10,
            offered_rate: 100.0,
            input_rate: 95.0,
            ..StepReport::default()
        };
        r.latency_us.recv_to_client.p99 = 4_000;
        judge(&mut r, 5.0);
        assert!(r.pass, "{:?}", r.failures);
        r.gaps = 2;
        r.evicted = 1;
        r.latency_us.recv_to_client.p99 = 25_000;
        r.input_rate = 50.0;
        judge(&mut r, 20.0);
        assert!(!r.pass);
        assert_eq!(r.failures.len(), 4, "{:?}", r.failures);
        assert!(r.failures.iter().any(|f| f.starts_with("input throttled")));
        assert!(r.failures.iter().any(|f| f.contains("p99 25.0 ms")));
    }
}
