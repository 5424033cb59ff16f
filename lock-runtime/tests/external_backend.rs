//! The backend kit from outside: a small store written the way a user's crate
//! would write one, through the public API only (`distlock::store` and
//! `distlock::testing`, no crate internals), passes the whole conformance
//! suite; deliberately broken variants of it fail it, each at the check for
//! the rule it breaks (a suite that cannot fail proves nothing).
//!
//! Run: `cargo test -p lock-runtime --test external_backend`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use distlock::store::{
    Capabilities, CompareExchange, DeleteOutcome, Entry, Expect, Listed, PutOutcome, Record,
    StoreError, Stored, async_trait,
};
use distlock::testing::conformance::{self, Backend, CHECKS, Failure};

/// How a [`MapStore`] breaks the contract, if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defect {
    None,
    /// Put-if-absent overwrites a held key.
    PutIfAbsentOverwrites,
    /// Each key counts its own index, from 1 again after a delete.
    IndexRestartsAfterDelete,
    /// A delete ignores the index it was given.
    DeleteIgnoresIndex,
    /// Reports `watch` but does not implement it.
    ClaimsWatch,
    /// A put never answers.
    PutHangs,
    /// A listing gives every key from the prefix on, also those not under it.
    ListingIgnoresPrefix,
}

#[derive(Debug, Default)]
struct State {
    /// The last index handed out, for every key (so it grows across delete
    /// and re-create).
    last_index: u64,
    entries: BTreeMap<String, (Record, u64)>,
}

/// A compare-exchange store on a `Mutex<BTreeMap>`. Clones share the map, so
/// clients on clones contend like service instances on one server.
#[derive(Clone, Debug)]
struct MapStore {
    state: Arc<Mutex<State>>,
    defect: Defect,
    /// Implements the optional listing.
    listing: bool,
}

impl MapStore {
    fn new(defect: Defect) -> Self {
        MapStore {
            state: Arc::default(),
            defect,
            listing: true,
        }
    }

    /// The same store without the optional listing.
    fn without_listing(mut self) -> Self {
        self.listing = false;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn entry(record: &Record, index: u64) -> Entry {
    Entry {
        record: record.clone(),
        index,
        lease: None,
    }
}

#[async_trait]
impl CompareExchange for MapStore {
    fn backend(&self) -> &'static str {
        "btreemap"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .with_watch(self.defect == Defect::ClaimsWatch)
            .with_listing(self.listing)
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let state = self.state();
        Ok(state.entries.get(key).map(|(r, i)| entry(r, *i)))
    }

    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        _lease: Option<distlock::store::LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        if self.defect == Defect::PutHangs {
            std::future::pending::<()>().await;
        }
        let mut state = self.state();
        let current = state.entries.get(key).map(|(r, i)| entry(r, *i));
        let holds = match expect {
            Expect::Absent => current.is_none() || self.defect == Defect::PutIfAbsentOverwrites,
            Expect::Index(index) => current.as_ref().is_some_and(|e| e.index == index),
        };
        if !holds {
            return Ok(PutOutcome::Conflict { current });
        }
        let index = if self.defect == Defect::IndexRestartsAfterDelete {
            current.map_or(1, |e| e.index + 1)
        } else {
            state.last_index += 1;
            state.last_index
        };
        state
            .entries
            .insert(key.to_owned(), (record.clone(), index));
        Ok(PutOutcome::Swapped { index })
    }

    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
        let mut state = self.state();
        let current = state.entries.get(key).map(|(r, i)| entry(r, *i));
        match current {
            Some(e) if e.index == index || self.defect == Defect::DeleteIgnoresIndex => {
                state.entries.remove(key);
                Ok(DeleteOutcome::Deleted)
            }
            current => Ok(DeleteOutcome::Conflict { current }),
        }
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<Listed>, StoreError> {
        if !self.listing {
            return Err(StoreError::Unsupported("listing"));
        }
        let state = self.state();
        let under =
            |key: &String| key.starts_with(prefix) || self.defect == Defect::ListingIgnoresPrefix;
        // A BTreeMap is in key order: range from the prefix on, while under it.
        Ok(state
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| under(key))
            .take(limit)
            .map(|(key, (record, index))| Listed {
                key: key.clone(),
                stored: Stored::Lock(entry(record, *index)),
            })
            .collect())
    }
}

