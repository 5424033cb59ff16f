//! The RavenDB backend: the store contract over RavenDB's cluster-wide
//! compare-exchange (`/databases/{db}/cmpxchg`), through HTTP/1.1 with rustls.
//!
//! The mapping:
//! - The index is the compare-exchange item's Raft index: cluster-wide and only
//!   growing, also across delete and re-create. It is the fencing token.
//! - The [`Record`](super::Record) is stored readably as the item's `Object`
//!   (`{"ExpiresAt":..,"nonce":..,"owner":..,"ttl_ms":..,"written_at":..,"written_at_ms":..}`),
//!   with an `@expires` metadata date far past the ttl: garbage collection for
//!   abandoned items on servers that sweep it (5.0 and later), never lock
//!   semantics.
//! - `ExpiresAt` is the holder's wall clock at each write (acquisition and
//!   every renewal) plus the ttl, as a .NET `DateTime`
//!   (`2026-12-01T20:16:48.3170000Z`): what the original .NET
//!   `RavenDbProcessMonitor` and RavenDB's documented compare-exchange lock
//!   pattern decide by, so such a client takes over a crashed distlock
//!   holder once that date has passed by its clock. For distlock it is
//!   informational: never read back, and records without it are read the same.
//! - **A value that is not a distlock record is a lock held by a foreign
//!   holder**: the original's `{"ExpiresAt": ..}`, a value written by
//!   another tool following RavenDB's compare-exchange lock pattern, or any
//!   other JSON (tombstones, `{"released":true,..}`, stay free keys).
//!   Acquiring waits on it like on a distlock holder, polling, and gets the
//!   key on its next poll once the foreign holder deletes it (the original's
//!   `Exit`). A foreign holder never renews, so it is taken over by a
//!   compare-exchange on its index once this client saw the same index
//!   unchanged for the store's foreign ttl
//!   ([`RavenDbStoreBuilder::foreign_ttl`], URL option `foreign_ttl=`,
//!   default [`DEFAULT_FOREIGN_TTL`], 5 minutes: the original's lease) plus
//!   the client's lock delay, by its own monotonic clock: the same takeover
//!   rule as for distlock records, never a comparison of the value's
//!   `ExpiresAt` with the local clock. To the lock engine it is an entry
//!   whose synthetic record has the owner `a foreign holder (not a distlock
//!   record), index N` (what `holder` shows in [`LockError::Busy`](crate::LockError::Busy) and
//!   [`LockError::Timeout`](crate::LockError::Timeout)), nonce 0 (never one
//!   of the client's acquisitions) and the foreign ttl as its ttl.
//!   [`CompareExchange::inspect`](super::CompareExchange::inspect) and
//!   [`CompareExchange::list`](super::CompareExchange::list) still report it as
//!   [`Stored::Foreign`](super::Stored::Foreign) with its index
//!   ([`Holder::Foreign`](crate::Holder::Foreign) in
//!   [`LockClient::status`](crate::LockClient::status), `foreign` in
//!   `distlock status`).
//! - Every write carries a fresh `raft-request-id`, reused when the same call is
//!   retried on another node, so a retry is applied at most once; a conflict that
//!   shows exactly the value we sent is read as our own write having landed.
//! - RavenDB has no change notification for compare-exchange items: no
//!   [`CompareExchange::watch`](super::CompareExchange::watch), the lock client polls. A put-if-absent on a key
//!   last seen held by someone else reads first and writes only when the lock
//!   looks free, so polling waiters cost reads, not Raft log entries.
//!
//! **Releases write a tombstone instead of deleting.** RavenDB 4.1 accepts a put
//! with `index=N` on a *missing* key and creates it. If releases deleted the
//! item, a late renewal from a holder whose lock was taken over and released in
//! the meantime would bring the lock back to life under a holder that lost it
//! (the answer is the same as for a real renewal, so it cannot be detected
//! afterwards). So [`CompareExchange::delete`](super::CompareExchange::delete) replaces the record, under the same
//! index condition, with a small `{"released":true,..}` object: a compare-exchange
//! on a stale index then always meets an item and conflicts. Tombstones read as
//! absent, a put-if-absent takes a tombstone's place (conditioned on its index),
//! and they carry `@expires` like records. For a key this store has never seen,
//! a compare-exchange is preceded by a read so that it cannot create the key.
//! What remains: an item removed outside distlock (by hand, or swept by a 5.x+
//! server a day past its ttl) and then hit by a stale renewal from a store that
//! had seen it would be created again by a 4.1 server.
//!
//! Keys are case-insensitive on the server: `Orders/1` and `orders/1` are the
//! same lock (more exclusion, never less). A listing
//! ([`CompareExchange::list`](super::CompareExchange::list), pages of
//! `GET /cmpxchg?startsWith=`) gives the keys lower-cased, as 4.1 does, in
//! that order; tombstones are free keys and are not listed.
//!
//! Failover: several node URLs; each request has a timeout and moves to the next
//! node on a connection failure, a timeout or a 503, starting from the node that
//! answered last. [`RavenDbStore::refresh_topology`] (or
//! [`RavenDbStoreBuilder::discover_topology`]) adds the nodes the cluster names.
//!
//! ```no_run
//! # use lock_runtime as distlock;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use distlock::store::ravendb::RavenDbStore;
//! use std::time::Duration;
//!
//! let store = RavenDbStore::builder()
//!     .urls(["https://a.example:8080", "https://b.example:8080"])
//!     .database("locks")
//!     .client_certificate_pem(std::fs::read("client.pem")?, std::fs::read("client.key")?)
//!     .ca_certificate_pem(std::fs::read("ca.pem")?)
//!     .request_timeout(Duration::from_secs(2))
//!     .build()?;
//! // or from a URL:
//! let store = RavenDbStore::from_url("ravendb+http://127.0.0.1:8080/locks")?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! The folder: `mapping.rs` is the contract's mapping (the `CompareExchange`
//! impl, record and tombstone encoding); `config.rs` the builder and the URL;
//! `transport.rs` the HTTP requests, their failover (the shared `store::net`
//! layer), [`RavenDbError`] and the classification into
//! [`StoreError`](super::StoreError)s; `admin.rs` the topology, database
//! creation and tombstone pruning.

mod admin;
mod config;
mod mapping;
mod transport;

pub use config::{ConnectError, DEFAULT_FOREIGN_TTL, RavenDbConfigError, RavenDbStoreBuilder};
pub use transport::{RavenDbError, RavenDbStore};

#[cfg(test)]
mod proptests;
