//! The operator's view of a store through a [`LockClient`]: who holds a key
//! ([`LockClient::status`]), the locks under a prefix ([`LockClient::list`]),
//! and a forced release of a lock someone else holds
//! ([`LockClient::force_release`]). A handle layer like `client.rs`: it reads
//! and deletes through the store contract and never touches the lock engine.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::LockClient;
use crate::error::LockError;
use crate::options::validate_key;
use crate::store::{DeleteOutcome, LeaseId, Listed, StoreError, Stored};

/// The most locks [`LockClient::list`] returns.
pub const MAX_LISTED: usize = 1000;

/// Who holds a lock, as read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Holder {
    /// A distlock client.
    Distlock {
        /// The holder's identity (`uuid@host:pid` by default).
        owner: String,
        /// The holder's ttl: without renewal, others may take the lock over
        /// this long after they first saw this record.
        ttl: Duration,
        /// When the holder wrote the record, by the holder's wall clock
        /// (informational: it may be off).
        written_at: SystemTime,
    },
    /// A value that is not a distlock lock record: written by something else,
    /// or damaged. On RavenDB it is a lock held by a foreign holder (the
    /// original .NET `RavenDbProcessMonitor`'s `{"ExpiresAt": ..}`, or any
    /// other value): acquiring waits on it and takes it over once it stayed
    /// unchanged (the same token) for the store's foreign ttl
    /// (`RavenDbStoreBuilder::foreign_ttl`, URL option `foreign_ttl=`,
    /// default 5 minutes); meanwhile `holder` in
    /// [`LockError::Busy`]/[`LockError::Timeout`] reads `a foreign holder
    /// (not a distlock record), index N`. On etcd acquiring fails on it
    /// ([`LockError::Backend`] with [`StoreError::Foreign`]). A forced
    /// release at its token removes it.
    Foreign {
        /// Why the value is not a lock record.
        reason: String,
    },
}

/// One held lock (or a foreign value at a lock key), as read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock key (RavenDB lists keys lower-cased: its keys are
    /// case-insensitive).
    pub key: String,
    /// The fencing token: the index of the record. [`LockClient::force_release`]
    /// deletes the record only while the key still has this index.
    pub token: u64,
    /// Who holds it.
    pub holder: Holder,
    /// The server lease the key is attached to (etcd), if any: the key
    /// vanishes when it expires.
    pub lease: Option<LeaseId>,
    /// How long that lease has left, where the backend tells it (etcd, in
    /// whole seconds); `None` without a lease or when unknown.
    pub lease_remaining: Option<Duration>,
}

/// The locks found by [`LockClient::list_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Listing {
    /// The locks, in key order.
    pub locks: Vec<LockInfo>,
    /// There are more keys under the prefix than the limit let through.
    pub truncated: bool,
}

/// The answer to [`LockClient::force_release`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForceRelease {
    /// The record with the given token was deleted: the lock is free.
    Released,
    /// The key no longer holds the given token; nothing was deleted.
    Changed {
        /// What it holds now (`None`: it is free).
        current: Option<LockInfo>,
    },
}

impl LockClient {
    /// Who holds `key` now: `Ok(None)` if it is free.
    ///
    /// A read of the store, for operators; it takes no lock. A value at the
    /// key that is not a distlock record is [`Holder::Foreign`] where the
    /// backend reports its index (etcd, RavenDB; memory holds only records);
    /// a backend that cannot (the default of
    /// [`crate::store::CompareExchange::inspect`]) gives [`LockError::Backend`]
    /// with [`StoreError::Foreign`].
    ///
    /// ```
    /// use distlock::{Holder, LockClient};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let client = LockClient::memory();
    /// assert_eq!(client.status("jobs/nightly").await?, None);
    /// let guard = client.acquire("jobs/nightly").await?;
    /// let info = client.status("jobs/nightly").await?.expect("held");
    /// assert_eq!(info.token, guard.token());
    /// assert!(matches!(&info.holder, Holder::Distlock { owner, .. } if owner == client.owner()));
    /// # guard.release().await?;
    /// # Ok::<(), distlock::LockError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// Errors: [`LockError::InvalidKey`] (as for acquiring) before any I/O,
    /// [`LockError::Unavailable`] and [`LockError::Backend`] from the store.
    pub async fn status(&self, key: &str) -> Result<Option<LockInfo>, LockError> {
        validate_key(key)?;
        let store = self.store();
        let stored = store
            .inspect(key)
            .await
            .map_err(|e| self.store_error(key, e))?;
        match stored {
            None => Ok(None),
            Some(stored) => {
                let mut leases = Leases::default();
                let info = info(self, &mut leases, key.to_owned(), stored).await?;
                Ok(Some(info))
            }
        }
    }

