//! Turns scenario result files (`DIR/round-N/CASE-LABEL.json`) into the
//! markdown of `docs/benchmarks.md`: medians over rounds per case and target,
//! every round's figure next to the median, the checks of issue 5, the exact
//! commands, and one latency plot per case.
//!
//! The generated section sits between [`BEGIN`] and [`END`]; the rest of the
//! document is left as it is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use crate::hist;
use crate::scenario::{INPUT_SHARE, ScenarioReport, StepReport};

/// Marker opening the generated section.
pub const BEGIN: &str = "<!-- bench:begin -->";
/// Marker closing the generated section.
pub const END: &str = "<!-- bench:end -->";

/// How the figures are made and what they do not say; printed with every summary.
pub const METHOD: &str = "\
### How these figures are made

`scripts/bench.sh` runs each case against each target in turn, round after round (so a noisy
minute hits every target alike), and this section shows the median round with every round's
figure beside it. The target (tickcast with `--shards 1`, or a peer) runs under `taskset -c 0`,
the load (`tickcast-bench`) under `taskset -c 1`; every case is bounded in time.

- **Input.** For tickcast the bench serves the feed itself (`feed-sim`'s exchange as a library:
  same JSON, same order flow), paced in 1 ms ticks at the step's rate of l2updates/s, so tickcast
  parses JSON, keeps books and encodes records. For a peer the bench is the publisher: it sends
  ready-made binary batches in tickcast's record format (book deltas of 1–4 levels and 8 %
  trades over 50 symbols, per-stream seqs, stamped when sent) in the same 1 ms ticks, and the
  peer relays each message to every subscriber. The peers do less work per record than tickcast.
- **Output.** The same client code reads both: every record is sequence-checked (a gap, or a
  snapshot that moves a stream, is loss), and for book deltas and trades it records
  `now − recv_ts` and `now − exch_ts` (µs, HdrHistogram) at the socket read (one clock read
  per read). Subscribers are connected and subscribed by tokio tasks, then read by one mio
  (epoll) thread per load process, which parses every frame in place and sleeps
  `--read-pause-us` (300 µs unless given) before each poll: at most that much of every latency
  figure is the instrument's own batching. For peers
  `recv_ts = exch_ts` = the publisher's send time, so their \"recv→client\" includes the publisher's
  own socket: it is the same hop as tickcast's feed-read-to-client.
- **Fair shares.** Peers send every record to every client, so the ramp and the 10k case
  subscribe every tickcast client to every symbol (`*`): delivered records/s then means the same
  thing for all targets. `light` keeps tickcast's realistic 5-of-50 subscription and gives peers
  the same delivered rate.
- **Pass.** A ramp step passes with zero gaps, zero resyncs, no subscriber evicted or lost, and
  p99 recv→client under the bound; a step that fails on latency alone is measured once more (the
  machine is shared). The ramp's figure is the delivered rate of the last passing step
  (resolution: the ramp factor, 1.5×).
- **Limits.** One machine, loopback, two cores shared with other work (load averages are in the
  JSON); the load has one core, so its CPU share is shown (near 100 % means the figure is the
  instrument's limit, not the target's). Memory is RSS from `/proc`, CPU is user+system time
  from `/proc` (the per-thread split names the busiest engine threads). The engine caps
  connections at 19,900 and a process opens at most 20,000 files here, so the \"20,000
  connections\" case runs 19,800.
";

/// Known cases, in the order the document shows them.
const CASE_ORDER: [&str; 6] = [
    "ramp-1k",
    "fixed-10k",
    "light",
    "connections",
    "slow",
    "burst",
];

/// Why a summary could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// No result file was found.
    #[error("no result files under {0}")]
    Empty(String),
}

fn io(path: &Path, e: impl std::fmt::Display) -> SummaryError {
    SummaryError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Where plots go.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Directory for one SVG per case.
    pub plots: Option<PathBuf>,
    /// How the document links that directory (default: its path).
    pub plots_link: Option<String>,
    /// Text at the top of the section.
    pub preamble: String,
}

/// Results of one case: label → one report per round, in round order.
type Case = BTreeMap<String, Vec<ScenarioReport>>;

