//! The daemon's command line and configuration file, through the real binary: a bad flag, value
//! or file is refused at start with exit status 2 and one line naming the key; a good
//! configuration starts serving, and SIGTERM stops it with status 0.

// Tests wait on real time; the sans-IO clock rule is for the engine library.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(30);

/// An external feed address where nothing listens: the daemon keeps retrying it, quietly.
const NO_FEED: &str = "ws://127.0.0.1:1/feed";

struct Exit {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn tickcast(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickcast"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `tickcast ARGS` to its exit (killed after [`PATIENCE`]).
fn run(args: &[&str]) -> Exit {
    let mut child = tickcast(args).spawn().expect("spawn tickcast");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tickcast {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    let _ = child
        .stdout
        .take()
        .map(|mut s| s.read_to_string(&mut stdout));
    let _ = child
        .stderr
        .take()
        .map(|mut s| s.read_to_string(&mut stderr));
    Exit {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Asserts a refusal at start: status 2 and one stderr line that contains `needle`.
fn assert_refused(args: &[&str], needle: &str) {
    let exit = run(args);
    assert_eq!(exit.code, Some(2), "{args:?}: stderr {:?}", exit.stderr);
    assert!(exit.stdout.is_empty(), "{args:?}: stdout {:?}", exit.stdout);
    let lines: Vec<&str> = exit.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one line expected: {:?}",
        exit.stderr
    );
    assert!(lines[0].starts_with("tickcast: "), "{:?}", lines[0]);
    assert!(
        lines[0].contains(needle),
        "{args:?}: {:?} lacks {needle:?}",
        lines[0]
    );
}

/// A file in a directory of this test run.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickcast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn bad_flags_are_refused_with_one_line() {
    assert_refused(&["--max-conns", "many"], "--max-conns");
    assert_refused(&["--max-conn", "5"], "--max-conn");
    assert_refused(&["--ping-interval", "30s"], "--ping-interval");
    assert_refused(&["--listen", "localhost"], "--listen");
}

#[test]
fn invalid_values_name_their_key() {
    assert_refused(
        &["--max-conns-per-ip", "0"],
        "invalid configuration: max-conns-per-ip: 0 is outside 1..=19900",
    );
    assert_refused(
        &["--max-conns", "100", "--max-conns-per-ip", "101"],
        "invalid configuration: max-conns-per-ip: 101 is outside 1..=100",
    );
    assert_refused(&["--max-conns", "0"], "invalid configuration: max-conns: ");
    assert_refused(
        &["--ping-interval", "0"],
        "invalid configuration: ping-interval: ",
    );
    assert_refused(
        &["--shutdown-deadline", "0"],
        "invalid configuration: shutdown-deadline: ",
    );
    assert_refused(
        &["--max-message-bytes", "10"],
        "invalid configuration: max-message-bytes: 10 is outside",
    );
    assert_refused(
        &["--allowed-origins", "https://ok.example,example.com"],
        "invalid configuration: allowed-origins: \"example.com\" is not an origin",
    );
    assert_refused(&["--feed", "http://x:1/"], "invalid configuration: feed: ");
}

#[test]
fn bad_tokens_files_are_refused() {
    let missing = "/nonexistent/tickcast-tokens";
    assert_refused(
        &["--tokens-file", missing],
        "invalid configuration: tokens-file: cannot read /nonexistent/tickcast-tokens",
    );
    let empty = temp_file("empty-tokens", "");
    assert_refused(
        &["--tokens-file", path_str(&empty)],
        "invalid configuration: tokens-file: ",
    );
    let spaced = temp_file("spaced-tokens", "good\nbad token\n");
    assert_refused(&["--tokens-file", path_str(&spaced)], "line 2: ");
}

#[test]
fn bad_config_files_are_refused_naming_file_line_and_key() {
    let unknown = temp_file("unknown.toml", "max-conns = 10\nmax-connz = 5\n");
    assert_refused(
        &["--config", path_str(&unknown)],
        "unknown.toml, line 2: max-connz: unknown key (did you mean `max-conns`?)",
    );
    let wrong_type = temp_file("type.toml", "# limits\n\nping-interval = \"30s\"\n");
    assert_refused(
        &["--config", path_str(&wrong_type)],
        "type.toml, line 3: ping-interval: ",
    );
    let out_of_range = temp_file("range.toml", "max-conns = 10\nmax-conns-per-ip = 20\n");
    assert_refused(
        &["--config", path_str(&out_of_range)],
        "invalid configuration: max-conns-per-ip: 20 is outside 1..=10",
    );
    assert_refused(
        &["--config", "/nonexistent/tickcast.toml"],
        "cannot read configuration file /nonexistent/tickcast.toml",
    );
}

#[test]
fn flags_override_the_file() {
    // The file alone is invalid; the flag replaces the bad value.
    let file = temp_file("override.toml", "max-conns = 100\nmax-conns-per-ip = 0\n");
    let exit = run(&["--config", path_str(&file), "--check-config"]);
    assert_eq!(exit.code, Some(2), "{}", exit.stderr);
    let exit = run(&[
        "--config",
        path_str(&file),
        "--max-conns-per-ip",
        "10",
        "--check-config",
    ]);
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
    assert_eq!(exit.stdout, "configuration ok\n");
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/tickcast.example.toml"
    );
    let exit = run(&["--config", example, "--check-config"]);
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
}

#[test]
fn help_lists_the_production_flags() {
    let exit = run(&["--help"]);
    assert_eq!(exit.code, Some(0));
    for flag in [
        "--config <FILE>",
        "--allowed-origins <LIST>",
        "--tokens-file <FILE>",
        "--max-conns <N>",
        "--max-conns-per-ip <N>",
        "--max-message-bytes <BYTES>",
        "--ping-interval <SECS>",
        "--shutdown-deadline <SECS>",
    ] {
        assert!(exit.stdout.contains(flag), "--help lacks {flag}");
    }
}

/// A daemon started in the background, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_good_config_file_starts_serving() {
    let tokens = temp_file("tokens", "alpha\nbravo\n");
    let file = temp_file(
        "good.toml",
        &format!(
            "listen = \"127.0.0.1:9\"\nfeed = \"{NO_FEED}\"\nshards = 1\nmax-conns = 500\n\
             max-conns-per-ip = 20\nping-interval = 2.5\nshutdown-deadline = 1\n\
             allowed-origins = [\"https://app.example.com\"]\ntokens-file = {:?}\n",
            path_str(&tokens)
        ),
    );
    // The flag's listen address overrides the file's.
    let mut child = Running(
        tickcast(&["--config", path_str(&file), "--listen", "127.0.0.1:0"])
            .spawn()
            .expect("spawn tickcast"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(PATIENCE)
        .expect("tickcast did not print its listen line");
    let addr = line
        .strip_prefix("tickcast listening on ws://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/ws"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let port: u16 = addr.parse().expect("port");
    assert_ne!(port, 0);
    assert_ne!(port, 9, "the --listen flag overrides the file");
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "still running"
    );

    // SIGTERM stops it gracefully: exit status 0 within the shutdown deadline (1 s) and slack.
    let pid = child.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// Starts the daemon (no feed to reach, so it logs its retries), collects `lines` lines of its
/// stderr (a pipe, not a terminal), and kills it.
fn log_lines(extra: &[&str], lines: usize) -> Vec<String> {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--feed",
        NO_FEED,
        "--shards",
        "1",
        "--reconnect-min",
        "0.02",
        "--reconnect-max",
        "0.05",
    ];
    args.extend_from_slice(extra);
    let mut cmd = tickcast(&args);
    cmd.env("RUST_LOG", "info");
    let mut child = Running(cmd.spawn().expect("spawn tickcast"));
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    (0..lines)
        .map(|_| {
            rx.recv_timeout(PATIENCE)
                .expect("tickcast logged too little")
        })
        .collect()
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let lines = log_lines(&[], 3);
    for line in &lines {
        assert!(!line.contains('\x1b'), "ANSI escape in {line:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("feed")),
        "{lines:?}"
    );
}

#[test]
fn json_logs_are_one_object_a_line() {
    let lines = log_lines(&["--log-format", "json"], 3);
    for line in &lines {
        assert!(!line.contains('\x1b'), "ANSI escape in {line:?}");
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
        assert!(v["fields"].is_object(), "{v}");
    }
}

#[test]
fn log_format_comes_from_the_file_too_and_is_checked() {
    let file = temp_file("json-logs.toml", "log-format = \"json\"\n");
    let lines = log_lines(&["--config", path_str(&file)], 2);
    for line in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "{line:?}"
        );
    }
    assert_refused(&["--log-format", "xml"], "--log-format");
    let bad = temp_file("xml-logs.toml", "log-format = \"xml\"\n");
    assert_refused(&["--config", path_str(&bad)], "log-format");
}

#[test]
fn every_setting_of_the_table_is_a_flag_with_its_default_in_help() {
    let exit = run(&["--help"]);
    assert_eq!(exit.code, Some(0));
    for s in tickcast::config::SETTINGS {
        let flag = format!("--{} ", s.key);
        let flag_eq = format!("--{}[=<", s.key);
        assert!(
            exit.stdout.contains(&flag) || exit.stdout.contains(&flag_eq),
            "--help lacks --{}",
            s.key
        );
        assert!(
            exit.stdout.contains(&format!("[default: {}]", s.default)),
            "--help lacks the default of {}",
            s.key
        );
    }
    assert!(exit.stdout.contains("--no-deflate"));
    // Each flag overrides its key: the two spellings of deflate are refused together.
    assert_refused(&["--deflate=true", "--no-deflate"], "--no-deflate");
}

#[test]
fn check_config_reads_the_tls_files_and_the_jwt_key() {
    let cert = temp_file("bad-cert.pem", "not a certificate\n");
    let key = temp_file("bad-key.pem", "not a key\n");
    let exit = run(&[
        "--tls-cert",
        path_str(&cert),
        "--tls-key",
        path_str(&key),
        "--check-config",
    ]);
    assert_eq!(exit.code, Some(2), "{}", exit.stderr);
    assert!(exit.stderr.contains("TLS"), "{}", exit.stderr);
    let exit = run(&["--tls-cert", path_str(&cert), "--check-config"]);
    assert_eq!(exit.code, Some(2));
    assert!(exit.stderr.contains("tls-key"), "{}", exit.stderr);
    let secret = temp_file("jwt.secret", "short\n");
    let exit = run(&["--jwt-secret-file", path_str(&secret), "--check-config"]);
    assert_eq!(exit.code, Some(2));
    assert!(exit.stderr.contains("jwt-secret-file"), "{}", exit.stderr);
}
