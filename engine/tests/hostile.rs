//! Hostile clients against a well-behaved subscriber, over real loopback sockets: every bad peer
//! gets its documented close code or HTTP status, the good one loses nothing, the daemon stays up
//! and its memory returns near where it started. `/metrics` is read with an independent
//! Prometheus text-format parser and its counters must move as the bad peers act.

#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Client, Daemon, PATIENCE, http_get, raw_http, simulator};
use tickcast_bench::control::Reply;
use tungstenite::client::IntoClientRequest;

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A raw WebSocket connection, upgraded, for sending what no library would send.
fn raw_ws(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(UPGRADE.as_bytes()).expect("upgrade");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("101");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads server frames until a close frame; returns its code and the text messages seen.
fn close_code(s: &mut TcpStream) -> (Option<u16>, Vec<String>) {
    let mut texts = Vec::new();
    let read = |n: usize, s: &mut TcpStream| -> Option<Vec<u8>> {
        let mut v = vec![0u8; n];
        s.read_exact(&mut v).ok()?;
        Some(v)
    };
    loop {
        let Some(h) = read(2, s) else {
            return (None, texts);
        };
        let len = match h[1] & 0x7f {
            126 => read(2, s).map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
            127 => read(8, s).map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default())),
            n => Some(u64::from(n)),
        };
        let Some(len) = len else { return (None, texts) };
        let Some(payload) = read(len as usize, s) else {
            return (None, texts);
        };
        match h[0] & 0x0f {
            8 => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                return (code, texts);
            }
            1 => texts.push(String::from_utf8_lossy(&payload).into_owned()),
            _ => {}
        }
    }
}

fn scrape(d: &Daemon) -> prometheus_parse::Scrape {
    let (status, body) = http_get(d.addr, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format")
}

/// Sum of the samples of `name` whose labels include `labels`.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn hostile_peers(addr: SocketAddr) {
    // Garbage instead of HTTP: 400.
    assert_eq!(
        raw_http(addr, "\u{1}\u{2}\u{3} garbage \u{7f}\r\n\r\n")
            .expect("raw")
            .0,
        400
    );

    // Slowloris: a head that never completes gets 408 at the handshake deadline, then EOF.
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.set_read_timeout(Some(PATIENCE)).expect("timeout");
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web")
        .expect("partial head");
    let mut resp = String::new();
    let _ = slow.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 408"), "slowloris got {resp:?}");

    // A frame larger than --max-message-bytes: 1009, decided from the header alone.
    let mut s = raw_ws(addr);
    let mut big = frame(1, &vec![b'a'; 100_000]);
    big.truncate(200);
    s.write_all(&big).expect("write");
    assert_eq!(close_code(&mut s).0, Some(1009));

    // Unmasked: 1002. Invalid UTF-8: 1007. Binary data: 1003.
    let mut s = raw_ws(addr);
    s.write_all(&[0x81, 0x02, b'h', b'i']).expect("write");
    assert_eq!(close_code(&mut s).0, Some(1002));
    let mut s = raw_ws(addr);
    s.write_all(&frame(1, &[b'o', 0xff, 0xfe])).expect("write");
    assert_eq!(close_code(&mut s).0, Some(1007));
    let mut s = raw_ws(addr);
    s.write_all(&frame(2, b"\x01\x02")).expect("write");
    assert_eq!(close_code(&mut s).0, Some(1003));

    // A ping flood: past the control-message rate limit, 1008.
    let mut s = raw_ws(addr);
    let flood: Vec<u8> = (0..500u32)
        .flat_map(|i| frame(9, &i.to_be_bytes()))
        .collect();
    s.write_all(&flood).expect("write");
    assert_eq!(close_code(&mut s).0, Some(1008));

    // A subscribe flood: answered with rate_limited errors, then 1008.
    let mut s = raw_ws(addr);
    let flood: Vec<u8> = (0..200)
        .flat_map(|i| {
            frame(
                1,
                format!(r#"{{"op":"subscribe","id":{i},"symbols":["*"]}}"#).as_bytes(),
            )
        })
        .collect();
    s.write_all(&flood).expect("write");
    let (code, texts) = close_code(&mut s);
    assert_eq!(code, Some(1008));
    assert!(
        texts.iter().any(|t| t.contains("\"rate_limited\"")),
        "no rate_limited reply"
    );

    // Past the per-IP limit: refused with 503 at accept; the others stay connected.
    let mut held = Vec::new();
    for _ in 0..45 {
        held.push(TcpStream::connect(addr).expect("connect"));
    }
    let mut refused = 0;
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut buf = [0u8; 12];
        if s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"HTTP/1.1 503"))
        {
            refused += 1;
        }
    }
    assert!(
        refused >= 5,
        "only {refused} of 45 refused with a per-IP limit of 40"
    );
}

