//! Ring dispatch: records out of the shard's ring, into what each subscriber is owed, then one
//! batch per subscriber into its out-buffer.
//!
//! Call order, once per loop turn: [`ShardCore::drain_ring`] (resyncs first when the ring is
//! lagged, then pops up to `drain_max` messages), then [`ShardCore::flush`] (cuts and writes
//! the next slice of owed subscribers' batches; a pass may span many turns), then
//! [`ShardCore::record_latency`] with the turn's time.
//!
//! A record is copied once into the drain's arena and its span added to what every ready plain
//! subscriber of its topic is owed (contiguous spans merge: a subscriber of everything owes one
//! span); when a permessage-deflate subscriber gets it, it goes once to the topic's shared run
//! of `fanout::deflate` and, as a shared `Bytes`, to that subscriber's list. Nothing here
//! allocates per record once the tables are warm.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::fanout::arena::{DrainArena, Span};
use crate::fanout::batch::{append_owed, append_owed_stream};
use crate::fanout::deflate::RunRef;
use crate::fanout::{ConnId, Format, STREAMS_PER_SYMBOL, Topic};
use crate::metrics::add;
use crate::ring::{ResumeAnswer, ShardMsg};
use crate::wire;

use super::conn::{Conn, Endpoint, NOT_OWED};
use super::core::{Pending, ShardCore, Slot, Transport, conn_mut};
use super::streams::append_sse;

/// During a flush pass, the ring is drained again every this many connections.
const REDRAIN_EVERY: usize = 64;
/// Connections the driver's flush visits before it looks at its sockets again (and drains
/// the ring): about 1 ms of `writev`s at 10,000 subscribers.
pub(crate) const PASS_SLICE: usize = 256;

/// How much of a pass one [`ShardCore::flush`] call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slice {
    /// Visit at most this many connections, draining the ring as it goes, then pause.
    Visits(usize),
    /// Finish the pass without draining more (shutdown, tests).
    Finish,
}
/// Entries of the pending table always kept (see [`ShardCore::flush`]).
const PENDING_KEEP: usize = 256;

impl ShardCore {
    /// Takes up to `drain_max` ring messages into what each subscriber is owed; returns how
    /// many. A lagged ring (the shard fell behind and the ingester dropped messages for it) is
    /// first emptied and every book subscription restarted from a fresh snapshot.
    pub(crate) fn drain_ring(&mut self) -> usize {
        if self.t.ctx.ring.is_lagged() {
            if self.pass_open() {
                // What was drained before the lag goes out first: the pass runs to its end
                // without pausing (`flush`), then the next drain resyncs.
                return 0;
            }
            self.resync_after_lag();
        }
        self.zshared.clear();
        self.drain_records()
    }

    /// True when a drain stopped at `drain_max` with more waiting (the driver then looks at its
    /// sockets without blocking).
    pub(crate) fn more_queued(&self, drained: usize) -> bool {
        drained >= self.t.ctx.config.drain_max
    }

    /// Records, at `real_ns`, the delivery latency of the binary records whose every
    /// subscriber was written: all of them once the pass is over; during a pass that goes on,
    /// those drained before the current lap was ordered (a record drained during lap `n` goes to
    /// the connections not visited yet in lap `n` and to the others in lap `n + 1`).
    pub(crate) fn record_latency(&mut self, real_ns: u64) {
        let ready = if self.pass_open() {
            self.latency_done
        } else {
            self.latency_samples.len()
        };
        self.latency_done = 0;
        self.latency_lap = self.latency_lap.saturating_sub(ready);
        if ready == 0 {
            return;
        }
        let h = &self.t.ctx.metrics.shards[self.t.ctx.id].latency;
        for (ts, n) in self.latency_samples.drain(..ready) {
            h.record(real_ns.saturating_sub(ts), n);
        }
    }

