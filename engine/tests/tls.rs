//! wss:// over loopback: the daemon with a certificate made by the test (rcgen), tungstenite
//! clients over rustls trusting the test's CA (protocol §3.5).

// Tests wait on real time; the sans-IO clock rule is for the engine library.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::pki::{Pki, temp_dir};
use common::{Client, Daemon, converge, simulator, tls_stream};
use tickcast_bench::control::Reply;

fn tls_args<'a>(feed: &'a str, cert: &'a str, key: &'a str) -> Vec<&'a str> {
    vec![
        "--feed",
        feed,
        "--shards",
        "1",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]
}

/// Books over wss:// (TLS 1.3 and TLS 1.2 clients) equal the simulator's truth; plain HTTP
/// and garbage on the TLS port close only that connection; HTTPS serves /healthz and /metrics.
#[test]
fn wss_books_equal_truth_and_plain_http_on_the_tls_port_is_closed() {
    let sim = simulator(6, 3_000.0, Some(2_500), 11);
    let pki = Pki::new("a");
    let dir = temp_dir("tls-books");
    let (cert, key) = pki.write(&dir);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let feed = sim.feed_url();
    let d = Daemon::start_tls(&tls_args(&feed, cert, key), pki.client_any());
    let (status, body) = d.get("/metrics").expect("https /metrics");
    assert_eq!(status, 200);
    assert!(body.contains("tickcast_connections"));

    let mut c13 = Client::connect_tls(&d.url(""), d.addr, pki.client(&[&rustls::version::TLS13]))
        .expect("TLS 1.3");
    let mut c12 = Client::connect_tls(
        &d.url("format=json"),
        d.addr,
        pki.client(&[&rustls::version::TLS12]),
    )
    .expect("TLS 1.2");
    for c in [&mut c13, &mut c12] {
        assert!(matches!(
            c.subscribe(1, &["BTC-USD", "ETH-USD", "SOL-USD"], 10),
            Reply::Subscribed { .. }
        ));
    }
    // Plain HTTP and garbage on the TLS port: closed, nothing in plaintext comes back.
    for junk in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x16\x03\x01\x00\x05hello garbage garbage garbage",
    ] {
        let mut s = TcpStream::connect(d.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(junk).expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(
            !String::from_utf8_lossy(&got).contains("HTTP/1.1"),
            "plaintext answer on the TLS port: {got:?}"
        );
    }
    let mut refs: Vec<(&mut Client, usize)> = vec![(&mut c13, 10), (&mut c12, 10)];
    converge(&sim, &mut refs);
    for c in [&c13, &c12] {
        assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);
        assert!(c.close.is_none());
        assert_eq!(c.symbols.len(), 3);
    }
    assert_eq!(d.get("/healthz").expect("https").0, 200);
}

