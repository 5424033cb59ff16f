//! Compile-time behaviour of `#[distributed_lock]` (trybuild).
//!
//! `tests/ui/fail_*.rs` must fail with the messages in their `.stderr` files;
//! `tests/ui/pass_*.rs` must compile and run. After changing a message,
//! regenerate with `TRYBUILD=overwrite cargo test --test macro_ui` and review
//! every changed `.stderr`. The toolchain is pinned (`rust-toolchain.toml`),
//! so the rendered messages stay stable.
//!
//! These run with the default features only (`scripts/test.sh` runs
//! `cargo test --test macro_ui` on its own): rustc shortens type paths in its
//! messages only when the name is unique in the whole dependency graph, and
//! the `etcd` feature brings `etcd_client::LockClient`, which turns
//! `LockClient` into `distlock::LockClient` in the expected output. The
//! attribute itself does not depend on features.
#![cfg(not(any(feature = "etcd", feature = "ravendb", feature = "cli")))]

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail_*.rs");
    cases.pass("tests/ui/pass_*.rs");
}
