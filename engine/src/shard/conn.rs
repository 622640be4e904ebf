//! One client connection as a shard sees it: socket, protocol state, out-buffer, subscriptions.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
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

/// A client connection owned by one shard.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) phase: Phase,
    pub(crate) ws: Option<WsConn>,
    pub(crate) endpoint: Endpoint,
    /// permessage-deflate parameters, when negotiated.
    pub(crate) deflate: Option<DeflateParams>,
    pub(crate) format: Format,
    pub(crate) inbuf: BytesMut,
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
    pub(crate) status_stamp: u64,
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

    /// Forgets what the connection is owed from this drain.
    pub(crate) fn clear_pending(&mut self) {
        self.owed = NOT_OWED;
    }
}
