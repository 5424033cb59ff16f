//! The etcd backend: compare-exchange over etcd v3 transactions, through gRPC.
//!
//! The contract maps onto etcd directly:
//! - [`Expect::Absent`](crate::store::Expect::Absent) is a txn comparing
//!   `create_revision == 0`, [`Expect::Index`](crate::store::Expect::Index)
//!   compares `mod_revision == i`; the failure branch is a range, so a conflict carries
//!   the current entry in the same round trip.
//! - The index is the key's `mod_revision`: etcd's cluster-wide revision, which only
//!   grows, also across delete and re-create. It is the fencing token.
//! - The [`Record`](crate::store::Record) is stored as compact JSON.
//! - [`CompareExchange::watch`](crate::store::CompareExchange::watch) is an etcd watch of the key starting right after the
//!   latest revision at which the key was seen unchanged (so etcd delivers at once).
//!   Every watch of one store shares one etcd watch stream (each gets its own watch id
//!   on it; a dropped watch future cancels its id): 10,000 held locks are one stream.
//!   When that stream breaks, its watches fail and the next one opens elsewhere.
//! - [`CompareExchange::list`](crate::store::CompareExchange::list) is one range
//!   request over the keys under the store's prefix and the given one, in key order,
//!   with etcd's limit; [`CompareExchange::lease_time_to_live`](crate::store::CompareExchange::lease_time_to_live)
//!   is etcd's `LeaseTimeToLive`.
//! - Server leases: grant, keep-alive over one long-lived stream per lease (the lock
//!   client uses one lease for all its locks, so renewal traffic does not grow with the
//!   number of held locks; a broken stream is reopened on the next call), revoke.
//!
//! The backend is a folder of small modules: `mapping` (the contract as etcd
//! requests, and the record encoding), `config` ([`EtcdStoreBuilder`] and `etcd://` URLs),
//! `transport` (connections, timeouts, failover, the long-lived streams), `error` (etcd's
//! errors typed as [`EtcdError`], and sorted into the contract's) and `watch` (the shared
//! watch stream).
//!
//! Every request has a timeout: a stopped or electing etcd node hangs instead of failing.
//! A request that fails or times out on one endpoint moves on to the next one, within the
//! same call for reads and lease operations; a write that may have been applied there is
//! retried elsewhere too, and a conflict that shows our own record is then read as success
//! (the record's `(owner, nonce)` is unique per acquisition). Failures are
//! [`StoreError`](crate::store::StoreError)s whose source is an [`EtcdError`]: transient
//! ones (timeouts, broken connections, a member without a leader) are `Unavailable`, the
//! others (refused credentials, a bad request) `Backend`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use distlock::store::etcd::EtcdStore;
//! use std::time::Duration;
//!
//! let store = EtcdStore::builder()
//!     .endpoints(["http://10.0.0.1:2379", "http://10.0.0.2:2379"])
//!     .prefix("myapp/locks/")
//!     .request_timeout(Duration::from_secs(1))
//!     .build()?;
//! store.ping().await?;
//! // or from a URL:
//! let store = EtcdStore::from_url("etcd://app:secret@10.0.0.1:2379,10.0.0.2:2379/myapp")?;
//! # let _ = store; Ok(()) }
//! ```

mod config;
mod error;
mod mapping;
#[cfg(test)]
mod proptests;
mod transport;
mod watch;

pub use config::{EtcdConfigError, EtcdStoreBuilder};
pub use error::EtcdError;
pub use transport::EtcdStore;

/// The gRPC client crate this backend is built on, for raw access next to the store
/// (benchmark baselines, debugging, setting up users and roles).
pub use etcd_client;
