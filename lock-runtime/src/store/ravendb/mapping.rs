//! The store contract on RavenDB compare-exchange items (see the module docs
//! of `ravendb`): the [`CompareExchange`] impl, and how records and
//! tombstones are encoded as an item's `Object`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::transport::{BACKEND, Inner, RavenDbStore};
use crate::store::net::classify::backend;
use crate::store::{
    Backoff, Capabilities, CompareExchange, DeleteOutcome, Entry, Expect, LeaseId, Listed,
    PutOutcome, Record, StoreError, Stored,
};

/// Put-if-absent retries when the key's tombstone keeps moving.
const MAX_TOMBSTONE_RETRIES: usize = 4;
/// Items per listing request (records are small; a page stays far below the
/// answer size limit unless foreign values are large).
const LIST_PAGE: usize = 256;
/// Listing requests per `list` call at most (tombstones are read and skipped).
const MAX_LIST_PAGES: usize = 4096;

/// What a compare-exchange item holds.
#[derive(Debug)]
pub(super) enum Item {
    /// A lock record.
    Lock(Entry),
    /// A released lock (see the module docs of `ravendb`): reads as absent.
    Tombstone {
        /// The item's index.
        index: u64,
    },
}

/// A [`Record`] as stored under an item's `Object`:
/// `{"ExpiresAt":"<date>","nonce":"..","owner":..,"ttl_ms":..,"written_at":"<date>","written_at_ms":..}`.
/// The fields are declared in the order they are written (byte order of the
/// names: `ExpiresAt` first).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RecordObject<'a> {
    /// When this write of the record runs out unless renewed, by the holder's
    /// wall clock ([`expires_at_ms`]), as a .NET `DateTime` ([`dotnet_utc`]).
    /// It is the field the original .NET `RavenDbProcessMonitor` (and
    /// RavenDB's documented compare-exchange lock pattern) decides by: such a
    /// client takes the key over once this date is before its own clock.
    /// Informational for distlock: never read back (no distlock decision
    /// compares clocks), and records without it decode the same.
    #[serde(rename = "ExpiresAt", skip_deserializing)]
    expires_at: String,
    /// Written as a string (JSON numbers past 2^53 are not safe in every
    /// reader); a number is read too.
    #[serde(
        serialize_with = "nonce_as_text",
        deserialize_with = "nonce_text_or_number"
    )]
    nonce: u64,
    #[serde(borrow)]
    owner: Cow<'a, str>,
    ttl_ms: u64,
    /// `written_at_ms` as a date, for people reading the store; never read back.
    #[serde(skip_deserializing)]
    written_at: String,
    written_at_ms: u64,
}

fn nonce_as_text<S: Serializer>(nonce: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(nonce)
}

fn nonce_text_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Nonce<'a> {
        Number(u64),
        Text(#[serde(borrow)] Cow<'a, str>),
    }
    match Nonce::deserialize(deserializer) {
        Ok(Nonce::Number(nonce)) => Ok(nonce),
        Ok(Nonce::Text(text)) => text.parse().map_err(|_| {
            D::Error::custom("`nonce` is not an unsigned integer (in a string or a number)")
        }),
        Err(_) => Err(D::Error::custom(
            "`nonce` is not an unsigned integer (in a string or a number)",
        )),
    }
}

/// A released lock as earlier distlock versions stored it under an item's
/// `Object` (fields in the order written); releases delete the item now, and
/// this shape is only read (tests write it to stand for an old tombstone).
#[cfg(test)]
#[derive(Debug, Serialize)]
struct TombstoneObject {
    /// The index of the lock record it replaced (a replayed release recognises
    /// its own tombstone by it).
    previous_index: u64,
    released: bool,
    released_at: String,
    released_at_ms: u64,
}

/// The body of a compare-exchange PUT: `{"@metadata":{"@expires":..},"Object":..}`.
#[derive(Serialize)]
struct PutBody<'a, T> {
    #[serde(rename = "@metadata", skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
    #[serde(rename = "Object")]
    object: &'a T,
}

