//! The runtime of [distlock](https://docs.rs/distlock): a cluster-wide lock
//! built on compare-exchange, with one algorithm for every backend.
//!
//! Most users depend on the `distlock` facade and its `#[distributed_lock]`
//! attribute; this crate is what the attribute calls.
//!
//! - [`store`]: the [`store::CompareExchange`] contract and the backends
//!   (in-memory always; etcd and RavenDB behind features).
//! - [`LockClient`]: acquire, wait, take over abandoned locks, renew, release.
//! - [`LockGuard`]: key, fencing token, lost signal, `release().await`.
//! - [`current`]: the lock the running task holds (inside [`LockClient::with_lock`]).
//! - Operator reads and actions on a client: [`LockClient::status`],
//!   [`LockClient::list`], [`LockClient::force_release`] ([`LockInfo`]).
//! - `testing` (feature `testing`): the backend kit: the conformance suite,
//!   fault-injecting store wrappers and a deterministic simulation.
//!
//! ```
//! use std::time::Duration;
//! use distlock::{LockClient, LockOptions, Wait};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let client = LockClient::memory();
//! let options = LockOptions::default()
//!     .ttl(Duration::from_secs(10))
//!     .wait(Wait::For(Duration::from_secs(1)));
//!
//! let guard = client.acquire_with("orders/7", &options).await?;
//! // A second instance trying now finds it held:
//! assert!(client.try_acquire("orders/7").await?.is_none());
//! let token = guard.token(); // fence your writes with this
//! guard.release().await?;
//!
//! let next = client.acquire_with("orders/7", &options).await?;
//! assert!(next.token() > token);
//! # Ok::<(), distlock::LockError>(())
//! # }).unwrap();
//! ```
//!
//! # Writing a backend
//!
//! Implement [`store::CompareExchange`] for your client type: the module docs
//! of [`store`] state what each method must guarantee (linearizable,
//! conditional writes with conflicts as data, an index that grows across
//! delete and re-create, bounded time, typed errors) and which capabilities
//! are optional. Then run the conformance suite from your crate's tests, with
//! `distlock = { version = "0.1", features = ["testing"] }` in its
//! dev-dependencies: `distlock::testing::conformance::run_all` checks the
//! contract and the lock's invariants on your store and reports the first rule
//! it breaks (see `distlock::testing` for a test to copy).

#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(hidden)]
#[path = "macro_support.rs"]
pub mod __private;
mod client;
mod connect;
mod current;
mod error;
mod guard;
mod inspect;
mod install;
mod lock;
mod options;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use client::{ClientStats, LockClient, LockClientBuilder};
pub use connect::credential_free_url;
pub use current::{Current, current};
pub use error::{LockError, LostReason};
pub use guard::LockGuard;
pub use inspect::{ForceRelease, Holder, Listing, LockInfo, MAX_LISTED};
pub use install::{install, installed};
pub use lock::{LostSignal, SystemClock, WallClock};
pub use lock_vocab::{is_unreserved, is_unreserved_char};
pub use options::{
    IfLocked, LockOptions, MAX_KEY_LEN, MIN_TTL, OnLost, ParseChoiceError, ParseDurationError,
    Wait, parse_duration, validate_key,
};
pub use store::Backoff;