/// Reads every `round-*/*.json` under `dir` (a directory of JSON files directly
/// under `dir` counts as one round).
pub fn load(dir: &Path) -> Result<BTreeMap<String, Case>, SummaryError> {
    let mut rounds: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("round-"))
        })
        .collect();
    rounds.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.trim_start_matches("round-").parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    if rounds.is_empty() {
        rounds.push(dir.to_path_buf());
    }
    let mut cases: BTreeMap<String, Case> = BTreeMap::new();
    for round in rounds {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&round)
            .map_err(|e| io(&round, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| io(&f, e))?;
            let Ok(report) = serde_json::from_str::<ScenarioReport>(&text) else {
                continue;
            };
            cases
                .entry(report.case.clone())
                .or_default()
                .entry(report.label.clone())
                .or_default()
                .push(report);
        }
    }
    if cases.is_empty() {
        return Err(SummaryError::Empty(dir.display().to_string()));
    }
    Ok(cases)
}

/// Index of the median of `values` (the lower middle for an even count).
pub fn median_index(values: &[f64]) -> Option<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    idx.get(values.len().saturating_sub(1) / 2).copied()
}

fn median(values: &[f64]) -> f64 {
    median_index(values)
        .and_then(|i| values.get(i))
        .copied()
        .unwrap_or(0.0)
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1024.0 * 1024.0))
}

fn runs(values: &[f64], f: impl Fn(f64) -> String) -> String {
    values.iter().map(|v| f(*v)).collect::<Vec<_>>().join(" / ")
}

/// The step that stands for a run: the best passing step of a ramp (the first
/// step when none passed), or the only/last step.
fn key_step(r: &ScenarioReport) -> Option<&StepReport> {
    if r.steps.len() > 1 && r.scenario == "fanout" {
        best_index(r)
            .and_then(|i| r.steps.get(i))
            .or_else(|| r.steps.first())
    } else {
        r.steps.last()
    }
}

/// Whether a step passed, also holding results written before the input rule
/// to it (at least 90 % of the offered input sent).
fn passed(s: &StepReport) -> bool {
    s.pass && (s.offered_rate <= 0.0 || s.input_rate >= INPUT_SHARE * s.offered_rate)
}

/// The last step of the unbroken run of passing steps from the first one.
fn best_index(r: &ScenarioReport) -> Option<usize> {
    r.steps
        .iter()
        .take_while(|s| passed(s))
        .count()
        .checked_sub(1)
}

/// Delivered records/s of the best passing step (0 when none passed).
fn best_rate(r: &ScenarioReport) -> f64 {
    best_index(r)
        .and_then(|i| r.steps.get(i))
        .map_or(0.0, |s| s.records_per_sec)
}

fn label_order(case: &Case) -> Vec<&String> {
    let mut labels: Vec<&String> = case.keys().collect();
    labels.sort_by_key(|l| (l.as_str() != "tickcast", l.as_str().to_owned()));
    labels
}

fn cpu(s: &StepReport) -> String {
    s.target_cpu.as_ref().map_or_else(
        || String::from("–"),
        |c| {
            if c.runq_wait_pct > 0.0 {
                format!(
                    "{:.0} ({:.0} sys; waited {:.0})",
                    c.total_pct, c.sys_pct, c.runq_wait_pct
                )
            } else {
                format!("{:.0} ({:.0} sys)", c.total_pct, c.sys_pct)
            }
        },
    )
}