#[derive(Serialize)]
struct Metadata {
    #[serde(rename = "@expires")]
    expires: String,
}

/// `record` as stored by a write made at `wall_ms` (the holder's wall clock
/// at this write, Unix ms): `ExpiresAt` is [`expires_at_ms`] of the two.
pub(super) fn encode_record(record: &Record, wall_ms: u64) -> RecordObject<'_> {
    RecordObject {
        expires_at: dotnet_utc(expires_at_ms(record, wall_ms)),
        nonce: record.nonce,
        owner: Cow::Borrowed(&record.owner),
        ttl_ms: record.ttl_ms,
        written_at: dotnet_utc(record.written_at_ms),
        written_at_ms: record.written_at_ms,
    }
}

/// The record stored as `object`, or [`StoreError::Foreign`].
pub(super) fn decode_record(object: &Value) -> Result<Record, StoreError> {
    let foreign = |reason: String| StoreError::Foreign { reason };
    if !object.is_object() {
        return Err(foreign(
            "the compare-exchange Object is not a JSON object".into(),
        ));
    }
    let stored = RecordObject::deserialize(object).map_err(|e| foreign(e.to_string()))?;
    Ok(Record {
        owner: stored.owner.into(),
        nonce: stored.nonce,
        ttl_ms: stored.ttl_ms,
        written_at_ms: stored.written_at_ms,
    })
}

/// Whether `object` is a tombstone (`"released": true`).
pub(super) fn is_tombstone(object: &Value) -> bool {
    object.get("released").and_then(Value::as_bool) == Some(true)
}

/// Decodes an item's `Value` (`{"Object": ..}`) into a lock entry or a tombstone.
pub(super) fn decode_item(value: &Value, index: u64) -> Result<Item, StoreError> {
    let object = value.get("Object").ok_or_else(|| StoreError::Foreign {
        reason: "the compare-exchange value has no Object".into(),
    })?;
    if is_tombstone(object) {
        return Ok(Item::Tombstone { index });
    }
    let record = decode_record(object)?;
    Ok(Item::Lock(Entry {
        record,
        index,
        lease: None,
    }))
}

/// An item as an operator sees it: `None` for a tombstone (a free key), a
/// value that is not a lock record as [`Stored::Foreign`] with its index.
pub(super) fn stored_item(value: &Value, index: u64) -> Option<Stored> {
    match decode_item(value, index) {
        Ok(Item::Lock(entry)) => Some(Stored::Lock(entry)),
        Ok(Item::Tombstone { .. }) => None,
        Err(StoreError::Foreign { reason }) => Some(Stored::Foreign { index, reason }),
        Err(other) => Some(Stored::Foreign {
            index,
            reason: other.to_string(),
        }),
    }
}

/// `listed`, a key as the server lists it (lower-cased), as the lock API names
/// it: without the store's key prefix (compared case-insensitively). `None` for
/// a key not under the prefix.
pub(super) fn user_key(store_prefix: &str, listed: &str) -> Option<String> {
    if let Some(rest) = listed.strip_prefix(store_prefix) {
        return Some(rest.to_owned());
    }
    let lowered = store_prefix.to_lowercase();
    listed.strip_prefix(lowered.as_str()).map(str::to_owned)
}

/// The owner of [`foreign_entry`]'s record: what `holder` shows in
/// [`LockError::Busy`](crate::LockError::Busy) and
/// [`LockError::Timeout`](crate::LockError::Timeout) (followed by the index).
pub(super) const FOREIGN_HOLDER: &str = "a foreign holder (not a distlock record)";

/// A value that is not a distlock record, as the lock engine sees it: a lock
/// held by a foreign holder, whose synthetic record has the store's foreign
/// ttl (so the engine's takeover rule waits for it to stay unchanged that
/// long), nonce 0 (the engine's nonces start at 1, so the record is never
/// taken for one of ours, whatever the owner) and no wall-clock date (0: the
/// value's own dates, such as the original's `ExpiresAt`, are never read).
pub(super) fn foreign_entry(index: u64, foreign_ttl: Duration) -> Entry {
    Entry {
        record: Record {
            owner: Arc::from(format!("{FOREIGN_HOLDER}, index {index}")),
            nonce: 0,
            ttl_ms: u64::try_from(foreign_ttl.as_millis()).unwrap_or(u64::MAX),
            written_at_ms: 0,
        },
        index,
        lease: None,
    }
}

