//! The reading side of a load: one thread polls every subscribed connection of
//! the process with mio (epoll), reads as much as each socket holds, and checks
//! every complete message in place.
//!
//! Connection tasks on the tokio thread connect and subscribe, then hand the
//! socket over ([`Handle::add`]). The thread takes the figures' lock once per
//! poll round, not per message, and reads the clock once per socket read. A
//! read shorter than the buffer drained the socket: with edge-triggered
//! readiness, later bytes bring a new event, so no read ends in `WouldBlock`
//! unless the socket was empty when the event came.
//!
//! A slow reader (one with a [`TokenBucket`]) reads no more than its bucket
//! allows. When the bucket is empty it stops reading although its socket may
//! still hold bytes, which edge-triggered readiness will not report again: the
//! thread keeps it on a timer list and reads it again when the bucket holds
//! enough ([`TokenBucket::ready_at`]); events for it until then are ignored. The
//! poll's timeout is the earliest such time, or the next staleness sample.
//!
//! Optionally the thread sleeps a little before each poll (`--read-pause-us`):
//! each wake-up then serves many sockets, and the reads stop contending for the
//! socket locks with the server's writes message by message. It costs that much
//! latency at most, and the figures include it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;

use super::{Check, Phase, Role, STALENESS_EVERY, Shared, lock};
use crate::client::{
    ClientError, Frame, FrameParser, OP_CLOSE, OP_PONG, client_frame, next_mask, whole_frame,
};
use crate::runner::realtime_ns;
use crate::throttle::TokenBucket;

/// The token of the thread's waker (connections use their slot index).
const WAKER: Token = Token(usize::MAX);
/// Readiness events taken per poll.
const EVENTS: usize = 1024;
/// The thread's read buffer: every read of a connection whose parser holds
/// nothing goes here, so its size bounds a read, not the memory per connection.
const READ_BUFFER: usize = 256 << 10;
/// Close code sent when the load finishes.
const CLOSE_NORMAL: u16 = 1000;

/// A subscribed connection as the reader holds it.
#[derive(Debug)]
pub(super) struct Sub {
    stream: TcpStream,
    parser: FrameParser,
    mask_seed: u32,
    check: Check,
    /// A slow reader's byte rate.
    bucket: Option<TokenBucket>,
    /// Control frames (pongs, close) not yet written.
    out: Vec<u8>,
    /// Readable while not reading (a stopper in [`Phase::Stopped`]).
    unread: bool,
    /// A slow reader whose bucket ran dry: read again at this time, whatever the
    /// events (it is on the thread's timer list).
    throttled: Option<Instant>,
}

impl Sub {
    /// A connection from its parts ([`crate::client::WsConn::into_parts`]), the
    /// integrity state its connection task built up and, for a slow reader, its
    /// byte rate.
    pub(super) fn new(
        stream: std::net::TcpStream,
        parser: FrameParser,
        mask_seed: u32,
        check: Check,
        bucket: Option<TokenBucket>,
    ) -> Self {
        Self {
            stream: TcpStream::from_std(stream),
            parser,
            mask_seed,
            check,
            bucket,
            out: Vec::new(),
            unread: false,
            throttled: None,
        }
    }

    fn role(&self) -> Role {
        self.check.role
    }

