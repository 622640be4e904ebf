//! metrics (work in progress).