/// [`decode_item`] for the lock engine: a value that is not a distlock record
/// is a lock held by a foreign holder ([`foreign_entry`]). Never fails.
pub(super) fn decode_held(value: &Value, index: u64, foreign_ttl: Duration) -> Item {
    decode_item(value, index).unwrap_or_else(|_| Item::Lock(foreign_entry(index, foreign_ttl)))
}

/// [`decode_held`], with `null` (no item) as `None`.
pub(super) fn decode_held_or_none(
    value: &Value,
    index: u64,
    foreign_ttl: Duration,
) -> Option<Item> {
    (!value.is_null()).then(|| decode_held(value, index, foreign_ttl))
}

/// When a write of `record` made at `wall_ms` (the holder's wall clock, Unix
/// ms) runs out unless renewed: the later of the record's `written_at_ms` and
/// `wall_ms`, plus the ttl (saturating). A first write of a record stamps
/// `written_at_ms` from the same clock just before it is sent, so this is
/// `written_at_ms + ttl`; a renewal rewrites the same record (the same
/// `written_at_ms`), so `wall_ms` moves the date on with each renewal. The
/// holder gives the lock up at the latest one ttl after it sent its last
/// successful write, so by the holder's clock this date is never earlier than
/// that. Also the base of the item's `@expires` (plus the expiry grace).
pub(super) fn expires_at_ms(record: &Record, wall_ms: u64) -> u64 {
    record
        .written_at_ms
        .max(wall_ms)
        .saturating_add(record.ttl_ms)
}

/// The latest date .NET's `DateTime` holds, in Unix milliseconds (9999-12-31T23:59:59.999Z).
const MAX_DOTNET_MS: u64 = 253_402_300_799_999;

/// Unix milliseconds as RavenDB writes UTC dates (.NET's round-trip format,
/// seven fraction digits): `2026-11-26T12:00:00.1230000Z`. Later dates are
/// clamped to the last one .NET can read. Every date this backend writes goes
/// through here.
pub(super) fn dotnet_utc(ms: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.min(MAX_DOTNET_MS));
    // `2026-11-26T12:00:00.123Z`; humantime cannot fail below year 10000.
    let mut text = String::with_capacity(28);
    let _ = write!(text, "{}", humantime::format_rfc3339_millis(time));
    match text.strip_suffix('Z') {
        Some(millis) => format!("{millis}0000Z"),
        None => text,
    }
}

