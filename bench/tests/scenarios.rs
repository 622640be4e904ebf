//! Runs scenarios end to end against an in-test broadcast server on 127.0.0.1
//! (every message sent to `/pub` goes to every other client; a client that falls
//! too far behind is closed with 1013, as tickcast evicts): in-process, and
//! through the command line with worker processes. Every run is bounded.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tickcast_bench::load::ClientKind;
use tickcast_bench::scenario::{self, Scenario, ScenarioConfig, ScenarioReport};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Messages a subscriber may fall behind before it is closed with 1013 (1 s of
/// the publisher's ticks).
const LAG_LIMIT: usize = 1024;

async fn start_broadcast() -> std::io::Result<u16> {
    // A small send buffer (inherited by accepted sockets), so that a subscriber
    // that stops reading falls behind within a fraction of a second.
    let socket = TcpSocket::new_v4()?;
    socket.set_send_buffer_size(16 * 1024)?;
    socket.bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
    let listener = socket.listen(1024)?;
    let port = listener.local_addr()?.port();
    let (tx, _) = broadcast::channel::<Bytes>(LAG_LIMIT);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(client(tcp, tx.clone()));
        }
    });
    Ok(port)
}

#[allow(clippy::result_large_err)]
async fn client(tcp: TcpStream, tx: broadcast::Sender<Bytes>) {
    let mut path = String::new();
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    if path == "/pub" {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Binary(data) = msg {
                let _ = tx.send(data);
            }
        }
        return;
    }
    let mut rx = tx.subscribe();
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Ok(data) => if sink.send(Message::Binary(data)).await.is_err() { return },
                Err(RecvError::Lagged(_)) => {
                    let frame = CloseFrame { code: CloseCode::Again, reason: "slow".into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        while let Some(Ok(_)) = stream.next().await {}
                    }).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            msg = stream.next() => if matches!(msg, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) { return },
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tickcast-bench-{name}-{}", std::process::id()))
}

fn config(scenario: Scenario, port: u16, out: Option<PathBuf>) -> ScenarioConfig {
    ScenarioConfig {
        scenario,
        case: String::from("test"),
        kind: ClientKind::Peer,
        label: String::from("inproc"),
        target_cmd: None,
        port: 0,
        url: Some(format!("ws://127.0.0.1:{port}/sub")),
        target_pid: None,
        conns: 12,
        symbols: 5,
        symbols_per_conn: 0,
        depth: 25,
        procs: 1,
        connect_rate: 1000.0,
        source_ips: 2,
        rates: vec![200.0, 400.0],
        window: Duration::from_millis(800),
        settle: Duration::from_millis(200),
        p99_bound_ms: 60_000.0,
        stop_share: 0.0,
        stopper_rcvbuf: 4096,
        slow_share: 0.0,
        slow_read_bps: 0,
        read_pause: Duration::from_micros(300),
        burst: None,
        connect_timeout: Duration::from_secs(5),
        ready_timeout: Duration::from_secs(5),
        out,
        progress: false,
        retries: 0,
        command_line: String::from("test"),
    }
}