    /// Pops up to `drain_max` ring messages and adds their records to what each subscriber is
    /// owed (the `dirty` list and `pending` table); returns the number popped.
    fn drain_records(&mut self) -> usize {
        let ring = self.t.ctx.ring.clone();
        let max = self.t.ctx.config.drain_max;
        let batch_limits = self.t.ctx.config.batch;
        let mut n = 0;
        let mut records = 0u64;
        while n < max {
            let Some(msg) = ring.pop() else { break };
            n += 1;
            match msg {
                ShardMsg::Record { topic, bytes } => {
                    // Deflate subscribers get the record through the topic's shared run, which
                    // is compressed once for all of them (fanout::deflate).
                    // Plain subscribers get it as a span of the drain's arena (copied once).
                    let mut run: Option<RunRef> = None;
                    let mut span: Option<Span> = None;
                    let mut delivered = 0u64;
                    // A conflated snapshot replaces the book: a connection whose out-buffer is
                    // past the pace mark skips it and gets a fresh one when it has room.
                    let conflated = topic.conflation().is_some();
                    for &idx in self.t.subs.get(topic) {
                        let Some(c) = conn_mut(&mut self.slots, idx) else {
                            continue;
                        };
                        if conflated && c.out_len() >= self.t.pace_mark(c) {
                            self.skipped.push(idx);
                            continue;
                        }
                        let p = pending_of(c, idx, &mut self.dirty, &mut self.pending);
                        if c.deflate().is_some() {
                            let at = *run.get_or_insert_with(|| {
                                self.zshared.push(topic, &bytes, batch_limits)
                            });
                            p.records.push(bytes.clone());
                            p.refs.push(at);
                        } else {
                            p.owed
                                .add(*span.get_or_insert_with(|| self.arena.push(&bytes)), 1);
                        }
                        delivered += 1;
                    }
                    records += delivered;
                    if delivered > 0 && topic.format == Format::Binary && !conflated {
                        if let Some(ts) = wire::record_recv_ts(&bytes) {
                            self.latency_samples.push((ts, delivered));
                        }
                    }
                    if !self.skipped.is_empty() {
                        add(&self.t.metrics().conflated_skips, self.skipped.len() as u64);
                        for idx in std::mem::take(&mut self.skipped) {
                            if let Some(c) = conn_mut(&mut self.slots, idx) {
                                self.t.skip_tick(c, idx, topic);
                            }
                        }
                    }
                }
                ShardMsg::Status { sid, format, bytes } => {
                    records += self.deliver_status(sid, format, &bytes);
                }
                ShardMsg::Snapshot {
                    conn,
                    req,
                    topic,
                    bytes,
                } => records += self.deliver_snapshots(conn, req, topic, &bytes),
                ShardMsg::Resumed(answer) => records += self.deliver_resume(*answer),
            }
        }
        // The drain's records are complete: slices of them can be taken.
        self.arena.seal();
        let m = self.t.metrics();
        add(&m.records_out, records);
        m.ring_len.store(ring.len() as u64, Ordering::Relaxed);
        n
    }

    /// Gives a status record to every connection subscribed to `sid` in `format` (book at any
    /// depth, or trades), once each, including book subscribers still waiting for a snapshot.
    fn deliver_status(&mut self, sid: u32, format: Format, bytes: &Bytes) -> u64 {
        self.status_stamp = self.status_stamp.wrapping_add(1);
        let stamp = self.status_stamp;
        let mut to = StatusTo {
            dirty: &mut self.dirty,
            pending: &mut self.pending,
            arena: &mut self.arena,
            span: None,
            stamp,
            bytes,
        };
        let mut n = 0;
        for stream in 0..STREAMS_PER_SYMBOL as u8 {
            let topic = Topic {
                sid,
                stream,
                format,
            };
            for &idx in self.t.subs.get(topic) {
                n += u64::from(to.push(&mut self.slots, idx));
            }
        }
        // Subscribers whose snapshot is still on its way are not in the book topic lists yet.
        for idx in 0..self.slots.len() {
            let waiting = self.slots[idx]
                .conn
                .as_ref()
                .is_some_and(|c| c.waits_for_snapshot(sid, format));
            if waiting {
                n += u64::from(to.push(&mut self.slots, idx as u32));
            }
        }
        n
    }

