//! The load tool's `slow` scenario with slow readers, end to end against the real daemon:
//! `tickcast-bench slow --slow-readers 0.2 --slow-read-bps 60000` as a library call, the
//! daemon started by the scenario from its command template and fed by the bench's own feed.
//! Short and bounded (one window each for the baseline and the "stopped" step, no stoppers).
//!
//! It proves that the load tool's slow readers read slowly enough to climb the ladder, follow
//! it (`conflating`, conflated snapshots whose seq jumps, trades in order, no gap in any
//! stream), are counted apart from the others, and that their staleness and the daemon's ladder
//! gauge reach the report.

#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use tickcast_bench::load::ClientKind;
use tickcast_bench::scenario::{self, Scenario, ScenarioConfig, ScenarioReport};

/// The slow readers' rate: under the live rate of a subscriber of everything (about
/// 130 KB/s here), above its trades (about 18 KB/s) plus conflated snapshots (at most 10
/// symbols × 5 Hz × ~400 bytes).
const SLOW_BPS: u64 = 60_000;
const TEST_LIMIT: Duration = Duration::from_secs(120);

fn config() -> ScenarioConfig {
    let bin =
        std::env::var("TICKCAST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tickcast").to_owned());
    ScenarioConfig {
        scenario: Scenario::Slow,
        case: String::from("slow-readers-test"),
        kind: ClientKind::Tickcast,
        label: String::from("tickcast"),
        // A 256 KiB bound (soft mark 64 KiB) and a small kernel send buffer (the default,
        // 2 × 256 KiB, is 25 s of a 20 KB/s reader's backlog before the out-buffer grows at
        // all), so that a reader at 60 KB/s climbs within a few seconds.
        target_cmd: Some(format!(
            "{bin} --listen 127.0.0.1:{{port}} --feed {{feed}} --shards 1 \
             --max-outbuf-bytes 262144 --send-buffer-bytes 16384"
        )),
        port: 0,
        url: None,
        target_pid: None,
        conns: 10,
        symbols: 10,
        symbols_per_conn: 0,
        depth: 10,
        procs: 1,
        connect_rate: 1000.0,
        source_ips: 1,
        rates: vec![2000.0],
        window: Duration::from_secs(3),
        settle: Duration::from_secs(3),
        p99_bound_ms: 60_000.0,
        stop_share: 0.0,
        stopper_rcvbuf: 4096,
        slow_share: 0.2,
        slow_read_bps: SLOW_BPS,
        burst: None,
        connect_timeout: Duration::from_secs(20),
        read_pause: Duration::from_micros(300),
        ready_timeout: Duration::from_secs(30),
        out: None,
        progress: false,
        retries: 0,
        command_line: String::from("test"),
    }
}

fn run(cfg: ScenarioConfig) -> Result<ScenarioReport, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        match tokio::time::timeout(TEST_LIMIT, scenario::run(&cfg)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(String::from("scenario did not finish in time")),
        }
    })
}

#[test]
fn slow_readers_follow_the_ladder_and_are_reported_apart() {
    let report = run(config()).expect("scenario");
    let text = scenario::summary_text(&report);
    eprintln!("{text}");
    assert_eq!((report.subscribed, report.failed), (10, 0), "{text}");
    let f = &report.final_stats;
    // Connections 4 and 9 read slowly, the eight others as fast as they can.
    assert_eq!((f.slow_readers, f.stoppers), (2, 0), "{text}");
    // Nobody was evicted and no stream of anyone broke: gaps count every connection.
    assert_eq!(
        (
            f.connections.evicted,
            f.slow_evicted,
            f.gaps,
            f.decode_errors
        ),
        (0, 0, 0, 0),
        "{text}"
    );
    assert!(f.first_errors.is_empty(), "{text}");
    // Each slow reader climbed the ladder, and got conflated snapshots whose seq jumped (not
    // counted as the server dropping data, which `resyncs` counts for everyone else).
    assert!(f.slow_conflating >= 2, "{text}");
    assert!(f.slow_snapshots > 0, "{text}");
    assert_eq!(f.resyncs, 0, "{text}");
    for step in &report.steps {
        // The others: every record in order, measured; the slow readers kept out of it.
        assert!(step.records > 0, "{text}");
        assert_eq!(
            (
                step.gaps,
                step.resyncs,
                step.evicted,
                step.closed_or_dropped
            ),
            (0, 0, 0, 0),
            "{text}"
        );
        let slow = step.slow.as_ref().expect("slow readers' figures");
        assert!(slow.records_per_sec > 0.0, "{text}");
        assert_eq!((slow.gaps, slow.evicted), (0, 0), "{text}");
        // Staleness sampled: two readers × the symbols they hold × every 100 ms.
        assert!(slow.staleness_us.count > 0, "{text}");
        // The token bucket is an upper bound: two readers never read twice their rate (the
        // others each take several times that).
        assert!(slow.bytes_per_sec < 2.0 * 2.0 * SLOW_BPS as f64, "{text}");
        // The daemon's ladder gauge was scraped.
        assert!(step.ladder_conflating_end.is_some(), "{text}");
    }
}