fn hot_threads(s: &StepReport) -> String {
    let Some(c) = &s.target_cpu else {
        return String::from("–");
    };
    let mut t: Vec<(&String, &f64)> = c.threads_pct.iter().collect();
    t.sort_by(|a, b| b.1.total_cmp(a.1));
    t.iter()
        .take(3)
        .map(|(n, p)| format!("{n} {p:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn loss(s: &StepReport) -> String {
    format!(
        "{}/{}/{}",
        s.gaps,
        s.resyncs,
        s.evicted + s.closed_or_dropped
    )
}

fn ramp_table(out: &mut String, case: &Case) {
    out.push_str(
        "| target | highest passing rate, delivered records/s (median) | each round | p99 recv→client at that rate, ms | target CPU % (sys; waited for a CPU) | hottest threads, % | load CPU % | bytes/record | first failing step (median round) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for label in label_order(case) {
        let reports = &case[label];
        let rates: Vec<f64> = reports.iter().map(best_rate).collect();
        let Some(r) = median_index(&rates).and_then(|i| reports.get(i)) else {
            continue;
        };
        let best = r.best_step.and_then(|i| r.steps.get(i));
        let fail = r.steps.iter().find(|s| !s.pass).map_or_else(
            || String::from("none (ramp ended)"),
            |s| format!("{}: {}", s.name, s.failures.join("; ")),
        );
        let _ = writeln!(
            out,
            "| {label} | **{}** | {} | {} | {} | {} | {} | {} | {} |",
            human(median(&rates)),
            runs(&rates, human),
            best.map_or_else(
                || String::from("–"),
                |s| ms(s.latency_us.recv_to_client.p99)
            ),
            best.map_or_else(|| String::from("–"), cpu),
            best.map_or_else(|| String::from("–"), hot_threads),
            best.map_or_else(|| String::from("–"), |s| format!("{:.0}", s.load_cpu_pct)),
            best.map_or_else(
                || String::from("–"),
                |s| format!("{:.0}", s.bytes_per_record)
            ),
            fail
        );
    }
}

fn fixed_table(out: &mut String, case: &Case) {
    out.push_str(
        "| target | input sent / offered, per s | delivered records/s | recv→client p50 / p90 / p99 / p99.9 / max, ms | p99 each round | exch→client p99 | gaps/resyncs/evicted | target CPU % (sys; waited for a CPU) | load CPU % | rounds passed |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for label in label_order(case) {
        let reports = &case[label];
        let p99s: Vec<f64> = reports
            .iter()
            .map(|r| key_step(r).map_or(f64::MAX, |s| s.latency_us.recv_to_client.p99 as f64))
            .collect();
        let Some(s) = median_index(&p99s)
            .and_then(|i| reports.get(i))
            .and_then(key_step)
        else {
            continue;
        };
        let l = &s.latency_us.recv_to_client;
        let passed = reports
            .iter()
            .filter(|r| key_step(r).is_some_and(passed))
            .count();
        let _ = writeln!(
            out,
            "| {label} | {} / {} | {} | {} / {} / **{}** / {} / {} | {} | {} | {} | {} | {:.0} | {passed}/{} |",
            human(s.input_rate),
            human(s.offered_rate),
            human(s.records_per_sec),
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            runs(&p99s, |v| format!("{:.2}", v / 1000.0)),
            ms(s.latency_us.exch_to_client.p99),
            loss(s),
            cpu(s),
            s.load_cpu_pct,
            reports.len()
        );
    }
}

fn connections_table(out: &mut String, case: &Case) {
    out.push_str(
        "| target | subscribed | RSS before / after, MiB | bytes of RSS per subscriber (median) | each round | failed |\n|---|---|---|---|---|---|\n",
    );
    for label in label_order(case) {
        let reports = &case[label];
        let per: Vec<f64> = reports.iter().map(|r| r.rss_per_conn).collect();
        let Some(r) = median_index(&per).and_then(|i| reports.get(i)) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} / {} | **{:.0}** | {} | {} |",
            r.subscribed,
            mib(r.rss_before_conns),
            mib(r.rss_after_conns),
            median(&per),
            runs(&per, |v| format!("{v:.0}")),
            r.failed
        );
    }
}

/// Figures of a slow run: (baseline p99 µs, stopped p99 µs, ratio).
fn slow_ratio(r: &ScenarioReport) -> Option<(u64, u64, f64)> {
    let base = r.steps.iter().find(|s| s.name == "baseline")?;
    let stop = r.steps.iter().find(|s| s.name == "stopped")?;
    let (b, s) = (
        base.latency_us.recv_to_client.p99,
        stop.latency_us.recv_to_client.p99,
    );
    Some((
        b,
        s,
        if b > 0 {
            s as f64 / b as f64
        } else {
            f64::INFINITY
        },
    ))
}

/// Evictions counted by tickcast itself (`/metrics`) over the run's windows.
fn engine_evictions(r: &ScenarioReport) -> Option<f64> {
    (r.kind == "tickcast").then(|| {
        r.steps
            .iter()
            .filter_map(|s| s.metrics_delta.get("tickcast_evictions_total"))
            .sum()
    })
}

