//! Compile-time behaviour of `#[distributed_lock]` (trybuild).
//!
//! `tests/ui/fail_*.rs` must fail with the messages in their `.stderr` files;
//! `tests/ui/pass_*.rs` must compile and run. After changing a message,
//! regenerate with `TRYBUILD=overwrite cargo test --test macro_ui` and review
//! every changed `.stderr`. The toolchain is pinned (`rust-toolchain.toml`),
//! so the rendered messages stay stable.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail_*.rs");
    cases.pass("tests/ui/pass_*.rs");
}