/// The local wall clock in Unix milliseconds (informational dates only).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Inner {
    /// Remembers that `key` exists, with its tombstone's index if it holds one.
    pub(super) fn remember(&self, key: &str, tombstone: Option<u64>) {
        // Keys are case-insensitive on the server: so is this cache.
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.insert(key.to_lowercase(), tombstone);
    }

    /// What this store knows of `key`: `None` never seen, `Some(None)` seen
    /// holding a record, `Some(Some(i))` seen holding a tombstone at index `i`.
    pub(super) fn known(&self, key: &str) -> Option<Option<u64>> {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(key.to_lowercase().as_str()).copied()
    }

    /// Forgets `key` (its item was deleted).
    pub(super) fn forget(&self, key: &str) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.remove(key.to_lowercase().as_str());
    }

    /// Reads `key`'s item, remembering what it holds (a foreign value is a
    /// lock held by a foreign holder: [`decode_held`]).
    pub(super) async fn read(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let Some((index, value)) = self.get_item(key).await? else {
            return Ok(None);
        };
        let item = decode_held(&value, index, self.foreign_ttl);
        if let Item::Tombstone { index } = item
            && self.clean_tombstone(key, index).await
        {
            return Ok(None);
        }
        self.remember(
            key,
            match &item {
                Item::Tombstone { index } => Some(*index),
                Item::Lock(_) => None,
            },
        );
        Ok(Some(item))
    }

    /// Deletes an old tombstone (written by the releases of earlier distlock
    /// versions; see the module docs) at exactly `index`, so that the key
    /// is free for every client again; returns whether it is gone (a failure
    /// leaves it, still read as a free key, for the next reader).
    pub(super) async fn clean_tombstone(&self, key: &str, index: u64) -> bool {
        match self.delete_item(key, index).await {
            Ok((true, _, _)) | Ok((false, _, Value::Null)) => {
                self.forget(key);
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::debug!(key, %error, "distlock: cannot delete an old tombstone");
                false
            }
        }
    }

    /// One compare-exchange PUT of `object` at `index`, with `@expires` the
    /// expiry grace after `expires` (Unix ms); returns `(successful, index,
    /// current value)`.
    async fn cmpxchg_put<T: Serialize>(
        &self,
        key: &str,
        index: u64,
        object: &T,
        expires: u64,
    ) -> Result<(bool, u64, Value), StoreError> {
        let metadata = self.expiry_grace.map(|grace| Metadata {
            expires: dotnet_utc(
                expires.saturating_add(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX)),
            ),
        });
        let body = serde_json::to_vec(&PutBody { metadata, object }).map_err(|e| {
            let endpoint = self.nodes().first().cloned().unwrap_or_default();
            backend(&endpoint, e)
        })?;
        self.put_item(key, index, body).await
    }
}

