//! # distlock
//!
//! Cluster-wide mutual exclusion for async Rust, as easy and as safe as a
//! local `Mutex`: while a locked body runs, no other process in the cluster
//! runs a body locked with the same key.
//!
//! The lock is a compare-exchange record (RavenDB's cluster-wide lock, made
//! skew-safe): acquire is put-if-absent, renewal and takeover are
//! compare-exchanges on the index, release is delete-if-index, and the index
//! is the **fencing token**. Backends: in-memory (default), etcd (feature
//! `etcd`) and RavenDB (feature `ravendb`).
//!
//! ```
//! use std::time::Duration;
//! use distlock::{LockClient, LockOptions, Wait};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let client = LockClient::memory();
//! let options = LockOptions::default()
//!     .ttl(Duration::from_secs(30))
//!     .wait(Wait::For(Duration::from_secs(5)));
//!
//! let receipt = client
//!     .with_lock("orders/42", &options, async {
//!         // Runs alone, cluster-wide. Fence writes with the token:
//!         let token = distlock::current().map(|lock| lock.token());
//!         format!("paid with token {token:?}")
//!     })
//!     .await?;
//! assert!(receipt.starts_with("paid"));
//! # Ok::<(), distlock::LockError>(())
//! # }).unwrap();
//! ```
//!
//! ## The attribute
//!
//! [`macro@distributed_lock`] puts an `async fn`'s body under the lock, with the
//! key built from its arguments (escaped, so a value cannot name another
//! key). Lock errors come back through the fn's own error type:
//!
//! ```rust,standalone_crate
//! use distlock::{LockClient, LockError, distributed_lock};
//!
//! #[derive(Debug)]
//! enum PayError {
//!     Lock(LockError),
//!     Declined,
//! }
//!
//! impl From<LockError> for PayError {
//!     fn from(error: LockError) -> Self {
//!         PayError::Lock(error)
//!     }
//! }
//!
//! #[distributed_lock(key = "orders/<id>", ttl = "30s", wait = "5s")]
//! async fn pay(id: u64, amount: u64) -> Result<String, PayError> {
//!     if amount == 0 {
//!         return Err(PayError::Declined);
//!     }
//!     // Runs alone, cluster-wide; fence writes with the token.
//!     let token = distlock::current().map(|lock| lock.token());
//!     Ok(format!("order {id}: paid {amount} with token {token:?}"))
//! }
//!
//! /// A scheduled job: one instance runs it, the others skip (`None`).
//! #[distributed_lock(key = "jobs/nightly", if_locked = "skip", hold_at_least = "1m")]
//! async fn nightly() -> Option<u32> {
//!     Some(7)
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // Once at start-up: the client the attribute uses (or pass `client = ...`).
//! distlock::install(LockClient::memory())?;
//!
//! let receipt = pay(42, 100).await.unwrap();
//! assert!(receipt.starts_with("order 42: paid 100"));
//! assert!(matches!(pay(42, 0).await, Err(PayError::Declined)));
//!
//! assert_eq!(nightly().await, Some(7));
//! assert_eq!(nightly().await, None); // held for a minute: this tick is done
//! # Ok::<(), LockError>(())
//! # }).unwrap();
//! ```
//!
//! ## Adding the dependency
//!
//! The in-memory backend is always there; each network backend is a feature:
//!
//! ```toml
//! [dependencies]
//! # In-memory only (one process: tests, examples, single-instance services):
//! distlock = "0.1"
//! # or with etcd (its gRPC code is generated at build time: needs `protoc`):
//! distlock = { version = "0.1", features = ["etcd"] }
//! # or with RavenDB:
//! distlock = { version = "0.1", features = ["ravendb"] }
//! # or both:
//! distlock = { version = "0.1", features = ["etcd", "ravendb"] }
//! # Locks are held and renewed on a Tokio runtime:
//! tokio = { version = "1", features = ["rt-multi-thread", "macros"] }
//! ```
//!
//! | feature | what it adds |
//! |---|---|
//! | `etcd` | `distlock::store::etcd`: etcd 3.4+ over gRPC (`etcd://`, `etcds://`) |
//! | `ravendb` | `distlock::store::ravendb`: RavenDB 4.1+ compare-exchange over HTTP (`ravendb+http://`, `ravendb+https://`) |
//! | `cli` | the `distlock` binary: `distlock run KEY -- COMMAND` under a lock (process-group supervision), and `status`, `list`, `release --force`, `hold` for operators |
//!
//! ## Connecting: backend URLs
//!
//! [`LockClient::connect`] takes one URL (the `distlock` binary's `--backend`
//! takes the same). Nothing is contacted while connecting: a server that is
//! down shows up as [`LockError::Unavailable`] on the first lock. A malformed
//! URL, or a backend this build has no feature for, is a [`LockError::Config`]
//! that says what to fix, and never shows a password.
//!
//! | URL | backend |
//! |---|---|
//! | `memory://` (or `memory`) | a new private in-memory store |
//! | `etcd://host:2379` | one etcd node, plain gRPC, keys unprefixed |
//! | `etcd://host1:2379,host2:2379,host3:2379/myapp` | an etcd cluster (a failed request moves to the next node); keys under `myapp/` |
//! | `etcd://user:password@host:2379/myapp` | etcd authentication (user and password may be percent-encoded) |
//! | `etcd://[::1]:2379` | an IPv6 address, in brackets |
//! | `etcds://host:2379/myapp?ca=/etc/etcd/ca.pem` | TLS, trusting that CA (`ca=` is required) |
//! | `etcds://host:2379?ca=ca.pem&cert=client.pem&key=client.key` | mutual TLS with a client certificate and its key |
//! | `etcds://10.0.0.1:2379?ca=ca.pem&domain=etcd.internal` | the name to verify in the servers' certificates |
//! | `etcd://host:2379?timeout=500ms&connect_timeout=2s` | per-request and connect timeouts (both 2 s by default) |
//! | `ravendb+http://host:8080/locks` | RavenDB database `locks` over HTTP |
//! | `ravendb+http://a:8080,b:8080,c:8080/locks` | a RavenDB cluster (failover between the nodes) |
//! | `ravendb+https://a.example:443/locks` | HTTPS, servers checked against the system's trusted roots |
//! | `ravendb+https://host/locks?ca=ca.pem&cert=client.pem&key=client.key` | HTTPS trusting that CA, authenticating with a client certificate and its key |
//! | `ravendb+https://host/locks?cert=client.pem&key=client.key` | a client certificate, servers checked against the system's roots |
//! | `ravendb+http://host:8080/locks?timeout=5s&connect_timeout=2s` | per-request and connect timeouts (5 s and 2 s by default) |
//!
//! Query options combine with `&` (`?ca=..&cert=..&key=..&timeout=1s`) and
//! their values may be percent-encoded; `cert=` and `key=` go together, and an
//! unknown option is an error that names the known ones. RavenDB's `ca=`,
//! `cert=` and `key=` need `ravendb+https://`, and RavenDB URLs take no
//! `user:password@` (RavenDB authenticates with client certificates). A TLS
//! file that cannot be read is a [`LockError::Config`] naming the file (never
//! its content) at connect time. For a key prefix on RavenDB, PEM bytes rather
//! than files, or anything else the URL cannot say (such as the client's
//! default [`LockOptions`]), build the store and give it to
//! [`LockClient::new`] or [`LockClient::builder`].
//!
//! ```
//! use distlock::{LockClient, LockError};
//!
//! let client = LockClient::connect("memory://")?;
//! assert_eq!(client.backend(), "memory");
//!
//! // A mistake is a typed error that says what to fix:
//! let error = LockClient::connect("zookeeper://10.0.0.1:2181").unwrap_err();
//! assert!(matches!(error, LockError::Config { .. }));
//! assert!(error.to_string().contains("etcd://"));
//! # Ok::<(), LockError>(())
//! ```
//!
//! With the `etcd` feature (each of these is ready to use; it connects on the
//! first lock):
//!
//! ```
//! # #[cfg(feature = "etcd")] {
//! use distlock::LockClient;
//!
//! let client = LockClient::connect("etcd://127.0.0.1:2379")?;
//! assert_eq!(client.backend(), "etcd");
//! LockClient::connect("etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/myapp")?;
//! LockClient::connect("etcd://app:s3cret@10.0.0.1:2379/myapp")?;
//! LockClient::connect("etcd://[::1]:2379/myapp?timeout=500ms&connect_timeout=2s")?;
//!
//! // TLS needs the CA that signed the servers: without `ca=` (or with a file
//! // that cannot be read) connecting fails at once, not on the first lock.
//! let error = LockClient::connect("etcds://10.0.0.1:2379/myapp").unwrap_err();
//! assert!(error.to_string().contains("ca="));
//! # }
//! # Ok::<(), distlock::LockError>(())
//! ```
//!
//! With the `ravendb` feature:
//!
//! ```
//! # #[cfg(feature = "ravendb")] {
//! use distlock::LockClient;
//!
//! let client = LockClient::connect("ravendb+http://127.0.0.1:8080/locks")?;
//! assert_eq!(client.backend(), "ravendb");
//! LockClient::connect("ravendb+http://10.0.0.1:8080,10.0.0.2:8080/locks")?;
//! LockClient::connect("ravendb+https://a.example:443/locks")?;
//!
//! // TLS files are read at once: one that is missing fails here, naming it.
//! let error = LockClient::connect(
//!     "ravendb+https://a.example/locks?ca=/nonexistent/ca.pem",
//! )
//! .unwrap_err();
//! assert!(error.to_string().contains("/nonexistent/ca.pem"));
//! // ... and they need TLS:
//! let error = LockClient::connect("ravendb+http://h:8080/locks?ca=ca.pem").unwrap_err();
//! assert!(error.to_string().contains("ravendb+https://"));
//! # }
//! # Ok::<(), distlock::LockError>(())
//! ```
//!
//! A RavenDB client certificate and a private CA, as files named in the URL
//! (what the `distlock` command's `--backend` takes):
//!
//! ```no_run
//! # #[cfg(feature = "ravendb")] {
//! use distlock::LockClient;
//!
//! let client = LockClient::connect(
//!     "ravendb+https://a.example:443,b.example:443/locks\
//!      ?ca=/etc/raven/ca.pem&cert=/etc/raven/client.pem&key=/etc/raven/client.key",
//! )?;
//! # let _ = client;
//! # }
//! # Ok::<(), distlock::LockError>(())
//! ```
//!
//! The same on the store's builder, here from PEM bytes:
//!
//! ```no_run
//! # #[cfg(feature = "ravendb")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use distlock::LockClient;
//! use distlock::store::ravendb::RavenDbStore;
//!
//! let store = RavenDbStore::builder_from_url("ravendb+https://a.example:443,b.example:443/locks")?
//!     .client_certificate_pem(std::fs::read("client.pem")?, std::fs::read("client.key")?)
//!     .build()?;
//! let client = LockClient::new(store);
//! # let _ = client;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "ravendb"))]
//! # fn main() {}
//! ```
//!
//! ## Operator reads: status, list, forced release
//!
//! What an operator tool needs (the `distlock status`, `list` and `release
//! --force` commands are built on it): who holds a key
//! ([`LockClient::status`]), the held locks under a prefix
//! ([`LockClient::list`], at most [`MAX_LISTED`]; [`LockClient::list_with`]
//! for another bound and whether there were more), and a release of a lock
//! someone else holds that deletes only the record that was shown
//! ([`LockClient::force_release`], by its token). Each [`LockInfo`] names the
//! [`Holder`] (a distlock client, or a value that is not a lock record), the
//! fencing token and, on etcd, the lease and its time to live.
//!
//! ```
//! use distlock::{ForceRelease, Holder, LockClient};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let client = LockClient::memory();
//! let crashed = client.acquire("jobs/nightly").await?;
//! std::mem::forget(crashed); // a holder that never releases
//!
//! for lock in client.list("jobs/").await? {
//!     if let Holder::Distlock { owner, ttl, .. } = &lock.holder {
//!         println!("{} held by {owner} (token {}, ttl {ttl:?})", lock.key, lock.token);
//!     }
//! }
//! let shown = client.status("jobs/nightly").await?.expect("held");
//! // Deleted only if the record still has the token that was shown:
//! assert_eq!(client.force_release("jobs/nightly", shown.token).await?, ForceRelease::Released);
//! assert!(client.status("jobs/nightly").await?.is_none());
//! # Ok::<(), distlock::LockError>(())
//! # }).unwrap();
//! ```
//!
//! ## Guarantees and their limits
//! - Never two holders at once, as long as the backend is linearizable and
//!   the holder can renew. When it cannot (a pause or partition longer than
//!   the ttl), the lock is reported lost *before* another client can take it,
//!   the body is cancelled by default, and the fencing token lets the protected
//!   resource reject the stale holder. A lock alone is for efficiency;
//!   correctness needs the resource to check the token.
//! - Takeover of a crashed holder happens only after its record stayed
//!   unchanged for its full ttl on the local monotonic clock: no two machines'
//!   wall clocks are ever compared.
//!
//! ## Writing a backend
//!
//! A backend is an implementation of [`store::CompareExchange`]: get, a
//! conditional put, a conditional delete, and optionally watch and server
//! leases. The [`store`] module docs give the contract, method by method. The
//! backend kit (feature `testing`, in your dev-dependencies:
//! `distlock = { version = "0.1", features = ["testing"] }`) holds the
//! conformance suite that checks it, fault-injecting wrappers and a
//! deterministic simulation. A conformance test, here on the in-memory store:
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
//! use distlock::store::Capabilities;
//! use distlock::store::memory::MemoryStore;
//! use distlock::testing::conformance::{self, Backend};
//!
//! // Connections that share one store (for a server: one new client per call of
//! // the closure given to `Backend::new`), declared with the capabilities it has.
//! let caps = Capabilities::NONE.with_watch(true).with_listing(true);
//! let backend = Backend::shared("memory", caps, MemoryStore::new());
//! let report = conformance::run_all(&backend).await?;
//! assert!(report.skipped().contains(&"lease_contract")); // no server leases
//! # Ok::<(), conformance::Failure>(())
//! # }).unwrap();
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use lock_macros::distributed_lock;

pub use lock_runtime::{
    Backoff, ClientStats, Current, ForceRelease, Holder, IfLocked, Listing, LockClient,
    LockClientBuilder, LockError, LockGuard, LockInfo, LockOptions, LostReason, LostSignal,
    MAX_KEY_LEN, MAX_LISTED, MIN_TTL, OnLost, ParseChoiceError, ParseDurationError, SystemClock,
    Wait, WallClock, credential_free_url, current, install, installed, is_unreserved,
    is_unreserved_char, parse_duration, store, validate_key,
};

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use lock_runtime::testing;

/// What `#[distributed_lock]` expands to call. Not a public API: it changes
/// without notice.
#[doc(hidden)]
pub mod __private {
    pub use lock_runtime::__private::*;
}
