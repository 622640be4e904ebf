//! Counters and gauges, preallocated at start and rendered as Prometheus text on `/metrics`.
//!
//! Each shard and the ingester own their own block of atomics (relaxed loads and stores, no
//! sharing of cache lines between writers). Hot loops count locally and add once per drain.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::feed::error::FeedMisbehaved;

/// Counters of one shard.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Open connections (all states).
    pub connections: AtomicU64,
    /// Connections upgraded to WebSocket, since start.
    pub upgraded: AtomicU64,
    /// Data records queued to subscribers.
    pub records_out: AtomicU64,
    /// Data messages queued to subscribers.
    pub messages_out: AtomicU64,
    /// Bytes written to sockets.
    pub bytes_out: AtomicU64,
    /// Subscribers evicted as slow consumers (close 1013).
    pub evicted_slow: AtomicU64,
    /// Connections closed for a protocol violation (1002, 1003, 1007, 1009).
    pub closed_protocol: AtomicU64,
    /// Connections closed for control-message abuse (1008).
    pub closed_policy: AtomicU64,
    /// Handshakes refused or timed out.
    pub handshake_failures: [AtomicU64; HANDSHAKE_FAILURES.len()],
    /// Plain HTTP requests answered.
    pub http_requests: AtomicU64,
    /// Control messages answered with an error.
    pub request_errors: AtomicU64,
    /// Times this shard fell behind its ring and resynced its subscribers.
    pub ring_resyncs: AtomicU64,
    /// Messages currently queued in this shard's ring (sampled each wake).
    pub ring_len: AtomicU64,
    /// Connections refused before the upgrade, by reason (see [`REFUSAL_REASONS`]).
    pub refused: [AtomicU64; REFUSAL_REASONS.len()],
    /// Clients closed because they answered no ping.
    pub ping_timeouts: AtomicU64,
    /// Connections on the conflating rung of the slow-consumer ladder (gauge; the others
    /// are live).
    pub conflating: AtomicU64,
    /// Ladder moves from live to conflating.
    pub to_conflating: AtomicU64,
    /// Ladder moves from conflating back to live.
    pub to_live: AtomicU64,
    /// Conflating connections kept conflated although drained, because they drained slower
    /// than their streams' live rate (counted once per stay).
    pub ladder_held: AtomicU64,
    /// Conflated snapshots not delivered to a connection whose out-buffer was past the pace
    /// mark (it gets a fresh snapshot when there is room).
    pub conflated_skips: AtomicU64,
    /// Open connections by transport (indexed like [`TRANSPORTS`]).
    pub transport_connections: [AtomicU64; TRANSPORTS.len()],
    /// Slow consumers evicted, by transport (indexed like [`TRANSPORTS`]): a WebSocket gets
    /// close 1013, an HTTP stream just ends.
    pub transport_evictions: [AtomicU64; TRANSPORTS.len()],
    /// Time from `recv_ts` to the `writev` that handed a record to the kernel, per delivered
    /// record (binary records; sampled once per record and drain).
    pub latency: LatencyHistogram,
}

/// Transports, the `transport` label of `tickcast_transport_connections` and
/// `tickcast_transport_evictions_total`: `/ws`, `/stream`, `/sse` (protocol §3.4).
pub const TRANSPORTS: [&str; 3] = ["ws", "stream", "sse"];

/// Upper bounds (nanoseconds) of the latency histogram buckets; the last bucket is `+Inf`.
pub const LATENCY_BOUNDS_NS: [u64; 19] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// A fixed-bucket latency histogram (Prometheus `histogram`), written by one thread with relaxed
/// atomics and read by `/metrics`.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_NS.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    /// Records `n` observations of `ns` nanoseconds.
    pub fn record(&self, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        let i = LATENCY_BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
    }

    /// Observations recorded (the shard simulator's tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = LATENCY_BOUNDS_NS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |ns| format!("{}", *ns as f64 / 1e9));
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let labels = labels.trim_end_matches(',');
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(
            out,
            "{name}_count{{{labels}}} {}",
            self.count.load(Ordering::Relaxed)
        );
    }
}

/// Reasons an upgrade request fails; the label of `tickcast_handshake_failures_total`.
pub const HANDSHAKE_FAILURES: [&str; 7] = [
    "malformed",
    "too_large",
    "bad_version",
    "method",
    "not_found",
    "bad_format",
    "timeout",
];

