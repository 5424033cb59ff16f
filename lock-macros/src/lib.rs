//! The `#[distributed_lock]` attribute (see the `distlock` crate).