    /// A snapshot came out of the ring: every subscription waiting for that request gets it
    /// (requests are coalesced per topic, see `snapshots.rs`); returns how many got it.
    fn deliver_snapshots(&mut self, conn: ConnId, req: u32, topic: Topic, bytes: &Bytes) -> u64 {
        let waiters = self.t.snapshots.answered(conn, req, topic);
        if waiters.is_empty() {
            // Not the request in flight for the topic (one from before a resync): only its own
            // subscription may take it, and `deliver_snapshot` finds that its req is stale.
            return u64::from(self.deliver_snapshot(conn, req, topic, bytes.clone()));
        }
        let mut n = 0;
        for (id, req) in waiters {
            n += u64::from(self.deliver_snapshot(id, req, topic, bytes.clone()));
        }
        n
    }

    fn deliver_snapshot(&mut self, id: ConnId, req: u32, topic: Topic, bytes: Bytes) -> bool {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return false;
        };
        if slot.generation != id.generation {
            return false;
        }
        let Some(c) = slot.conn.as_mut() else {
            return false;
        };
        if !c.is_open() || c.format() != topic.format {
            return false;
        }
        let Some(sub) = c.subscription_mut(topic.sid) else {
            return false;
        };
        if sub.ready || sub.req != req || !sub.book {
            return false;
        }
        let s = *sub;
        if c.book_topic(&s) != topic {
            return false;
        }
        let Some(sub) = c.subscription_mut(topic.sid) else {
            return false;
        };
        sub.ready = true;
        self.t.subs.add(topic, id.index);
        let l = c.ladder_mut();
        l.snap_est = l.snap_est.max(bytes.len() as u32);
        let p = pending_of(c, id.index, &mut self.dirty, &mut self.pending);
        if c.deflate().is_some() {
            p.records.push(bytes);
            p.refs.push(RunRef::OWN);
        } else {
            // A snapshot is large and this connection's alone: shared as it is, not copied.
            p.owed.add_own(bytes);
        }
        true
    }

    /// The answer to a subscribe's resume came out of the ring: the held `subscribed` reply is
    /// queued, then the replayed records in their ring position (before any live record that
    /// follows the answer); see `subscriptions.rs`. Returns the records given.
    fn deliver_resume(&mut self, a: ResumeAnswer) -> u64 {
        let Some(slot) = self.slots.get_mut(a.conn.index as usize) else {
            return 0;
        };
        if slot.generation != a.conn.generation {
            return 0;
        }
        let Some(c) = slot.conn.as_mut() else {
            return 0;
        };
        if !c.is_open() {
            return 0;
        }
        let id = a.conn;
        let mut given = Vec::new();
        let reply = self
            .t
            .resumed(c, id, a.req, a.epoch, a.symbols, |_, b| given.push(b));
        let Some(reply) = reply else {
            return 0;
        };
        // Queued now, ahead of what the connection is owed from this drain (flushed later).
        c.queue_reply(&reply);
        self.to_write.push(id.index);
        let n = given.len() as u64;
        if given.is_empty() {
            return 0;
        }
        let p = pending_of(c, id.index, &mut self.dirty, &mut self.pending);
        for b in given {
            if c.deflate().is_some() {
                p.records.push(b);
                p.refs.push(RunRef::OWN);
            } else {
                // Copied into the drain's arena: the replay of one connection becomes one span
                // (one iovec) instead of one per record.
                p.owed.add(self.arena.push(&b), 1);
            }
        }
        n
    }

    /// The producer dropped messages for this shard: discard what is queued and restart every
    /// book subscription from a fresh snapshot (trades simply continue; their seq shows the
    /// jump).
    fn resync_after_lag(&mut self) {
        let discarded = self.t.ctx.ring.recover();
        // Requests in flight may have been answered into the discarded part of the ring: ask
        // again for every waiting subscription (below, with new req numbers).
        self.t.snapshots.clear();
        add(&self.t.metrics().ring_resyncs, 1);
        tracing::warn!(
            shard = self.t.ctx.id,
            discarded,
            "shard fell behind its ring; resyncing subscribers with snapshots"
        );
        for (idx, slot) in self.slots.iter_mut().enumerate() {
            let generation = slot.generation;
            let Some(c) = slot.conn.as_mut() else {
                continue;
            };
            c.clear_pending();
            if !c.is_open() {
                continue;
            }
            let id = ConnId {
                index: idx as u32,
                generation,
            };
            if self.t.abandon_resumes(c, id) {
                self.to_write.push(id.index);
            }
            self.t.restart_book_subscriptions(c, id);
        }
        self.dirty.clear();
    }

    /// Flushes the connections owed something, least recently flushed first, for at most
    /// `slice` of them; returns true while the pass is not over (the driver looks at its
    /// sockets, drains the ring and calls again: [`Self::pass_open`]).
    ///
    /// A pass is one continuous walk over what is owed. Records that arrive while it goes on
    /// are drained into it (by the driver between slices, and every [`REDRAIN_EVERY`]
    /// connections within one, see [`Self::redrain`]): a connection not yet visited gets them
    /// in the batch it is about to get, one already visited is put back at the end of the
    /// dirty list, for the next lap of the same pass. So a record waits at most about one lap
    /// of the table (one write to each of its subscribers), never an extra round of writes that
    /// carries nothing new; under steady load the pass never ends, and the entries and arena
    /// chunks of finished laps are dropped lap by lap ([`Self::next_lap`]).
    ///
    /// Each lap visits its connections least recently flushed first (`last_flush`), not in the
    /// order the drain met them in (the subscription lists' order, the same every pass): a
    /// pass that stopped part-way round the table is continued where it stopped.
    ///
    /// The pass does not pause between slices while this drain has permessage-deflate runs (a
    /// compressed run must not grow, and the next drain starts new runs) or the ring is lagged
    /// (the resync waits for the pass to end): it then runs to its end, as [`Slice::Finish`]
    /// does.
    ///
    /// A connection whose batch would pass its out-buffer bound is evicted (1013).
    pub(crate) fn flush<T: Transport>(&mut self, io: &mut T, slice: Slice) -> bool {
        let (budget, redrain) = match slice {
            Slice::Visits(n) => (n, true),
            Slice::Finish => (usize::MAX, false),
        };
        let mut messages = 0u64;
        let mut done = 0usize;
        let open = loop {
            if self.visit == self.order.len() && !self.next_lap() {
                break false;
            }
            if done >= budget && self.may_pause() {
                break true;
            }
            if redrain && done % REDRAIN_EVERY == REDRAIN_EVERY - 1 {
                self.redrain();
            }
            let pos = self.order_at(self.visit);
            self.visit += 1;
            done += 1;
            let idx = self.dirty[pos];
            self.stamp_flush(idx);
            if let Some(n) = self.cut(pos) {
                messages += n as u64;
                // Written now, unless its socket is known to be full (the readiness event
                // will come, and a `writev` before it only fails again).
                self.write_out(idx, true, io);
            }
        };
        add(&self.t.metrics().messages_out, messages);
        if !open {
            self.end_pass();
        }
        // Replies the drains queued (resumes answered, held replies after a resync) for
        // connections owed no record.
        self.write_queued(io);
        open
    }

    /// True while some connection is owed something from the drains (a pass is under way).
    pub(crate) fn pass_open(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Connection `idx`'s owed batch, if it has one, goes into its out-buffer now (not
    /// written): called before its input is handled, so that whatever that queues (replies,
    /// a close) comes after the records drained before it, as when every pass ended before
    /// the sockets were looked at. Its place in the pass is then skipped.
    pub(crate) fn settle_owed(&mut self, idx: u32) {
        let Some(at) = self.conn(idx).map(Conn::owed_at) else {
            return;
        };
        if at == NOT_OWED {
            return;
        }
        if let Some(n) = self.cut(at as usize) {
            add(&self.t.metrics().messages_out, n as u64);
        }
    }

    /// Cuts the batch of the connection at position `pos` of the dirty list into its
    /// out-buffer (or evicts it when the batch does not fit); returns the messages queued, or
    /// `None` when there is nothing to write (the connection is gone, no longer owns that
    /// entry, or is not open).
    fn cut(&mut self, pos: usize) -> Option<usize> {
        let limits = self.t.ctx.config.batch;
        let threshold = self.t.ctx.config.deflate_threshold;
        let idx = *self.dirty.get(pos)?;
        let p = &mut self.pending[pos];
        let owner = conn_mut(&mut self.slots, idx).filter(|c| c.owed_at() == pos as u32);
        let Some(c) = owner else {
            // Gone, or no longer its entry (it started closing, or was settled, meanwhile).
            p.clear();
            return None;
        };
        c.clear_pending();
        if !c.is_open() {
            p.clear();
            return None;
        }
        p.owed.close();
        let format = c.format();
        let result = match (c.endpoint(), c.deflate()) {
            // The plain-HTTP transports (`streams.rs`): the same spans, framed for HTTP.
            (Endpoint::Stream, _) => append_owed_stream(c.out_mut(), &self.arena, &p.owed, limits),
            (Endpoint::Sse, _) => {
                let (out, pos) = c.out_and_sse();
                append_sse(out, &self.arena, &p.owed, pos)
            }
            (_, Some(z)) => self.zshared.append_batch(
                c.out_mut(),
                format,
                &p.records,
                &p.refs,
                z.server_window_bits,
                limits,
                threshold,
            ),
            (_, None) => append_owed(c.out_mut(), format, &self.arena, &p.owed, limits),
        };
        p.clear();
        match result {
            Ok(n) => {
                self.ladder_after_queue(idx);
                Some(n)
            }
            Err(overflow) => {
                tracing::info!(peer = %c.peer(), queued = overflow.queued, limit = overflow.limit, "evicting slow consumer");
                self.evict_slow(idx);
                Some(0)
            }
        }
    }

    /// Whether the pass may pause for the driver (see [`Self::flush`]).
    fn may_pause(&self) -> bool {
        self.zshared.is_empty() && !self.t.ctx.ring.is_lagged()
    }

    /// Every entry ordered so far was visited: drops them (and the arena chunks only they
    /// could point into), then orders the entries added since; false when there are none.
    fn next_lap(&mut self) -> bool {
        if self.order.len() == self.dirty.len() {
            return false;
        }
        self.pass_peak = self.pass_peak.max(self.dirty.len());
        if self.visit > 0 {
            // Entries `..visit` are done. The others were all made after the last lap was
            // ordered, so they point only into chunks from `lap_mark` on.
            let done = self.visit;
            let slots = &mut self.slots;
            for (i, &idx) in self.dirty[done..].iter().enumerate() {
                if let Some(c) = conn_mut(slots, idx).filter(|c| c.owed_at() as usize == done + i) {
                    c.set_owed_at(i as u32);
                }
            }
            self.dirty.drain(..done);
            // The visited entries are empty: they become spares at the end.
            self.pending.rotate_left(done);
            self.order.clear();
            self.visit = 0;
            self.arena.release_before(self.lap_mark);
        }
        self.lap_mark = self.arena.next_chunk();
        // The records drained before the previous lap was ordered reached all their
        // subscribers in it or in the lap that just ended.
        self.latency_done = self.latency_lap;
        self.latency_lap = self.latency_samples.len();
        self.order_more()
    }

    /// The pass is over: every connection owed something was flushed.
    fn end_pass(&mut self) {
        let peak = std::mem::take(&mut self.pass_peak);
        self.latency_done = 0;
        self.latency_lap = 0;
        self.dirty.clear();
        self.order.clear();
        self.visit = 0;
        // Spare entries (and their lists' memory) are kept for the next passes, whose length
        // varies with the rolling drains, but not the thousands a subscription storm or a
        // resync made (idle memory).
        if self.pending.len() > (8 * peak).max(PENDING_KEEP) {
            self.pending.truncate((2 * peak).max(PENDING_KEEP));
            self.pending.shrink_to_fit();
            self.order.shrink_to(2 * peak);
        }
        // Release the drains' shared pieces.
        self.zshared.clear();
        self.arena.clear();
    }

    /// Appends the dirty entries not yet in the flush order to it, least recently flushed
    /// first (among themselves: the ones a redrain added are all flushed after the ones before
    /// them); false when there were none.
    ///
    /// Each entry is one `u64`, the age rank in the high half and the position in `dirty` in
    /// the low half, so that the sort compares plain integers; and a part that is already in
    /// order (subscribers of the same streams, met by the drain in the order of their last
    /// flush) is not sorted at all.
    fn order_more(&mut self) -> bool {
        let from = self.order.len();
        if from == self.dirty.len() {
            return false;
        }
        let clock = self.flush_clock;
        let stamps = &self.last_flush;
        self.order
            .extend(self.dirty[from..].iter().enumerate().map(|(i, &idx)| {
                // Oldest first: the largest age sorts first. A connection never flushed
                // (a new one, or a slot beyond the stamps) counts as the oldest.
                let age = stamps
                    .get(idx as usize)
                    .map_or(u32::MAX, |&at| clock.wrapping_sub(at));
                (u64::from(u32::MAX - age) << 32) | (from + i) as u64
            }));
        let more = &mut self.order[from..];
        if !more.is_sorted() {
            more.sort_unstable();
        }
        true
    }

    /// The position in `dirty` of the `visit`-th connection of the flush order.
    fn order_at(&self, visit: usize) -> usize {
        // The low half of the entry (see `order_more`).
        self.order[visit] as u32 as usize
    }

    /// Connection `idx` is being flushed now.
    fn stamp_flush(&mut self, idx: u32) {
        self.flush_clock = self.flush_clock.wrapping_add(1);
        let i = idx as usize;
        if self.last_flush.len() <= i {
            self.last_flush.resize(self.slots.len().max(i + 1), 0);
        }
        self.last_flush[i] = self.flush_clock;
    }

    /// Drains what arrived during a flush pass, unless the ring is lagged (the next pass
    /// resyncs first) or this drain has permessage-deflate runs (a run that was compressed
    /// must not grow).
    fn redrain(&mut self) {
        let ring = &self.t.ctx.ring;
        if ring.is_empty() || ring.is_lagged() || !self.zshared.is_empty() {
            return;
        }
        self.drain_records();
    }
}