    /// The held locks whose key starts with `prefix` (every lock for `""`),
    /// in key order: the first [`MAX_LISTED`] of them. Use
    /// [`LockClient::list_with`] to choose the bound and learn whether the
    /// listing was cut short.
    ///
    /// ```
    /// use distlock::LockClient;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let client = LockClient::memory();
    /// let _a = client.acquire("orders/1").await?;
    /// let _b = client.acquire("orders/2").await?;
    /// let _c = client.acquire("jobs/nightly").await?;
    /// let keys: Vec<String> = client.list("orders/").await?.into_iter().map(|l| l.key).collect();
    /// assert_eq!(keys, ["orders/1", "orders/2"]);
    /// # Ok::<(), distlock::LockError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// Errors: [`LockError::InvalidKey`] for a prefix with a control
    /// character or longer than [`crate::MAX_KEY_LEN`];
    /// [`LockError::Backend`] with [`StoreError::Unsupported`] for a store
    /// without [`crate::store::Capabilities::listing`]; store errors.
    pub async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, LockError> {
        Ok(self.list_with(prefix, MAX_LISTED).await?.locks)
    }

    /// The first `limit` held locks whose key starts with `prefix`, in key
    /// order, and whether there were more. Each entry was current at some
    /// instant of the call (one read on memory and etcd; RavenDB reads pages
    /// of 256 keys).
    ///
    /// ```
    /// use distlock::LockClient;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let client = LockClient::memory();
    /// let _a = client.acquire("orders/1").await?;
    /// let _b = client.acquire("orders/2").await?;
    /// let listing = client.list_with("orders/", 1).await?;
    /// assert_eq!(listing.locks.len(), 1);
    /// assert!(listing.truncated);
    /// # Ok::<(), distlock::LockError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// Errors: as for [`LockClient::list`].
    pub async fn list_with(&self, prefix: &str, limit: usize) -> Result<Listing, LockError> {
        validate_prefix(prefix)?;
        let mut listed = self
            .store()
            .list(prefix, limit.saturating_add(1))
            .await
            // The error names the keys listed: "while working on lock `jobs/*`".
            .map_err(|e| self.store_error(&format!("{prefix}*"), e))?;
        let truncated = listed.len() > limit;
        listed.truncate(limit);
        let mut leases = Leases::default();
        let mut locks = Vec::with_capacity(listed.len());
        for Listed { key, stored } in listed {
            locks.push(info(self, &mut leases, key, stored).await?);
        }
        Ok(Listing { locks, truncated })
    }

    /// Deletes the record at `key` if it still has index `token` (the token
    /// [`LockClient::status`] showed): frees a lock that a crashed or stuck
    /// holder left, whoever holds it. If the key changed meanwhile (released,
    /// renewed, taken by another holder) nothing is deleted and the answer is
    /// [`ForceRelease::Changed`] with what it holds now.
    ///
    /// The holder is not told: a live holder learns that its lock was lost at
    /// its next renewal, and its writes fenced with the old token must be
    /// rejected from now on. On RavenDB the item is deleted, as by every
    /// release; a RavenDB 4.1 server re-creates a missing key on a renewal,
    /// so a live holder that renews before anyone else acquires the key
    /// holds it again (alone: once another client acquired, the key exists at
    /// a newer index and the renewal fails, and the holder learns it lost).
    ///
    /// ```
    /// use distlock::{ForceRelease, LockClient, LockOptions, Wait};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let client = LockClient::memory();
    /// let stuck = client.acquire("jobs/nightly").await?;
    /// let info = client.status("jobs/nightly").await?.expect("held");
    /// assert_eq!(client.force_release("jobs/nightly", info.token + 1).await?,
    ///            ForceRelease::Changed { current: Some(info.clone()) });
    /// assert_eq!(client.force_release("jobs/nightly", info.token).await?, ForceRelease::Released);
    /// assert_eq!(client.status("jobs/nightly").await?, None);
    /// # drop(stuck);
    /// # Ok::<(), distlock::LockError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// Errors: [`LockError::InvalidKey`] before any I/O; store errors (a
    /// [`LockError::Unavailable`] delete may have been applied: read the
    /// status again).
    pub async fn force_release(&self, key: &str, token: u64) -> Result<ForceRelease, LockError> {
        validate_key(key)?;
        let outcome = self
            .store()
            .delete(key, token)
            .await
            .map_err(|e| self.store_error(key, e))?;
        match outcome {
            DeleteOutcome::Deleted => {
                tracing::info!(key, token, "distlock: lock released by force");
                Ok(ForceRelease::Released)
            }
            DeleteOutcome::Conflict { .. } => {
                // What it holds now, read again (a conflict need not report it).
                let current = self.status(key).await?;
                Ok(ForceRelease::Changed { current })
            }
        }
    }

