//! fanout (work in progress).
