//! clock (work in progress).