    /// Queues a control frame and writes what the socket takes.
    fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mask = next_mask(&mut self.mask_seed);
        self.out
            .extend_from_slice(&client_frame(opcode, payload, mask));
        self.flush()
    }

    /// Writes queued control frames until done or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads until the socket is drained (or a slow reader's bucket is: then
    /// `throttled` says when to read again), checking every complete message.
    /// `Some` when the connection ended (as [`Shared::ended`] takes it).
    ///
    /// While the connection's parser holds nothing (the usual case: messages
    /// arrive whole), reads go to the thread's `buf`, which stays in cache
    /// whatever the number of connections, and only a trailing partial frame
    /// is copied to the parser.
    fn read(&mut self, shared: &mut Shared, buf: &mut [u8]) -> Option<End> {
        loop {
            let allowed = match self.bucket.as_mut() {
                None => usize::MAX,
                Some(b) => match b.allowance(Instant::now()) {
                    0 => {
                        self.throttled = Some(b.ready_at());
                        return None;
                    }
                    n => n,
                },
            };
            let idle = self.parser.is_idle();
            let spare = if idle { &mut *buf } else { self.parser.spare() };
            let room = spare.len().min(allowed);
            let spare = spare.get_mut(..room).unwrap_or_default();
            let n = match self.stream.read(spare) {
                Ok(0) => return Some(Err(ClientError::Eof.to_string())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(e.to_string())),
            };
            let now = realtime_ns();
            if let Some(b) = self.bucket.as_mut() {
                b.take(Instant::now(), n);
            }
            if idle {
                let data = buf.get(..n).unwrap_or_default();
                if let Some(end) = self.whole_frames(shared, data, now) {
                    return Some(end);
                }
            } else {
                self.parser.filled(n);
            }
            if let Some(end) = self.frames(shared, now) {
                return Some(end);
            }
            if n < room {
                return None;
            }
        }
    }

    /// Handles the whole frames at the start of `data` and leaves the rest (a
    /// partial frame, or fragments) to the parser.
    fn whole_frames(&mut self, shared: &mut Shared, mut data: &[u8], now: u64) -> Option<End> {
        let mut pong = None;
        loop {
            match whole_frame(data) {
                Ok(Some((frame, len))) => {
                    if let Some(end) = on_frame(shared, &mut self.check, frame, now, &mut pong) {
                        return Some(self.finish_frames(end, pong));
                    }
                    data = data.get(len..).unwrap_or_default();
                }
                Ok(None) => break,
                Err(e) => return Some(Err(e.to_string())),
            }
        }
        if !data.is_empty() {
            self.parser.push(data);
        }
        self.answer(pong)
    }

    /// Handles every complete frame the parser holds.
    fn frames(&mut self, shared: &mut Shared, now: u64) -> Option<End> {
        let mut pong = None;
        loop {
            let frame = match self.parser.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Some(Err(e.to_string())),
            };
            if let Some(end) = on_frame(shared, &mut self.check, frame, now, &mut pong) {
                return Some(self.finish_frames(end, pong));
            }
        }
        self.answer(pong)
    }

    /// Answers the last ping of a read, if any.
    fn answer(&mut self, pong: Option<Vec<u8>>) -> Option<End> {
        let p = pong?;
        self.send(OP_PONG, &p)
            .err()
            .map(|e| Err(format!("pong: {e}")))
    }

    /// The end of a connection found while handling frames: a close frame is answered.
    fn finish_frames(&mut self, end: End, pong: Option<Vec<u8>>) -> End {
        if let Ok(Some(code)) = end {
            // Best effort, as the server may already be gone.
            let _ = self.answer(pong);
            let _ = self.send(OP_CLOSE, &code.to_be_bytes());
        }
        end
    }
}

/// How a connection ended, as [`Shared::ended`] takes it.
type End = Result<Option<u16>, String>;

/// Handles one frame; `Some` when it ends the connection.
fn on_frame(
    shared: &mut Shared,
    check: &mut Check,
    frame: Frame<'_>,
    now: u64,
    pong: &mut Option<Vec<u8>>,
) -> Option<End> {
    match frame {
        Frame::Binary(data) => shared.on_binary(check, data, now),
        Frame::Text(text) => {
            let mut subscribed = true;
            if let Err(e) = shared.on_text(check.role, text, &mut subscribed) {
                return Some(Err(e.to_string()));
            }
        }
        Frame::Ping(p) => *pong = Some(p.to_vec()),
        Frame::Pong => {}
        Frame::Close(code) => return Some(Ok(Some(code))),
    }
    None
}

/// A message to the reader thread.
#[derive(Debug)]
enum Cmd {
    Add(Box<Sub>),
    Phase(Phase),
    /// Close every connection, count it, answer, exit.
    Finish(oneshot::Sender<()>),
}