/// Reasons a connection is refused before the upgrade; the label of `tickcast_refusals_total`.
pub const REFUSAL_REASONS: [&str; 6] = [
    "max_conns",
    "max_conns_per_ip",
    "origin",
    "missing_token",
    "bad_token",
    "expired_token",
];

impl ShardMetrics {
    /// Counts a failed upgrade request with a label from [`HANDSHAKE_FAILURES`].
    pub fn handshake_failed(&self, reason: &str) {
        if let Some(i) = HANDSHAKE_FAILURES.iter().position(|r| *r == reason) {
            self.handshake_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a refusal with a label from [`REFUSAL_REASONS`].
    pub fn refuse(&self, reason: &str) {
        if let Some(i) = REFUSAL_REASONS.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counters of the ingester.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    /// Feed messages read.
    pub messages: AtomicU64,
    /// Book updates applied.
    pub updates: AtomicU64,
    /// Trades published.
    pub trades: AtomicU64,
    /// Feed messages that failed to decode or apply.
    pub bad_messages: AtomicU64,
    /// The same, by kind: indexed by [`FeedMisbehaved::index`].
    pub faults: [AtomicU64; FeedMisbehaved::LABELS.len()],
    /// Sequence gaps seen on the feed.
    pub gaps: AtomicU64,
    /// Duplicate or stale updates dropped.
    pub stale: AtomicU64,
    /// Snapshots requested from the feed after a gap or an error.
    pub resyncs: AtomicU64,
    /// Feed connections made, since start.
    pub connects: AtomicU64,
    /// Records published into rings (counted once per shard).
    pub published: AtomicU64,
    /// Records dropped because a shard's ring was full or lagged.
    pub ring_drops: AtomicU64,
    /// Snapshot requests answered.
    pub snapshots_served: AtomicU64,
    /// Conflated snapshots encoded (one per stream, rate tier, format and tick, shared by
    /// every subscriber of the tier on every shard).
    pub conflated_snapshots: AtomicU64,
    /// Subscribes with `resume` answered (each names one or more symbols).
    pub resumes_served: AtomicU64,
}

/// The replay windows' counters and gauges (protocol 1.1 resume), published by their owner
/// (the ingester) from [`crate::replay::ReplayStats`].
#[derive(Debug, Default)]
pub struct ReplayMetrics {
    /// Stream resumes answered from a window.
    pub hits: AtomicU64,
    /// Stream resumes that could not be.
    pub misses: AtomicU64,
    /// Records replayed.
    pub replayed: AtomicU64,
    /// Records dropped by a bound.
    pub evicted: AtomicU64,
    /// Records dropped by the total-bytes bound.
    pub evicted_total: AtomicU64,
    /// Records held (gauge).
    pub records: AtomicU64,
    /// Bytes held (gauge).
    pub bytes: AtomicU64,
    /// Windows (gauge).
    pub windows: AtomicU64,
}

impl ReplayMetrics {
    /// Stores `s` (the owner calls this now and then, e.g. once per read batch).
    pub fn publish(&self, s: &crate::replay::ReplayStats) {
        for (slot, v) in [
            (&self.hits, s.hits),
            (&self.misses, s.misses),
            (&self.replayed, s.replayed),
            (&self.evicted, s.evicted),
            (&self.evicted_total, s.evicted_total),
            (&self.records, s.records),
            (&self.bytes, s.bytes),
            (&self.windows, s.windows),
        ] {
            slot.store(v, Ordering::Relaxed);
        }
    }
}

/// The NATS bus (`--role ingest|edge`, docs/protocol.md §8): counted by the one thread that
/// talks to NATS.
#[derive(Debug, Default)]
pub struct BusMetrics {
    /// Messages received from NATS.
    pub messages_in: AtomicU64,
    /// Payload bytes received from NATS.
    pub bytes_in: AtomicU64,
    /// Messages published to NATS.
    pub messages_out: AtomicU64,
    /// Payload bytes published to NATS.
    pub bytes_out: AtomicU64,
    /// Records published (ingest) or received (edge) in stream batches.
    pub records: AtomicU64,
    /// Records not published because NATS was unreachable (ingest).
    pub unpublished: AtomicU64,
    /// Snapshot requests sent (edge) or answered (ingest).
    pub snapshot_requests: AtomicU64,
    /// Seq gaps seen on the bus (edge).
    pub gaps: AtomicU64,
    /// Streams brought back in line with a fresh snapshot after a gap, a reconnect or a new
    /// epoch (edge).
    pub resyncs: AtomicU64,
    /// Connections to NATS made (the first and every reconnect).
    pub connects: AtomicU64,
    /// 1 while connected to NATS (gauge).
    pub connected: AtomicU64,
    /// Stream subjects subscribed to now (edge, gauge).
    pub subscriptions: AtomicU64,
    /// The ingest node's epoch, as a number (gauge; 0 before it is known).
    pub epoch: AtomicU64,
    /// Replay requests sent (edge) or answered (ingest) on `<p>.replay`.
    pub replay_requests: AtomicU64,
    /// Symbols of `resume`s answered `recovered: true` (edge).
    pub resumes_recovered: AtomicU64,
    /// Symbols of `resume`s answered `recovered: false` (edge).
    pub resumes_not_recovered: AtomicU64,
    /// Interest announcements sent (edge) or taken (ingest).
    pub announcements: AtomicU64,
    /// Interest announcements refused: malformed, naming a sid past the table, or from an
    /// edge past the table's bound (ingest).
    pub bad_announcements: AtomicU64,
    /// Streams some lease holds, which the ingest node publishes (gauge, ingest).
    pub wanted_streams: AtomicU64,
    /// Edges holding leases (gauge, ingest).
    pub leasing_edges: AtomicU64,
    /// Per-hop latency of the records an edge receives, indexed like [`BUS_HOPS`].
    pub hops: [LatencyHistogram; BUS_HOPS.len()],
}

/// The hops of `tickcast_bus_hop_latency_seconds` (the `hop` label), measured by an edge on
/// every record it receives, from the records' and the batches' wall-clock stamps (one
/// machine's clock, or clocks kept in step: NTP or PTP): `feed` exch_ts → recv_ts (the feed to
/// the ingest node), `ingest` recv_ts → the batch's publish stamp, `nats` the publish stamp →
/// the edge's receipt, `edge` the receipt → pushed into the shards' rings.
pub const BUS_HOPS: [&str; 4] = ["feed", "ingest", "nats", "edge"];

/// Whether the engine can serve: the feed is connected and every book is in sync.
#[derive(Debug, Default)]
pub struct Health {
    feed_live: AtomicBool,
}

impl Health {
    /// Marks the feed up (all books synced) or down.
    pub fn set_feed_live(&self, live: bool) {
        self.feed_live.store(live, Ordering::Relaxed);
    }

    /// True when `/healthz` should answer 200.
    pub fn feed_live(&self) -> bool {
        self.feed_live.load(Ordering::Relaxed)
    }
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    /// One block per shard.
    pub shards: Vec<CachePadded<ShardMetrics>>,
    /// The ingester's block.
    pub ingest: CachePadded<IngestMetrics>,
    /// The replay windows.
    pub replay: CachePadded<ReplayMetrics>,
    /// Feed health.
    pub health: Health,
    /// The NATS bus (zero in the standalone role).
    pub bus: CachePadded<BusMetrics>,
}

impl Metrics {
    /// Blocks for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards)
                .map(|_| CachePadded::new(ShardMetrics::default()))
                .collect(),
            ingest: CachePadded::new(IngestMetrics::default()),
            replay: CachePadded::new(ReplayMetrics::default()),
            health: Health::default(),
            bus: CachePadded::new(BusMetrics::default()),
        }
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        type Family = (
            &'static str,
            &'static str,
            &'static str,
            fn(&ShardMetrics) -> &AtomicU64,
        );
        let shard_metrics: [Family; 17] = [
            ("tickcast_connections", "gauge", "Open connections.", |m| {
                &m.connections
            }),
            (
                "tickcast_upgrades_total",
                "counter",
                "Connections upgraded to WebSocket.",
                |m| &m.upgraded,
            ),
            (
                "tickcast_records_out_total",
                "counter",
                "Data records queued to subscribers.",
                |m| &m.records_out,
            ),
            (
                "tickcast_messages_out_total",
                "counter",
                "Data messages queued to subscribers.",
                |m| &m.messages_out,
            ),
            (
                "tickcast_bytes_out_total",
                "counter",
                "Bytes written to client sockets.",
                |m| &m.bytes_out,
            ),
            (
                "tickcast_evictions_total",
                "counter",
                "Slow consumers evicted (close 1013 on ws; an HTTP stream ends).",
                |m| &m.evicted_slow,
            ),
            (
                "tickcast_protocol_closes_total",
                "counter",
                "Connections closed for protocol violations.",
                |m| &m.closed_protocol,
            ),
            (
                "tickcast_policy_closes_total",
                "counter",
                "Connections closed with 1008.",
                |m| &m.closed_policy,
            ),
            (
                "tickcast_http_requests_total",
                "counter",
                "Plain HTTP requests answered.",
                |m| &m.http_requests,
            ),
            (
                "tickcast_request_errors_total",
                "counter",
                "Control messages answered with an error.",
                |m| &m.request_errors,
            ),
            (
                "tickcast_ring_resyncs_total",
                "counter",
                "Times a shard fell behind its ring and resynced.",
                |m| &m.ring_resyncs,
            ),
            (
                "tickcast_ring_len",
                "gauge",
                "Messages queued in a shard's ring.",
                |m| &m.ring_len,
            ),
            (
                "tickcast_ladder_conflating_connections",
                "gauge",
                "Connections on the conflating rung (out-buffer past the soft mark; the rest are live).",
                |m| &m.conflating,
            ),
            (
                "tickcast_ladder_to_conflating_total",
                "counter",
                "Ladder moves from live deltas to conflated snapshots.",
                |m| &m.to_conflating,
            ),
            (
                "tickcast_ladder_to_live_total",
                "counter",
                "Ladder moves from conflated snapshots back to live deltas.",
                |m| &m.to_live,
            ),
            (
                "tickcast_ladder_held_total",
                "counter",
                "Conflating connections kept conflated although drained: they read slower than their streams' live rate.",
                |m| &m.ladder_held,
            ),
            (
                "tickcast_conflated_skips_total",
                "counter",
                "Conflated snapshots skipped for a connection with a full out-buffer (a fresh one follows when it drains).",
                |m| &m.conflated_skips,
            ),
        ];
        for (name, kind, help, get) in shard_metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, m) in self.shards.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{i}\"}} {}",
                    get(m).load(Ordering::Relaxed)
                );
            }
        }
        let ingest: [(&str, &str, &AtomicU64); 13] = [
            (
                "tickcast_feed_messages_total",
                "Feed messages read.",
                &self.ingest.messages,
            ),
            (
                "tickcast_feed_updates_total",
                "Book updates applied.",
                &self.ingest.updates,
            ),
            (
                "tickcast_feed_trades_total",
                "Trades published.",
                &self.ingest.trades,
            ),
            (
                "tickcast_feed_bad_messages_total",
                "Feed messages that failed to decode or apply.",
                &self.ingest.bad_messages,
            ),
            (
                "tickcast_feed_gaps_total",
                "Sequence gaps seen on the feed.",
                &self.ingest.gaps,
            ),
            (
                "tickcast_feed_stale_total",
                "Duplicate or stale feed updates dropped.",
                &self.ingest.stale,
            ),
            (
                "tickcast_feed_resyncs_total",
                "Snapshots requested from the feed.",
                &self.ingest.resyncs,
            ),
            (
                "tickcast_feed_connects_total",
                "Feed connections made.",
                &self.ingest.connects,
            ),
            (
                "tickcast_published_total",
                "Records published into shard rings.",
                &self.ingest.published,
            ),
            (
                "tickcast_ring_drops_total",
                "Records dropped for a lagging shard.",
                &self.ingest.ring_drops,
            ),
            (
                "tickcast_snapshots_served_total",
                "Subscription snapshots served.",
                &self.ingest.snapshots_served,
            ),
            (
                "tickcast_conflated_snapshots_total",
                "Conflated snapshots encoded (once per stream, rate tier, format and tick).",
                &self.ingest.conflated_snapshots,
            ),
            (
                "tickcast_resumes_served_total",
                "Subscribes with resume answered.",
                &self.ingest.resumes_served,
            ),
        ];
        for (name, kind, help, get) in [
            (
                "tickcast_transport_connections",
                "gauge",
                "Open client connections by transport.",
                (|m| &m.transport_connections) as fn(&ShardMetrics) -> &[AtomicU64; 3],
            ),
            (
                "tickcast_transport_evictions_total",
                "counter",
                "Slow consumers evicted, by transport (1013 on ws; an HTTP stream ends).",
                |m| &m.transport_evictions,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, m) in self.shards.iter().enumerate() {
                for (t, transport) in TRANSPORTS.iter().enumerate() {
                    let v = get(m)[t].load(Ordering::Relaxed);
                    let _ = writeln!(out, "{name}{{shard=\"{i}\",transport=\"{transport}\"}} {v}");
                }
            }
        }
        let name = "tickcast_handshake_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Upgrade requests that failed, by reason.\n# TYPE {name} counter"
        );
        for (i, m) in self.shards.iter().enumerate() {
            for (r, reason) in HANDSHAKE_FAILURES.iter().enumerate() {
                let v = m.handshake_failures[r].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{shard=\"{i}\",reason=\"{reason}\"}} {v}");
            }
        }
        let name = "tickcast_refusals_total";
        let _ = writeln!(
            out,
            "# HELP {name} Connections refused before the upgrade, by reason.\n# TYPE {name} counter"
        );
        for (i, m) in self.shards.iter().enumerate() {
            for (r, reason) in REFUSAL_REASONS.iter().enumerate() {
                let v = m.refused[r].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{shard=\"{i}\",reason=\"{reason}\"}} {v}");
            }
        }
        let name = "tickcast_ping_timeouts_total";
        let _ = writeln!(
            out,
            "# HELP {name} Clients closed because they answered no ping.\n# TYPE {name} counter"
        );
        for (i, m) in self.shards.iter().enumerate() {
            let v = m.ping_timeouts.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {v}");
        }
        let name = "tickcast_delivery_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from reading an event off the feed to writing it to a subscriber.\n# TYPE {name} histogram"
        );
        for (i, m) in self.shards.iter().enumerate() {
            m.latency.render(&mut out, name, &format!("shard=\"{i}\","));
        }
        for (name, help, v) in ingest {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let r = &self.replay;
        let replay: [(&str, &str, &str, &AtomicU64); 8] = [
            (
                "tickcast_replay_hits_total",
                "counter",
                "Stream resumes answered from a replay window.",
                &r.hits,
            ),
            (
                "tickcast_replay_misses_total",
                "counter",
                "Stream resumes that could not be replayed (fresh start).",
                &r.misses,
            ),
            (
                "tickcast_replay_records_replayed_total",
                "counter",
                "Records sent from replay windows.",
                &r.replayed,
            ),
            (
                "tickcast_replay_evicted_total",
                "counter",
                "Records dropped from replay windows by a bound.",
                &r.evicted,
            ),
            (
                "tickcast_replay_evicted_memory_total",
                "counter",
                "Records dropped from replay windows by the total-bytes bound.",
                &r.evicted_total,
            ),
            (
                "tickcast_replay_records",
                "gauge",
                "Records held in replay windows.",
                &r.records,
            ),
            (
                "tickcast_replay_bytes",
                "gauge",
                "Bytes held in replay windows (records plus bookkeeping).",
                &r.bytes,
            ),
            (
                "tickcast_replay_windows",
                "gauge",
                "Streams with a replay window.",
                &r.windows,
            ),
        ];
        for (name, kind, help, v) in replay {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let b = &self.bus;
        let bus: [(&str, &str, &str, &AtomicU64); 20] = [
            (
                "tickcast_bus_messages_in_total",
                "counter",
                "Messages received from NATS.",
                &b.messages_in,
            ),
            (
                "tickcast_bus_bytes_in_total",
                "counter",
                "Payload bytes received from NATS.",
                &b.bytes_in,
            ),
            (
                "tickcast_bus_messages_out_total",
                "counter",
                "Messages published to NATS.",
                &b.messages_out,
            ),
            (
                "tickcast_bus_bytes_out_total",
                "counter",
                "Payload bytes published to NATS.",
                &b.bytes_out,
            ),
            (
                "tickcast_bus_records_total",
                "counter",
                "Records published (ingest) or received (edge) on the bus.",
                &b.records,
            ),
            (
                "tickcast_bus_unpublished_total",
                "counter",
                "Records not published while NATS was unreachable (ingest).",
                &b.unpublished,
            ),
            (
                "tickcast_bus_snapshot_requests_total",
                "counter",
                "Snapshot requests sent (edge) or answered (ingest).",
                &b.snapshot_requests,
            ),
            (
                "tickcast_bus_gaps_total",
                "counter",
                "Seq gaps seen on the bus (edge).",
                &b.gaps,
            ),
            (
                "tickcast_bus_resyncs_total",
                "counter",
                "Streams resynced with a fresh snapshot after a gap, a reconnect or a new epoch (edge).",
                &b.resyncs,
            ),
            (
                "tickcast_bus_connects_total",
                "counter",
                "Connections to NATS made.",
                &b.connects,
            ),
            (
                "tickcast_bus_connected",
                "gauge",
                "1 while connected to NATS.",
                &b.connected,
            ),
            (
                "tickcast_bus_subscriptions",
                "gauge",
                "Stream subjects subscribed to (edge).",
                &b.subscriptions,
            ),
            (
                "tickcast_bus_epoch",
                "gauge",
                "The ingest node's epoch as a number (0: not known yet).",
                &b.epoch,
            ),
            (
                "tickcast_bus_replay_requests_total",
                "counter",
                "Replay requests sent (edge) or answered (ingest).",
                &b.replay_requests,
            ),
            (
                "tickcast_bus_resumes_recovered_total",
                "counter",
                "Symbols of resumes answered recovered: true (edge).",
                &b.resumes_recovered,
            ),
            (
                "tickcast_bus_resumes_not_recovered_total",
                "counter",
                "Symbols of resumes answered recovered: false (edge).",
                &b.resumes_not_recovered,
            ),
            (
                "tickcast_bus_announcements_total",
                "counter",
                "Interest announcements sent (edge) or taken (ingest).",
                &b.announcements,
            ),
            (
                "tickcast_bus_bad_announcements_total",
                "counter",
                "Interest announcements refused as malformed or past a bound (ingest).",
                &b.bad_announcements,
            ),
            (
                "tickcast_bus_wanted_streams",
                "gauge",
                "Streams some edge's lease holds, which the ingest node publishes (ingest).",
                &b.wanted_streams,
            ),
            (
                "tickcast_bus_leasing_edges",
                "gauge",
                "Edges holding interest leases (ingest).",
                &b.leasing_edges,
            ),
        ];
        for (name, kind, help, v) in bus {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let name = "tickcast_bus_hop_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Per-hop latency of the records an edge receives: feed (exch_ts to recv_ts), ingest (recv_ts to publish), nats (publish to the edge's receipt), edge (receipt to the shards' rings).\n# TYPE {name} histogram"
        );
        for (hop, h) in BUS_HOPS.iter().zip(&b.hops) {
            h.render(&mut out, name, &format!("hop=\"{hop}\","));
        }
        let name = "tickcast_feed_faults_total";
        let _ = writeln!(
            out,
            "# HELP {name} Feed messages that failed to decode or apply, by kind.\n# TYPE {name} counter"
        );
        for (label, v) in FeedMisbehaved::LABELS.iter().zip(&self.ingest.faults) {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{label}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tickcast_feed_live 1 when the feed is connected and every book is in sync.\n# TYPE tickcast_feed_live gauge\ntickcast_feed_live {}",
            u8::from(self.health.feed_live())
        );
        out
    }
}

