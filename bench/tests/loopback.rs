//! Runs the bench's connection logic against a tiny in-test WebSocket server on
//! 127.0.0.1 that answers `symbols` and `subscribe` and sends hand-built batches
//! (laid out per shared/protocol.md), then checks the report's counts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tickcast_bench::control::{Reply, Request, SymbolInfo};
use tickcast_bench::{BenchError, Config, Report, run};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{WebSocketStream, accept_async};

const TEST_LIMIT: Duration = Duration::from_secs(20);
const SYMBOLS: [(&str, u32); 4] = [("AAA", 1), ("BBB", 2), ("CCC", 3), ("DDD", 4)];

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn info(name: &str) -> Option<SymbolInfo> {
    SYMBOLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, sid)| SymbolInfo {
            symbol: (*n).to_owned(),
            sid: *sid,
            px_decimals: 2,
            qty_decimals: 6,
            recovered: None,
        })
}

// ---- hand-built binary records (protocol.md §1) ----

fn header(
    len: usize,
    kind: u8,
    flags: u8,
    sid: u32,
    seq: u64,
    exch_ts: u64,
    recv_ts: u64,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u16).to_le_bytes());
    b.push(kind);
    b.push(flags);
    b.extend_from_slice(&sid.to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&exch_ts.to_le_bytes());
    b.extend_from_slice(&recv_ts.to_le_bytes());
    b
}

fn book_at(kind: u8, sid: u32, seq: u64, levels: &[(i64, i64)], ts: (u64, u64)) -> Vec<u8> {
    let flags = u8::from(kind == 1);
    let mut b = header(40 + 16 * levels.len(), kind, flags, sid, seq, ts.0, ts.1);
    b.extend_from_slice(&(levels.len() as u16).to_le_bytes()); // all bids
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    for (px, qty) in levels {
        b.extend_from_slice(&px.to_le_bytes());
        b.extend_from_slice(&qty.to_le_bytes());
    }
    b
}

/// Timestamps 3 ms (exchange) and 2 ms (tickcast) before now.
fn stamps() -> (u64, u64) {
    let now = now_ns();
    (now - 3_000_000, now - 2_000_000)
}

fn snapshot(sid: u32, seq: u64) -> Vec<u8> {
    book_at(1, sid, seq, &[(10_000, 5), (9_990, 7)], stamps())
}

fn delta(sid: u32, seq: u64) -> Vec<u8> {
    book_at(2, sid, seq, &[(10_000, 6)], stamps())
}

fn trade(sid: u32, seq: u64) -> Vec<u8> {
    trade_at(sid, seq, stamps())
}

