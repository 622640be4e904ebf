//! The tickcast daemon.
fn main() {}
