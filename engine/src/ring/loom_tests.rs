//! Loom models of the ring's sleep/wake handshake ([`Doorbell`]): every interleaving (and every
//! value a relaxed load may read) of a producer publishing while its consumer goes to sleep.
//! A lost wake-up leaves the consumer blocked forever, which loom reports as a deadlock.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p tickcast --release --lib ring::loom_tests`
//! (`scripts/test.sh` does, in its own target directory).
//!
//! The doorbell is the ring's own code, on loom's atomics through `sync.rs`. The rest of a
//! [`Ring`](super::Ring) is reduced to what the handshake reads: the queue to its length (the
//! real `ArrayQueue` publishes with a release store and is read with acquire loads; the model
//! pushes with release and looks with relaxed loads, so the doorbell alone must carry the
//! proof), the lag mark, and the shard's eventfd (a loom `Notify`: like an eventfd, a wake
//! before the wait is kept; loom also tries spurious wake-ups).

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Notify};
use loom::thread;

use super::doorbell::Doorbell;

/// Runs `f` under loom with at most five preemptions per execution (bounded, as tokio's and
/// crossbeam's loom CI do: the bugs loom finds need few; these models have few steps, so five
/// takes about 2 s, eight about 30 s). The `LOOM_MAX_PREEMPTIONS` environment variable
/// overrides it.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(5);
    }
    builder.check(f);
}

/// The parts of one ring that the handshake depends on.
struct Model {
    queued: AtomicUsize,
    lagged: AtomicBool,
    bell: Doorbell,
    eventfd: Notify,
}

impl Model {
    fn new() -> Self {
        Self {
            queued: AtomicUsize::new(0),
            lagged: AtomicBool::new(false),
            bell: Doorbell::new(),
            eventfd: Notify::new(),
        }
    }

    // Producer (`Ring::push` then `Ring::wake`).

    fn push(&self) {
        self.queued.fetch_add(1, Ordering::Release);
    }

    fn mark_lagged(&self) {
        self.lagged.store(true, Ordering::Release);
    }

    fn wake(&self) {
        if self.bell.take_sleeper() {
            self.eventfd.notify();
        }
    }

    // Consumer (`Ring::pop`, `Ring::prepare_sleep`, `epoll_wait`, `Ring::awake`).

    fn pop(&self) -> bool {
        if self.queued.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.queued.fetch_sub(1, Ordering::AcqRel);
        true
    }

    /// The shard's turn: drain, and when nothing is left, sleep until woken. Returns when
    /// `done` says so.
    fn consume(&self, mut done: impl FnMut(&Self, usize) -> bool) {
        let mut got = 0;
        loop {
            while self.pop() {
                got += 1;
            }
            if done(self, got) {
                return;
            }
            let idle = self.bell.prepare_sleep(|| {
                self.queued.load(Ordering::Relaxed) == 0 && !self.lagged.load(Ordering::Relaxed)
            });
            if idle {
                self.eventfd.wait();
            }
            self.bell.awake();
        }
    }
}

/// A producer publishes two records, waking after each, while the consumer drains and sleeps:
/// the consumer always gets both (never sleeps through one).
#[test]
fn no_lost_wake_up_when_publishing_while_the_consumer_sleeps() {
    model(|| {
        let ring = Arc::new(Model::new());
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    ring.push();
                    ring.wake();
                }
            })
        };
        ring.consume(|_, got| got == 2);
        producer.join().expect("producer");
    });
}

/// A producer that finds the ring full marks it lagged instead of queueing, and wakes: a
/// consumer going to sleep sees the mark (and resyncs) rather than sleeping through it.
#[test]
fn no_lost_wake_up_for_the_lag_mark() {
    model(|| {
        let ring = Arc::new(Model::new());
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                ring.mark_lagged();
                ring.wake();
            })
        };
        ring.consume(|ring, _| ring.lagged.load(Ordering::Acquire));
        producer.join().expect("producer");
    });
}

/// The model has teeth: announcing the sleep with a plain store after looking for work (no
/// eventcount) loses a wake-up (the consumer would sleep, the producer does not ring), and
/// loom finds the interleaving.
#[test]
#[should_panic(expected = "lost wake-up")]
fn announcing_after_looking_without_the_eventcount_loses_a_wake_up() {
    struct Naive {
        queued: AtomicUsize,
        asleep: AtomicBool,
    }
    model(|| {
        let ring = Arc::new(Naive {
            queued: AtomicUsize::new(0),
            asleep: AtomicBool::new(false),
        });
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                ring.queued.fetch_add(1, Ordering::Release);
                ring.asleep.swap(false, Ordering::AcqRel)
            })
        };
        let sleeps = ring.queued.load(Ordering::Acquire) == 0;
        if sleeps {
            ring.asleep.store(true, Ordering::Release);
        }
        let rang = producer.join().expect("producer");
        assert!(!sleeps || rang, "lost wake-up");
    });
}