/// The tokio side's end of a reader thread.
#[derive(Debug)]
pub(super) struct Handle {
    commands: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// Starts the thread; it sleeps `pause` before each poll (zero: never).
    pub(super) fn spawn(shared: Arc<Mutex<Shared>>, pause: Duration) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (commands, rx) = mpsc::channel();
        let reader = Reader {
            poll,
            commands: rx,
            subs: Vec::new(),
            free: Vec::new(),
            phase: Phase::Run,
            shared,
            buf: vec![0; READ_BUFFER],
            pause: (!pause.is_zero()).then_some(pause),
            timers: BinaryHeap::new(),
            next_sample: None,
        };
        let thread = std::thread::Builder::new()
            .name(String::from("load-reader"))
            .spawn(move || reader.run())?;
        Ok(Self {
            commands,
            waker,
            thread: Some(thread),
        })
    }

    fn send(&self, cmd: Cmd) {
        // A reader that is gone has already counted its connections.
        if self.commands.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Hands a subscribed connection to the thread.
    pub(super) fn add(&self, sub: Sub) {
        self.send(Cmd::Add(Box::new(sub)));
    }

    /// Moves the thread's connections to `phase`.
    pub(super) fn set_phase(&self, phase: Phase) {
        self.send(Cmd::Phase(phase));
    }

    /// Closes every connection and stops the thread; false when it did not
    /// answer within `grace`.
    pub(super) async fn finish(mut self, grace: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Finish(tx));
        let answered = matches!(tokio::time::timeout(grace, rx).await, Ok(Ok(())));
        if answered {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        answered
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let (tx, _) = oneshot::channel();
            self.send(Cmd::Finish(tx));
        }
    }
}

/// The thread's state.
struct Reader {
    poll: Poll,
    commands: mpsc::Receiver<Cmd>,
    /// Connections by token; `None` for free slots (listed in `free`).
    subs: Vec<Option<Box<Sub>>>,
    free: Vec<usize>,
    phase: Phase,
    shared: Arc<Mutex<Shared>>,
    /// Where reads go while a connection's parser is idle.
    buf: Vec<u8>,
    /// Sleep before each poll, so that one poll finds many sockets ready.
    pause: Option<Duration>,
    /// Throttled slow readers: (when to read again, slot).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// When to sample the slow readers' staleness next (none while there are none).
    next_sample: Option<Instant>,
}

