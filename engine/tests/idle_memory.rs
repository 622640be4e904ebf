//! The shard core's heap per idle subscriber, counted by a counting global allocator: a count
//! of bytes, deterministic, not RSS and not a timing. The shard core is driven by the fan-out
//! rig (`tickcast::shard::rig`): subscribers accepted, upgraded and subscribed as the driver
//! does it, their snapshots delivered through the ring and written, then a quiet feed (one
//! record a pass), as in the `connections` benchmark (docs/benchmarks.md).
//!
//! The figure is the marginal cost: the heap of a shard with 3,000 idle subscribers minus that
//! of one with 1,000, over 2,000, so that what a shard holds whatever its connections (its
//! ring, its tables) cancels out. It counts the connection table (reserved for `max-conns`,
//! here the subscribers), each connection's subscription list and its places in the topic
//! lists, and what a flush pass keeps; each live block is charged 16 bytes on top of its size
//! (glibc's chunk header and rounding). The engine's RSS per subscriber adds what the kernel
//! side of the driver costs in user space (its socket table) and allocator residue; see
//! docs/operations.md, "Memory per connection".

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tickcast::shard::rig::{FanoutRig, Symbols};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Feed symbols of the rig (as in the `connections` case).
const SYMBOLS: usize = 50;
/// Heap bytes a live block costs beyond its size (glibc: an 8-byte header, 16-byte rounding).
const BLOCK_OVERHEAD: i64 = 16;
/// The bound per idle subscriber. Today 285 bytes, of which 272 the connection's slot
/// (`size_of::<Conn>()` is pinned by a unit test in `shard/conn.rs`); main before issue 16's
/// round: 360 for the slot and 32 for a one-symbol subscription list alone. Raise it only on
/// purpose: every byte counts once per connection (docs/operations.md).
const MAX_BYTES_PER_SUBSCRIBER: i64 = 300;

/// Heap held by a shard core with `n` idle subscribers of one symbol each.
fn heap_with(n: usize) -> i64 {
    let region = Region::new(GLOBAL);
    let mut rig = FanoutRig::new(n, SYMBOLS, Symbols::Each(1));
    // A quiet feed: one record a pass, every symbol twice.
    let mut bytes = 0;
    for _ in 0..(2 * SYMBOLS) {
        rig.publish(1);
        bytes += rig.pass();
    }
    // Only subscribers whose snapshot was delivered get deltas.
    assert!(bytes > 0, "the quiet feed reached no subscriber");
    let s = region.change();
    let live_bytes = s.bytes_allocated as i64 - s.bytes_deallocated as i64;
    let live_blocks = s.allocations as i64 - s.deallocations as i64;
    drop(rig);
    live_bytes + BLOCK_OVERHEAD * live_blocks
}

#[test]
fn an_idle_subscriber_costs_the_shard_core_at_most_300_heap_bytes() {
    let small = heap_with(1_000);
    let large = heap_with(3_000);
    let per_subscriber = (large - small) / 2_000;
    eprintln!(
        "shard core heap: {small} bytes with 1,000 idle subscribers, {large} with 3,000: \
         {per_subscriber} bytes per subscriber"
    );
    assert!(
        per_subscriber <= MAX_BYTES_PER_SUBSCRIBER,
        "{per_subscriber} heap bytes per idle subscriber (bound {MAX_BYTES_PER_SUBSCRIBER})"
    );
}
