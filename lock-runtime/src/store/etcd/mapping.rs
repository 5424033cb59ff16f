//! The store contract on etcd: [`CompareExchange`] as etcd transactions, watches and
//! leases, and the encoding of a [`Record`] as an etcd value.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
};

use super::EtcdStore;
use super::error::{BACKEND, EtcdError};
use crate::store::{
    Capabilities, CompareExchange, DeleteOutcome, Entry, Expect, LeaseId, Listed, PutOutcome,
    Record, StoreError, Stored,
};

#[async_trait]
impl CompareExchange for EtcdStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .with_watch(true)
            .with_leases(true)
            .with_listing(true)
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let key = self.full_key(key);
        let (response, _) = self
            .with_failover(false, |mut client| {
                let key = key.clone();
                async move { Ok(client.get(key, None).await?) }
            })
            .await?;
        let entry = response
            .kvs()
            .first()
            .map(|kv| self.decode(kv))
            .transpose()?;
        self.observe(
            &key,
            entry.as_ref().map(|e| e.index),
            response.header().map(|h| h.revision()),
        );
        Ok(entry)
    }

    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        let key = self.full_key(key);
        let value = encode(record)?;
        let compare = match expect {
            Expect::Absent => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Expect::Index(i) => {
                Compare::mod_revision(key.clone(), CompareOp::Equal, index_to_revision(i))
            }
        };
        let options = lease.map(|l| PutOptions::new().with_lease(l.0));
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key.clone(), value, options)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let result = self
            .with_failover(true, |mut client| {
                let txn = txn.clone();
                async move { Ok(client.txn(txn).await?) }
            })
            .await;
        let (response, ambiguous) = match (result, lease) {
            (Err(error), Some(lease)) if lease_not_found(&error) => {
                return Err(StoreError::LeaseGone(lease));
            }
            (result, _) => result?,
        };
        if response.succeeded() {
            let revision = response
                .header()
                .map(|h| h.revision())
                .ok_or_else(|| self.bad_answer("a txn answer without a header"))?;
            let index = u64::try_from(revision)
                .map_err(|_| self.bad_answer(format!("negative revision {revision}")))?;
            return Ok(PutOutcome::Swapped { index });
        }
        let current = self.current_from(response.op_responses())?;
        self.observe(
            &key,
            current.as_ref().map(|e| e.index),
            response.header().map(|h| h.revision()),
        );
        // An attempt that timed out elsewhere may have written our record: if the key
        // holds this very acquisition, that write is ours.
        if ambiguous
            && let Some(entry) = &current
            && entry.record.same_acquisition(record)
        {
            return Ok(PutOutcome::Swapped { index: entry.index });
        }
        Ok(PutOutcome::Conflict { current })
    }

    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
        let key = self.full_key(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                index_to_revision(index),
            )])
            .and_then([TxnOp::delete(key.clone(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let (response, ambiguous) = self
            .with_failover(true, |mut client| {
                let txn = txn.clone();
                async move { Ok(client.txn(txn).await?) }
            })
            .await?;
        if response.succeeded() {
            return Ok(DeleteOutcome::Deleted);
        }
        let current = self.current_from(response.op_responses())?;
        self.observe(
            &key,
            current.as_ref().map(|e| e.index),
            response.header().map(|h| h.revision()),
        );
        if ambiguous && current.is_none() {
            // Our delete may have been applied by the attempt that timed out.
            return Ok(DeleteOutcome::Deleted);
        }
        Ok(DeleteOutcome::Conflict { current })
    }

    async fn watch(&self, key: &str, seen: Option<u64>) -> Result<(), StoreError> {
        let full = self.full_key(key);
        // etcd serves a watch that starts at or before its current revision from an
        // "unsynced" group that it catches up only every 100 ms: a wake-up could come up
        // to that late. So start right after the latest revision at which we know the
        // key held `seen` (the conflict or read the caller just made), which is usually
        // still the current revision, rather than right after `seen` itself, which is
        // behind as soon as any other key was written since.
        let start_revision = match seen {
            Some(index) => {
                let seen_at = index_to_revision(index);
                self.observed_at(&full, seen)
                    .map_or(seen_at, |at| at.max(seen_at))
                    .saturating_add(1)
            }
            None => match self.observed_at(&full, None) {
                Some(at) => at.saturating_add(1),
                None => {
                    // Absent: watch from the revision at which we see it absent.
                    let (index, at) = self.read_index(&full).await?;
                    if index.is_some() {
                        return Ok(());
                    }
                    at.saturating_add(1)
                }
            },
        };
        self.watch_from(&full, start_revision).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = lease_secs(ttl);
        let (response, _) = self
            .with_failover(false, |mut client| async move {
                Ok(client.lease_grant(secs, None).await?)
            })
            .await?;
        if !response.error().is_empty() {
            return Err(self.bad_answer(format!("lease grant refused: {}", response.error())));
        }
        Ok(LeaseId(response.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        // etcd answers a renewal of a lease it no longer has with TTL 0 on an open
        // stream, and with "not found" when a stream is opened for it.
        match self.renew(lease.0).await {
            Ok(ttl) if ttl > 0 => Ok(Some(Duration::from_secs(ttl.unsigned_abs()))),
            Ok(_) => Ok(None),
            Err(error) if lease_not_found(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn inspect(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let key = self.full_key(key);
        let (response, _) = self
            .with_failover(false, |mut client| {
                let key = key.clone();
                async move { Ok(client.get(key, None).await?) }
            })
            .await?;
        response.kvs().first().map(|kv| self.stored(kv)).transpose()
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<Listed>, StoreError> {
        if limit == 0 {
            // etcd reads a limit of 0 as no limit.
            return Ok(Vec::new());
        }
        let start = self.full_key(prefix);
        // One range request: every key that starts with the full prefix (every key
        // when both prefixes are empty), in key order, at most `limit` of them.
        let options = GetOptions::new()
            .with_prefix()
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let (response, _) = self
            .with_failover(false, |mut client| {
                let (start, options) = (start.clone(), options.clone());
                async move { Ok(client.get(start, Some(options)).await?) }
            })
            .await?;
        let store_prefix = self.prefix().as_bytes();
        let mut listed = Vec::with_capacity(response.kvs().len().min(limit));
        for kv in response.kvs().iter().take(limit) {
            // Only keys under our prefix are asked for; anything else is skipped.
            let Some(key) = kv.key().strip_prefix(store_prefix) else {
                continue;
            };
            let stored = match std::str::from_utf8(key) {
                Ok(_) => self.stored(kv)?,
                Err(_) => Stored::Foreign {
                    index: self.index_of(kv)?,
                    reason: "the key is not UTF-8 (not a distlock lock key)".into(),
                },
            };
            listed.push(Listed {
                key: String::from_utf8_lossy(key).into_owned(),
                stored,
            });
        }
        Ok(listed)
    }

    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        let result = self
            .with_failover(false, |mut client| async move {
                Ok(client.lease_time_to_live(lease.0, None).await?)
            })
            .await;
        match result {
            // etcd answers -1 for a lease it no longer has (older ones: "not found").
            Ok((response, _)) => Ok(u64::try_from(response.ttl()).ok().map(Duration::from_secs)),
            Err(error) if lease_not_found(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.forget_keep_alive(lease.0).await;
        let result = self
            .with_failover(false, |mut client| async move {
                Ok(client.lease_revoke(lease.0).await?)
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already gone: the keys are deleted either way.
            Err(error) if lease_not_found(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

impl EtcdStore {
    /// A stored value and its revisions as an [`Entry`].
    pub(super) fn decode(&self, kv: &KeyValue) -> Result<Entry, StoreError> {
        let record: Record =
            serde_json::from_slice(kv.value()).map_err(|e| StoreError::Foreign {
                reason: format!("{e}"),
            })?;
        let index = self.index_of(kv)?;
        Ok(Entry {
            record,
            index,
            lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
        })
    }

    /// The index of a stored value: its `mod_revision`.
    fn index_of(&self, kv: &KeyValue) -> Result<u64, StoreError> {
        u64::try_from(kv.mod_revision())
            .map_err(|_| self.bad_answer(format!("negative mod_revision {}", kv.mod_revision())))
    }

    /// A stored value as an operator sees it: a lock entry, or a foreign value with
    /// its index.
    fn stored(&self, kv: &KeyValue) -> Result<Stored, StoreError> {
        match self.decode(kv) {
            Ok(entry) => Ok(Stored::Lock(entry)),
            Err(StoreError::Foreign { reason }) => Ok(Stored::Foreign {
                index: self.index_of(kv)?,
                reason,
            }),
            Err(error) => Err(error),
        }
    }

    /// The entry in the failure branch of a txn (a range of the key).
    pub(super) fn current_from(
        &self,
        responses: Vec<TxnOpResponse>,
    ) -> Result<Option<Entry>, StoreError> {
        for response in responses {
            if let TxnOpResponse::Get(get) = response {
                return get.kvs().first().map(|kv| self.decode(kv)).transpose();
            }
        }
        Ok(None)
    }
}

/// A record as stored: compact JSON.
fn encode(record: &Record) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Foreign {
        reason: format!("cannot encode the record: {e}"),
    })
}

/// Whether etcd said that the lease a request named does not exist.
fn lease_not_found(error: &StoreError) -> bool {
    matches!(EtcdError::of(error), Some(EtcdError::LeaseNotFound { .. }))
}

/// A lease TTL in etcd's whole seconds, rounded up so that a lease never ends early.
fn lease_secs(ttl: Duration) -> i64 {
    let millis = ttl.as_millis().max(1);
    i64::try_from(millis.div_ceil(1000)).unwrap_or(i64::MAX)
}

fn index_to_revision(index: u64) -> i64 {
    // An index above i64::MAX cannot exist in etcd, so the compare simply fails.
    i64::try_from(index).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_seconds_round_up() {
        assert_eq!(lease_secs(Duration::from_millis(1)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1000)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn indexes_beyond_etcd_revisions_never_match() {
        assert_eq!(index_to_revision(42), 42);
        assert_eq!(index_to_revision(u64::MAX), i64::MAX);
    }
}