#[async_trait]
impl CompareExchange for RavenDbStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // Waiters poll with reads (no Raft write) while the lock is held
        // (`put` reads first on a key last seen held), so they poll in
        // proportion to their wait: every millisecond while it is young (a
        // short hold is handed over within about that), slowing to one poll
        // per 4-8 ms past a quarter of a second. RavenDB 4.1 has no change
        // notification for compare-exchange values: polling is the only way.
        Capabilities::NONE
            .with_poll(Backoff {
                min: Duration::from_millis(1),
                max: Duration::from_millis(8),
            })
            .with_cheap_polls(true)
            .with_listing(true)
    }

    async fn inspect(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let inner = &self.inner;
        let key = inner.full_key(key)?;
        let Some((index, value)) = inner.get_item(&key).await? else {
            return Ok(None);
        };
        let stored = stored_item(&value, index);
        inner.remember(&key, stored.is_none().then_some(index));
        Ok(stored)
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<Listed>, StoreError> {
        let inner = &self.inner;
        let full = format!("{}{}", inner.prefix, prefix);
        let mut listed: Vec<Listed> = Vec::new();
        // The first page asks for no more than needed; later ones (after
        // tombstones or foreign keys took room) for full pages.
        let mut page = limit.clamp(1, LIST_PAGE);
        let mut start = 0;
        for _ in 0..MAX_LIST_PAGES {
            if listed.len() >= limit {
                break;
            }
            let items = inner.list_page(&full, start, page).await?;
            let read = items.len();
            for item in items {
                let Some(key) = user_key(&inner.prefix, &item.key) else {
                    continue;
                };
                // Pages are separate reads: a key written between two of them can
                // shift the next page and show an item again. Keys come in order.
                if listed.last().is_some_and(|last| last.key >= key) {
                    continue;
                }
                if let Some(stored) = stored_item(&item.value, item.index) {
                    listed.push(Listed { key, stored });
                }
            }
            if read < page {
                break;
            }
            start += read;
            page = LIST_PAGE;
        }
        listed.truncate(limit);
        Ok(listed)
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let key = self.inner.full_key(key)?;
        match self.inner.read(&key).await? {
            Some(Item::Lock(entry)) => Ok(Some(entry)),
            Some(Item::Tombstone { .. }) | None => Ok(None),
        }
    }

    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        let inner = &self.inner;
        if lease.is_some() {
            return Err(StoreError::Unsupported("leases"));
        }
        let key = inner.full_key(key)?;
        let wall = now_ms();
        let object = encode_record(record, wall);
        let expires = expires_at_ms(record, wall);
        let mut index = match expect {
            Expect::Absent => match inner.known(&key) {
                // Take a tombstone's place if we know of one.
                Some(Some(tombstone)) => tombstone,
                // Last seen held: a waiter polling. Read first (a read is no Raft
                // write, so polling waiters do not load the cluster log) and write
                // only when the lock looks free. A stale read only delays a waiter;
                // the write decides.
                Some(None) => match inner.read(&key).await? {
                    Some(Item::Lock(entry)) => {
                        // Our own record here (an earlier write whose answer
                        // was lost) is reported as it is: the lock engine
                        // decides what it means (its ambiguity rule).
                        return Ok(PutOutcome::Conflict {
                            current: Some(entry),
                        });
                    }
                    Some(Item::Tombstone { index }) => index,
                    None => 0,
                },
                // Never seen: create.
                None => 0,
            },
            Expect::Index(i) => {
                if inner.known(&key).is_none() {
                    // Never seen here: make sure the item exists at `i`, since 4.1
                    // would create a missing key (see the module docs).
                    match inner.read(&key).await? {
                        Some(Item::Lock(entry)) if entry.index == i => {}
                        Some(Item::Lock(entry)) => {
                            return Ok(PutOutcome::Conflict {
                                current: Some(entry),
                            });
                        }
                        Some(Item::Tombstone { .. }) | None => {
                            return Ok(PutOutcome::Conflict { current: None });
                        }
                    }
                }
                i
            }
        };
        for _ in 0..MAX_TOMBSTONE_RETRIES {
            let (ok, new_index, value) = inner.cmpxchg_put(&key, index, &object, expires).await?;
            if ok {
                inner.remember(&key, None);
                return Ok(PutOutcome::Swapped { index: new_index });
            }
            match decode_held_or_none(&value, new_index, inner.foreign_ttl) {
                // Also our own record (a replay of this write on another node,
                // or an earlier write whose answer was lost): a conflict that
                // shows it; the engine resolves it.
                Some(Item::Lock(entry)) => {
                    inner.remember(&key, None);
                    return Ok(PutOutcome::Conflict {
                        current: Some(entry),
                    });
                }
                Some(Item::Tombstone { index: tombstone }) => {
                    inner.remember(&key, Some(tombstone));
                    if expect == Expect::Absent && tombstone != index {
                        index = tombstone;
                        continue;
                    }
                    return Ok(PutOutcome::Conflict { current: None });
                }
                None => {
                    if expect == Expect::Absent && index != 0 {
                        // Our tombstone knowledge was stale and the key is gone.
                        index = 0;
                        continue;
                    }
                    return Ok(PutOutcome::Conflict { current: None });
                }
            }
        }
        Ok(PutOutcome::Conflict { current: None })
    }

    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
        let inner = &self.inner;
        let key = inner.full_key(key)?;
        if inner.known(&key).is_none() {
            // A foreign value at exactly `index` is released too (an operator's
            // forced release of a value that is not a lock record).
            match inner.get_item(&key).await?.map(|(at, value)| {
                let stored = stored_item(&value, at);
                inner.remember(&key, stored.is_none().then_some(at));
                stored
            }) {
                Some(Some(stored)) if stored.index() == index => {}
                Some(Some(Stored::Lock(entry))) => {
                    return Ok(DeleteOutcome::Conflict {
                        current: Some(entry),
                    });
                }
                Some(Some(Stored::Foreign { index: at, .. })) => {
                    return Ok(DeleteOutcome::Conflict {
                        current: Some(foreign_entry(at, inner.foreign_ttl)),
                    });
                }
                _ => return Ok(DeleteOutcome::Conflict { current: None }),
            }
        }
        // A real delete (see the module docs: no renewal of ours is in flight
        // when the engine sends it). The item is gone: a put with index 0 by
        // any client succeeds.
        let (ok, new_index, value) = inner.delete_item(&key, index).await?;
        if ok {
            inner.forget(&key);
            return Ok(DeleteOutcome::Deleted);
        }
        match decode_held_or_none(&value, new_index, inner.foreign_ttl) {
            Some(Item::Lock(entry)) => {
                inner.remember(&key, None);
                Ok(DeleteOutcome::Conflict {
                    current: Some(entry),
                })
            }
            // An old tombstone (a free key): clean it up.
            Some(Item::Tombstone { index: at }) => {
                inner.remember(&key, Some(at));
                inner.clean_tombstone(&key, at).await;
                Ok(DeleteOutcome::Conflict { current: None })
            }
            // The key is missing: a replay of this very delete (on another
            // node, same `raft-request-id`) answers so. RavenDB 4.1 answers a
            // delete of a missing key as successful anyway; either way the key
            // is free, which is what a release is for.
            None => {
                inner.forget(&key);
                Ok(DeleteOutcome::Deleted)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_are_ravendb_utc() {
        assert_eq!(dotnet_utc(0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(
            dotnet_utc(1_795_701_600_123),
            "2026-11-26T14:00:00.1230000Z"
        );
        assert_eq!(dotnet_utc(951_782_400_000), "2000-02-29T00:00:00.0000000Z");
        assert_eq!(dotnet_utc(MAX_DOTNET_MS), "9999-12-31T23:59:59.9990000Z");
        // Past .NET's last date (a huge ttl): clamped, never a panic.
        assert_eq!(dotnet_utc(u64::MAX), "9999-12-31T23:59:59.9990000Z");
    }

    #[test]
    fn records_round_trip_readably() {
        let record = Record {
            owner: "u@h:1".into(),
            nonce: u64::MAX,
            ttl_ms: 30_000,
            written_at_ms: 1_795_701_600_000,
        };
        let object =
            serde_json::to_value(encode_record(&record, 1_795_701_600_000)).unwrap_or_default();
        assert_eq!(object["nonce"], "18446744073709551615");
        assert_eq!(object["written_at"], "2026-11-26T14:00:00.0000000Z");
        assert_eq!(object["ExpiresAt"], "2026-11-26T14:00:30.0000000Z");
        let decoded = decode_record(&object).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded, record);
        // Records without `ExpiresAt` (earlier versions) or with any value
        // there decode the same: it is never read back.
        let mut without = object.clone();
        if let Some(fields) = without.as_object_mut() {
            fields.remove("ExpiresAt");
        }
        assert_eq!(decode_record(&without).ok().as_ref(), Some(&record));
        for odd in [json!(null), json!(5), json!("not a date"), json!({"a": 1})] {
            let mut damaged = object.clone();
            damaged["ExpiresAt"] = odd;
            assert_eq!(decode_record(&damaged).ok().as_ref(), Some(&record));
        }
        // A number nonce is read too; extra fields are ignored.
        let numeric = json!({"owner": "o", "nonce": 7, "ttl_ms": 1, "written_at_ms": 2, "x": 1});
        assert_eq!(decode_record(&numeric).map(|r| r.nonce).ok(), Some(7));
        for foreign in [
            json!({"hello": 1}),
            json!(["5", "o", 1, 2]),
            json!({"owner": "o", "nonce": "-1", "ttl_ms": 1, "written_at_ms": 2}),
            json!({"owner": "o", "nonce": 1.5, "ttl_ms": 1, "written_at_ms": 2}),
            json!({"owner": 1, "nonce": "1", "ttl_ms": 1, "written_at_ms": 2}),
        ] {
            assert!(
                matches!(decode_record(&foreign), Err(StoreError::Foreign { .. })),
                "{foreign}"
            );
        }
    }

    /// `ExpiresAt`: the record's `written_at_ms` (or the later wall clock of
    /// a renewal) plus the ttl, as .NET writes a UTC `DateTime`.
    #[test]
    fn expires_at_is_the_write_plus_the_ttl_as_a_dotnet_date() {
        let record = Record {
            owner: "u@h:1".into(),
            nonce: 1,
            ttl_ms: 300_000,
            written_at_ms: 1_796_156_208_017,
        };
        // The first write: stamped just before it is sent.
        assert_eq!(expires_at_ms(&record, 1_796_156_208_017), 1_796_156_508_017);
        assert_eq!(
            encode_record(&record, 1_796_156_208_017).expires_at,
            "2026-12-01T20:21:48.0170000Z"
        );
        // A wall clock a little behind the stamp never makes it earlier.
        assert_eq!(expires_at_ms(&record, 1_796_156_208_000), 1_796_156_508_017);
        // A renewal 100 s later rewrites the same record: the date moves on.
        assert_eq!(
            encode_record(&record, 1_796_156_308_317).expires_at,
            "2026-12-01T20:23:28.3170000Z"
        );
        // Huge values saturate and clamp to .NET's last date, never panic.
        let huge = Record {
            ttl_ms: u64::MAX,
            written_at_ms: u64::MAX - 1,
            ..record.clone()
        };
        assert_eq!(expires_at_ms(&huge, u64::MAX), u64::MAX);
        assert_eq!(
            encode_record(&huge, 0).expires_at,
            "9999-12-31T23:59:59.9990000Z"
        );
        let zero = Record {
            ttl_ms: 0,
            written_at_ms: 0,
            ..record
        };
        assert_eq!(
            encode_record(&zero, 0).expires_at,
            "1970-01-01T00:00:00.0000000Z"
        );
    }

    #[test]
    fn listed_keys_lose_the_store_prefix_in_any_case() {
        assert_eq!(user_key("", "a/b").as_deref(), Some("a/b"));
        assert_eq!(user_key("app/", "app/a").as_deref(), Some("a"));
        // 4.1 lists keys lower-cased.
        assert_eq!(
            user_key("MyApp/", "myapp/orders/1").as_deref(),
            Some("orders/1")
        );
        assert_eq!(user_key("app/", "other/a"), None);
    }

    #[test]
    fn listed_items_are_locks_foreign_values_or_free() {
        let record =
            json!({"Object": {"owner": "o", "nonce": "1", "ttl_ms": 1, "written_at_ms": 2}});
        assert!(matches!(
            stored_item(&record, 5),
            Some(Stored::Lock(Entry { index: 5, .. }))
        ));
        let tombstone = json!({"Object": {"released": true, "previous_index": 4}});
        assert_eq!(stored_item(&tombstone, 6), None);
        for foreign in [json!({"Object": 42}), json!({"Other": 1}), json!("text")] {
            assert!(
                matches!(
                    stored_item(&foreign, 7),
                    Some(Stored::Foreign { index: 7, .. })
                ),
                "{foreign}"
            );
        }
    }

    /// For the lock engine, a value that is not a distlock record is a lock
    /// held by a foreign holder: the original's `{ExpiresAt}` (whatever its
    /// date says), a value without `ExpiresAt`, any JSON; a tombstone stays
    /// a free key and a distlock record stays itself.
    #[test]
    fn foreign_values_are_locks_of_a_foreign_holder() {
        let ttl = Duration::from_secs(300);
        for value in [
            json!({"Object": {"ExpiresAt": "2026-12-01T20:16:48.3170000Z"}}),
            json!({"Object": {"ExpiresAt": "1999-01-01T00:00:00.0000000Z"}}),
            json!({"Object": {"ExpiresAt": null}}),
            json!({"Object": {"hello": "world"}}),
            json!({"Object": {"released": false}}),
            json!({"Object": {"released": "true"}}),
            json!({"Object": "not a lock"}),
            json!({"Object": 42}),
            json!({"Other": 1}),
            json!("text"),
            // Almost a record: a negative nonce.
            json!({"Object": {"owner": "o", "nonce": "-1", "ttl_ms": 1, "written_at_ms": 2}}),
        ] {
            let Item::Lock(entry) = decode_held(&value, 17, ttl) else {
                panic!("{value} is not a foreign holder's lock");
            };
            assert_eq!(entry, foreign_entry(17, ttl), "{value}");
            assert_eq!(entry.record.nonce, 0);
            assert_eq!(entry.record.ttl(), ttl);
            assert_eq!(entry.record.written_at_ms, 0);
            assert_eq!(entry.lease, None);
            assert_eq!(
                &*entry.record.owner,
                "a foreign holder (not a distlock record), index 17"
            );
            // Operators still see it as foreign, with its index.
            assert!(
                matches!(
                    stored_item(&value, 17),
                    Some(Stored::Foreign { index: 17, .. })
                ),
                "{value}"
            );
            assert!(decode_item(&value, 17).is_err(), "{value}");
        }
        // Never the same acquisition as a record of ours, even under the same owner
        // text: distlock's nonces start at 1.
        let synthetic = foreign_entry(3, ttl).record;
        for nonce in [1, 2, u64::MAX] {
            let ours = Record {
                nonce,
                ..synthetic.clone()
            };
            assert!(!synthetic.same_acquisition(&ours));
        }
        // The ttl is the store's foreign ttl, saturating.
        assert_eq!(foreign_entry(1, Duration::MAX).record.ttl_ms, u64::MAX);
        // A tombstone is a free key; nothing is nothing.
        let tombstone = json!({"Object": {"released": true, "previous_index": 4}});
        assert!(matches!(
            decode_held(&tombstone, 6, ttl),
            Item::Tombstone { index: 6 }
        ));
        assert_eq!(stored_item(&tombstone, 6), None);
        assert!(decode_held_or_none(&Value::Null, 6, ttl).is_none());
        // A distlock record decodes to itself, with or without `ExpiresAt`.
        let record = Record {
            owner: "u@h:1".into(),
            nonce: 9,
            ttl_ms: 30_000,
            written_at_ms: 1_795_701_600_000,
        };
        let written = json!({"Object": encode_record(&record, 1_795_701_600_000)});
        let Some(Item::Lock(entry)) = decode_held_or_none(&written, 8, ttl) else {
            panic!("{written} is not a lock");
        };
        assert_eq!(
            entry,
            Entry {
                record: record.clone(),
                index: 8,
                lease: None
            }
        );
        let mut without = written.clone();
        if let Some(object) = without["Object"].as_object_mut() {
            object.remove("ExpiresAt");
        }
        assert!(matches!(
            decode_held(&without, 8, ttl),
            Item::Lock(Entry { record: r, .. }) if r == record
        ));
    }

    /// The bytes on the wire: those of the hand-built JSON the serde structs
    /// replaced, plus `ExpiresAt` (first, in byte order of the names); the
    /// nonce a string, dates with 7 digits.
    #[test]
    fn put_bodies_on_the_wire() {
        let record = Record {
            owner: "u@h:1".into(),
            nonce: 42,
            ttl_ms: 30_000,
            written_at_ms: 1_795_701_600_123,
        };
        let object = encode_record(&record, 1_795_701_600_123);
        let metadata = Some(Metadata {
            expires: dotnet_utc(expires_at_ms(&record, 1_795_701_600_123)),
        });
        let body = serde_json::to_string(&PutBody {
            metadata,
            object: &object,
        })
        .unwrap_or_default();
        assert_eq!(
            body,
            r#"{"@metadata":{"@expires":"2026-11-26T14:00:30.1230000Z"},"Object":{"ExpiresAt":"2026-11-26T14:00:30.1230000Z","nonce":"42","owner":"u@h:1","ttl_ms":30000,"written_at":"2026-11-26T14:00:00.1230000Z","written_at_ms":1795701600123}}"#
        );
        let tombstone = TombstoneObject {
            previous_index: 9,
            released: true,
            released_at: dotnet_utc(0),
            released_at_ms: 0,
        };
        let body = serde_json::to_string(&PutBody {
            metadata: None,
            object: &tombstone,
        })
        .unwrap_or_default();
        assert_eq!(
            body,
            r#"{"Object":{"previous_index":9,"released":true,"released_at":"1970-01-01T00:00:00.0000000Z","released_at_ms":0}}"#
        );
        let value: Value = serde_json::from_str(&body).unwrap_or_default();
        assert!(matches!(
            decode_item(&value, 10),
            Ok(Item::Tombstone { index: 10 })
        ));
    }
}
