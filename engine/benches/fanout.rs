//! The fan-out write path on one core, in CPU: the sans-IO shard core (`shard::rig`) with 1,
//! 100 or 1,000 subscribers, each pass one loop turn of the driver's write path — drain the
//! ring (records copied once into the drain's arena, each subscriber's owed spans), then cut
//! each subscriber's batch into its out-buffer and write it into a mock writer that takes
//! everything, `writev`-shaped (at most 64 slices a call), counting the bytes (in the style of
//! tungstenite's `benches/write.rs`). The kernel's side of a `writev` is not in it: this is the
//! engine's own user-space cost.
//!
//! Cases: `all/N` — N subscribers of every symbol (`*`, 50 symbols), 100 records a pass, so each
//! subscriber gets all 100; `five/N` — N subscribers of 5 of the 50 symbols, 100 records a pass,
//! so each gets ~10. One criterion iteration is one pass; the throughput is in delivered records
//! (record × subscriber). From the time per pass `t`: ns per record in = `t / 100`, ns per
//! subscriber-pass = `t / N`.
//!
//! Run: `cargo bench -p tickcast --bench fanout`. For CPU time on a noisy machine (or under
//! `valgrind --tool=callgrind`): `TICKCAST_FANOUT_PASSES=N cargo bench -p tickcast --bench
//! fanout -- [CASE]` runs exactly `N` timed passes of each case (after as many untimed) and
//! prints the thread's CPU time per pass, per record in, per subscriber-pass and per delivered
//! record.
//!
//! `TICKCAST_FANOUT_MODEL=SUBSCRIBERS cargo bench -p tickcast --bench fanout` runs the rig's
//! virtual-time model instead (`FanoutRig::model_waits`): that many subscribers of everything,
//! one record every 9.1 ms (the `fixed-10k` case's 110 updates/s), each `writev` costing
//! 4.6 µs + 0.3 ns a byte (the kernel's cost per write measured at 10,000 subscribers), for
//! 4 virtual seconds; it prints the records' waits (p50, p99, max) and the time of one pass
//! over the subscribers. Deterministic: it measures the flush order and pacing, not the machine.
//!
//! `TICKCAST_FANOUT_IDLE=N`: the shard core's resident memory per idle subscriber (N
//! subscribers of one symbol each, no sockets).

#![allow(missing_docs, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use tickcast::shard::rig::{FanoutRig, Symbols};

const SYMBOLS: usize = 50;
const RECORDS_PER_PASS: usize = 100;

/// The cases: (name, what each subscriber takes, records each subscriber gets a pass, subscribers).
fn cases() -> Vec<(String, Symbols, usize, usize)> {
    let mut v = Vec::new();
    for (name, take, per_sub) in [
        ("all", Symbols::All, RECORDS_PER_PASS),
        ("five", Symbols::Each(5), RECORDS_PER_PASS / 10),
    ] {
        for subs in [1usize, 100, 1000] {
            v.push((format!("{name}/{subs}"), take, per_sub, subs));
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_pass");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, take, per_sub, subs) in cases() {
        {
            let mut rig = FanoutRig::new(subs, SYMBOLS, take);
            // Checks that the pass does what it is meant to before timing it.
            rig.publish(RECORDS_PER_PASS);
            assert!(rig.pass() > 0, "a pass wrote nothing");
            g.throughput(Throughput::Elements((per_sub * subs) as u64));
            g.bench_with_input(BenchmarkId::from_parameter(&name), &subs, |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // The ingester's part (pushing into the ring) is not timed.
                        rig.publish(RECORDS_PER_PASS);
                        let t = Instant::now();
                        std::hint::black_box(rig.pass());
                        total += t.elapsed();
                    }
                    total
                });
            });
            let (bytes, writes) = rig.written();
            eprintln!("{name}/{subs}: {bytes} bytes in {writes} writes");
        }
    }
    g.finish();
}

criterion_group!(benches, bench);