/// Takes `n` from a gauge (relaxed, never below zero).
#[inline]
pub fn sub(c: &AtomicU64, n: u64) {
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// Adds `n` to a counter (relaxed).
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    if n != 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_and_type() {
        let m = Metrics::new(2);
        add(&m.shards[1].records_out, 5);
        add(&m.ingest.updates, 3);
        m.health.set_feed_live(true);
        let text = m.render();
        assert!(text.contains("tickcast_records_out_total{shard=\"1\"} 5"));
        assert!(text.contains("tickcast_records_out_total{shard=\"0\"} 0"));
        assert!(text.contains("tickcast_feed_updates_total 3"));
        assert!(text.contains("tickcast_feed_live 1"));
        m.replay.publish(&crate::replay::ReplayStats {
            hits: 4,
            bytes: 1000,
            ..Default::default()
        });
        let text = m.render();
        assert!(text.contains("tickcast_replay_hits_total 4"));
        assert!(text.contains("# TYPE tickcast_replay_bytes gauge\ntickcast_replay_bytes 1000"));
        m.shards[0].latency.record(30_000, 2);
        m.shards[0].latency.record(2_000_000_000, 1);
        let text = m.render();
        assert!(
            text.contains(
                "tickcast_delivery_latency_seconds_bucket{shard=\"0\",le=\"0.000025\"} 0"
            )
        );
        assert!(
            text.contains("tickcast_delivery_latency_seconds_bucket{shard=\"0\",le=\"0.00005\"} 2")
        );
        assert!(
            text.contains("tickcast_delivery_latency_seconds_bucket{shard=\"0\",le=\"+Inf\"} 3")
        );
        assert!(text.contains("tickcast_delivery_latency_seconds_count{shard=\"0\"} 3"));
        // Every sample line belongs to a family declared with HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|n| text.contains(&format!("# TYPE {n} histogram")))
                })
                .unwrap_or(name);
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }
}
