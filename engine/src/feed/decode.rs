//! Feed message decoding (work in progress).
