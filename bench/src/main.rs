//! tickcast-bench binary.
fn main() {}