fn slow_table(out: &mut String, case: &Case) {
    out.push_str(
        "| target | p99 recv→client, all reading / with stoppers, ms | ratio (median) | each round | others' gaps/resyncs/evicted | stoppers: saw 1013 / lost without a close frame / evicted per the engine's metric / all | target RSS during the stopped window, MiB (start → end, max) |\n|---|---|---|---|---|---|---|\n",
    );
    for label in label_order(case) {
        let reports = &case[label];
        let ratios: Vec<f64> = reports
            .iter()
            .map(|r| slow_ratio(r).map_or(f64::INFINITY, |x| x.2))
            .collect();
        let Some(r) = median_index(&ratios).and_then(|i| reports.get(i)) else {
            continue;
        };
        let Some((b, s, ratio)) = slow_ratio(r) else {
            continue;
        };
        let stop = r.steps.iter().find(|s| s.name == "stopped");
        let f = &r.final_stats;
        let _ = writeln!(
            out,
            "| {label} | {} / {} | **{ratio:.2}** | {} | {} | {} / {} / {} / {} | {} |",
            ms(b),
            ms(s),
            runs(&ratios, |v| format!("{v:.2}")),
            stop.map_or_else(|| String::from("–"), loss),
            f.stoppers_evicted,
            f.connections.dropped,
            engine_evictions(r).map_or_else(|| String::from("–"), |n| format!("{n:.0}")),
            f.stoppers,
            stop.map_or_else(
                || String::from("–"),
                |s| format!(
                    "{} → {} ({})",
                    mib(s.target_rss_start),
                    mib(s.target_rss_end),
                    mib(s.target_rss_max)
                )
            ),
        );
    }
}

fn commands(out: &mut String, case: &Case) {
    out.push_str("\n```sh\n");
    for label in label_order(case) {
        if let Some(r) = case[label].first() {
            let _ = writeln!(
                out,
                "# {label} (target started by the bench: {})",
                r.target_command
            );
            let _ = writeln!(out, "{}", r.bench_command);
        }
    }
    out.push_str("```\n");
}

fn case_title(name: &str, sample: &ScenarioReport) -> String {
    let per = if sample.symbols_per_conn == 0 {
        String::from("every symbol (`*`)")
    } else {
        format!("{} of {} symbols", sample.symbols_per_conn, sample.symbols)
    };
    let rate = key_step(sample).map_or(0.0, |s| s.offered_rate);
    match sample.scenario.as_str() {
        "fanout" if sample.steps.len() > 1 || name.starts_with("ramp") => format!(
            "`{name}`: rate ramp, {} subscribers each on {per}, pass = no loss and p99 ≤ {} ms",
            sample.conns, sample.p99_bound_ms
        ),
        "fanout" => format!(
            "`{name}`: {} subscribers each on {per}, input {} {} (tickcast) / the same delivered rate for peers",
            sample.conns,
            human(rate),
            sample.input_unit
        ),
        "connections" => format!(
            "`{name}`: {} idle subscribers each on {per}, input {} {}",
            sample.conns,
            human(rate),
            sample.input_unit
        ),
        "slow" => format!(
            "`{name}`: {} subscribers each on {per}, input {} {}; then every stopper stops reading",
            sample.conns,
            human(rate),
            sample.input_unit
        ),
        _ => format!(
            "`{name}`: {} subscribers each on {per}, input {} {} with bursts",
            sample.conns,
            human(rate),
            sample.input_unit
        ),
    }
}

fn plot_case(name: &str, case: &Case, dir: &Path) -> Result<Option<String>, SummaryError> {
    let mut hists: Vec<(String, Histogram<u64>)> = Vec::new();
    for label in label_order(case) {
        let reports = &case[label];
        let keys: Vec<f64> = reports
            .iter()
            .map(|r| {
                if r.scenario == "fanout" && r.steps.len() > 1 {
                    best_rate(r)
                } else {
                    key_step(r).map_or(0.0, |s| s.latency_us.recv_to_client.p99 as f64)
                }
            })
            .collect();
        let Some(r) = median_index(&keys).and_then(|i| reports.get(i)) else {
            continue;
        };
        let steps: Vec<&StepReport> = if r.scenario == "slow" {
            r.steps.iter().collect()
        } else {
            key_step(r).into_iter().collect()
        };
        for s in steps {
            if let Some(h) = s
                .recv_hist
                .as_deref()
                .and_then(|t| hist::from_base64(t).ok())
            {
                let name = if r.scenario == "slow" {
                    format!("{label} ({})", s.name)
                } else {
                    format!("{label} ({} rec/s)", human(s.records_per_sec))
                };
                hists.push((name, h));
            }
        }
    }
    if hists.is_empty() {
        return Ok(None);
    }
    let series: Vec<hist::Series<'_>> = hists
        .iter()
        .map(|(label, h)| hist::Series {
            label: label.clone(),
            hist: h,
        })
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let file = format!("{name}.svg");
    let path = dir.join(&file);
    let svg = hist::svg_plot(
        &format!("{name}: recv_ts → client latency by percentile"),
        &series,
    );
    std::fs::write(&path, svg).map_err(|e| io(&path, e))?;
    Ok(Some(file))
}

