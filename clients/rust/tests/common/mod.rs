//! Harness of the integration tests: the real `tickcast` daemon (a binary of another package,
//! built on demand), the real feed-sim (as a library, in the test process, as the engine's
//! tests use it), a small TCP proxy that can reset connections and corrupt records, and an
//! event log fed by the client under test.
//!
//! Finding the daemon: `env!("CARGO_BIN_EXE_...")` only names binaries of the package under
//! test, so the harness runs `cargo build --workspace --bins --example book` once per test
//! process, into the target directory and profile this test binary was built in (read from its
//! own path). Up to date, that is a no-op of a second (under `cargo test --workspace` it is
//! always up to date: same packages, same features); it never runs a stale daemon, and it
//! works the same under `cargo test -p tickcast-client`.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use feed_sim::{SimConfig, Simulator};
use serde_json::Value;
use tickcast_client::{BookView, ConnectionState, Event, Events, Resync};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream as TokioStream};
use tokio::sync::watch;

/// Upper bound for anything a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(40);

/// The directory of the profile this test was built in (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// Builds the daemon and the `book` example once per process; returns the profile directory.
pub fn built() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = profile_dir();
        let target = dir.parent().expect("target dir").to_path_buf();
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        // The whole workspace's binaries: the same package set as `cargo test --workspace`,
        // hence the same dependency features, so that under it this build is a no-op.
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "--quiet", "--locked", "--workspace", "--bins"])
            .args(["--example", "book", "--target-dir"])
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile != "debug" {
            cmd.args(["--profile", &profile]);
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of the daemon failed");
        dir
    })
}

/// A feed-sim on an ephemeral loopback port. Builds the daemon first (see [`built`]), so
/// that a first, slow build does not eat the simulator's run.
pub fn simulator(symbols: usize, rate: f64, updates: u64, seed: u64) -> Simulator {
    built();
    Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        symbols,
        seed,
        rate,
        updates: Some(updates),
        ..SimConfig::default()
    })
    .expect("start feed-sim")
}

/// The `tickcast` binary, killed when dropped.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
}

impl Daemon {
    /// Starts `tickcast --listen LISTEN --feed FEED --shards 1 ARGS..` and waits until
    /// `/healthz` says the feed is live.
    pub fn start(listen: &str, feed: &str, args: &[&str]) -> Self {
        Self::start_inner(listen, feed, args, None)
    }

    /// As [`Daemon::start`] with TLS (`args` name the certificate); `/healthz` is checked over
    /// HTTPS with `client`.
    pub fn start_tls(feed: &str, args: &[&str], client: Arc<rustls::ClientConfig>) -> Self {
        Self::start_inner("127.0.0.1:0", feed, args, Some(client))
    }

