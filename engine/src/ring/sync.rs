//! The atomics of the ring's sleep/wake handshake: `std`'s, or loom's when built with
//! `RUSTFLAGS="--cfg loom"` so that `ring::loom_tests` can explore every interleaving of the
//! handshake (the idea of `tokio-rs/bytes`' `src/loom.rs`).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