struct Check {
    what: &'static str,
    target: String,
    measured: String,
    ok: Option<bool>,
}

fn checks(cases: &BTreeMap<String, Case>) -> Vec<Check> {
    let med = |case: &str, label: &str, f: &dyn Fn(&ScenarioReport) -> f64| {
        cases
            .get(case)
            .and_then(|c| c.get(label))
            .map(|rs| median(&rs.iter().map(f).collect::<Vec<_>>()))
    };
    let all = |case: &str, label: &str, f: &dyn Fn(&ScenarioReport) -> bool| {
        cases
            .get(case)
            .and_then(|c| c.get(label))
            .map(|rs| rs.iter().all(f))
    };
    let mut out = Vec::new();
    let tc = med("ramp-1k", "tickcast", &best_rate);
    let tokio = med("ramp-1k", "tokio-broadcast", &best_rate);
    out.push(Check {
        what: "1,000 subscribers, one engine core: highest rate with no loss and p99 < 20 ms",
        target: String::from("≥ 4,000,000 records/s and ≥ 10× tokio-broadcast"),
        measured: match (tc, tokio) {
            (Some(t), Some(k)) => format!(
                "{} records/s; tokio-broadcast {} ({})",
                human(t),
                human(k),
                if k > 0.0 {
                    format!("{:.1}×", t / k)
                } else {
                    String::from("peer passed no step")
                }
            ),
            (Some(t), None) => format!("{} records/s; tokio-broadcast not run", human(t)),
            _ => String::from("not run"),
        },
        ok: tc.map(|t| t >= 4_000_000.0 && tokio.is_some_and(|k| t >= 10.0 * k)),
    });
    let p99_10k = med("fixed-10k", "tickcast", &|r| {
        key_step(r).map_or(f64::MAX, |s| {
            s.latency_us.recv_to_client.p99 as f64 / 1000.0
        })
    });
    let rate_10k = med("fixed-10k", "tickcast", &|r| {
        key_step(r).map_or(0.0, |s| s.records_per_sec)
    });
    let lossless_10k = all("fixed-10k", "tickcast", &|r| {
        key_step(r).is_some_and(|s| s.gaps + s.resyncs + s.evicted + s.closed_or_dropped == 0)
            && r.failed == 0
    });
    out.push(Check {
        what: "10,000 subscribers at 1,000,000 delivered records/s",
        target: String::from("no loss, p99 < 50 ms"),
        measured: match (p99_10k, rate_10k, lossless_10k) {
            (Some(p), Some(r), Some(l)) => format!(
                "{} records/s, p99 {p:.1} ms, {}",
                human(r),
                if l { "no loss" } else { "LOSS or evictions" }
            ),
            _ => String::from("not run"),
        },
        ok: match (p99_10k, rate_10k, lossless_10k) {
            (Some(p), Some(r), Some(l)) => Some(p < 50.0 && l && r >= 950_000.0),
            _ => None,
        },
    });
    let light = med("light", "tickcast", &|r| {
        key_step(r).map_or(f64::MAX, |s| {
            s.latency_us.recv_to_client.p99 as f64 / 1000.0
        })
    });
    out.push(Check {
        what: "light load: 1,000 subscribers, 1,000 updates/s in",
        target: String::from("p99 recv_ts → client < 5 ms"),
        measured: light.map_or_else(|| String::from("not run"), |p| format!("p99 {p:.2} ms")),
        ok: light.map(|p| p < 5.0),
    });
    let per = med("connections", "tickcast", &|r| r.rss_per_conn);
    let n = med("connections", "tickcast", &|r| r.subscribed as f64);
    out.push(Check {
        what: "idle memory at 20,000 connections",
        target: String::from("≤ 512 bytes of engine RSS per idle subscriber"),
        measured: match (per, n) {
            (Some(p), Some(n)) => format!("{p:.0} bytes per subscriber at {n:.0} subscribers"),
            _ => String::from("not run"),
        },
        ok: per.map(|p| p <= 512.0),
    });
    let ratio = med("slow", "tickcast", &|r| {
        slow_ratio(r).map_or(f64::INFINITY, |x| x.2)
    });
    let saw_1013 = med("slow", "tickcast", &|r| {
        r.final_stats.stoppers_evicted as f64
    });
    let engine_evicted = med("slow", "tickcast", &|r| engine_evictions(r).unwrap_or(0.0));
    let stoppers = med("slow", "tickcast", &|r| r.final_stats.stoppers as f64);
    let slow_ok = all("slow", "tickcast", &|r| {
        let stop = r.steps.iter().find(|s| s.name == "stopped");
        let others_clean =
            stop.is_some_and(|s| s.gaps + s.resyncs + s.evicted + s.closed_or_dropped == 0);
        let evicted_all =
            r.final_stats.stoppers > 0 && r.final_stats.stoppers_evicted == r.final_stats.stoppers;
        let flat = stop.is_some_and(|s| {
            s.target_rss_max as f64 <= s.target_rss_start as f64 * 1.10 + 8.0 * 1024.0 * 1024.0
        });
        others_clean && evicted_all && flat
    });
    out.push(Check {
        what: "slow consumers: 10 % stop reading",
        target: String::from(
            "others lose nothing, their p99 ≤ 1.2× the run without stoppers, stoppers evicted with 1013, RSS flat (max ≤ start + 10 % + 8 MiB)",
        ),
        measured: match (ratio, slow_ok) {
            (Some(r), Some(ok)) => format!(
                "p99 ratio {r:.2}; engine evicted {:.0} of {:.0} stoppers, {:.0} saw the 1013 close; loss/evictions/RSS {}",
                engine_evicted.unwrap_or(0.0),
                stoppers.unwrap_or(0.0),
                saw_1013.unwrap_or(0.0),
                if ok { "as required in every round" } else { "NOT as required (see table)" }
            ),
            _ => String::from("not run"),
        },
        ok: match (ratio, slow_ok) {
            (Some(r), Some(ok)) => Some(r <= 1.2 && ok),
            _ => None,
        },
    });
    out
}

