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

pub use lock_macros::distributed_lock;

pub use lock_runtime::{
    Backoff, ClientStats, Current, IfLocked, LockClient, LockClientBuilder, LockError, LockGuard,
    LockOptions, LostReason, LostSignal, MAX_KEY_LEN, MIN_TTL, OnLost, ParseChoiceError,
    ParseDurationError, SystemClock, Wait, WallClock, current, install, installed, is_unreserved,
    is_unreserved_char, parse_duration, store, validate_key,
};

/// What `#[distributed_lock]` expands to call. Not a public API: it changes
/// without notice.
#[doc(hidden)]
pub mod __private {
    pub use lock_runtime::__private::*;
}
