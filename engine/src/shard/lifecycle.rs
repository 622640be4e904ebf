//! How connections end: server-initiated closes, eviction of slow consumers, the sweep of
//! per-connection deadlines (handshake 408, keepalive pings and ping timeouts, close and
//! eviction deadlines), dropping a connection, and the graceful shutdown of the whole shard.
//!
//! The phases themselves (handshaking → open → closing → evicting → gone) and their rules are in
//! `conn.rs`; this file is what the core does around them (subscriptions, metrics, sockets).

use crate::fanout::keepalive::Action;
use crate::fanout::outbuf::OutBuf;
use crate::metrics::add;
use crate::proto::close_code;
use crate::proto::handshake::write_http_response;

use super::conn::Phase;
use super::core::{Broken, ShardCore, Transport, conn_mut};
use super::timers::Timer;

impl ShardCore {
    /// Starts a server-initiated close with `code`; `discard_unsent` drops queued data first.
    pub(crate) fn close_conn(&mut self, idx: u32, code: u16, reason: &str, discard_unsent: bool) {
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        c.queue_close(code, reason, discard_unsent);
        self.enter_closing(idx);
    }

    /// Evicts a slow consumer: what it was owed and had not started is dropped (a message half
    /// written is finished), close 1013 is queued behind it, and the socket is kept for
    /// `evict_timeout` (not `close_timeout`) so that a client that resumes reading gets the
    /// close; once the close frame is in the kernel's hands the close handshake gets the usual
    /// `close_timeout` ([`super::conn::Conn::settle_after_write`]).
    /// An HTTP stream (`/stream`, `/sse`) is evicted the same way; it gets a last
    /// `{"op":"closing","code":1013}` control message and the end of its chunked body instead.
    pub(crate) fn evict_slow(&mut self, idx: u32) {
        add(&self.metrics().evicted_slow, 1);
        if let Some(t) = self.conn(idx).and_then(super::conn::Conn::transport_index) {
            add(&self.metrics().transport_evictions[t], 1);
        }
        self.close_conn(
            idx,
            close_code::TRY_AGAIN_LATER,
            "slow consumer: out-buffer full",
            true,
        );
        let deadline = self.now + self.t.ctx.config.evict_timeout;
        if let Some(c) = conn_mut(&mut self.slots, idx) {
            c.begin_evicting(deadline);
        }
    }

    /// Closing: no more data; the subscriptions are dropped and the close goes out.
    pub(crate) fn enter_closing(&mut self, idx: u32) {
        let deadline = self.now + self.t.ctx.config.close_timeout;
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        if !c.begin_closing(deadline) {
            return;
        }
        self.t.unsubscribe_all(c, idx);
        self.to_write.push(idx);
    }

    /// The connection is gone: its slot is freed and its socket closed.
    pub(crate) fn drop_conn<T: Transport>(&mut self, idx: u32, graceful: bool, io: &mut T) {
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            return;
        };
        let Some(mut c) = slot.conn.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        if let Some(t) = c.transport_index() {
            self.t.metrics().transport_connections[t]
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.t.ctx.conns.release(c.peer().ip());
        self.t.unsubscribe_all(&mut c, idx);
        io.close(idx, graceful);
        self.free.push(idx);
        self.metrics()
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The driver could not register a just-accepted connection: it is gone (no socket to
    /// close).
    pub(crate) fn abort_accepted(&mut self, idx: u32) {
        struct NoSocket;
        impl Transport for NoSocket {
            fn write(&mut self, _: u32, _: &mut OutBuf, _: bool) -> Result<u64, Broken> {
                Err(Broken)
            }
            fn close(&mut self, _: u32, _: bool) {}
        }
        self.drop_conn(idx, false, &mut NoSocket);
    }

    /// Checks every connection's deadlines: keepalive pings and ping timeouts, handshake
    /// timeouts (408), expired close handshakes and evictions.
    pub(crate) fn sweep<T: Transport>(&mut self, io: &mut T) {
        let now = self.now;
        let interval = self.t.ctx.config.ping_interval;
        let http_interval = interval.min(super::streams::MAX_KEEPALIVE);
        let mut dead = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(c) = slot.conn.as_mut() else {
                continue;
            };
            if !c.is_open() {
                continue;
            }
            c.release_idle_storage();
            if c.endpoint().is_http_stream() {
                // The client cannot answer: a keep-alive chunk every interval, so that proxies
                // and the client's idle timer see bytes; a dead peer shows as a failed write
                // or an end of file.
                if c.keepalive_due(now, http_interval) {
                    let ka = super::streams::keepalive_chunk(c.endpoint());
                    c.out_mut().push_shared(ka, true);
                    self.to_write.push(i as u32);
                }
                continue;
            }
            match c.poll_keepalive(now, interval) {
                Action::Idle => {}
                Action::Ping(n) => {
                    c.queue_ping(n);
                    self.to_write.push(i as u32);
                }
                Action::Dead => dead.push(i as u32),
            }
        }
        for idx in dead {
            add(&self.metrics().ping_timeouts, 1);
            self.close_conn(idx, close_code::GOING_AWAY, "ping timeout", true);
        }
        self.write_queued(io);
        let mut expired = Vec::new();
        let mut slow_handshakes = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(c) = slot.conn.as_mut() else {
                continue;
            };
            if c.deadline().is_none_or(|d| now < d) {
                continue;
            }
            if let Phase::Handshaking { .. } = c.phase() {
                // Slowloris: the request did not complete in time. 408, then close.
                self.t.metrics().handshake_failed("timeout");
                let mut out = Vec::with_capacity(128);
                write_http_response(
                    408,
                    "text/plain; charset=utf-8",
                    b"request timeout\n",
                    &[],
                    &mut out,
                );
                c.respond(out);
                slow_handshakes.push(i as u32);
            } else {
                expired.push(i as u32);
            }
        }
        for idx in slow_handshakes {
            // The response is tiny: it goes out at once, and the connection closes after it.
            self.write_out(idx, false, io);
            self.drop_conn(idx, false, io);
        }
        for idx in expired {
            self.drop_conn(idx, false, io);
        }
    }

    // ---- shutdown ----

    /// Graceful stop: close 1001 to every client, then the driver writes what they are owed
    /// until [`Self::shutdown_done`] (every out-buffer empty or `shutdown_deadline` passed).
    pub(crate) fn begin_shutdown<T: Transport>(&mut self, io: &mut T) {
        self.timers.stop(Timer::Sweep);
        self.timers.stop(Timer::AcceptPause);
        self.timers.set(
            Timer::Shutdown,
            self.now + self.t.ctx.config.shutdown_deadline,
        );
        for idx in 0..self.slots.len() as u32 {
            let Some(c) = self.conn(idx) else { continue };
            match c.phase() {
                Phase::Open => {
                    self.close_conn(idx, close_code::GOING_AWAY, "server shutting down", false);
                    self.write_out(idx, false, io);
                }
                Phase::Handshaking { .. } => self.drop_conn(idx, false, io),
                Phase::Responding | Phase::Closing { .. } | Phase::Evicting { .. } => {
                    self.write_out(idx, false, io);
                }
            }
        }
        self.to_write.clear();
    }

    /// True when a shutdown is over: nothing is owed to anyone, or the deadline passed.
    pub(crate) fn shutdown_done(&self) -> bool {
        let owed = self
            .slots
            .iter()
            .any(|s| s.conn.as_ref().is_some_and(|c| !c.nothing_to_send()));
        !owed || self.timers.is_due(Timer::Shutdown, self.now)
    }
}
