//! The slow-consumer ladder (docs/protocol.md §5.2): live deltas → conflated snapshots →
//! eviction, and the snapshot pacing that keeps bursts the server creates from counting against
//! a client.
//!
//! Call order: [`ShardCore::ladder_after_queue`] after a batch was queued for a connection
//! (`dispatch.rs`, flush), [`ShardCore::ladder_after_write`] after its out-buffer was written
//! (`core.rs`, `write_out`), [`ShardCore::ladder_sweep`] from the sweep (`lifecycle.rs`).
//!
//! - **Up.** A live connection whose out-buffer passes the soft mark (`conflate-soft-pct` of
//!   its bound) moves its book streams to conflated snapshots at `conflate-hz` (each waits for
//!   a fresh snapshot, sent when the buffer is under the pace mark) and is told
//!   `{"op":"conflating",...}`. Trades stay live.
//! - **Down.** A conflating connection that owes less than the low mark (`conflate-low-pct`),
//!   and has been conflating for at least `conflate-dwell`, moves back to deltas, each from a
//!   fresh snapshot, and is told `{"op":"live",...}`. The gap between the marks and the dwell
//!   are the hysteresis: a connection near a mark does not flap.
//! - **Out.** A connection that passes the hard bound (`max-outbuf-bytes`, trades included) is
//!   evicted with 1013 as before; so is one that stays past the soft mark for `conflate-grace`
//!   while conflating (it cannot keep up even so, e.g. it stopped reading).

use crate::control;
use std::time::Duration;

use crate::fanout::ladder::Verdict;
use crate::fanout::{ConnId, TIERS_HZ, grant_tier};
use crate::metrics::{add, sub};

use super::conn::NO_TIER;
use super::core::ShardCore;

impl ShardCore {
    fn conn_id(&self, idx: u32) -> Option<ConnId> {
        let slot = self.slots.get(idx as usize)?;
        slot.conn.as_ref()?;
        Some(ConnId {
            index: idx,
            generation: slot.generation,
        })
    }

    /// The pressure tier: `conflate-hz` rounded down to a tier.
    fn pressure_tier(&self) -> u8 {
        let hz = self.t.ctx.config.conflate.hz;
        grant_tier(hz, hz) as u8
    }

    /// A batch was queued for `idx`: past the soft mark, a live connection starts conflating.
    pub(crate) fn ladder_after_queue(&mut self, idx: u32) {
        let cfg = self.t.ctx.config.conflate;
        if !cfg.ladder_on() {
            return;
        }
        let tier = self.pressure_tier();
        let Some(id) = self.conn_id(idx) else { return };
        let Some(c) = self.slots[idx as usize].conn.as_mut() else {
            return;
        };
        if !c.is_open()
            || c.ladder().since().is_some()
            || c.out_len() <= cfg.soft_bytes(c.out_limit())
        {
            return;
        }
        let moved = self.t.move_books(c, id, tier);
        if moved.is_empty() {
            // Nothing to conflate (trades only, or every book already at or below the tier):
            // the hard bound decides.
            c.ladder_mut().set_tier(NO_TIER);
            return;
        }
        let now = self.now;
        let owed = c.out_len() as u64;
        c.ladder_mut().start_conflating(now, owed);
        let table = self.t.ctx.symbols.load();
        let names: Vec<&str> = moved
            .iter()
            .filter_map(|&sid| table.symbols.get(sid as usize).map(|m| m.symbol.as_str()))
            .collect();
        c.queue_reply(&control::conflating_notice(
            &names,
            TIERS_HZ[usize::from(tier)],
        ));
        tracing::debug!(peer = %c.peer(), queued = c.out_len(), symbols = names.len(), "conflating");
        let m = self.t.metrics();
        add(&m.to_conflating, 1);
        add(&m.conflating, 1);
    }

