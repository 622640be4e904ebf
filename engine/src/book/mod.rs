//! book (work in progress).
