//! The `feed-sim` binary: flag errors, busy port, and a real run on an ephemeral port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_feed-sim");

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run feed-sim");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_exit_non_zero_with_a_message() {
    let (code, err) = run(&["--symbols", "many"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--symbols"), "{err}");
    let (code, err) = run(&["--listen", "not-an-address"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--rate", "0", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("rate"), "{err}");
    let (code, err) = run(&["--symbols", "0", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--no-such-flag"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn busy_port_exits_with_failure() {
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = holder.local_addr().expect("addr").to_string();
    let (code, err) = run(&["--listen", &addr]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
}

#[test]
fn serves_until_killed() {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--symbols",
            "3",
            "--updates",
            "10",
            "--depth",
            "100",
        ])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn feed-sim");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // The first lines are logs; the "listening" one carries the bound address.
    let addr: SocketAddr = loop {
        let line = match lines.next() {
            Some(Ok(l)) => l,
            other => {
                let _ = child.kill();
                panic!("feed-sim ended before listening: {other:?}");
            }
        };
        if line.contains("feed-sim listening") {
            let token = line
                .split_whitespace()
                .find_map(|t| t.strip_prefix("addr="))
                .expect("addr field");
            break token.parse().expect("address");
        }
    };
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(b"GET /book/BTC-USD HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains("\"symbol\":\"BTC-USD\""), "{resp}");
    child.kill().expect("kill our child");
    let status = child.wait().expect("wait");
    assert!(!status.success());
}