    fn store_error(&self, key: &str, error: StoreError) -> LockError {
        LockError::from_store(self.backend(), key, error)
    }
}

/// A prefix may be empty (every key); otherwise it is checked like a key.
fn validate_prefix(prefix: &str) -> Result<(), LockError> {
    if prefix.is_empty() {
        Ok(())
    } else {
        validate_key(prefix)
    }
}

/// The remaining time of each lease met in one call (locks of one client
/// share a lease: asked once).
#[derive(Default)]
struct Leases(HashMap<LeaseId, Option<Duration>>);

impl Leases {
    async fn remaining(
        &mut self,
        client: &LockClient,
        key: &str,
        lease: LeaseId,
    ) -> Result<Option<Duration>, LockError> {
        if let Some(known) = self.0.get(&lease) {
            return Ok(*known);
        }
        let remaining = match client.store().lease_time_to_live(lease).await {
            Ok(remaining) => remaining,
            Err(StoreError::Unsupported(_)) => None,
            Err(error) => return Err(client.store_error(key, error)),
        };
        self.0.insert(lease, remaining);
        Ok(remaining)
    }
}

async fn info(
    client: &LockClient,
    leases: &mut Leases,
    key: String,
    stored: Stored,
) -> Result<LockInfo, LockError> {
    let (token, holder, lease) = match stored {
        Stored::Lock(entry) => (
            entry.index,
            Holder::Distlock {
                owner: entry.record.owner.to_string(),
                ttl: entry.record.ttl(),
                written_at: UNIX_EPOCH
                    .checked_add(Duration::from_millis(entry.record.written_at_ms))
                    .unwrap_or(UNIX_EPOCH),
            },
            entry.lease,
        ),
        Stored::Foreign { index, reason } => (index, Holder::Foreign { reason }, None),
    };
    let lease_remaining = match lease {
        Some(lease) => leases.remaining(client, &key, lease).await?,
        None => None,
    };
    Ok(LockInfo {
        key,
        token,
        holder,
        lease,
        lease_remaining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LockOptions;
    use crate::store::memory::MemoryStore;
    use crate::store::{CompareExchange, Entry, Expect, PutOutcome, Record, async_trait};

    /// A store without listing (the contract's defaults).
    #[derive(Debug)]
    struct NoListing(MemoryStore);

    #[async_trait]
    impl CompareExchange for NoListing {
        fn backend(&self) -> &'static str {
            "nolisting"
        }
        async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
            self.0.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            record: &Record,
            expect: Expect,
            lease: Option<LeaseId>,
        ) -> Result<PutOutcome, StoreError> {
            self.0.put(key, record, expect, lease).await
        }
        async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
            self.0.delete(key, index).await
        }
    }

    fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn status_of_a_free_and_a_held_key() {
        let client = LockClient::builder(MemoryStore::new())
            .owner("me@host:1")
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok(client.status("a").await), None);
        let options = LockOptions::default().ttl(Duration::from_secs(12));
        let guard = ok(client.acquire_with("a", &options).await);
        let info = ok(client.status("a").await).unwrap_or_else(|| panic!("not listed"));
        assert_eq!(info.key, "a");
        assert_eq!(info.token, guard.token());
        assert_eq!(info.lease, None);
        assert_eq!(info.lease_remaining, None);
        match &info.holder {
            Holder::Distlock {
                owner,
                ttl,
                written_at,
            } => {
                assert_eq!(owner, "me@host:1");
                assert_eq!(*ttl, Duration::from_secs(12));
                assert!(*written_at > UNIX_EPOCH);
            }
            other => panic!("{other:?}"),
        }
        ok(guard.release().await);
        assert_eq!(ok(client.status("a").await), None);
    }

    #[tokio::test]
    async fn list_is_ordered_bounded_and_under_the_prefix() {
        let store = MemoryStore::new();
        let client = LockClient::new(store.clone());
        let mut guards = Vec::new();
        for key in ["p/c", "p/a", "p/b", "p", "pq/a", "o/a"] {
            guards.push(ok(client.acquire(key).await));
        }
        let keys = |locks: &[LockInfo]| locks.iter().map(|l| l.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&ok(client.list("p/").await)), ["p/a", "p/b", "p/c"]);
        assert_eq!(
            keys(&ok(client.list("p").await)),
            ["p", "p/a", "p/b", "p/c", "pq/a"]
        );
        assert_eq!(ok(client.list("").await).len(), 6);
        assert!(ok(client.list("none/").await).is_empty());
        let first = ok(client.list_with("p/", 2).await);
        assert_eq!(keys(&first.locks), ["p/a", "p/b"]);
        assert!(first.truncated);
        let all = ok(client.list_with("p/", 3).await);
        assert!(!all.truncated);
        let none = ok(client.list_with("p/", 0).await);
        assert!(none.locks.is_empty() && none.truncated);
        // A released key is not listed.
        let b = guards.remove(2);
        ok(b.release().await);
        assert_eq!(keys(&ok(client.list("p/").await)), ["p/a", "p/c"]);
        // Tokens are the entries' indexes.
        let entry = ok(store.get("p/a").await).map(|e| e.index);
        assert_eq!(ok(client.list("p/a").await)[0].token, entry.unwrap_or(0));
    }

    #[tokio::test]
    async fn keys_and_prefixes_are_validated_naming_them() {
        let client = LockClient::memory();
        for result in [
            client.status("").await.map(|_| ()),
            client.status("a\nb").await.map(|_| ()),
            client.list("a\u{7f}").await.map(|_| ()),
            client.force_release("", 1).await.map(|_| ()),
        ] {
            assert!(
                matches!(result, Err(LockError::InvalidKey { .. })),
                "{result:?}"
            );
        }
        let long = "k".repeat(crate::MAX_KEY_LEN + 1);
        assert!(matches!(
            client.list(&long).await,
            Err(LockError::InvalidKey { .. })
        ));
    }

    #[tokio::test]
    async fn force_release_deletes_only_the_token_shown() {
        let store = MemoryStore::new();
        let holder = LockClient::new(store.clone());
        let operator = LockClient::new(store.clone());
        let guard = ok(holder.acquire("jobs/x").await);
        let shown = ok(operator.status("jobs/x").await).unwrap_or_else(|| panic!("free"));
        // The holder renews (a new index) before the operator confirms.
        let record = ok(store.get("jobs/x").await).unwrap_or_else(|| panic!("free"));
        let renewed = match ok(store
            .put("jobs/x", &record.record, Expect::Index(record.index), None)
            .await)
        {
            PutOutcome::Swapped { index } => index,
            other => panic!("{other:?}"),
        };
        match ok(operator.force_release("jobs/x", shown.token).await) {
            ForceRelease::Changed { current: Some(now) } => assert_eq!(now.token, renewed),
            other => panic!("{other:?}"),
        }
        assert!(ok(store.get("jobs/x").await).is_some(), "deleted anyway");
        assert_eq!(
            ok(operator.force_release("jobs/x", renewed).await),
            ForceRelease::Released
        );
        assert_eq!(ok(operator.status("jobs/x").await), None);
        assert_eq!(
            ok(operator.force_release("jobs/x", renewed).await),
            ForceRelease::Changed { current: None }
        );
        // The holder learns at its release that the lock was lost.
        assert!(matches!(guard.release().await, Err(LockError::Lost { .. })));
    }

    #[tokio::test]
    async fn a_store_without_listing_says_so() {
        let client = LockClient::new(NoListing(MemoryStore::new()));
        let guard = ok(client.acquire("a/1").await);
        // Status needs no listing.
        let info = ok(client.status("a/1").await).map(|i| i.token);
        assert_eq!(info, Some(guard.token()));
        let error = client.list("a/").await.err();
        assert!(
            matches!(
                &error,
                Some(LockError::Backend {
                    source: StoreError::Unsupported("listing"),
                    ..
                })
            ),
            "{error:?}"
        );
    }
}