fn trade_at(sid: u32, seq: u64, ts: (u64, u64)) -> Vec<u8> {
    let mut b = header(64, 3, 0, sid, seq, ts.0, ts.1);
    b.extend_from_slice(&10_000i64.to_le_bytes());
    b.extend_from_slice(&1i64.to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    b.push(1);
    b.extend_from_slice(&[0; 7]);
    b
}

fn status(sid: u32, code: u16) -> Vec<u8> {
    let mut b = header(40, 4, 0, sid, 0, 1, 2);
    b.extend_from_slice(&code.to_le_bytes());
    b.extend_from_slice(&[0; 6]);
    b
}

fn unknown(sid: u32) -> Vec<u8> {
    let mut b = header(48, 9, 0, sid, 123, 1, 2);
    b.extend_from_slice(&[0xEE; 16]);
    b
}

fn batch(records: &[Vec<u8>]) -> Vec<u8> {
    let mut b = vec![1, 0];
    b.extend_from_slice(&(records.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    for r in records {
        b.extend_from_slice(r);
    }
    b
}

// ---- the test server ----

#[derive(Debug, Clone, Copy)]
enum Script {
    /// Two symbols per connection; the connection holding sid 1 sees a gap and a bad batch.
    Gap,
    /// One symbol per connection: AAA refused, BBB evicted with 1013, CCC served.
    Outcomes,
}

type Ws = WebSocketStream<TcpStream>;

async fn send_bin(ws: &mut Ws, bytes: Vec<u8>) -> bool {
    ws.send(Message::binary(bytes)).await.is_ok()
}

async fn send_reply(ws: &mut Ws, reply: &Reply) -> bool {
    ws.send(Message::text(reply.to_json())).await.is_ok()
}

async fn drain(ws: &mut Ws) {
    while let Ok(Some(Ok(_))) = tokio::time::timeout(TEST_LIMIT, ws.next()).await {}
}

async fn on_subscribe(mut ws: Ws, script: Script, id: u64, names: Vec<String>) {
    let infos: Vec<SymbolInfo> = names.iter().filter_map(|n| info(n)).collect();
    let sids: Vec<u32> = infos.iter().map(|i| i.sid).collect();
    match script {
        Script::Gap => {
            let (Some(&s1), Some(&s2)) = (sids.first(), sids.get(1)) else {
                return;
            };
            if !send_reply(
                &mut ws,
                &Reply::Subscribed {
                    id,
                    epoch: None,
                    symbols: infos,
                },
            )
            .await
            {
                return;
            }
            let mut batches = vec![
                batch(&[
                    snapshot(s1, 100),
                    delta(s1, 101),
                    trade(s1, 7),
                    snapshot(s2, 50),
                ]),
                batch(&[
                    delta(s1, 102),
                    trade(s1, 8),
                    status(s1, 3),
                    unknown(s1),
                    delta(s2, 51),
                ]),
                batch(&[snapshot(s2, 60)]),
            ];
            if s1 == 1 {
                batches.push(batch(&[delta(s1, 104)])); // gap: 103 expected
                let mut bad = batch(&[status(s1, 1)]);
                bad[0] = 9; // unsupported version
                batches.push(bad);
            }
            for b in batches {
                if !send_bin(&mut ws, b).await {
                    return;
                }
            }
            // Late batch, inside the measured window.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let ts = stamps();
            let next = if s1 == 1 { 105 } else { 103 };
            let late = batch(&[
                book_at(2, s1, next, &[(10_000, 1)], ts),
                trade_at(s1, 9, ts),
                book_at(2, s2, 61, &[(9_990, 0)], ts),
            ]);
            if send_bin(&mut ws, late).await {
                drain(&mut ws).await;
            }
        }
        Script::Outcomes => match names.first().map(String::as_str) {
            Some("AAA") => {
                let refused = Reply::Error {
                    id: Some(id),
                    code: String::from("unknown_symbol"),
                    message: String::from("AAA is delisted"),
                };
                if send_reply(&mut ws, &refused).await {
                    drain(&mut ws).await;
                }
            }
            Some("BBB") => {
                if send_reply(
                    &mut ws,
                    &Reply::Subscribed {
                        id,
                        epoch: None,
                        symbols: infos,
                    },
                )
                .await
                    && send_bin(&mut ws, batch(&[snapshot(2, 1)])).await
                {
                    let frame = CloseFrame {
                        code: CloseCode::from(1013),
                        reason: "slow consumer".into(),
                    };
                    if ws.close(Some(frame)).await.is_ok() {
                        drain(&mut ws).await;
                    }
                }
            }
            _ => {
                if send_reply(
                    &mut ws,
                    &Reply::Subscribed {
                        id,
                        epoch: None,
                        symbols: infos,
                    },
                )
                .await
                    && send_bin(&mut ws, batch(&[snapshot(3, 1), delta(3, 2)])).await
                {
                    drain(&mut ws).await;
                }
            }
        },
    }
}

async fn handle(tcp: TcpStream, script: Script) {
    let Ok(mut ws) = accept_async(tcp).await else {
        return;
    };
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(TEST_LIMIT, ws.next()).await {
        let Message::Text(text) = msg else { continue };
        match Request::parse(&text) {
            Ok(Request::Symbols { id }) => {
                let symbols = SYMBOLS.iter().filter_map(|(n, _)| info(n)).collect();
                if !send_reply(&mut ws, &Reply::Symbols { id, symbols }).await {
                    return;
                }
            }
            Ok(Request::Subscribe { id, symbols, .. }) => {
                return on_subscribe(ws, script, id, symbols).await;
            }
            _ => {}
        }
    }
}

async fn start_server(script: Script) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(handle(tcp, script));
        }
    });
    Ok(format!("ws://{addr}/ws"))
}

fn config(url: String, conns: usize, per_conn: usize, duration: Duration) -> Config {
    Config {
        url,
        conns,
        symbols_per_conn: per_conn,
        depth: 25,
        duration,
        connect_rate: 1000,
        connect_timeout: Duration::from_secs(3),
        progress: false,
    }
}

async fn run_bounded(cfg: Config) -> Result<Report, BenchError> {
    match tokio::time::timeout(TEST_LIMIT, run(&cfg)).await {
        Ok(result) => result,
        Err(_) => panic!("bench run did not finish within {TEST_LIMIT:?}"),
    }
}

