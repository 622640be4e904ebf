//! What the bench reads from outside a process: CPU time and RSS from `/proc`,
//! and, for tickcast, counters from its `/metrics` page (plain HTTP).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on Linux).
pub const TICKS_PER_SEC: f64 = 100.0;
/// Largest HTTP response read.
const MAX_HTTP: usize = 8 << 20;

/// CPU times and memory of a process at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcSample {
    /// User CPU time, clock ticks.
    pub utime: u64,
    /// System CPU time, clock ticks.
    pub stime: u64,
    /// Resident set size, bytes.
    pub rss: u64,
    /// Per thread: name → (utime + stime) ticks, threads of one name summed.
    pub threads: BTreeMap<String, u64>,
    /// Time the process's threads spent runnable but waiting for a CPU, ns
    /// (`/proc/PID/task/*/schedstat`, second field): a busy machine, not the target.
    pub runq_wait_ns: u64,
}

/// Parses the utime and stime fields of a `/proc/PID/stat` line (the name in
/// parentheses may hold spaces and parentheses).
pub fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after.split_whitespace();
    // Fields after the name start at field 3 (state); utime is field 14, stime 15.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// The thread name of a `/proc/PID/task/TID/stat` line.
fn stat_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// Parses `VmRSS:   1234 kB` out of `/proc/PID/status`, in bytes.
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reads a process's CPU times, RSS and per-thread CPU; `None` once it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (utime, stime) = parse_stat(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = parse_rss(&status)?;
    let mut threads = BTreeMap::new();
    let mut runq_wait_ns = 0;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) {
                runq_wait_ns += text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let (Some(name), Some((u, s))) = (stat_name(&text), parse_stat(&text)) {
                // Thread names like "shard-0", "tokio-runtime-w": group by name.
                *threads.entry(name.to_owned()).or_insert(0) += u + s;
            }
        }
    }
    Some(ProcSample {
        utime,
        stime,
        rss,
        threads,
        runq_wait_ns,
    })
}

/// CPU use of a process over an interval, in percent of one core.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// User time.
    pub user_pct: f64,
    /// System (kernel) time.
    pub sys_pct: f64,
    /// User + system.
    pub total_pct: f64,
    /// Per thread name, user + system.
    pub threads_pct: BTreeMap<String, f64>,
    /// Time runnable but waiting for a CPU (all threads), % of the interval.
    #[serde(default)]
    pub runq_wait_pct: f64,
}

impl CpuUse {
    /// CPU use between two samples `secs` apart.
    pub fn between(a: &ProcSample, b: &ProcSample, secs: f64) -> Self {
        if secs <= 0.0 {
            return Self::default();
        }
        let pct = |ticks: u64| ticks as f64 / TICKS_PER_SEC / secs * 100.0;
        let user_pct = pct(b.utime.saturating_sub(a.utime));
        let sys_pct = pct(b.stime.saturating_sub(a.stime));
        let threads_pct = b
            .threads
            .iter()
            .map(|(name, t)| {
                let before = a.threads.get(name).copied().unwrap_or(0);
                (name.clone(), pct(t.saturating_sub(before)))
            })
            .filter(|(_, p)| *p >= 0.5)
            .collect();
        Self {
            user_pct,
            sys_pct,
            total_pct: user_pct + sys_pct,
            threads_pct,
            runq_wait_pct: b.runq_wait_ns.saturating_sub(a.runq_wait_ns) as f64 / 1e9 / secs
                * 100.0,
        }
    }
}

/// A plain HTTP GET on a loopback address; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str, limit: Duration) -> Option<(u16, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 || buf.len() > MAX_HTTP {
                break;
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    };
    timeout(limit, exchange).await.ok().flatten()
}

/// Sums every sample of each metric in a Prometheus text page (labels folded).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = key.split('{').next().unwrap_or_default().trim();
        if let Ok(v) = value.trim().parse::<f64>() {
            *out.entry(name.to_owned()).or_insert(0.0) += v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_parse() {
        let stat = "1234 (shard (0) x) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 3 0";
        assert_eq!(parse_stat(stat), Some((250, 75)));
        assert_eq!(stat_name(stat), Some("shard (0) x"));
        assert_eq!(parse_stat("garbage"), None);
        let status = "Name:\ttickcast\nVmPeak:\t 9 kB\nVmRSS:\t  2048 kB\n";
        assert_eq!(parse_rss(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_rss("Name: x\n"), None);
    }

    #[test]
    fn own_process_is_sampled() {
        let s = sample(std::process::id());
        assert!(
            s.as_ref()
                .is_some_and(|s| s.rss > 0 && !s.threads.is_empty())
        );
        assert_eq!(sample(u32::MAX), None);
    }

    #[test]
    fn cpu_use_is_a_share_of_one_core() {
        let a = ProcSample {
            utime: 100,
            stime: 50,
            threads: BTreeMap::from([(String::from("shard"), 100)]),
            ..ProcSample::default()
        };
        let b = ProcSample {
            utime: 250,
            stime: 100,
            threads: BTreeMap::from([(String::from("shard"), 300)]),
            ..ProcSample::default()
        };
        let c = CpuUse::between(&a, &b, 2.0);
        assert_eq!((c.user_pct, c.sys_pct, c.total_pct), (75.0, 25.0, 100.0));
        assert_eq!(c.threads_pct.get("shard"), Some(&100.0));
    }

    #[test]
    fn metrics_are_summed_over_labels() {
        let text =
            "# HELP x y\n# TYPE a counter\na{shard=\"0\"} 3\na{shard=\"1\"} 4\nb 1.5\nbad line x\n";
        let m = parse_metrics(text);
        assert_eq!(m.get("a"), Some(&7.0));
        assert_eq!(m.get("b"), Some(&1.5));
        assert_eq!(m.len(), 2);
    }
}