/// The generated markdown section (without markers).
pub fn summarize(dir: &Path, opts: &Options) -> Result<String, SummaryError> {
    let cases = load(dir)?;
    let mut names: Vec<&String> = cases.keys().collect();
    names.sort_by_key(|n| {
        (
            CASE_ORDER
                .iter()
                .position(|c| c == n)
                .unwrap_or(CASE_ORDER.len()),
            n.to_string(),
        )
    });
    let mut out = String::new();
    if !opts.preamble.is_empty() {
        out.push_str(&opts.preamble);
        out.push_str("\n\n");
    }
    out.push_str(METHOD);
    out.push_str("\n### Against issue 5\n\n| what | required | measured (median of rounds) | |\n|---|---|---|---|\n");
    for c in checks(&cases) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            c.what,
            c.target,
            c.measured,
            match c.ok {
                Some(true) => "met",
                Some(false) => "**not met**",
                None => "–",
            }
        );
    }
    for name in names {
        let case = &cases[name];
        let Some(sample) = label_order(case).first().and_then(|l| case[*l].first()) else {
            continue;
        };
        let rounds = case.values().map(Vec::len).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "\n### {} — {rounds} round(s)\n",
            case_title(name, sample)
        );
        match sample.scenario.as_str() {
            "fanout" if sample.steps.len() > 1 || name.starts_with("ramp") => {
                ramp_table(&mut out, case);
            }
            "connections" => connections_table(&mut out, case),
            "slow" => slow_table(&mut out, case),
            _ => fixed_table(&mut out, case),
        }
        if let Some(dir) = &opts.plots {
            if let Some(file) = plot_case(name, case, dir)? {
                let link = opts
                    .plots_link
                    .clone()
                    .unwrap_or_else(|| dir.display().to_string());
                let _ = writeln!(
                    out,
                    "\n![{name} latency by percentile]({}/{file})",
                    link.trim_end_matches('/')
                );
            }
        }
        commands(&mut out, case);
    }
    Ok(out)
}