    /// `idx`'s out-buffer was written: waiting snapshots are requested as it drains, and a
    /// conflating connection under the low mark (after the dwell) goes live again.
    pub(crate) fn ladder_after_write(&mut self, idx: u32) {
        let Some(id) = self.conn_id(idx) else { return };
        let now = self.now;
        let cfg = self.t.ctx.config.conflate;
        let Some(c) = self.slots[idx as usize].conn.as_mut() else {
            return;
        };
        if !c.is_open() {
            return;
        }
        if let Some(since) = c.ladder().since() {
            let held = now.saturating_duration_since(since);
            if c.out_len() <= cfg.low_bytes(c.out_limit())
                && held >= cfg.dwell
                && self.may_go_live(idx, held)
            {
                let Some(c) = self.slots[idx as usize].conn.as_mut() else {
                    return;
                };
                let moved = self.t.move_books(c, id, NO_TIER);
                let owed = c.out_len() as u64;
                c.ladder_mut().go_live(now, owed);
                let table = self.t.ctx.symbols.load();
                let names: Vec<&str> = moved
                    .iter()
                    .filter_map(|&sid| table.symbols.get(sid as usize).map(|m| m.symbol.as_str()))
                    .collect();
                c.queue_reply(&control::live_notice(&names));
                tracing::debug!(peer = %c.peer(), symbols = names.len(), "live again");
                let m = self.t.metrics();
                add(&m.to_live, 1);
                sub(&m.conflating, 1);
                self.to_write.push(idx);
            }
        }
        let Some(c) = self.slots[idx as usize].conn.as_mut() else {
            return;
        };
        if c.ladder().deferred {
            self.t.pump_snapshots(c, id);
        }
    }

    /// The rate rule (`fanout::ladder`): a drained conflating connection that reads slower
    /// than its streams' live rate stays conflated (counted once per stay in `ladder_held`).
    fn may_go_live(&mut self, idx: u32, held: Duration) -> bool {
        let dwell = self.t.ctx.config.conflate.dwell;
        let Some(c) = self.slots[idx as usize].conn.as_mut() else {
            return false;
        };
        let Some(meter) = c.ladder().meter() else {
            return true;
        };
        match meter.may_go_live(held, dwell) {
            Verdict::Live => true,
            Verdict::Hold => {
                if !c.ladder_mut().mark_held() {
                    tracing::debug!(
                        peer = %c.peer(),
                        live_bps = meter.live_rate().unwrap_or(0.0) as u64,
                        drain_bps = meter.drain_rate().unwrap_or(0.0) as u64,
                        "drained, but reads slower than its live streams: stays conflated"
                    );
                    add(&self.t.metrics().ladder_held, 1);
                }
                false
            }
        }
    }

    /// After a write that made room: the snapshots waiting for it are requested.
    pub(crate) fn pump_after_write(&mut self, idx: u32) {
        let Some(id) = self.conn_id(idx) else { return };
        if let Some(c) = self.slots[idx as usize].conn.as_mut() {
            self.t.pump_snapshots(c, id);
        }
    }

    /// From the sweep: conflating connections may go live (the dwell passed while the buffer
    /// was already low), and one that stayed past the soft mark for `conflate-grace` is evicted.
    pub(crate) fn ladder_sweep(&mut self) {
        let cfg = self.t.ctx.config.conflate;
        let now = self.now;
        let mut check = Vec::new();
        let mut evict = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(c) = slot.conn.as_mut() else {
                continue;
            };
            if !c.is_open() {
                continue;
            }
            if c.ladder().deferred {
                check.push(i as u32);
            }
            if c.ladder().since().is_none() {
                continue;
            }
            check.push(i as u32);
            if c.out_len() > cfg.soft_bytes(c.out_limit()) {
                let over = c.ladder_mut().over_since_or(now);
                if now.saturating_duration_since(over) >= cfg.grace {
                    evict.push(i as u32);
                }
            } else {
                c.ladder_mut().clear_over_since();
            }
        }
        for idx in evict {
            tracing::info!(
                idx,
                "evicting slow consumer: past the soft mark for conflate-grace while conflating"
            );
            self.evict_slow(idx);
        }
        for idx in check {
            self.ladder_after_write(idx);
        }
    }
}
