//! feed-sim binary.
fn main() {}
