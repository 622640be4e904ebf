//! Ingester thread (work in progress).
