//! Test harnesses of the distlock workspace (not published): real etcd and RavenDB
//! servers, free loopback ports, throw-away certificates, process control, a loopback
//! TCP fault proxy, and the small statistics the benchmarks print.
//!
//! | module | what | feature |
//! |---|---|---|
//! | [`ports`] | free loopback ports | always |
//! | [`process`] | signals by PID, kill-on-drop guards | always |
//! | [`certs`] | CA, server and client certificates (`openssl` CLI) | always |
//! | [`stats`] | percentiles of durations | always |
//! | `proxy` | a TCP proxy that black-holes, drops answers or delays | `proxy` (default) |
//! | `etcd` | etcd members: start, kill, pause, restart | `etcd` |
//! | `ravendb` | a RavenDB 4.1 server over HTTP(S); `ravendb::original`, a port of the original .NET lock | `ravendb` |
//!
//! The always-on part uses only std, so the root package can depend on this crate (with
//! `default-features = false`) without adding crates to its examples' build. The
//! server harnesses need `scripts/etcd.sh` and `scripts/ravendb.sh install`.
//!
//! These are test helpers: when something the test needs cannot be done (a server
//! does not start, `openssl` fails, a port cannot be bound), they panic with a message
//! saying what failed and what to do, which fails the calling test. Nothing is skipped
//! silently. Every process they start is stopped by its PID when its owner is dropped.
//!
//! This package also holds the tests and benchmarks that need real servers
//! (`tests/etcd.rs`, `tests/ravendb.rs`, `tests/faults.rs`, `benches/etcd.rs`,
//! `benches/ravendb.rs`):
//!
//! ```text
//! cargo test -p testkit --all-features --test faults -- --nocapture
//! cargo bench -p testkit --features etcd --bench etcd
//! ```

pub mod certs;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod ports;
pub mod process;
#[cfg(feature = "proxy")]
pub mod proxy;
#[cfg(feature = "ravendb")]
pub mod ravendb;
pub mod stats;
