//! Signed tokens (JWT, protocol §3.5) over loopback: admission (401/403 before the upgrade),
//! entitlements (`not_entitled`, `*` expanded to the entitled set), refresh and expiry (1008).

// Tests wait on real time; the sans-IO clock rule is for the engine library.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::pki::temp_dir;
use common::{Client, Daemon, raw_http, simulator};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tickcast_bench::control::Reply;
use tungstenite::Message;

const SECRET: &str = "a-test-secret-of-32-bytes-at-least";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn mint(claims: &Value, secret: &str) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn daemon(feed: &str) -> Daemon {
    let dir = temp_dir("jwt");
    let secret = dir.join("jwt.secret");
    // Surrounding whitespace is trimmed.
    std::fs::write(&secret, format!("  {SECRET}\n")).expect("write secret");
    Daemon::start(&[
        "--feed",
        feed,
        "--shards",
        "1",
        "--jwt-secret-file",
        secret.to_str().expect("path"),
    ])
}

fn upgrade_status(d: &Daemon, query: &str) -> u16 {
    let req = format!(
        "GET /ws{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw_http(d.addr, &req).expect("raw").0
}

/// Reads raw messages until a JSON reply with `id` (data messages are skipped).
fn raw_reply(c: &mut Client, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no reply {id}");
        match c.ws.read() {
            Ok(Message::Text(t)) if !t.starts_with('[') => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["id"] == json!(id) {
                    return v;
                }
            }
            Ok(Message::Close(f)) => panic!("closed: {f:?}"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn error_code(r: Reply) -> String {
    match r {
        Reply::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn subscribed(r: Reply) -> Vec<String> {
    match r {
        Reply::Subscribed { symbols, .. } => {
            let mut v: Vec<String> = symbols.into_iter().map(|s| s.symbol).collect();
            v.sort();
            v
        }
        other => panic!("expected subscribed, got {other:?}"),
    }
}

#[test]
fn admission_and_entitlements() {
    let sim = simulator(6, 500.0, None, 4);
    let d = daemon(&sim.feed_url());
    let exp = now_s() + 300;
    // Missing 401; bad signature, expired, no exp: 403 (before the upgrade).
    assert_eq!(upgrade_status(&d, ""), 401);
    let forged = mint(&json!({"exp": exp}), "another-secret-of-32-bytes-at-least");
    assert_eq!(upgrade_status(&d, &format!("?token={forged}")), 403);
    let expired = mint(&json!({"exp": now_s() - 10}), SECRET);
    assert_eq!(upgrade_status(&d, &format!("?token={expired}")), 403);
    let no_exp = mint(&json!({"symbols": ["*"]}), SECRET);
    assert_eq!(upgrade_status(&d, &format!("?token={no_exp}")), 403);
    assert_eq!(upgrade_status(&d, "?token=not.a.jwt"), 403);

    // Entitled to BTC-USD and SOL-*: a subset works, others are refused whole.
    let token = mint(
        &json!({"exp": exp, "symbols": ["BTC-USD", "SOL-*"]}),
        SECRET,
    );
    let mut c = Client::connect(&d.url(&format!("token={token}")));
    assert_eq!(error_code(c.subscribe(1, &["ETH-USD"], 10)), "not_entitled");
    assert_eq!(
        error_code(c.subscribe(2, &["BTC-USD", "ETH-USD"], 10)),
        "not_entitled"
    );
    assert!(
        c.symbols.is_empty(),
        "a refused subscribe subscribed something"
    );
    assert_eq!(subscribed(c.subscribe(3, &["BTC-USD"], 10)), ["BTC-USD"]);
    // `*` is the entitled set only.
    assert_eq!(
        subscribed(c.subscribe(4, &["*"], 10)),
        ["BTC-USD", "SOL-USD"]
    );
    assert!(c.pump(Duration::from_millis(500)));
    let sids: Vec<u32> = c.symbols.iter().map(|s| s.sid).collect();
    assert_eq!(sids.len(), 2);
    assert!(c.records > 0);
    assert!(c.seq_errors.is_empty(), "{:?}", c.seq_errors);

    // The token as a subprotocol works too; a token without `symbols` sees everything.
    let all = mint(&json!({"exp": exp}), SECRET);
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(d.url("")).expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("tickcast.v1, token.{all}").parse().expect("header"),
    );
    let (ws, _) = tungstenite::connect(req).expect("connect with subprotocol");
    drop(ws);
    let mut every = Client::connect(&d.url(&format!("token={all}")));
    assert_eq!(subscribed(every.subscribe(1, &["*"], 1)).len(), 6);

    // scripts/mint-jwt.py (docs/operations.md) mints tokens the daemon takes.
    let dir = temp_dir("jwt-script");
    let secret = dir.join("s");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/mint-jwt.py");
    if let Ok(out) = std::process::Command::new("python3")
        .args([script, "--secret-file", secret.to_str().expect("path")])
        .args(["--ttl", "60", "--symbols", "ETH-*"])
        .output()
    {
        assert!(out.status.success(), "mint-jwt.py failed");
        let token = String::from_utf8(out.stdout).expect("utf-8");
        let mut c = Client::connect(&d.url(&format!("token={}", token.trim())));
        assert_eq!(subscribed(c.subscribe(1, &["*"], 1)), ["ETH-USD"]);
    }
}

#[test]
fn refresh_extends_and_expiry_closes_with_1008() {
    let sim = simulator(4, 500.0, None, 5);
    let d = daemon(&sim.feed_url());
    let t0 = now_s();
    // Two connections whose tokens expire in ~2 s; one refreshes.
    let short = mint(
        &json!({"exp": t0 + 2, "symbols": ["BTC-USD", "ETH-USD"]}),
        SECRET,
    );
    let mut refreshed = Client::connect(&d.url(&format!("token={short}")));
    let mut expiring = Client::connect(&d.url(&format!("token={short}")));
    for c in [&mut refreshed, &mut expiring] {
        assert_eq!(
            subscribed(c.subscribe(1, &["BTC-USD", "ETH-USD"], 10)),
            ["BTC-USD", "ETH-USD"]
        );
    }
    // A bad refresh is an error; the connection stays (until the old exp).
    refreshed.send(json!({"op":"refresh","id":2,"token":"garbage"}));
    let r = raw_reply(&mut refreshed, 2);
    assert_eq!(r["op"], "error");
    assert_eq!(r["code"], "invalid_token");
    // A good one, with fewer symbols: the new exp, and ETH-USD dropped.
    let long = mint(&json!({"exp": t0 + 120, "symbols": ["BTC-*"]}), SECRET);
    refreshed.send(json!({"op":"refresh","id":3,"token":long}));
    let r = raw_reply(&mut refreshed, 3);
    assert_eq!(r["op"], "refreshed", "{r}");
    assert_eq!(r["exp"], json!(t0 + 120));
    assert_eq!(r["dropped"], json!(["ETH-USD"]));
    assert_eq!(
        error_code(refreshed.subscribe(4, &["ETH-USD"], 10)),
        "not_entitled"
    );

    // The other one is closed with 1008 "token expired" by the expiry timer (the wait is only a
    // bound; the close code and reason say who closed it).
    let code = expiring.until_closed(Duration::from_secs(6));
    assert_eq!(code, Some(1008), "not closed at expiry");
    let reason = expiring.close.as_ref().map(|f| f.reason.to_string());
    assert_eq!(reason.as_deref(), Some("token expired"));
    // The refreshed one lives on past the old exp and still streams.
    let before = refreshed.records;
    assert!(refreshed.pump(Duration::from_millis(800)));
    refreshed.send(json!({"op":"ping","id":5}));
    assert!(matches!(refreshed.reply(5), Reply::Pong { .. }));
    assert!(refreshed.close.is_none());
    assert!(
        refreshed.records > before,
        "the refreshed connection stopped streaming"
    );
}

/// SIGHUP reloads the HS256 secret file: after it, a new connection with a token signed by the
/// old secret is refused (403) and one signed by the new secret admitted; a connection admitted
/// before the reload streams on. The `symbols` op lists only the entitled symbols.
#[test]
fn sighup_reloads_the_secret_and_symbols_lists_the_entitled_set() {
    let sim = simulator(4, 500.0, None, 8);
    let dir = temp_dir("jwt-reload");
    let secret = dir.join("jwt.secret");
    std::fs::write(&secret, SECRET).expect("write secret");
    let d = Daemon::start(&[
        "--feed",
        &sim.feed_url(),
        "--shards",
        "1",
        "--jwt-secret-file",
        secret.to_str().expect("path"),
    ]);
    let exp = now_s() + 300;
    let old = mint(
        &json!({"exp": exp, "symbols": ["BTC-USD", "SOL-*"]}),
        SECRET,
    );
    let mut kept = Client::connect(&d.url(&format!("token={old}")));
    // `symbols` lists what the token covers, not the whole feed.
    kept.send(json!({"op": "symbols", "id": 7}));
    let listed = raw_reply(&mut kept, 7);
    let names: Vec<&str> = listed["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| s["symbol"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["BTC-USD", "SOL-USD"], "{listed}");
    assert_eq!(subscribed(kept.subscribe(1, &["BTC-USD"], 10)), ["BTC-USD"]);

    const NEW: &str = "the-rotated-secret-of-32-bytes-or-more";
    std::fs::write(&secret, format!("{NEW}\n")).expect("rotate secret");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let fresh = mint(&json!({"exp": exp}), NEW);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tungstenite::connect(d.url(&format!("token={fresh}"))).is_err() {
        assert!(
            Instant::now() < deadline,
            "a token signed with the new secret was never admitted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        upgrade_status(&d, &format!("?token={old}")),
        403,
        "a token signed with the old secret is still admitted"
    );
    // Without `symbols` the token covers the whole feed, and `symbols` lists all of it.
    let mut every = Client::connect(&d.url(&format!("token={fresh}")));
    every.send(json!({"op": "symbols", "id": 8}));
    assert_eq!(
        raw_reply(&mut every, 8)["symbols"].as_array().map(Vec::len),
        Some(4)
    );
    // The connection admitted with the old secret keeps streaming.
    let before = kept.records;
    assert!(kept.pump(Duration::from_millis(500)));
    assert!(
        kept.records > before,
        "the connection from before the reload stopped"
    );
    assert!(kept.close.is_none());
}
