#!/usr/bin/env bash
# The project's test command (README.md; CI runs it through .ci/run).
#
# Installs what the tests need when it is missing (Debian's etcd-server and
# protobuf-compiler; RavenDB 4.1 from PyPI/crates.io packages, cached in the
# git-ignored .cache/), checks formatting and lints, then runs every test with
# every backend. The tests start their own etcd and RavenDB servers on
# loopback ports they choose and stop them by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
bash scripts/etcd.sh
bash scripts/ravendb.sh install
echo "test.sh: dependencies ready in $(( $(date +%s) - started ))s"

cargo fmt --all -- --check
# The lock engine imports only downward (store, error, options); no import cycle in lock-runtime.
python3 scripts/check_layers.py
cargo clippy --workspace --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --all-features
# Every test with every feature, in every package: the backends against real servers and the
# loopback fault-proxy tests (testkit/tests), the CLI (tests/), the deterministic simulation
# (10,000 seeds; DISTLOCK_SIM_SEEDS=N for more), the stateright model of the protocol, the
# property tests, the attribute's compile-error tests (lock-macros/tests/macro_ui.rs: trybuild
# builds them with default features whatever this build enables) and the axum example's test.
cargo test --workspace --all-features
echo "test.sh: done in $(( $(date +%s) - started ))s"