#[tokio::test]
async fn counts_records_gaps_resyncs_and_latency() -> Result<(), Box<dyn std::error::Error>> {
    let url = start_server(Script::Gap).await?;
    let report = run_bounded(config(url, 2, 2, Duration::from_millis(1200))).await?;

    let c = &report.connections;
    assert_eq!(
        (c.attempted, c.ok, c.failed, c.evicted, c.dropped),
        (2, 2, 0, 0, 0),
        "{report}"
    );
    // Per connection: 4 + 5 + 1 early records and 3 late ones; the sid-1
    // connection also gets the gap delta; the bad-version batch yields none.
    assert_eq!(report.records_checked, 2 * 13 + 1, "{report}");
    assert_eq!(report.gaps, 1, "{report}");
    assert_eq!(report.resyncs, 2, "{report}");
    assert_eq!(report.decode_errors, 1, "{report}");
    assert_eq!(report.deltas_before_snapshot, 0);
    assert_eq!(report.unknown_kinds, 2);
    assert_eq!(report.statuses.get(&3), Some(&2));
    assert!(!report.integrity_ok());
    assert!(
        report
            .first_errors
            .iter()
            .any(|e| e.contains("expected seq 103, got 104")),
        "{report}"
    );
    assert!(
        report.first_errors.iter().any(|e| e.contains("version 9")),
        "{report}"
    );

    // The late batches (3 records each) fall in the measured window; the early
    // ones may land on either side of the ramp's end.
    assert!((6..=27).contains(&report.records), "{report}");
    assert!((2..=10).contains(&report.messages), "{report}");
    assert!(report.bytes >= 2 * (8 + 56 + 64 + 56), "{report}");
    // Latency covers deltas and trades only: 3 late per connection, at most 5
    // early per connection plus the gap delta.
    let lat = &report.latency_us;
    assert!((6..=17).contains(&lat.recv_to_client.count), "{report}");
    assert_eq!(lat.exch_to_client.count, lat.recv_to_client.count);
    assert!(
        lat.recv_to_client.p50 >= 2_000 && lat.exch_to_client.p50 >= 3_000,
        "{report}"
    );
    assert!(lat.exch_to_client.max >= lat.recv_to_client.max);
    assert!(lat.exch_to_client.max < 10_000_000, "{report}");
    assert!(report.duration_secs >= 1.2 && report.records_per_sec > 0.0);

    let json: serde_json::Value = serde_json::from_str(&report.to_json_pretty()?)?;
    assert_eq!(json["gaps"], 1);
    assert_eq!(json["records_checked"], 27);
    assert_eq!(
        json["latency_us"]["recv_to_client"]["count"],
        lat.recv_to_client.count
    );
    let text = report.to_string();
    assert!(
        text.contains("gaps 1") && text.contains("p99.9") && text.contains("FAILED"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn counts_failed_evicted_and_ok_connections() -> Result<(), Box<dyn std::error::Error>> {
    let url = start_server(Script::Outcomes).await?;
    let report = run_bounded(config(url, 3, 1, Duration::from_millis(300))).await?;

    let c = &report.connections;
    assert_eq!(
        (c.attempted, c.ok, c.failed, c.evicted, c.closed, c.dropped),
        (3, 1, 1, 1, 0, 0),
        "{report}"
    );
    assert_eq!(c.closes_by_code.get(&1013), Some(&1));
    assert!(
        c.failure_reasons
            .keys()
            .any(|r| r.contains("unknown_symbol")),
        "{report}"
    );
    assert_eq!(report.records_checked, 3);
    assert_eq!(report.gaps, 0);
    assert!(report.integrity_ok(), "{report}");
    Ok(())
}

#[tokio::test]
async fn setup_errors_are_reported() -> Result<(), Box<dyn std::error::Error>> {
    // Too many symbols per connection for the server's list.
    let url = start_server(Script::Gap).await?;
    let err = run_bounded(config(url, 1, 5, Duration::from_millis(100))).await;
    assert!(
        matches!(
            err,
            Err(BenchError::TooFewSymbols {
                per_conn: 5,
                available: 4
            })
        ),
        "{err:?}"
    );

    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let err = run_bounded(config(
        format!("ws://127.0.0.1:{port}/ws"),
        1,
        1,
        Duration::from_millis(100),
    ))
    .await;
    assert!(matches!(err, Err(BenchError::Connect { .. })), "{err:?}");

    // Invalid configuration is refused before connecting.
    let mut bad = config(
        String::from("ws://127.0.0.1:1/ws"),
        1,
        1,
        Duration::from_millis(100),
    );
    bad.depth = 7;
    assert!(matches!(run_bounded(bad).await, Err(BenchError::Config(_))));
    Ok(())
}