/// Replaces the text between the markers of `doc` with `section` (appends the
/// markers and section when they are missing).
pub fn replace_section(doc: &str, section: &str) -> String {
    let body = format!("{BEGIN}\n{}\n{END}", section.trim_end());
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if e > b => {
            let mut out = String::with_capacity(doc.len() + body.len());
            out.push_str(doc.get(..b).unwrap_or_default());
            out.push_str(&body);
            out.push_str(doc.get(e + END.len()..).unwrap_or_default());
            out
        }
        _ => {
            let mut out = doc.trim_end().to_owned();
            out.push_str("\n\n");
            out.push_str(&body);
            out.push('\n');
            out
        }
    }
}

/// Writes `section` into `doc` between the markers.
pub fn write_section(doc: &Path, section: &str) -> Result<(), SummaryError> {
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    std::fs::write(doc, replace_section(&text, section)).map_err(|e| io(doc, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Percentiles;
    use crate::scenario::StageLatency;

    #[test]
    fn section_replaces_only_between_markers() {
        let doc =
            "# B\n\nintro\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n\n## Other\nkept\n";
        let new = replace_section(doc, "new table\n");
        assert_eq!(
            new,
            "# B\n\nintro\n\n<!-- bench:begin -->\nnew table\n<!-- bench:end -->\n\n## Other\nkept\n"
        );
        assert_eq!(replace_section(&new, "new table"), new);
        let appended = replace_section("# B\n", "x");
        assert_eq!(
            appended,
            "# B\n\n<!-- bench:begin -->\nx\n<!-- bench:end -->\n"
        );
    }

    #[test]
    fn medians_pick_the_middle_round() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_index(&[5.0, 9.0, 1.0]), Some(0));
        assert_eq!(median(&[4.0, 1.0]), 1.0);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(human(4_250_000.0), "4.25M");
        assert_eq!(human(1_500.0), "1.5k");
    }

    fn ramp(label: &str, rates: &[(f64, bool)]) -> ScenarioReport {
        let steps: Vec<StepReport> = rates
            .iter()
            .map(|(r, pass)| StepReport {
                name: format!("rate {r}"),
                records_per_sec: *r,
                offered_rate: *r / 1000.0,
                input_rate: *r / 1000.0,
                pass: *pass,
                failures: if *pass {
                    vec![]
                } else {
                    vec![String::from("3 gaps")]
                },
                latency_us: StageLatency {
                    recv_to_client: Percentiles {
                        p99: 2_000,
                        ..Percentiles::default()
                    },
                    ..StageLatency::default()
                },
                ..StepReport::default()
            })
            .collect();
        let best_step = steps.iter().rposition(|s| s.pass);
        ScenarioReport {
            scenario: String::from("fanout"),
            case: String::from("ramp-1k"),
            label: label.to_owned(),
            conns: 1000,
            steps,
            best_step,
            ..ScenarioReport::default()
        }
    }

    #[test]
    fn summary_reads_rounds_and_checks_targets() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("tickcast-summary-{}", std::process::id()));
        for (round, tc, tk) in [(1, 5e6, 2e5), (2, 4e6, 3e5), (3, 6e6, 1e5)] {
            let d = dir.join(format!("round-{round}"));
            std::fs::create_dir_all(&d)?;
            for r in [
                ramp("tickcast", &[(1e6, true), (tc, true), (tc * 2.0, false)]),
                ramp("tokio-broadcast", &[(tk, true), (tk * 2.0, false)]),
            ] {
                std::fs::write(
                    d.join(format!("ramp-1k-{}.json", r.label)),
                    serde_json::to_string(&r)?,
                )?;
            }
        }
        let text = summarize(&dir, &Options::default())?;
        let _ = std::fs::remove_dir_all(&dir);
        // Medians: tickcast 5M (rounds 5M / 4M / 6M), tokio 200k: 25×, met.
        assert!(
            text.contains("| tickcast | **5.00M** | 5.00M / 4.00M / 6.00M |"),
            "{text}"
        );
        assert!(text.contains("| tokio-broadcast | **200.0k** |"), "{text}");
        assert!(
            text.contains("5.00M records/s; tokio-broadcast 200.0k (25.0×) | met |"),
            "{text}"
        );
        assert!(text.contains("| light load: 1,000 subscribers, 1,000 updates/s in | p99 recv_ts → client < 5 ms | not run | – |"), "{text}");
        assert!(text.contains("rate 10000000: 3 gaps"), "{text}");
        Ok(())
    }
}