async fn run_local(cfg: ScenarioConfig) -> Result<ScenarioReport, String> {
    let local = tokio::task::LocalSet::new();
    let run = local.run_until(async move { scenario::run(&cfg).await });
    match tokio::time::timeout(TEST_LIMIT, run).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(String::from("scenario did not finish in time")),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn fanout_against_a_broadcast_peer_measures_every_step()
-> Result<(), Box<dyn std::error::Error>> {
    let port = start_broadcast().await?;
    let out = temp_dir("fanout");
    let report = run_local(config(Scenario::Fanout, port, Some(out.clone()))).await?;
    let text = scenario::summary_text(&report);

    assert_eq!((report.subscribed, report.failed), (12, 0), "{text}");
    assert_eq!(report.steps.len(), 2, "{text}");
    assert_eq!(report.best_step, Some(1), "{text}");
    for s in &report.steps {
        assert!(s.pass, "{text}");
        assert!(s.records > 0 && s.gaps == 0 && s.resyncs == 0, "{text}");
        // Every record goes to every subscriber: a multiple of 12 up to the
        // records in flight when the window closed.
        assert!(
            s.bytes_per_record >= 40.0 && s.bytes_per_record < 120.0,
            "{text}"
        );
        assert_eq!(
            s.latency_us.recv_to_client.count,
            s.latency_us.exch_to_client.count
        );
        assert!(s.recv_hist.is_some());
    }
    let f = &report.final_stats;
    assert_eq!(
        (f.connections.ok, f.gaps, f.decode_errors),
        (12, 0, 0),
        "{text}"
    );
    // Snapshots first, then only in-order records: everything checked.
    assert!(f.records_checked >= report.steps.iter().map(|s| s.records).sum::<u64>());

    for file in [
        "test-inproc.json",
        "test-inproc.svg",
        "test-inproc-rate_200-recv.hgrm",
        "test-inproc-rate_400-exch.hgrm",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let json: ScenarioReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("test-inproc.json"))?)?;
    assert_eq!(json.steps.len(), 2);
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn slow_subscribers_are_kept_out_of_the_figures_and_their_eviction_counted()
-> Result<(), Box<dyn std::error::Error>> {
    let port = start_broadcast().await?;
    let mut cfg = config(Scenario::Slow, port, None);
    cfg.conns = 4;
    cfg.stop_share = 0.25; // connection 0 stops
    cfg.rates = vec![20_000.0];
    // The stopper must fall LAG_LIMIT messages (about 1 s of ticks) behind within the window;
    // leave room for a loaded machine.
    cfg.window = Duration::from_millis(6000);
    let report = run_local(cfg).await?;
    let text = scenario::summary_text(&report);

    let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["baseline", "stopped"], "{text}");
    let (base, stopped) = (&report.steps[0], &report.steps[1]);
    // All four read in the baseline, but only the three others are measured.
    assert!(base.records > 0 && base.stopper_records > 0, "{text}");
    assert_eq!((stopped.gaps, stopped.evicted), (0, 0), "{text}");
    // The stopper fell behind and was closed with 1013; it read that close once
    // it read again.
    let f = &report.final_stats;
    assert_eq!((f.stoppers, f.stoppers_evicted), (1, 1), "{text}");
    assert_eq!(f.connections.closes_by_code.get(&1013), Some(&1), "{text}");
    assert_eq!(f.connections.ok, 3, "{text}");
    Ok(())
}

#[test]
fn command_line_spreads_the_load_over_worker_processes() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let port = rt.block_on(start_broadcast())?;
    let out = temp_dir("procs");
    let url = format!("ws://127.0.0.1:{port}/sub");
    let out_s = out.display().to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tickcast-bench"))
        .args([
            "fanout",
            "--target",
            "peer",
            "--label",
            "cli",
            "--case",
            "procs",
            "--url",
            &url,
            "--conns",
            "30",
            "--procs",
            "3",
            "--symbols",
            "4",
            "--rates",
            "300",
            "--window",
            "1",
            "--settle",
            "0.3",
            "--p99-bound-ms",
            "60000",
            "--quiet",
            "--out",
            &out_s,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // Serve while the bench runs; stop at the limit whatever happens.
    let status = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + TEST_LIMIT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok::<_, std::io::Error>(Some(status));
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })?;
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.is_some_and(|s| s.success()), "{stdout}\n{stderr}");
    let report: ScenarioReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("procs-cli.json"))?)?;
    assert_eq!((report.procs, report.subscribed), (3, 30), "{stdout}");
    let step = report.steps.first().ok_or("no step")?;
    assert!(step.records > 0 && step.gaps == 0 && step.pass, "{stdout}");
    // Latency samples came back from all three processes (10 subscribers each).
    assert!(
        step.latency_us.recv_to_client.count >= step.records / 2,
        "{stdout}"
    );
    assert_eq!(report.final_stats.connections.ok, 30, "{stdout}");
    assert!(stdout.contains("step rate 300"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
