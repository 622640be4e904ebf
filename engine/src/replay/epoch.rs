//! The epoch of a stream numbering (protocol 1.1 §3.1): one per process that numbers the
//! streams, chosen at random when it starts, and a new one whenever seq continuity is lost.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::clock;

/// One stream numbering's name, sent as 8 lowercase hex digits (`"3f9c0a17"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Epoch(u32);

impl Epoch {
    /// The epoch of value `v` (tests, and [`EpochCell`]).
    #[must_use]
    pub const fn from_u32(v: u32) -> Self {
        Self(v)
    }

    /// Its value.
    #[must_use]
    pub const fn as_u32(self) -> u32 {
        self.0
    }

    /// A fresh random epoch: std's per-process random hash keys over the process id and the
    /// wall clock (no RNG crate needed; two processes, or two calls, differ with overwhelming
    /// probability).
    #[must_use]
    pub fn generate() -> Self {
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(clock::realtime_ns());
        let v = h.finish();
        Self((v ^ (v >> 32)) as u32)
    }

    /// A fresh random epoch different from `self`.
    #[must_use]
    pub fn renewed(self) -> Self {
        loop {
            let e = Self::generate();
            if e != self {
                return e;
            }
        }
    }

    /// The epoch named by `s` (exactly 8 hex digits, either case), `None` otherwise. A client's
    /// epoch that does not parse simply does not match.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(s, 16).ok().map(Self)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// The current epoch, shared between the thread that numbers the streams (writer) and the
/// shards (readers, for the `subscribed` reply and to check a `resume`).
#[derive(Debug)]
pub struct EpochCell(AtomicU32);

impl EpochCell {
    /// A cell holding `epoch`.
    #[must_use]
    pub fn new(epoch: Epoch) -> Self {
        Self(AtomicU32::new(epoch.0))
    }

    /// The current epoch.
    #[must_use]
    pub fn get(&self) -> Epoch {
        Epoch(self.0.load(Ordering::Acquire))
    }

    /// Takes the epoch of another process's numbering: an edge node reports the ingest node's
    /// (`--role edge`, docs/protocol.md §5).
    pub fn set(&self, epoch: Epoch) {
        self.0.store(epoch.0, Ordering::Release);
    }

    /// Seq continuity was lost (numbering reset): switches to a new random epoch and returns it.
    /// Call it before publishing any record of the new numbering.
    pub fn renew(&self) -> Epoch {
        let e = self.get().renewed();
        self.0.store(e.0, Ordering::Release);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_print_as_eight_hex_digits_and_parse_back() {
        let e = Epoch::from_u32(0x3f9c_0a17);
        assert_eq!(e.to_string(), "3f9c0a17");
        assert_eq!(Epoch::parse("3f9c0a17"), Some(e));
        assert_eq!(Epoch::parse("3F9C0A17"), Some(e));
        assert_eq!(Epoch::from_u32(1).to_string(), "00000001");
        for bad in [
            "",
            "3f9c0a1",
            "3f9c0a177",
            "3f9c0a1g",
            "+f9c0a17",
            " 3f9c0a1",
        ] {
            assert_eq!(Epoch::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn generated_epochs_differ_and_renew_changes_the_cell() {
        let a = Epoch::generate();
        assert_ne!(a.renewed(), a);
        let cell = EpochCell::new(a);
        assert_eq!(cell.get(), a);
        let b = cell.renew();
        assert_ne!(b, a);
        assert_eq!(cell.get(), b);
        // Different calls draw different keys: 16 draws, no repeats.
        let set: std::collections::HashSet<_> = (0..16).map(|_| Epoch::generate()).collect();
        assert_eq!(set.len(), 16);
    }
}
