//! Test support shared by the backend test files: the conformance suite that
//! every backend must pass, an independent exclusion observer, and a store
//! wrapper that can be partitioned from its backend.
#![allow(dead_code)]

pub mod conformance;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use distlock::store::{
    BoxError, Capabilities, CompareExchange, DeleteOutcome, Entry, Expect, LeaseId, PutOutcome,
    Record, StoreError,
};

/// Watches critical sections from outside the library: counts how many
/// holders are inside at once and whether fencing tokens only grow.
#[derive(Debug, Default)]
pub struct Observer {
    inside: AtomicU64,
    most_inside: AtomicU64,
    overlaps: AtomicU64,
    last_token: std::sync::Mutex<u64>,
    token_regressions: AtomicU64,
    entries: AtomicU64,
}

impl Observer {
    /// Call first thing inside the critical section.
    pub fn enter(&self, token: u64) {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_inside.fetch_max(now, Ordering::SeqCst);
        if now > 1 {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let mut last = self.last_token.lock().unwrap_or_else(|p| p.into_inner());
        if token <= *last {
            self.token_regressions.fetch_add(1, Ordering::SeqCst);
        }
        *last = (*last).max(token);
        self.entries.fetch_add(1, Ordering::SeqCst);
    }

    /// Call last thing inside the critical section.
    pub fn exit(&self) {
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn overlaps(&self) -> u64 {
        self.overlaps.load(Ordering::SeqCst)
    }

    pub fn most_inside(&self) -> u64 {
        self.most_inside.load(Ordering::SeqCst)
    }

    pub fn token_regressions(&self) -> u64 {
        self.token_regressions.load(Ordering::SeqCst)
    }

    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::SeqCst)
    }
}

/// A store wrapper that can be cut off from its backend: while cut, every
/// call fails as unreachable (a partition, or a paused process's view).
#[derive(Debug, Clone)]
pub struct Partitionable {
    inner: Arc<dyn CompareExchange>,
    cut: Arc<AtomicBool>,
}

impl Partitionable {
    pub fn new(inner: Arc<dyn CompareExchange>) -> Self {
        Partitionable {
            inner,
            cut: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.cut.load(Ordering::SeqCst) {
            let source: BoxError = "partitioned by the test".into();
            Err(StoreError::Unavailable {
                endpoint: "partitioned".into(),
                source,
            })
        } else {
            Ok(())
        }
    }
}

#[distlock::store::async_trait]
impl CompareExchange for Partitionable {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        self.check()?;
        self.inner.put(key, record, expect, lease).await
    }
    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
        self.check()?;
        self.inner.delete(key, index).await
    }
    async fn watch(&self, key: &str, seen: Option<u64>) -> Result<(), StoreError> {
        self.check()?;
        self.inner.watch(key, seen).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.check()?;
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        self.check()?;
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.check()?;
        self.inner.revoke_lease(lease).await
    }
}

/// A unique key prefix per test run, so suites can share one server.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}/{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros())
    )
}
