//! Overhead of `#[distributed_lock]` (filled in below).
fn main() {}
