//! Simulated exchange (work in progress).
