//! The backend kit (feature `testing`): what a backend's tests need, inside
//! this repository and out. Add it to your crate's dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! distlock = { version = "0.1", features = ["testing"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! - [`conformance`]: the conformance suite every backend must pass (the store
//!   contract, watch and leases when the store has them, and the lock's
//!   invariants on top of it), like `object_store`'s integration suite:
//!   [`conformance::run_all`] or one check at a time, each returning a
//!   [`conformance::Failure`] that names the check, the key and what was wrong.
//! - [`faults`]: [`faults::Faults`], one fault-injecting wrapper over any
//!   [`crate::store::CompareExchange`] (cut and heal the link, crash, lose
//!   answers of applied requests, apply a put late, delay, a call budget,
//!   hidden capabilities, call counts), and [`faults::SkewedClock`].
//! - [`Observer`]: an independent check of exclusion and fencing tokens from
//!   outside the lock; [`unique_key`]: keys that do not collide across runs.
//!
//! A backend's conformance test, here run on the in-memory store standing in
//! for yours (see [`crate::store`] for the contract it must keep):
//!
//! ```
//! use distlock::store::memory::MemoryStore;
//! use distlock::store::{Capabilities, StoreError};
//! use distlock::testing::conformance::{self, Backend};
//!
//! // #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn my_store_passes_the_conformance_suite() {
//!     let server = MemoryStore::new(); // your server's address, say
//!     // Each call opens a new connection: one per simulated service instance.
//!     let caps = Capabilities::NONE.with_watch(true).with_listing(true);
//!     let backend = Backend::new("mystore", caps, move || {
//!         let store = server.clone(); // `MyStore::connect(&address)`
//!         async move { Ok::<_, StoreError>(store) }
//!     });
//!     let report = conformance::run_all(&backend.contention(4, 25))
//!         .await
//!         .unwrap_or_else(|failure| panic!("{failure}"));
//!     println!("passed {:?}, skipped {:?}", report.passed(), report.skipped());
//! }
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
//! #     .block_on(my_store_passes_the_conformance_suite());
//! ```
//!
//! For deterministic simulation of the lock algorithm under faults:
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
//! use distlock::{LockClient, LockOptions};
//! use distlock::testing::{NetConfig, SimNet, SimStore, StoreMode, Trace};
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
//!         Ok::<(), distlock::LockError>(())
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
