//! Compile-time behaviour of `#[distributed_lock]` (trybuild).
//!
//! `tests/ui/fail_*.rs` must fail with the messages in their `.stderr` files;
//! `tests/ui/pass_*.rs` must compile and run. After changing a message,
//! regenerate with `TRYBUILD=overwrite cargo test -p lock-macros --test macro_ui` and review
//! every changed `.stderr`. The toolchain is pinned (`rust-toolchain.toml`),
//! so the rendered messages stay stable.
//!
//! They live in this package, not the root one, so that trybuild is not built for the
//! root package's examples. trybuild compiles the cases against this package's
//! dev-dependencies as declared (`distlock` with its default features), whatever
//! features the surrounding build enables, so they also run inside
//! `cargo test --workspace --all-features`. That matters for the expected output:
//! rustc shortens type paths in its messages only when the name is unique in the
//! whole dependency graph, and the `etcd` feature would bring `etcd_client::LockClient`
//! and turn `LockClient` into `distlock::LockClient`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail_*.rs");
    cases.pass("tests/ui/pass_*.rs");
}