/// A client that only speaks TLS 1.1 or older gets no session: rustls has nothing below 1.2.
/// (Checked with a hand-made TLS 1.1 ClientHello: the server answers with an alert or closes.)
#[test]
fn tls_1_1_is_refused_and_a_stalled_handshake_times_out() {
    let sim = simulator(2, 100.0, None, 1);
    let pki = Pki::new("b");
    let dir = temp_dir("tls-old");
    let (cert, key) = pki.write(&dir);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let feed = sim.feed_url();
    let mut args = tls_args(&feed, cert, key);
    args.extend(["--handshake-timeout", "1"]);
    let d = Daemon::start_tls(&args, pki.client_any());
    // A minimal TLS 1.1 ClientHello (legacy version 0x0302, one suite, no extensions).
    let mut hello = vec![0x03, 0x02];
    hello.extend([0u8; 32]); // random
    hello.push(0); // session id
    hello.extend([0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    hello.extend([0x01, 0x00]); // compression: null
    let mut hs = vec![0x01, 0, 0, hello.len() as u8];
    hs.extend(&hello);
    let mut rec = vec![0x16, 0x03, 0x02, 0, hs.len() as u8];
    rec.extend(&hs);
    let mut s = TcpStream::connect(d.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&rec).expect("write");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    // Nothing but (at most) an alert record: no ServerHello.
    assert!(
        got.is_empty() || got[0] == 0x15,
        "TLS 1.1 hello was answered with {got:?}"
    );

    // A client that connects and says nothing is closed after the handshake timeout while a
    // wss:// subscriber streams on.
    let mut c = d.client("");
    assert!(matches!(
        c.subscribe(1, &["BTC-USD"], 1),
        Reply::Subscribed { .. }
    ));
    let mut idle = TcpStream::connect(d.addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    // The server closes it (end of stream or reset), not our read timeout.
    let read = idle.read_to_end(&mut got);
    assert!(
        !matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the stalled handshake was never closed: {read:?}"
    );
    // Closed, with at most an alert (close_notify): no plaintext 408 on a TLS port.
    assert!(
        got.is_empty() || got[0] == 0x15,
        "a stalled TLS handshake got {got:?}"
    );
    let before = c.records;
    assert!(c.pump(Duration::from_millis(500)));
    c.send(serde_json::json!({"op":"ping","id":9}));
    assert!(matches!(c.reply(9), Reply::Pong { .. }));
    assert!(c.records >= before);
}

/// SIGHUP reloads the certificate: new connections see the new one (a client trusting only
/// the old CA is refused), an existing connection keeps streaming.
#[test]
fn sighup_reloads_the_certificate_and_keeps_connections() {
    let sim = simulator(3, 1_000.0, None, 2);
    let old = Pki::new("old");
    let new = Pki::new("new");
    let dir = temp_dir("tls-reload");
    let (cert, key) = old.write(&dir);
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let feed = sim.feed_url();
    let d = Daemon::start_tls(&tls_args(&feed, cert_s, key_s), old.client_any());
    let mut kept = d.client("");
    assert!(matches!(
        kept.subscribe(1, &["BTC-USD"], 10),
        Reply::Subscribed { .. }
    ));
    assert!(kept.pump(Duration::from_millis(300)));
    let before = kept.records;
    assert!(before > 0, "no records before the reload");

    new.write(&dir);
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(ok.success());
    // New connections get the new certificate (trusted by the new CA, not the old one).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if Client::connect_tls(&d.url(""), d.addr, new.client_any()).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stale = tls_stream(d.addr, old.client_any()).expect("tcp");
    assert!(
        stale
            .write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
            .and_then(|()| stale.flush())
            .is_err()
            || stale.read(&mut [0u8; 16]).is_err(),
        "a client trusting only the old CA still got through"
    );
    // The connection from before the reload streams on.
    assert!(kept.pump(Duration::from_millis(500)));
    assert!(
        kept.records > before,
        "the old connection stopped streaming"
    );
    assert!(kept.close.is_none());
    assert!(kept.seq_errors.is_empty(), "{:?}", kept.seq_errors);
}

/// The daemon's delivery-latency histogram (`tickcast_delivery_latency_seconds`, every shard
/// summed) as (upper bound in seconds, cumulative count) per bucket.
fn delivery_buckets(d: &Daemon) -> Vec<(f64, u64)> {
    let (_, body) = d.get("/metrics").expect("metrics");
    let mut by_le: Vec<(f64, u64)> = Vec::new();
    for l in body
        .lines()
        .filter(|l| l.starts_with("tickcast_delivery_latency_seconds_bucket{"))
    {
        let Some(le) = l.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("le")
        };
        let n: u64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match by_le.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += n,
            None => by_le.push((le, n)),
        }
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_le
}

/// The bucket bound under which 99 % of the deliveries between two histogram samples fell.
fn delivery_p99(before: &[(f64, u64)], after: &[(f64, u64)]) -> f64 {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .map(|&(le, n)| {
            let b = before.iter().find(|(l, _)| *l == le).map_or(0, |x| x.1);
            (le, n - b)
        })
        .collect();
    let total = diff.last().map_or(0, |x| x.1);
    diff.iter()
        .find(|(_, c)| *c as f64 >= 0.99 * total as f64)
        .map_or(f64::NAN, |x| x.0)
}

/// What TLS costs the engine (docs/benchmarks.md, "TLS"): the same feed, subscribers and
/// duration against a plain and a TLS daemon, alternated (`TLS_COST_ROUNDS` pairs, ws first);
/// delivered records/s, the p99 of the time from tickcast reading an event off the feed to the
/// subscriber decoding it (the client threads timestamp every record) and of the daemon's own
/// delivery histogram, and engine CPU (user/system) per delivered record. Ignored: a
/// measurement, run by hand, e.g. `TICKCAST_BIN=target/release/tickcast TLS_COST_CONNS=1000
/// TLS_COST_RATE=500 TLS_COST_ROUNDS=3 nice cargo test --release -p tickcast --test tls
/// tls_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn tls_cost() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let _ = rlimit::increase_nofile_limit(8192);
    let conns = env("TLS_COST_CONNS", 100) as usize;
    let secs = env("TLS_COST_SECS", 10);
    let rate = env("TLS_COST_RATE", 5_000) as f64;
    let rounds = env("TLS_COST_ROUNDS", 1);
    let sim = simulator(20, rate, None, 9);
    let pki = Pki::new("cost");
    let dir = temp_dir("tls-cost");
    let (cert, key) = pki.write(&dir);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let feed = sim.feed_url();
    let tick_ns = 1e9 / 100.0; // USER_HZ
    let now_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    let mut results: Vec<(bool, [f64; 6])> = Vec::new();
    for tls in (0..rounds).flat_map(|_| [false, true]) {
        let d = if tls {
            Daemon::start_tls(&tls_args(&feed, cert, key), pki.client_any())
        } else {
            Daemon::start(&["--feed", &feed, "--shards", "1"])
        };
        let rss0 = d.rss_kib();
        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let merged = Arc::new(Mutex::new(tickcast_bench::hist::new_us().expect("hist")));
        let mut threads = Vec::new();
        for _ in 0..conns {
            let mut c = d.client("");
            assert!(matches!(
                c.subscribe(1, &["*"], 10),
                Reply::Subscribed { .. }
            ));
            let (stop, measuring, merged) = (stop.clone(), measuring.clone(), merged.clone());
            threads.push(std::thread::spawn(move || {
                let mut h = tickcast_bench::hist::new_us().expect("hist");
                while !stop.load(Ordering::Relaxed) {
                    match c.ws.read() {
                        Ok(tungstenite::Message::Binary(b)) => {
                            if !measuring.load(Ordering::Relaxed) {
                                continue;
                            }
                            let now = now_ns();
                            if let Ok(recs) = tickcast_bench::wire::decode_batch(&b) {
                                for r in recs {
                                    let t = r.header.recv_ts;
                                    if r.header.seq != 0 && t > 0 && now > t {
                                        let _ = h.record((now - t) / 1_000);
                                    }
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(tungstenite::Error::Io(e))
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
                tickcast_bench::hist::merge(&mut merged.lock().expect("lock"), &h);
            }));
        }
        std::thread::sleep(Duration::from_secs(2));
        let sample = || {
            let p = tickcast_bench::procstat::sample(d.pid()).expect("procstat");
            (
                d.metric("tickcast_records_out_total"),
                d.metric("tickcast_bytes_out_total"),
                d.metric("tickcast_messages_out_total"),
                p.utime,
                p.stime,
            )
        };
        let h0 = delivery_buckets(&d);
        measuring.store(true, Ordering::Relaxed);
        let (r0, b0, m0, u0, s0) = sample();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let (r1, b1, m1, u1, s1) = sample();
        let el = t0.elapsed().as_secs_f64();
        measuring.store(false, Ordering::Relaxed);
        let engine_p99 = delivery_p99(&h0, &delivery_buckets(&d));
        let rss_per_conn = (d.rss_kib().saturating_sub(rss0) * 1024) as f64 / conns as f64;
        let evictions = d.metric("tickcast_evictions_total");
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        let h = merged.lock().expect("lock");
        let client_p99_ms = h.value_at_quantile(0.99) as f64 / 1e3;
        let client_p50_ms = h.value_at_quantile(0.50) as f64 / 1e3;
        let recs = (r1 - r0) as f64;
        let msgs = (m1 - m0) as f64;
        let user_ns = (u1 - u0) as f64 * tick_ns;
        let sys_ns = (s1 - s0) as f64 * tick_ns;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "{}: {conns} conns, {:.0} records/s in {:.0} messages/s, {:.1} MB/s, client latency p50 {client_p50_ms:.2} ms p99 {client_p99_ms:.2} ms ({} samples), engine delivery p99 <= {:.1} ms, engine CPU {:.0}% user {:.0}% sys, per record {:.0} ns user + {:.0} ns sys, per message {:.2} us user + {:.2} us sys, RSS {:.0} bytes per connection, evictions {evictions}, loadavg {}",
            if tls { "wss" } else { "ws " },
            recs / el,
            msgs / el,
            (b1 - b0) as f64 / el / 1e6,
            h.len(),
            engine_p99 * 1e3,
            user_ns / el / 1e7,
            sys_ns / el / 1e7,
            user_ns / recs,
            sys_ns / recs,
            user_ns / msgs / 1e3,
            sys_ns / msgs / 1e3,
            rss_per_conn,
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        );
        results.push((
            tls,
            [
                recs / el,
                client_p99_ms,
                engine_p99 * 1e3,
                user_ns / el / 1e7,
                sys_ns / el / 1e7,
                (user_ns + sys_ns) / recs,
            ],
        ));
    }
    let median = |tls: bool, i: usize| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|r| r.0 == tls)
            .map(|r| r.1[i])
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for tls in [false, true] {
        println!(
            "median {} ({rounds} runs): {:.0} records/s, client p99 {:.2} ms, engine delivery p99 <= {:.1} ms, engine CPU {:.0}% user {:.0}% sys, {:.0} ns CPU per record",
            if tls { "wss" } else { "ws " },
            median(tls, 0),
            median(tls, 1),
            median(tls, 2),
            median(tls, 3),
            median(tls, 4),
            median(tls, 5),
        );
    }
}

/// The Python client (`engine/tests/py/wss_book.py`: `websockets` over Python's `ssl`, pinned
/// to one TLS version), driven over its stdin/stdout.
struct PyClient {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stdin: std::process::ChildStdin,
}

impl PyClient {
    /// Starts the client; fails loudly when python3 or its `websockets` package is missing
    /// (scripts/deps.sh installs it).
    fn spawn(url: &str, ca: &std::path::Path, version: &str, depth: usize) -> Self {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let python = std::env::var("TICKCAST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let probe = Command::new(&python)
            .args(["-c", "import websockets"])
            .output()
            .unwrap_or_else(|e| {
                panic!("{python} is required for this test (scripts/deps.sh): {e}")
            });
        assert!(
            probe.status.success(),
            "Python's websockets package is missing (scripts/deps.sh installs it: pip install websockets): {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/wss_book.py");
        let mut child = Command::new(&python)
            .arg(script)
            .arg(url)
            .arg(ca)
            .arg(version)
            .arg(depth.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the Python client");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            stdin,
        }
    }

    /// The next line the client prints, as JSON; panics when it exits or says nothing in time.
    fn next(&mut self) -> serde_json::Value {
        match self.lines.recv_timeout(common::PATIENCE) {
            Ok(line) => serde_json::from_str(&line).expect("a JSON line from the Python client"),
            Err(e) => panic!(
                "the Python client said nothing ({e}); exit status {:?}",
                self.child.try_wait()
            ),
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the Python client");
        self.stdin.flush().expect("flush");
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client's book of one symbol, scaled like the truth.
fn py_levels(
    book: &serde_json::Value,
    info: &tickcast_bench::control::SymbolInfo,
) -> common::Levels {
    let side = |k: &str| -> Vec<(i64, i64)> {
        book[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| {
                        (
                            common::scaled(l[0].as_str().expect("px"), info.px_decimals),
                            common::scaled(l[1].as_str().expect("qty"), info.qty_decimals),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    (side("bids"), side("asks"))
}

/// Python's `websockets` over Python's `ssl` (OpenSSL), pinned to TLS 1.3 and to TLS 1.2,
/// trusting only the test's CA, subscribes to every symbol while the feed runs and, once the
/// feed has stopped, holds books equal to the simulator's truth with no sequence gap; pinned
/// to TLS 1.1 it gets no session at all (the server answers its hello with an alert).
#[test]
fn python_websockets_over_tls_1_3_and_1_2_gets_books_equal_to_truth_and_1_1_is_refused() {
    use tickcast_bench::control::SymbolInfo;
    let sim = simulator(5, 1_000.0, Some(4_000), 23);
    let pki = Pki::new("py");
    let dir = temp_dir("tls-py");
    let (cert, key) = pki.write(&dir);
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write ca.pem");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let feed = sim.feed_url();
    let d = Daemon::start_tls(&tls_args(&feed, cert, key), pki.client_any());
    let depth = 10;
    let mut clients: Vec<(&str, PyClient)> = ["1.3", "1.2"]
        .into_iter()
        .map(|v| (v, PyClient::spawn(&d.url(""), &ca, v, depth)))
        .collect();
    let mut infos: Vec<SymbolInfo> = Vec::new();
    for (v, c) in &mut clients {
        let hello = c.next();
        assert_eq!(
            hello["tls"],
            if *v == "1.3" { "TLSv1.3" } else { "TLSv1.2" },
            "negotiated version: {hello}"
        );
        let got: Vec<SymbolInfo> =
            serde_json::from_value(hello["symbols"].clone()).expect("symbol infos");
        assert_eq!(got.len(), 5, "{hello}");
        infos = got;
    }
    let deadline = Instant::now() + common::PATIENCE;
    while !sim.is_done() {
        assert!(Instant::now() < deadline, "the simulator never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (v, c) in &mut clients {
        loop {
            c.say("dump");
            let dump = c.next();
            let errors = dump["seq_errors"].as_array().expect("seq_errors");
            assert!(errors.is_empty(), "TLS {v}: sequence errors {errors:?}");
            let diff = infos.iter().find_map(|info| {
                let want = common::cut(&common::truth(&sim, info), depth);
                let have = py_levels(&dump["books"][&info.symbol], info);
                (have != want).then(|| format!("{}: client {have:?}\n truth {want:?}", info.symbol))
            });
            let Some(diff) = diff else {
                assert!(dump["records"].as_u64().unwrap_or(0) > 5, "{dump}");
                break;
            };
            assert!(
                Instant::now() < deadline,
                "TLS {v}: the Python client's books did not converge: {diff}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c.say("quit");
        let status = c.child.wait().expect("wait");
        assert!(
            status.success(),
            "TLS {v}: the Python client exited {status}"
        );
    }

    // TLS 1.1 (OpenSSL allowed to offer it): the handshake fails, the daemon serves on.
    let mut old = PyClient::spawn(&d.url(""), &ca, "1.1", depth);
    let refused = old.next();
    let why = refused["refused"]
        .as_str()
        .unwrap_or_else(|| panic!("TLS 1.1 got a session: {refused}"));
    // The refusal is the server's: an alert it sent (rustls answers a hello without TLS 1.2
    // or 1.3 with handshake_failure or protocol_version), not OpenSSL declining locally.
    assert!(
        why.contains("ALERT_HANDSHAKE_FAILURE") || why.contains("ALERT_PROTOCOL_VERSION"),
        "TLS 1.1 failed for another reason than the server's refusal: {why}"
    );
    assert_eq!(old.child.wait().expect("wait").code(), Some(3));
    assert_eq!(d.get("/healthz").expect("https").0, 200);
}