fn backend(defect: Defect) -> Backend {
    let expect = Capabilities::NONE
        .with_watch(defect == Defect::ClaimsWatch)
        .with_listing(true);
    Backend::shared("btreemap", expect, MapStore::new(defect))
}

/// Runs the whole suite on a store with `defect`, which must fail it at `check`.
async fn fails_at(defect: Defect, check: &str) -> Failure {
    let backend = backend(defect).time_limit(Duration::from_secs(5));
    match conformance::run_all(&backend).await {
        Ok(report) => panic!("a store whose {defect:?} passed the suite: {report:?}"),
        Err(failure) => {
            assert_eq!(failure.check(), check, "{defect:?}: {failure}");
            assert_eq!(failure.backend(), "btreemap");
            let message = failure.to_string();
            assert!(
                message.contains(check) && message.contains("btreemap"),
                "{message}"
            );
            println!("{defect:?}: {message}");
            failure
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_outside_the_crate_passes_the_whole_suite() {
    let report = conformance::run_all(&backend(Defect::None).contention(4, 50))
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    // Every check ran but those for capabilities the store does not have.
    assert_eq!(report.skipped(), ["watch_contract", "lease_contract"]);
    assert_eq!(report.passed().len() + report.skipped().len(), CHECKS.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_the_optional_listing_skips_its_check() {
    let store = MapStore::new(Defect::None).without_listing();
    let backend = Backend::shared("btreemap", Capabilities::NONE, store);
    let report = conformance::run_all(&backend)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(
        report.skipped(),
        ["watch_contract", "lease_contract", "listing_contract"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_beyond_the_prefix_fails_the_listing_contract() {
    let failure = fails_at(Defect::ListingIgnoresPrefix, "listing_contract").await;
    assert!(failure.problem().contains("siblings"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_if_absent_that_overwrites_fails_the_store_contract() {
    let failure = fails_at(Defect::PutIfAbsentOverwrites, "store_contract").await;
    assert!(failure.key().is_some_and(|k| k.starts_with("conformance/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_if_absent_that_overwrites_fails_the_exclusion_check_too() {
    // The lock-level checks catch it on their own, not only the store contract.
    let failure = conformance::never_two_holders(&backend(Defect::PutIfAbsentOverwrites), 4, 50)
        .await
        .err()
        .unwrap_or_else(|| panic!("two clients both got a lock that was not free, unnoticed"));
    assert_eq!(failure.check(), "never_two_holders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_restarts_after_delete_fails_the_store_contract() {
    let failure = fails_at(Defect::IndexRestartsAfterDelete, "store_contract").await;
    assert!(
        failure.problem().contains("delete and re-create"),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_ignores_the_index_fails_the_store_contract() {
    let failure = fails_at(Defect::DeleteIgnoresIndex, "store_contract").await;
    assert!(failure.problem().contains("stale index"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_but_missing_watch_fails_the_watch_contract() {
    let failure = fails_at(Defect::ClaimsWatch, "watch_contract").await;
    assert!(failure.problem().contains("does not support"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_other_than_declared_fail() {
    let store = MapStore::new(Defect::ClaimsWatch);
    let backend = Backend::shared("btreemap", Capabilities::NONE, store);
    let failure = conformance::run_all(&backend)
        .await
        .err()
        .unwrap_or_else(|| panic!("a store reporting a capability it was not declared with"));
    assert_eq!(failure.check(), "capabilities_as_declared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_answers_fails_within_the_time_limit() {
    let started = tokio::time::Instant::now();
    let failure = fails_at(Defect::PutHangs, "store_contract").await;
    assert!(failure.problem().contains("did not finish"), "{failure}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_cannot_connect_fails_with_its_error() {
    let backend = Backend::new("unreachable", Capabilities::NONE, || async {
        Err::<MapStore, _>(StoreError::Unsupported("connections"))
    });
    let failure = conformance::run_all(&backend)
        .await
        .err()
        .unwrap_or_else(|| panic!("a backend that cannot connect passed"));
    assert_eq!(failure.check(), "connect");
    assert!(failure.to_string().contains("connections"), "{failure}");
}
