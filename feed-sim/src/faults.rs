//! Fault injection: the place where issue 4 will break the feed on purpose.
//!
//! Planned switches: drop an update, duplicate one, reorder two, send malformed JSON, send an
//! unknown message type, disconnect a client, stall the stream. None is implemented yet:
//! [`Faults`] has no switches and [`inject`] passes every batch through unchanged. The hook is
//! already wired into the fan-out (`server::Core::broadcast`), so faults only need to be
//! implemented here and exposed through the simulator's API.

use bytes::Bytes;

/// Fault switches of a simulator. Currently empty: the default is "no faults".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Faults {}

impl Faults {
    /// No faults (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// True when no fault is switched on.
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

/// FAULT INJECTION POINT. Every batch of live messages (`\n`-terminated JSON lines, in
/// generation order) passes through here once before it is copied to every feed client.
/// Not implemented yet: returns the batch unchanged.
pub(crate) fn inject(_faults: &Faults, batch: Bytes) -> Bytes {
    batch
}
