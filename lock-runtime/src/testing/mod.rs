//! The backend kit: a simulated compare-exchange server and a fault-injecting
//! network, for deterministic simulation tests of the lock algorithm and for
//! authors of new backends (feature `testing`).
//!
//! - [`SimStore`]: a linearizable in-memory server implementing the
//!   [`crate::store::CompareExchange`] semantics, either etcd-like (server
//!   leases counted in whole seconds, watch, [`crate::store::Entry::lease`]) or
//!   RavenDB-like (compare-exchange only, optionally with RavenDB 4.1's quirk of
//!   creating a missing key on a put with [`crate::store::Expect::Index`]).
//!   Operator actions bypass every condition ([`SimStore::force_delete`],
//!   [`SimStore::force_overwrite`]); inspection reads the server directly
//!   ([`SimStore::entry`], [`SimStore::keys`], [`SimStore::live_leases`],
//!   [`SimStore::write_at`]).
//! - [`SimNet`]: gives each client its own [`SimClient`], a
//!   [`crate::store::CompareExchange`] handle onto the one store through a link
//!   with seeded faults: random delays, lost requests, lost answers, requests
//!   applied after the caller timed out, partitions and pauses.
//!   [`SimNet::heal_all`] switches them off.
//! - [`Trace`]: the event log both record into, for printing a failing run and
//!   for checking that a seed replays identically ([`Trace::digest`]).
//!
//! Everything runs on Tokio's clock and draws randomness only from the seed:
//! run it on a current-thread runtime with a paused clock and the same seed
//! gives the same run.
//!
//! ```
//! use std::time::Duration;
//! use lock_runtime::{LockClient, LockOptions};
//! use lock_runtime::testing::{NetConfig, SimNet, SimStore, StoreMode, Trace};
//!
//! tokio::runtime::Builder::new_current_thread()
//!     .enable_time()
//!     .start_paused(true)
//!     .build()
//!     .unwrap()
//!     .block_on(async {
//!         let store = SimStore::with_trace(StoreMode::EtcdLike, Trace::new());
//!         let net = SimNet::new(store.clone(), NetConfig::default(), 42);
//!         let client = LockClient::builder(net.client("c0")).owner("c0").build()?;
//!         let options = LockOptions::default().ttl(Duration::from_secs(2));
//!         let guard = client.acquire_with("jobs/a", &options).await?;
//!         assert_eq!(store.entry("jobs/a").map(|e| e.index), Some(guard.token()));
//!         store.force_delete("jobs/a"); // an operator deletes the key
//!         guard.release().await.ok();
//!         println!("{}", store.trace().render(|_| true).join("\n"));
//!         Ok::<(), lock_runtime::LockError>(())
//!     })
//!     .unwrap();
//! ```

pub mod conformance;
pub mod faults;
mod net;
mod observer;
mod store;
mod trace;

pub use conformance::unique_key;
pub use net::{FaultPlan, NetConfig, SimClient, SimNet};
pub use observer::Observer;
pub use store::{SimStore, StoreMode, Write, Writer, lease_secs};
pub use trace::{Event, Fate, Outcome, Request, Trace};