    fn start_inner(
        listen: &str,
        feed: &str,
        args: &[&str],
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let bin = built().join("tickcast");
        let mut child = Command::new(bin)
            .args(["--listen", listen, "--feed", feed, "--shards", "1"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tickcast");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line
                    .strip_prefix("tickcast listening on ws://")
                    .or_else(|| line.strip_prefix("tickcast listening on wss://"))
                {
                    let _ = tx.send(rest.trim_end_matches("/ws").to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(PATIENCE)
            .expect("tickcast did not print its address")
            .parse()
            .expect("address");
        let mut d = Self { child, addr };
        let deadline = Instant::now() + PATIENCE;
        let healthy = |addr| match &tls {
            None => matches!(http_get(addr, "/healthz"), Ok((200, _))),
            Some(cfg) => https_healthy(addr, cfg.clone()),
        };
        while !healthy(d.addr) {
            assert!(Instant::now() < deadline, "tickcast never became healthy");
            assert!(
                d.child.try_wait().ok().flatten().is_none(),
                "tickcast exited"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The `wss://` URL of a TLS daemon (its certificate names `localhost`).
    pub fn wss_url(&self) -> String {
        format!("wss://localhost:{}/ws", self.addr.port())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.1 GET; returns the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Levels as decimal strings, best first: (bids, asks).
pub type Strings = (Vec<[String; 2]>, Vec<[String; 2]>);

/// The simulator's book of `symbol`, cut to `depth` levels (0: all), as it prints it.
pub fn truth(sim: &Simulator, symbol: &str, depth: usize) -> (u64, Strings) {
    let (status, body) = http_get(sim.local_addr(), &format!("/book/{symbol}")).expect("GET");
    assert_eq!(status, 200, "GET /book/{symbol}: {body}");
    let v: Value = serde_json::from_str(&body).expect("book json");
    let n = if depth == 0 { usize::MAX } else { depth };
    let side = |k: &str| -> Vec<[String; 2]> {
        v[k].as_array()
            .expect("levels")
            .iter()
            .take(n)
            .map(|l| {
                [
                    l[0].as_str().expect("px").to_owned(),
                    l[1].as_str().expect("qty").to_owned(),
                ]
            })
            .collect()
    };
    (v["seq"].as_u64().unwrap_or(0), (side("bids"), side("asks")))
}

/// Whether `GET /healthz` over HTTPS answers 200.
fn https_healthy(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> bool {
    let Ok(sock) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let Ok(conn) = rustls::ClientConnection::new(cfg, name) else {
        return false;
    };
    let mut s = rustls::StreamOwned::new(conn, sock);
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    raw.starts_with(b"HTTP/1.1 200")
}

/// A CA and a `localhost` leaf signed by it (rcgen), as PEM: (CA, leaf chain, leaf key).
pub fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&key, &ca, &ca_key)
        .expect("leaf");
    (
        ca.pem(),
        format!("{}{}", leaf.pem(), ca.pem()),
        key.serialize_pem(),
    )
}

/// A rustls client configuration trusting only the CA in `ca_pem`.
pub fn trusting(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(der.expect("pem")).expect("add CA");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Everything the client reported, for the test to inspect while it runs.
#[derive(Default)]
pub struct Log {
    /// The latest whole book of each symbol.
    pub books: HashMap<String, BookView>,
    /// Every event but books and trades, in order, with the time it arrived.
    pub events: Vec<(Instant, Event)>,
    /// Book events: (symbol, seq, snapshot), in order, with the index of the next entry of
    /// `events` at that time (to place them among the others).
    pub book_events: Vec<(String, u64, bool, usize)>,
    pub trades: u64,
}

impl Log {
    pub fn states(&self) -> Vec<ConnectionState> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Connection(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn subscribed(&self) -> usize {
        self.states()
            .iter()
            .filter(|s| matches!(s, ConnectionState::Subscribed { .. }))
            .count()
    }

    pub fn resyncs(&self) -> Vec<Resync> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Resync(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Runs the client's events into a shared [`Log`].
pub fn record(mut events: Events) -> Arc<Mutex<Log>> {
    let log = Arc::new(Mutex::new(Log::default()));
    let l = Arc::clone(&log);
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let mut log = l.lock().expect("log");
            match ev {
                Event::Book(u) => {
                    let at = log.events.len();
                    let name = u.book.symbol().to_owned();
                    log.book_events
                        .push((name.clone(), u.book.seq(), u.snapshot, at));
                    log.books.insert(name, u.book);
                }
                Event::Trade(_) => log.trades += 1,
                Event::Resync(r) => {
                    // The book is not whole until the next snapshot.
                    log.books.remove(&*r.symbol);
                    log.events.push((Instant::now(), Event::Resync(r)));
                }
                other => log.events.push((Instant::now(), other)),
            }
        }
    });
    log
}

/// Waits (without blocking the runtime) until `cond` holds on the log, or panics.
pub async fn wait_for(log: &Arc<Mutex<Log>>, what: &str, cond: impl Fn(&Log) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if cond(&log.lock().expect("log")) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the simulator stopped, then until the client's book of every symbol equals the
/// simulator's truth at `depth`, decimal strings included; panics with the difference after
/// [`PATIENCE`].
pub async fn converge(sim: &Simulator, log: &Arc<Mutex<Log>>, symbols: &[&str], depth: usize) {
    let deadline = Instant::now() + PATIENCE;
    while !sim.is_done() {
        assert!(Instant::now() < deadline, "simulator never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let mut diff = None;
        for sym in symbols {
            let (_, want) = truth(sim, sym, depth);
            let have = log
                .lock()
                .expect("log")
                .books
                .get(*sym)
                .map(|b| b.to_decimal_strings());
            if have.as_ref() != Some(&want) {
                let top = |s: &Strings| {
                    (
                        s.0.iter().take(2).cloned().collect::<Vec<_>>(),
                        s.1.iter().take(2).cloned().collect::<Vec<_>>(),
                    )
                };
                diff = Some(format!(
                    "{sym} depth {depth}: client {:?} truth {:?}",
                    have.as_ref().map(top),
                    top(&want)
                ));
            }
        }
        let Some(diff) = diff else { return };
        assert!(Instant::now() < deadline, "books did not converge: {diff}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A record the proxy corrupted.
#[derive(Debug, Clone, Copy)]
pub struct Corruption {
    pub sid: u32,
    pub seq: u64,
    /// The record carried a checksum (flag bit 1): a 1.1 server.
    pub had_checksum: bool,
}

/// A TCP proxy between client and daemon that can reset every connection (RST, no close
/// frame) and corrupt one book delta on its way to the client (the quantity of its first level
/// with a quantity, plus one unit).
pub struct Proxy {
    pub addr: SocketAddr,
    reset: watch::Sender<u64>,
    armed: Arc<AtomicBool>,
    corrupted: Arc<Mutex<Option<Corruption>>>,
    pub accepted: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reset, _) = watch::channel(0u64);
        let p = Self {
            addr,
            reset,
            armed: Arc::new(AtomicBool::new(false)),
            corrupted: Arc::new(Mutex::new(None)),
            accepted: Arc::new(AtomicU64::new(0)),
        };
        let (reset_rx, armed, corrupted, accepted) = (
            p.reset.subscribe(),
            Arc::clone(&p.armed),
            Arc::clone(&p.corrupted),
            Arc::clone(&p.accepted),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TokioStream::connect(upstream).await else {
                    continue;
                };
                let mut reset = reset_rx.clone();
                reset.mark_unchanged();
                tokio::spawn(pump(
                    client,
                    server,
                    reset,
                    Arc::clone(&armed),
                    Arc::clone(&corrupted),
                ));
            }
        });
        p
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Resets every connection open now.
    pub fn reset_all(&self) {
        self.reset.send_modify(|g| *g += 1);
    }

    /// Corrupts the next book delta with a level.
    pub fn arm_corruption(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    pub fn corrupted(&self) -> Option<Corruption> {
        *self.corrupted.lock().expect("corrupted")
    }
}

async fn pump(
    mut client: TokioStream,
    mut server: TokioStream,
    mut reset: watch::Receiver<u64>,
    armed: Arc<AtomicBool>,
    corrupted: Arc<Mutex<Option<Corruption>>>,
) {
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    // Server-to-client bytes not yet forwarded: the upgrade response, then whole frames.
    let mut pending: Vec<u8> = Vec::new();
    let mut head_done = false;
    loop {
        tokio::select! {
            _ = reset.changed() => {
                for s in [&client, &server] {
                    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                }
                return;
            }
            n = client.read(&mut from_client) => {
                let Ok(n @ 1..) = n else { return };
                if server.write_all(&from_client[..n]).await.is_err() {
                    return;
                }
            }
            n = server.read(&mut from_server) => {
                let Ok(n @ 1..) = n else { return };
                pending.extend_from_slice(&from_server[..n]);
                let mut upto = 0;
                if !head_done {
                    match pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        Some(i) => {
                            head_done = true;
                            upto = i + 4;
                        }
                        None => continue,
                    }
                }
                while let Some((header, len, opcode, fin)) = frame_at(&pending[upto..]) {
                    let payload = upto + header..upto + header + len;
                    if fin && opcode == 2 && armed.load(Ordering::SeqCst) {
                        if let Some(c) = corrupt_in_place(&mut pending[payload.clone()]) {
                            armed.store(false, Ordering::SeqCst);
                            *corrupted.lock().expect("corrupted") = Some(c);
                        }
                    }
                    upto = payload.end;
                }
                if client.write_all(&pending[..upto]).await.is_err() {
                    return;
                }
                pending.drain(..upto);
            }
        }
    }
}

/// An unmasked WebSocket frame at the start of `b`: (header length, payload length, opcode,
/// FIN), or `None` until it is all there.
fn frame_at(b: &[u8]) -> Option<(usize, usize, u8, bool)> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let (header, len) = match b1 & 0x7f {
        126 => (4, usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]))),
        127 => {
            let bytes: [u8; 8] = b.get(2..10)?.try_into().ok()?;
            (10, usize::try_from(u64::from_be_bytes(bytes)).ok()?)
        }
        n => (2, usize::from(n)),
    };
    (b.len() >= header + len).then_some((header, len, b0 & 0x0f, b0 & 0x80 != 0))
}

/// Adds one unit to the quantity of the first non-zero level of the first delta in a binary
/// batch.
fn corrupt_in_place(batch: &mut [u8]) -> Option<Corruption> {
    let count = usize::from(u16::from_le_bytes([*batch.get(2)?, *batch.get(3)?]));
    let mut at = 8;
    for _ in 0..count {
        let len = usize::from(u16::from_le_bytes([*batch.get(at)?, *batch.get(at + 1)?]));
        let (kind, flags) = (*batch.get(at + 2)?, *batch.get(at + 3)?);
        if kind == 2 {
            let body = at + 32;
            let n = usize::from(u16::from_le_bytes([batch[body], batch[body + 1]]))
                + usize::from(u16::from_le_bytes([batch[body + 2], batch[body + 3]]));
            for l in 0..n {
                let q = body + 8 + 16 * l + 8;
                let qty = i64::from_le_bytes(batch.get(q..q + 8)?.try_into().ok()?);
                if qty != 0 {
                    batch[q..q + 8].copy_from_slice(&(qty + 1).to_le_bytes());
                    let sid = u32::from_le_bytes(batch[at + 4..at + 8].try_into().ok()?);
                    let seq = u64::from_le_bytes(batch[at + 8..at + 16].try_into().ok()?);
                    return Some(Corruption {
                        sid,
                        seq,
                        had_checksum: flags & 2 != 0,
                    });
                }
            }
        }
        at += len;
    }
    None
}
