//! ring (work in progress).