impl Reader {
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            if let Some(p) = self.pause {
                std::thread::sleep(p);
            }
            let next = self.timers.peek().map(|Reverse((at, _))| *at);
            let next = match (next, self.next_sample) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = next.map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                let shared = self.shared.clone();
                let mut shared = lock(&shared);
                shared.note_error(|| format!("reader poll: {e}"));
                self.close_all(&mut shared, Err(format!("reader poll: {e}")));
                return;
            }
            let shared = self.shared.clone();
            let mut shared = lock(&shared);
            let mut woken = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    woken = true;
                    continue;
                }
                let i = ev.token().0;
                let Some(Some(sub)) = self.subs.get_mut(i) else {
                    continue;
                };
                let mut end = None;
                if ev.is_writable() {
                    if let Err(e) = sub.flush() {
                        end = Some(Err(e.to_string()));
                    }
                }
                if end.is_none() && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                    if sub.role() == Role::Stopper && self.phase == Phase::Stopped {
                        sub.unread = true;
                    } else if sub.throttled.is_none() {
                        // (A throttled reader is read when its timer fires.)
                        end = sub.read(&mut shared, &mut self.buf);
                        if let Some(at) = sub.throttled {
                            self.timers.push(Reverse((at, i)));
                        }
                    }
                }
                if let Some(end) = end {
                    self.remove(i, &mut shared, end);
                }
            }
            self.timers_due(&mut shared);
            self.sample(&mut shared);
            if woken && self.commands(&mut shared) {
                return;
            }
        }
    }

    /// Reads the throttled slow readers whose time has come.
    fn timers_due(&mut self, shared: &mut Shared) {
        let now = Instant::now();
        while let Some(&Reverse((at, i))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(Some(sub)) = self.subs.get_mut(i) else {
                continue;
            };
            // A stale entry (the slot was reused, or re-armed since) is dropped.
            if sub.throttled != Some(at) {
                continue;
            }
            sub.throttled = None;
            let end = sub.read(shared, &mut self.buf);
            if let Some(at) = sub.throttled {
                self.timers.push(Reverse((at, i)));
            }
            if let Some(end) = end {
                self.remove(i, shared, end);
            }
        }
    }

    /// Samples the slow readers' staleness when it is time to.
    fn sample(&mut self, shared: &mut Shared) {
        let Some(at) = self.next_sample else {
            return;
        };
        let now = Instant::now();
        if now < at {
            return;
        }
        let wall = realtime_ns();
        for sub in self.subs.iter().flatten() {
            if sub.role() == Role::Slow {
                shared.sample_staleness(&sub.check, wall);
            }
        }
        // A late sample is not made up: the next one is a period after this one.
        self.next_sample = Some((at + STALENESS_EVERY).max(now));
    }

    /// Takes the queued commands; true when the thread is to exit.
    fn commands(&mut self, shared: &mut Shared) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Cmd::Add(sub) => self.add(sub, shared),
                Cmd::Phase(phase) => {
                    let resumed = self.phase == Phase::Stopped && phase == Phase::Run;
                    self.phase = phase;
                    if phase == Phase::Finish {
                        self.close_all(shared, Ok(None));
                    } else if resumed {
                        self.read_unread(shared);
                    }
                }
                Cmd::Finish(done) => {
                    self.phase = Phase::Finish;
                    self.close_all(shared, Ok(None));
                    let _ = done.send(());
                    return true;
                }
            }
        }
        false
    }

    fn add(&mut self, mut sub: Box<Sub>, shared: &mut Shared) {
        if self.phase == Phase::Finish {
            let _ = sub.send(OP_CLOSE, &CLOSE_NORMAL.to_be_bytes());
            shared.ended(sub.role(), Ok(None));
            return;
        }
        // Frames that came with the upgrade response or the subscribe reply.
        if let Some(end) = sub.frames(shared, realtime_ns()) {
            shared.ended(sub.role(), end);
            return;
        }
        if sub.role() == Role::Slow && self.next_sample.is_none() {
            self.next_sample = Some(Instant::now() + STALENESS_EVERY);
        }
        let i = self.free.pop().unwrap_or(self.subs.len());
        let registered = self.poll.registry().register(
            &mut sub.stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            shared.ended(sub.role(), Err(format!("reader register: {e}")));
            if i < self.subs.len() {
                self.free.push(i);
            }
            return;
        }
        // epoll reports a socket that is already readable at registration.
        if i == self.subs.len() {
            self.subs.push(Some(sub));
        } else if let Some(slot) = self.subs.get_mut(i) {
            *slot = Some(sub);
        }
    }

    /// Reads the stoppers that became readable while they did not read.
    fn read_unread(&mut self, shared: &mut Shared) {
        for i in 0..self.subs.len() {
            let Some(Some(sub)) = self.subs.get_mut(i) else {
                continue;
            };
            if !std::mem::take(&mut sub.unread) {
                continue;
            }
            let end = sub.read(shared, &mut self.buf);
            if let Some(at) = sub.throttled {
                self.timers.push(Reverse((at, i)));
            }
            if let Some(end) = end {
                self.remove(i, shared, end);
            }
        }
    }

    fn remove(&mut self, i: usize, shared: &mut Shared, end: Result<Option<u16>, String>) {
        let Some(slot) = self.subs.get_mut(i) else {
            return;
        };
        if let Some(mut sub) = slot.take() {
            let _ = self.poll.registry().deregister(&mut sub.stream);
            shared.ended(sub.role(), end);
            self.free.push(i);
        }
    }

    /// Sends a close frame on every connection and counts it as ended with `end`.
    fn close_all(&mut self, shared: &mut Shared, end: Result<Option<u16>, String>) {
        for slot in &mut self.subs {
            if let Some(mut sub) = slot.take() {
                let _ = sub.send(OP_CLOSE, &CLOSE_NORMAL.to_be_bytes());
                let _ = self.poll.registry().deregister(&mut sub.stream);
                shared.ended(sub.role(), end.clone());
            }
        }
        self.subs.clear();
        self.free.clear();
    }
}
