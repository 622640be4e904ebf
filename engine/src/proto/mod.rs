//! proto (work in progress).
