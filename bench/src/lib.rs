//! tickcast-bench library (work in progress).
