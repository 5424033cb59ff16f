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
//!   other JSON (old tombstones, `{"released":true,..}`, stay free keys).
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
//!   looks free, so polling waiters cost reads, not Raft log entries. Because
//!   polls are reads the store says so
//!   ([`Capabilities::cheap_polls`](super::Capabilities::cheap_polls)) and
//!   waiters pause 1/32 of the time they have waited, within 1 and 8 ms
//!   (jittered over the upper half): a key held for tens of milliseconds is
//!   handed over about a millisecond after its release, and a wait past a
//!   quarter of a second polls every 4-8 ms. With one local server (`cargo
//!   bench -p testkit --features ravendb --bench ravendb`, figures in the
//!   README) a waiting distlock client cost the server less CPU time per
//!   second than the original's 20 ms put loop.
//!
//! **Releases delete the item**, as the original and RavenDB's documented
//! lock pattern do: [`CompareExchange::delete`](super::CompareExchange::delete)
//! is `DELETE /cmpxchg?key=K&index=I`, so after a release a put with index 0
//! by any client succeeds. RavenDB 4.1 has a quirk: it accepts a put with
//! `index=N` on a *missing* key and creates it. A renewal of ours applied
//! after our own delete would re-create the record. Two rules keep that
//! harmless:
//! - The lock engine sends no delete while a renewal of the lock is in
//!   flight: a release first waits for the answer of a renewal under way
//!   (bounded by that renewal's own timeout, the lock's deadline), then
//!   deletes at the index the renewal left.
//! - A write applied late (a renewal whose answer was lost and that is still
//!   in the network, which the engine can no longer wait for) can only leave
//!   an **abandoned record**, never a second holder. The late put is
//!   conditioned on our old index `I`. If nobody acquired the key since our
//!   delete, the key is missing and 4.1 re-creates it: a record of ours, at a
//!   new index, that no one holds (our lock is released; the engine never
//!   reads it back as its own). Others see a live distlock record and take it
//!   over by the usual rule, one ttl after they first saw it unchanged (the
//!   original, once its `ExpiresAt` passed). If someone acquired meanwhile,
//!   its put-if-absent created the key at an index above `I` (indexes only
//!   grow, also across delete and re-create): the key exists at another
//!   index and the late put fails. The holder is never disturbed.
//!
//! For a key this store has never seen, a compare-exchange on an index is
//! preceded by a read so that it cannot create the key.
//!
//! **Old tombstones.** Earlier distlock versions released by writing a
//! tombstone (`{"released":true,..}`) in place of the record. Such an item is
//! read as a free key; a client that meets one (a read, or a put that
//! conflicts with it) deletes it by its index, so that put-if-absent by any
//! client (the original too) works on that key again, or takes its place
//! with its own record. [`RavenDbStore::prune_tombstones`] stays the
//! documented way to clean all of them at once.
//!
//! Keys are case-insensitive on the server: `Orders/1` and `orders/1` are the
//! same lock (more exclusion, never less). A listing
//! ([`CompareExchange::list`](super::CompareExchange::list), pages of
//! `GET /cmpxchg?startsWith=`) gives the keys lower-cased, as 4.1 does, in
//! that order; old tombstones are free keys and are not listed.
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
//! impl, record encoding, old tombstones); `config.rs` the builder and the URL;
//! `transport.rs` the HTTP requests, their failover (the shared `store::net`
//! layer), [`RavenDbError`] and the classification into
//! [`StoreError`](super::StoreError)s; `admin.rs` the topology, database
//! creation and pruning of old tombstones.

mod admin;
mod config;
mod mapping;
mod transport;

pub use config::{ConnectError, DEFAULT_FOREIGN_TTL, RavenDbConfigError, RavenDbStoreBuilder};
pub use transport::{RavenDbError, RavenDbStore};

#[cfg(test)]
mod proptests;
