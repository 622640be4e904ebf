//! One client connection as a shard sees it: socket, protocol state, out-buffer, subscriptions.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mio::net::TcpStream;

use crate::fanout::Format;
use crate::fanout::limit::RateLimiter;
use crate::fanout::outbuf::OutBuf;
use crate::proto::conn::WsConn;
use crate::proto::deflate::DeflateParams;

/// [`Conn::owed`] of a connection owed nothing from the current drain.
pub(crate) const NOT_OWED: u32 = u32::MAX;

/// Which WebSocket endpoint a connection upgraded on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/ws`: control messages in, data streams out.
    Ws,
    /// `/echo` (only with `--echo`): every text or binary message is sent back as one
    /// unfragmented message, for the conformance suite.
    Echo,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for a complete upgrade request until the deadline.
    Handshake { deadline: Instant },
    /// A plain HTTP response is queued; close once it is written.
    Http,
    /// WebSocket open: control messages in, data out.
    Open,
    /// A close frame is queued or sent; no more data. Dropped when the close handshake ends or at
    /// the deadline.
    Closing { deadline: Instant },
}

/// One subscription of a connection (one symbol).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sub {
    pub(crate) sid: u32,
    pub(crate) depth_idx: u8,
    pub(crate) book: bool,
    pub(crate) trades: bool,
    /// The snapshot arrived: the connection is in the book topic's subscriber list.
    pub(crate) ready: bool,
    /// The snapshot request this subscription waits for.
    pub(crate) req: u32,
}

/// Bytes received and not processed yet: only a partial frame or request between reads, so
/// usually nothing. Boxed on demand (8 bytes per idle connection instead of a `BytesMut`'s 32).
#[derive(Debug, Default)]
pub(crate) struct InBuf(Option<Box<BytesMut>>);

impl InBuf {
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.len())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], |b| &b[..])
    }

    pub(crate) fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf_mut().extend_from_slice(data);
    }

    /// The buffer itself (allocated if there was none), for the protocol code.
    pub(crate) fn buf_mut(&mut self) -> &mut BytesMut {
        self.0.get_or_insert_with(Box::default)
    }

    pub(crate) fn split_to(&mut self, n: usize) -> Bytes {
        match self.0.as_mut() {
            Some(b) => b.split_to(n.min(b.len())).freeze(),
            None => Bytes::new(),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    /// Gives the storage back when nothing is left in it.
    pub(crate) fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }
}

/// A client's address, packed (19 bytes of fields instead of `SocketAddr`'s 32: this is kept
/// per connection).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    ip: IpAddr,
    port: u16,
}

impl Peer {
    pub(crate) fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Self {
        Self {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

/// A client connection owned by one shard.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) peer: Peer,
    pub(crate) phase: Phase,
    pub(crate) ws: Option<WsConn>,
    pub(crate) endpoint: Endpoint,
    /// permessage-deflate parameters, when negotiated.
    pub(crate) deflate: Option<DeflateParams>,
    pub(crate) format: Format,
    pub(crate) inbuf: InBuf,
    pub(crate) out: OutBuf,
    /// Where what the connection is owed from the current ring drain is kept: its index in the
    /// shard's table of pending batches (and in its dirty list), or [`NOT_OWED`].
    pub(crate) owed: u32,
    /// WRITABLE interest is registered (only while the out-buffer is not empty).
    pub(crate) writable: bool,
    pub(crate) subs: Vec<Sub>,
    pub(crate) limiter: RateLimiter,
    pub(crate) next_req: u32,
    /// The last status delivery this connection got (see `Shard::deliver_status`).
    /// (Truncated to 32 bits: a false match needs 2^32 status deliveries in between.)
    pub(crate) status_stamp: u32,
    /// Ping schedule: any bytes from the client count as a sign of life.
    pub(crate) keepalive: crate::fanout::keepalive::KeepAlive,
}

impl Conn {
    pub(crate) fn sub_mut(&mut self, sid: u32) -> Option<&mut Sub> {
        self.subs.iter_mut().find(|s| s.sid == sid)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Gives back the heap storage an idle connection does not need (out-buffer queue, spare
    /// subscription capacity); called from the shard's tick. Active connections allocate again
    /// on their next message, at most once per tick. (What a connection is owed from a drain
    /// lives in the shard's table, not here.)
    pub(crate) fn release_idle_storage(&mut self) {
        if !self.out.is_empty() || self.owed != NOT_OWED {
            return;
        }
        self.out.release_storage();
        if self.subs.capacity() > self.subs.len() {
            self.subs.shrink_to_fit();
        }
    }

    /// After a write that emptied the out-buffer: gives back the out-buffer queue when it is
    /// small (a connection that gets a few messages per wake). A burst that reaches thousands
    /// of connections at once (snapshots for a `*` subscription, a resync) then does not leave
    /// each of them holding storage, which the allocator would keep resident after the burst.
    /// Large ones (busy connections) are kept and released by the tick once idle; the cost is
    /// one small allocation per write, against a `writev`.
    pub(crate) fn release_small_storage(&mut self) {
        const SMALL: usize = 8;
        if self.out.is_empty() {
            self.out.release_storage_if_at_most(SMALL);
        }
    }

    /// Forgets what the connection is owed from this drain.
    pub(crate) fn clear_pending(&mut self) {
        self.owed = NOT_OWED;
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use std::mem::size_of;

    /// Every connection costs `size_of::<Conn>()` in the shard's table, idle or not: the bulk
    /// of an idle subscriber's memory (docs/operations.md, "Memory per connection"). A change
    /// that grows these should be deliberate: update the figures here and there.
    #[test]
    fn idle_connection_state_stays_small() {
        assert!(
            size_of::<super::Conn>() <= 344,
            "{}",
            size_of::<super::Conn>()
        );
        assert!(size_of::<crate::proto::conn::WsConn>() <= 64);
        assert!(size_of::<crate::fanout::outbuf::OutBuf>() <= 64);
        assert!(size_of::<crate::fanout::limit::RateLimiter>() <= 32);
        assert!(size_of::<crate::fanout::keepalive::KeepAlive>() <= 24);
        assert!(size_of::<super::Peer>() <= 20);
    }
}
