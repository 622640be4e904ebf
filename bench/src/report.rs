//! The bench report: a readable text form (`Display`) and a JSON form (serde).

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency percentiles of one stage, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Percentiles {
    /// Reads the percentiles of a histogram (all zero when it is empty).
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Latency of book deltas and trades received during the measured window, per
/// stage. Snapshots and status records are left out: their timestamps are those
/// of the last change they include, not of their sending.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// From the record's `recv_ts` (tickcast read the event) to the client.
    pub recv_to_client: Percentiles,
    /// From the record's `exch_ts` (the exchange stamped the event) to the client.
    pub exch_to_client: Percentiles,
}

/// What became of the connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    /// Connections the bench tried to open.
    pub attempted: u64,
    /// Subscribed and still open when the run stopped.
    pub ok: u64,
    /// Never subscribed: connect, handshake or subscribe failed (see `failure_reasons`).
    pub failed: u64,
    /// Closed by the server with 1013 (slow consumer) after subscribing.
    pub evicted: u64,
    /// Closed by the server with another code after subscribing.
    pub closed: u64,
    /// Lost after subscribing without a close frame (transport error, EOF).
    pub dropped: u64,
    /// Close frames received from the server, by code (including before subscribing).
    pub closes_by_code: BTreeMap<u16, u64>,
    /// Why connections failed or dropped, by message (at most a few distinct ones).
    pub failure_reasons: BTreeMap<String, u64>,
}

/// The result of one bench run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Server URL.
    pub url: String,
    /// Connections requested.
    pub conns: usize,
    /// Symbols per connection.
    pub symbols_per_conn: usize,
    /// Book depth subscribed.
    pub depth: u32,
    /// Seconds spent opening and subscribing the connections (not measured).
    pub ramp_secs: f64,
    /// Length of the measured window in seconds.
    pub duration_secs: f64,
    /// Connection outcomes.
    pub connections: Connections,
    /// Records received in the measured window.
    pub records: u64,
    /// `records / duration_secs`.
    pub records_per_sec: f64,
    /// Binary messages (batches) received in the measured window.
    pub messages: u64,
    /// `messages / duration_secs`.
    pub messages_per_sec: f64,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// `bytes / duration_secs`.
    pub bytes_per_sec: f64,
    /// Every record walked and sequence-checked, ramp included.
    pub records_checked: u64,
    /// Sequence gaps: a book delta or trade whose seq was not last + 1.
    pub gaps: u64,
    /// Snapshots that moved a book stream's seq (resynchronisations, not gaps).
    pub resyncs: u64,
    /// Book deltas for a symbol before any snapshot of it.
    pub deltas_before_snapshot: u64,
    /// Binary messages that did not decode (bad version, lengths, flags).
    pub decode_errors: u64,
    /// Records of kinds this client does not know (skipped by length).
    pub unknown_kinds: u64,
    /// Status records received, by code.
    pub statuses: BTreeMap<u16, u64>,
    /// `{"op":"error"}` replies received after subscribing.
    pub server_errors: u64,
    /// The first few integrity errors seen (gaps, decode errors), for diagnosis.
    pub first_errors: Vec<String>,
    /// Latency per stage, microseconds.
    pub latency_us: Latency,
}

impl Report {
    /// True when every stream kept the sequence rule and every message decoded:
    /// no gap, no delta before a snapshot, no decode error.
    pub fn integrity_ok(&self) -> bool {
        self.gaps == 0 && self.deltas_before_snapshot == 0 && self.decode_errors == 0
    }

    /// The report as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

fn counts<K: fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return String::from("none");
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.connections;
        writeln!(f, "tickcast-bench report")?;
        writeln!(
            f,
            "  target        {}  ({} conns x {} symbols, depth {})",
            self.url, self.conns, self.symbols_per_conn, self.depth
        )?;
        writeln!(
            f,
            "  connections   attempted {}  ok {}  failed {}  evicted {}  closed {}  dropped {}",
            c.attempted, c.ok, c.failed, c.evicted, c.closed, c.dropped
        )?;
        writeln!(f, "  close codes   {}", counts(&c.closes_by_code))?;
        for (reason, n) in &c.failure_reasons {
            writeln!(f, "  failure       {n} x {reason}")?;
        }
        writeln!(
            f,
            "  duration      {:.2} s measured (after {:.2} s ramp)",
            self.duration_secs, self.ramp_secs
        )?;
        writeln!(
            f,
            "  records       {}  ({:.0}/s; {} checked incl. ramp)",
            self.records, self.records_per_sec, self.records_checked
        )?;
        writeln!(
            f,
            "  messages      {}  ({:.0}/s)",
            self.messages, self.messages_per_sec
        )?;
        writeln!(
            f,
            "  bytes         {}  ({:.0}/s, {:.2} MiB/s)",
            self.bytes,
            self.bytes_per_sec,
            self.bytes_per_sec / (1024.0 * 1024.0)
        )?;
        writeln!(
            f,
            "  sequence      gaps {}  resyncs {}  deltas before snapshot {}  decode errors {}  unknown kinds {}",
            self.gaps,
            self.resyncs,
            self.deltas_before_snapshot,
            self.decode_errors,
            self.unknown_kinds
        )?;
        writeln!(
            f,
            "  statuses      {}  (server errors {})",
            counts(&self.statuses),
            self.server_errors
        )?;
        for e in &self.first_errors {
            writeln!(f, "  error         {e}")?;
        }
        writeln!(
            f,
            "  latency (us)    {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "count", "p50", "p90", "p99", "p99.9", "max"
        )?;
        for (name, p) in [
            ("recv_ts->client", &self.latency_us.recv_to_client),
            ("exch_ts->client", &self.latency_us.exch_to_client),
        ] {
            writeln!(
                f,
                "  {name:<15} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
                p.count, p.p50, p.p90, p.p99, p.p999, p.max
            )?;
        }
        write!(
            f,
            "  integrity     {}",
            if self.integrity_ok() {
                "ok"
            } else {
                "FAILED (sequence or decode errors)"
            }
        )
    }
}