#[test]
fn hostile_clients_do_not_hurt_a_good_subscriber() {
    let sim = simulator(6, 2_000.0, None, 21);
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        "--handshake-timeout",
        "1",
        "--max-message-bytes",
        "8192",
        "--max-conns-per-ip",
        "40",
        "--control-rate",
        "20",
        "--control-burst",
        "20",
        "--control-strikes",
        "5",
    ]);
    let mut good = Client::connect(&d.url(""));
    let Reply::Subscribed { symbols, .. } = good.subscribe(1, &["*"], 10) else {
        panic!("not subscribed")
    };
    assert_eq!(symbols.len(), 6);
    good.pump(Duration::from_secs(1));
    let before = scrape(&d);
    let rss_before = d.rss_kib();
    let records_before = good.records;

    let addr = d.addr;
    std::thread::scope(|scope| {
        let bad = scope.spawn(move || hostile_peers(addr));
        let deadline = Instant::now() + PATIENCE * 2;
        while !bad.is_finished() {
            assert!(
                good.pump(Duration::from_millis(100)),
                "good subscriber closed: {:?}",
                good.close
            );
            assert!(Instant::now() < deadline, "hostile peers took too long");
        }
        if let Err(panic) = bad.join() {
            std::panic::resume_unwind(panic);
        }
    });
    // Let the held connections go and their handshakes expire.
    good.pump(Duration::from_secs(2));

    assert!(
        good.seq_errors.is_empty(),
        "good subscriber saw {:?}",
        good.seq_errors
    );
    assert!(good.close.is_none());
    assert!(
        good.records > records_before + 100,
        "good subscriber starved"
    );
    assert_eq!(http_get(d.addr, "/healthz").expect("healthz").0, 200);

    let after = scrape(&d);
    let grew = |name: &str, labels: &[(&str, &str)], by: f64| {
        let (a, b) = (value(&before, name, labels), value(&after, name, labels));
        assert!(
            b - a >= by,
            "{name}{labels:?} went from {a} to {b}, expected +{by}"
        );
    };
    grew(
        "tickcast_refusals_total",
        &[("reason", "max_conns_per_ip")],
        5.0,
    );
    grew("tickcast_protocol_closes_total", &[], 4.0);
    grew("tickcast_policy_closes_total", &[], 2.0);
    grew("tickcast_handshake_failures_total", &[], 2.0);
    grew("tickcast_request_errors_total", &[], 1.0);
    assert!(
        value(&after, "tickcast_connections", &[]) <= 3.0,
        "connections not released"
    );
    let rss_after = d.rss_kib();
    assert!(
        rss_after < rss_before + 16 * 1024,
        "engine RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[test]
fn origin_and_token_are_checked_before_the_upgrade() {
    let sim = simulator(2, 200.0, None, 3);
    let dir = std::env::temp_dir().join(format!("tickcast-tokens-{}", std::process::id()));
    std::fs::write(&dir, "desk-token-1\n").expect("tokens file");
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        "--allowed-origins",
        "https://desk.example.com",
        "--tokens-file",
        dir.to_str().expect("path"),
    ]);
    let up = |extra: &str, query: &str| {
        raw_http(
            d.addr,
            &format!(
                "GET /ws{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            ),
        )
        .map(|r| r.0)
        .unwrap_or(0)
    };
    let ok_origin = "Origin: https://desk.example.com\r\n";
    assert_eq!(
        up("Origin: https://evil.example\r\n", "?token=desk-token-1"),
        403
    );
    assert_eq!(up("", "?token=desk-token-1"), 403);
    assert_eq!(up(ok_origin, ""), 401);
    assert_eq!(up(ok_origin, "?token=wrong"), 403);
    // Good origin and token: the upgrade goes through (raw_http reads until the server closes,
    // so use a real client for the positive cases).
    let request = |query: &str, protocols: Option<&str>| {
        let mut req = d.url(query).into_client_request().expect("request");
        let h = req.headers_mut();
        h.insert(
            "Origin",
            "https://desk.example.com".parse().expect("header"),
        );
        if let Some(p) = protocols {
            h.insert("Sec-WebSocket-Protocol", p.parse().expect("header"));
        }
        req
    };
    let (_ws, resp) =
        tungstenite::connect(request("token=desk-token-1", None)).expect("token in the query");
    assert_eq!(resp.status(), 101);
    let req = request("", Some("tickcast.v1, token.desk-token-1"));
    let (_ws, resp) = tungstenite::connect(req).expect("token as a subprotocol");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("tickcast.v1")
    );
    let _ = std::fs::remove_file(&dir);
}