/// The entry of `pending` for connection `idx` (slot `c`), made on its first record of the
/// drain, which also puts it in the dirty list.
fn pending_of<'a>(
    c: &mut Conn,
    idx: u32,
    dirty: &mut Vec<u32>,
    pending: &'a mut Vec<Pending>,
) -> &'a mut Pending {
    if c.owed_at() == NOT_OWED {
        c.set_owed_at(dirty.len() as u32);
        dirty.push(idx);
    }
    let at = c.owed_at() as usize;
    if pending.len() <= at {
        pending.resize_with(at + 1, Pending::default);
    }
    &mut pending[at]
}

/// One status record on its way to the connections of a symbol (see
/// [`ShardCore::deliver_status`]).
struct StatusTo<'a> {
    dirty: &'a mut Vec<u32>,
    pending: &'a mut Vec<Pending>,
    arena: &'a mut DrainArena,
    /// The record in the arena, once a plain connection got it.
    span: Option<Span>,
    stamp: u64,
    bytes: &'a Bytes,
}

impl StatusTo<'_> {
    /// Appends the status record to one connection unless it already got this one (`stamp`).
    fn push(&mut self, slots: &mut [Slot], idx: u32) -> bool {
        let Some(c) = conn_mut(slots, idx) else {
            return false;
        };
        if !c.take_status(self.stamp) {
            return false;
        }
        let p = pending_of(c, idx, self.dirty, self.pending);
        if c.deflate().is_some() {
            p.records.push(self.bytes.clone());
            p.refs.push(RunRef::OWN);
        } else {
            let span = *self.span.get_or_insert_with(|| self.arena.push(self.bytes));
            p.owed.add(span, 1);
        }
        true
    }
}