/// `TICKCAST_FANOUT_PASSES=N`: exactly `N` timed passes of each case matching the filter.
fn fixed(passes: u64) {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for (name, take, per_sub, subs) in cases() {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let mut rig = FanoutRig::new(subs, SYMBOLS, take);
        for _ in 0..passes {
            rig.publish(RECORDS_PER_PASS);
            rig.pass();
        }
        let cpu0 = thread_cpu_ns();
        let t0 = Instant::now();
        let mut bytes = 0;
        for _ in 0..passes {
            rig.publish(RECORDS_PER_PASS);
            bytes += rig.pass();
        }
        let wall = t0.elapsed().as_nanos() as f64;
        let cpu = thread_cpu_ns().zip(cpu0).map(|(b, a)| (b - a) as f64);
        let ns = cpu.unwrap_or(wall) / passes as f64;
        println!(
            "{name}: {passes} passes, {} ({}) ns/pass, {:.1} ns/record in, {:.1} ns/subscriber-pass, {:.2} ns/delivered record, {} bytes/pass",
            ns.round(),
            if cpu.is_some() { "cpu" } else { "wall" },
            ns / RECORDS_PER_PASS as f64,
            ns / subs as f64,
            ns / (per_sub * subs) as f64,
            bytes / passes,
        );
    }
}

/// CPU time this thread has run, in ns (the first field of `/proc/thread-self/schedstat`), if
/// the kernel provides it. The publishing into the ring is included (a small share: one push
/// per record, against one pass over the subscribers).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// `TICKCAST_FANOUT_MODEL=N`: the virtual-time model with `N` subscribers of everything.
fn model(subs: usize) {
    const EVERY_NS: u64 = 1_000_000_000 / 110;
    const WRITE_NS: u64 = 4_600;
    const BYTE_PS: u64 = 300;
    let records = 4 * 110;
    let mut rig = FanoutRig::new(subs, SYMBOLS, Symbols::All);
    let mut waits = rig.model_waits(records, EVERY_NS, WRITE_NS, BYTE_PS);
    assert_eq!(
        waits.len(),
        records * subs,
        "every record to every subscriber"
    );
    waits.sort_unstable();
    let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize] as f64 / 1e6;
    println!(
        "model: {subs} subscribers, {records} records every {:.1} ms, writev {:.1} us + {} ps/byte: \
         wait p50 {:.2} ms, p90 {:.2}, p99 {:.2}, max {:.2} (one write to each subscriber: {:.1} ms)",
        EVERY_NS as f64 / 1e6,
        WRITE_NS as f64 / 1e3,
        BYTE_PS,
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
        (subs as u64 * WRITE_NS) as f64 / 1e6,
    );
}

/// `TICKCAST_FANOUT_IDLE=N`: resident memory of the shard core per idle subscriber (one symbol
/// each, every snapshot delivered, a few records through), without sockets: the core's share
/// of the `connections` case's figure.
fn idle(subs: usize) {
    let before = rss_bytes();
    let mut rig = FanoutRig::new(subs, SYMBOLS, Symbols::Each(1));
    // A quiet feed, as in the `connections` case: one record a pass.
    for _ in 0..(2 * SYMBOLS) {
        rig.publish(1);
        rig.pass();
    }
    let after = rss_bytes();
    println!(
        "idle: {subs} subscribers of 1 symbol: RSS {:.1} -> {:.1} MiB, {} bytes per subscriber",
        before as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64,
        (after.saturating_sub(before)) / subs as u64,
    );
    drop(rig);
}

/// Resident set size of this process (`/proc/self/statm`, pages of 4 KiB).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn main() {
    if let Ok(Ok(n)) = std::env::var("TICKCAST_FANOUT_IDLE").map(|v| v.parse::<usize>()) {
        idle(n);
        return;
    }
    if let Ok(Ok(n)) = std::env::var("TICKCAST_FANOUT_MODEL").map(|v| v.parse::<usize>()) {
        model(n);
        return;
    }
    match std::env::var("TICKCAST_FANOUT_PASSES").map(|v| v.parse::<u64>()) {
        Ok(Ok(n)) => fixed(n),
        _ => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
