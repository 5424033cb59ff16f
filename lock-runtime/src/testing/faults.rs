//! [`Faults`]: a fault-injecting wrapper over any [`CompareExchange`] store,
//! and [`SkewedClock`], a wall clock that is off.
//!
//! The wrapper sits between a [`crate::LockClient`] and its store and is
//! switched from the test while the client runs: cut the link (a partition,
//! or a paused process's view), crash the client for good, lose the answers of
//! requests that were applied, apply a put after its caller gave up, slow
//! requests down, hide capabilities, and count every call by kind. Clones
//! share the switches and the counts, so a test keeps one clone and hands the
//! other to the client.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::{Instant, sleep, sleep_until};

use crate::WallClock;
use crate::store::{
    BoxError, Capabilities, CompareExchange, DeleteOutcome, Entry, Expect, LeaseId, Listed,
    PutOutcome, Record, StoreError, Stored,
};

/// One kind of store call, for the per-kind switches and counts of [`Faults`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`CompareExchange::get`].
    Get,
    /// [`CompareExchange::put`].
    Put,
    /// [`CompareExchange::delete`].
    Delete,
    /// [`CompareExchange::watch`].
    Watch,
    /// [`CompareExchange::grant_lease`].
    GrantLease,
    /// [`CompareExchange::keep_alive`].
    KeepAlive,
    /// [`CompareExchange::revoke_lease`].
    RevokeLease,
    /// [`CompareExchange::inspect`].
    Inspect,
    /// [`CompareExchange::list`].
    List,
    /// [`CompareExchange::lease_time_to_live`].
    LeaseTimeToLive,
}

/// How many kinds of call there are.
const KINDS: usize = 10;

impl Op {
    /// Every kind of call.
    pub const ALL: [Op; KINDS] = [
        Op::Get,
        Op::Put,
        Op::Delete,
        Op::Watch,
        Op::GrantLease,
        Op::KeepAlive,
        Op::RevokeLease,
        Op::Inspect,
        Op::List,
        Op::LeaseTimeToLive,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

/// How many calls of each kind a [`Faults`] wrapper received (also those it
/// failed), from [`Faults::calls`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    counts: [u64; KINDS],
}

impl Calls {
    /// The calls of one kind.
    pub fn of(&self, op: Op) -> u64 {
        self.counts[op.slot()]
    }

    /// Every call, of any kind.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The switches of a [`Faults`] wrapper.
#[derive(Debug, Default)]
struct Plan {
    cut: bool,
    crashed: bool,
    /// After this many more calls of this kind, the link is cut.
    cut_after: Option<(Op, u32)>,
    /// The next this many answers of each kind are lost after the call was applied.
    lose_answers: [u32; KINDS],
    /// The next this many calls of each kind fail unapplied (refused).
    refuse: [u32; KINDS],
    /// The next put is applied at this instant, after its caller gave up.
    late_put: Option<Instant>,
    /// Time each kind of call takes before it is applied.
    delays: [Duration; KINDS],
    /// How long a lost request (or a lost answer) takes to fail.
    no_answer_after: Duration,
    /// After this many calls in all, every call fails with a non-transient error.
    budget: Option<u64>,
    /// The capabilities advertised instead of the inner store's.
    capabilities: Option<Capabilities>,
}

#[derive(Debug, Default)]
struct Shared {
    plan: Mutex<Plan>,
    counts: [AtomicU64; KINDS],
}

/// What the wrapper does with one call.
enum Fate {
    /// Fails as unreachable (`why`), unapplied, after `no_answer_after`.
    Lost(&'static str, Duration),
    /// Fails with a non-transient error at once: the call budget is spent.
    Spent(u64),
    /// A put applied at `at`; its caller fails after the duration.
    Late(Instant, Duration),
    /// Applied after `delay`; with `Some`, its answer is then lost and the call
    /// fails after that duration.
    Applied {
        delay: Duration,
        lose_answer: Option<Duration>,
    },
}

/// A fault-injecting wrapper over any [`CompareExchange`] store.
///
/// Every switch applies from the next call on; a call already waiting on the
/// inner store is not interrupted. Failures are the contract's: a lost request
/// or answer is [`StoreError::Unavailable`] (transient: the engine reads back
/// and retries), a spent call budget is [`StoreError::Backend`].
///
/// - [`Faults::cut`] / [`Faults::heal`]: every call fails unapplied while cut
///   (after [`Faults::no_answer_after`], as a client timeout would).
/// - [`Faults::crash`]: cut for good; [`Faults::heal`] does not undo it.
/// - [`Faults::cut_after`]: cut once a number of calls of one kind went through.
/// - [`Faults::lose_answers`]: the next calls of a kind are applied, but their
///   answers are lost (the ambiguous outcome every backend must allow for).
/// - [`Faults::refuse`]: the next calls of a kind fail unapplied, at once.
/// - [`Faults::late_put`]: the next put is applied at a given instant, after
///   its caller was told it failed.
/// - [`Faults::delay`] / [`Faults::delay_all`]: time a call takes before it is
///   applied.
/// - [`Faults::budget`]: after so many calls, every call fails for good (a busy
///   loop in the engine then ends instead of spinning on a paused clock).
/// - [`Faults::with_capabilities`]: advertise other capabilities (for example
///   hide `watch` so that waiters poll).
/// - [`Faults::calls`]: how many calls of each kind were made.
///
/// Time is Tokio's: on a paused clock delays and timeouts take no real time.
///
/// ```
/// use std::time::Duration;
/// use distlock::store::memory::MemoryStore;
/// use distlock::testing::faults::{Faults, Op};
/// use distlock::{LockClient, LockError, LockOptions, Wait};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let link = Faults::new(MemoryStore::new());
/// let client = LockClient::new(link.clone());
/// let guard = client.acquire("jobs/a").await?;
/// link.cut(); // a partition: the holder can no longer renew
/// let options = LockOptions::default().wait(Wait::Never);
/// assert!(matches!(
///     client.acquire_with("jobs/b", &options).await,
///     Err(LockError::Unavailable { .. })
/// ));
/// link.heal();
/// guard.release().await?;
/// assert_eq!(link.calls().of(Op::Put), 2); // the acquire and the cut one
/// # Ok::<(), LockError>(())
/// # }).unwrap();
/// ```
pub struct Faults<S: ?Sized = dyn CompareExchange> {
    inner: Arc<S>,
    shared: Arc<Shared>,
}

impl<S: ?Sized> Clone for Faults<S> {
    fn clone(&self) -> Self {
        Faults {
            inner: Arc::clone(&self.inner),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: CompareExchange + ?Sized> fmt::Debug for Faults<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("inner", &self.inner)
            .field("plan", &*self.plan())
            .field("calls", &self.calls())
            .finish()
    }
}

impl<S: CompareExchange> Faults<S> {
    /// Wraps `inner`, with no fault switched on.
    pub fn new(inner: S) -> Self {
        Faults::from_arc(Arc::new(inner))
    }
}

impl<S: CompareExchange + ?Sized> Faults<S> {
    /// Wraps a shared store (for example an `Arc<dyn CompareExchange>`), with
    /// no fault switched on.
    pub fn from_arc(inner: Arc<S>) -> Self {
        Faults {
            inner,
            shared: Arc::default(),
        }
    }

    /// The wrapped store (calls on it bypass every fault and are not counted).
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        // Every update of the plan is a plain assignment: a panic elsewhere
        // cannot leave it half-written, so poisoning is ignored.
        self.shared
            .plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts the link: every call fails unapplied until [`Faults::heal`].
    pub fn cut(&self) {
        self.plan().cut = true;
    }

    /// Restores the link after [`Faults::cut`] or [`Faults::cut_after`] (not
    /// after [`Faults::crash`]).
    pub fn heal(&self) {
        let mut plan = self.plan();
        plan.cut = false;
        plan.cut_after = None;
    }

    /// Whether calls fail now (cut or crashed).
    pub fn is_cut(&self) -> bool {
        let plan = self.plan();
        plan.cut || plan.crashed
    }

    /// Crashes this side for good: every call from now on fails unapplied,
    /// and [`Faults::heal`] does not bring it back.
    pub fn crash(&self) {
        self.plan().crashed = true;
    }

    /// Lets `calls` more calls of kind `op` through, then cuts the link (the
    /// next call of that kind is the first to fail). Replaces an earlier
    /// `cut_after`.
    pub fn cut_after(&self, op: Op, calls: u32) {
        self.plan().cut_after = Some((op, calls));
    }

    /// Applies the next `answers` calls of kind `op` to the inner store, then
    /// loses their answers: the caller gets [`StoreError::Unavailable`] after
    /// [`Faults::no_answer_after`] although the call took effect.
    pub fn lose_answers(&self, op: Op, answers: u32) {
        self.plan().lose_answers[op.slot()] = answers;
    }

    /// Refuses the next `calls` calls of kind `op`: each fails unapplied with
    /// [`StoreError::Unavailable`] at once (a server answering "unavailable",
    /// a reset connection), while other kinds go through.
    pub fn refuse(&self, op: Op, calls: u32) {
        self.plan().refuse[op.slot()] = calls;
    }

    /// The next put (that is not cut) is applied to the inner store at `at`,
    /// in a task of its own; its caller gets [`StoreError::Unavailable`] after
    /// [`Faults::no_answer_after`] (a request that arrives after its caller
    /// timed out). Outside a Tokio runtime the put is applied at once instead.
    pub fn late_put(&self, at: Instant) {
        self.plan().late_put = Some(at);
    }

    /// Every call of kind `op` waits `delay` before it is applied (its answer
    /// then comes at once).
    pub fn delay(&self, op: Op, delay: Duration) {
        self.plan().delays[op.slot()] = delay;
    }

    /// Every call of any kind waits `delay` before it is applied.
    pub fn delay_all(&self, delay: Duration) {
        self.plan().delays = [delay; KINDS];
    }

    /// How long a lost request or a lost answer takes to fail (a client-side
    /// timeout); zero (the default) fails at once.
    pub fn no_answer_after(&self, after: Duration) {
        self.plan().no_answer_after = after;
    }

    /// After `calls` calls in all (counted from the wrapper's creation), every
    /// call fails with a non-transient [`StoreError::Backend`].
    pub fn budget(&self, calls: u64) {
        self.plan().budget = Some(calls);
    }

    /// Advertises `capabilities` instead of the inner store's. An operation
    /// whose capability is hidden answers [`StoreError::Unsupported`].
    pub fn with_capabilities(self, capabilities: Capabilities) -> Self {
        self.plan().capabilities = Some(capabilities);
        self
    }

    /// How many calls of each kind were made so far.
    pub fn calls(&self) -> Calls {
        let mut calls = Calls::default();
        for (count, counter) in calls.counts.iter_mut().zip(&self.shared.counts) {
            *count = counter.load(Ordering::SeqCst);
        }
        calls
    }

    /// Counts the call and decides its fate.
    fn enter(&self, op: Op) -> Fate {
        self.shared.counts[op.slot()].fetch_add(1, Ordering::SeqCst);
        let total = self.calls().total();
        let mut plan = self.plan();
        if let Some(budget) = plan.budget
            && total > budget
        {
            return Fate::Spent(budget);
        }
        if let Some((kind, left)) = plan.cut_after
            && kind == op
        {
            if left == 0 {
                plan.cut = true;
                plan.cut_after = None;
            } else {
                plan.cut_after = Some((kind, left - 1));
            }
        }
        let timeout = plan.no_answer_after;
        if plan.crashed {
            return Fate::Lost("crashed (fault injection)", timeout);
        }
        if plan.cut {
            return Fate::Lost("partitioned (fault injection)", timeout);
        }
        let refuse = &mut plan.refuse[op.slot()];
        if *refuse > 0 {
            *refuse -= 1;
            return Fate::Lost("refused (fault injection)", Duration::ZERO);
        }
        if op == Op::Put
            && let Some(at) = plan.late_put.take()
        {
            return Fate::Late(at, timeout);
        }
        let lose = &mut plan.lose_answers[op.slot()];
        let lose_answer = if *lose > 0 {
            *lose -= 1;
            Some(timeout)
        } else {
            None
        };
        Fate::Applied {
            delay: plan.delays[op.slot()],
            lose_answer,
        }
    }

    fn hidden(&self, pick: impl Fn(&Capabilities) -> bool) -> bool {
        self.plan().capabilities.as_ref().is_some_and(|c| !pick(c))
    }

    /// Runs one call through the plan (`apply` is not started unless applied).
    async fn run<T>(
        &self,
        op: Op,
        apply: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.finish(self.enter(op), apply).await
    }

    /// Carries out `fate` (`apply` is not started unless applied).
    async fn finish<T>(
        &self,
        fate: Fate,
        apply: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match fate {
            Fate::Lost(why, after) => {
                pause(after).await;
                Err(unavailable(why))
            }
            Fate::Spent(budget) => Err(StoreError::Backend {
                endpoint: ENDPOINT.into(),
                source: format!("the call budget of {budget} is spent (fault injection)").into(),
            }),
            // Only puts are made late; `put` has applied it (or will).
            Fate::Late(_, after) => {
                pause(after).await;
                Err(unavailable(
                    "answer lost (the request lands later; fault injection)",
                ))
            }
            Fate::Applied { delay, lose_answer } => {
                pause(delay).await;
                let result = apply.await;
                match lose_answer {
                    None => result,
                    Some(after) => {
                        pause(after).await;
                        Err(unavailable(
                            "answer lost after the request was applied (fault injection)",
                        ))
                    }
                }
            }
        }
    }
}

/// Waits `time` on Tokio's clock (not at all for zero, or outside a runtime,
/// where Tokio's timers would panic).
async fn pause(time: Duration) {
    if !time.is_zero() && tokio::runtime::Handle::try_current().is_ok() {
        sleep(time).await;
    }
}

/// The endpoint named in the errors the wrapper makes up.
const ENDPOINT: &str = "fault-injection";

fn unavailable(why: &'static str) -> StoreError {
    let source: BoxError = why.into();
    StoreError::Unavailable {
        endpoint: ENDPOINT.into(),
        source,
    }
}

#[async_trait]
impl<S: CompareExchange + ?Sized> CompareExchange for Faults<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.plan()
            .capabilities
            .unwrap_or_else(|| self.inner.capabilities())
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.run(Op::Get, self.inner.get(key)).await
    }

    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        if lease.is_some() && self.hidden(|c| c.leases) {
            return Err(StoreError::Unsupported("leases"));
        }
        let fate = self.enter(Op::Put);
        if let Fate::Late(at, _) = fate {
            // Applied later, in a task that owns its arguments.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let (store, key, record) =
                        (Arc::clone(&self.inner), key.to_owned(), record.clone());
                    drop(runtime.spawn(async move {
                        sleep_until(at).await;
                        let _ = store.put(&key, &record, expect, lease).await;
                    }));
                }
                Err(_) => {
                    let _ = self.inner.put(key, record, expect, lease).await;
                }
            }
        }
        self.finish(fate, self.inner.put(key, record, expect, lease))
            .await
    }

    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
        self.run(Op::Delete, self.inner.delete(key, index)).await
    }

    async fn watch(&self, key: &str, seen: Option<u64>) -> Result<(), StoreError> {
        if self.hidden(|c| c.watch) {
            return Err(StoreError::Unsupported("watch"));
        }
        self.run(Op::Watch, self.inner.watch(key, seen)).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if self.hidden(|c| c.leases) {
            return Err(StoreError::Unsupported("leases"));
        }
        self.run(Op::GrantLease, self.inner.grant_lease(ttl)).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        if self.hidden(|c| c.leases) {
            return Err(StoreError::Unsupported("leases"));
        }
        self.run(Op::KeepAlive, self.inner.keep_alive(lease)).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        if self.hidden(|c| c.leases) {
            return Err(StoreError::Unsupported("leases"));
        }
        self.run(Op::RevokeLease, self.inner.revoke_lease(lease))
            .await
    }

    async fn inspect(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        self.run(Op::Inspect, self.inner.inspect(key)).await
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<Listed>, StoreError> {
        if self.hidden(|c| c.listing) {
            return Err(StoreError::Unsupported("listing"));
        }
        self.run(Op::List, self.inner.list(prefix, limit)).await
    }

    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        if self.hidden(|c| c.leases) {
            return Err(StoreError::Unsupported("leases"));
        }
        self.run(Op::LeaseTimeToLive, self.inner.lease_time_to_live(lease))
            .await
    }
}

/// A wall clock that is off by `offset`, ahead or behind: the lock must not
/// care (no decision compares wall clocks).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use distlock::WallClock;
/// use distlock::testing::faults::SkewedClock;
///
/// let behind = SkewedClock { ahead: false, offset: Duration::from_secs(3600) };
/// assert!(behind.now() < SystemTime::now());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkewedClock {
    /// Ahead of the system clock (`true`) or behind it.
    pub ahead: bool,
    /// How far off.
    pub offset: Duration,
}

impl WallClock for SkewedClock {
    fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let skewed = if self.ahead {
            now.checked_add(self.offset)
        } else {
            now.checked_sub(self.offset)
        };
        skewed.unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn record(nonce: u64) -> Record {
        Record {
            owner: "t".into(),
            nonce,
            ttl_ms: 1000,
            written_at_ms: 0,
        }
    }

    fn link() -> (MemoryStore, Faults<MemoryStore>) {
        let store = MemoryStore::new();
        (store.clone(), Faults::new(store))
    }

    fn transient<T: fmt::Debug>(result: &Result<T, StoreError>) -> bool {
        matches!(result, Err(e) if e.is_transient())
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_link_fails_unapplied_after_the_timeout_until_healed() {
        let (store, link) = link();
        link.no_answer_after(Duration::from_millis(10));
        link.cut();
        let started = Instant::now();
        let put = link.put("k", &record(1), Expect::Absent, None).await;
        assert!(transient(&put), "{put:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(10));
        assert_eq!(store.get("k").await.ok(), Some(None), "applied while cut");
        link.heal();
        let put = link.put("k", &record(1), Expect::Absent, None).await;
        assert!(matches!(put, Ok(PutOutcome::Swapped { .. })), "{put:?}");
        assert_eq!(link.calls().of(Op::Put), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_is_not_healed() {
        let (_, link) = link();
        link.crash();
        link.heal();
        assert!(link.is_cut());
        assert!(transient(&link.get("k").await));
    }

    #[tokio::test(start_paused = true)]
    async fn cut_after_lets_that_many_calls_of_its_kind_through() {
        let (_, link) = link();
        link.cut_after(Op::Put, 1);
        assert!(link.get("k").await.is_ok(), "other kinds do not count");
        let first = link.put("k", &record(1), Expect::Absent, None).await;
        assert!(first.is_ok(), "{first:?}");
        let second = link.put("k", &record(2), Expect::Absent, None).await;
        assert!(transient(&second), "{second:?}");
        assert!(link.is_cut());
        assert!(transient(&link.get("k").await), "the whole link is cut");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_answer_was_applied() {
        let (store, link) = link();
        link.lose_answers(Op::Put, 1);
        let put = link.put("k", &record(1), Expect::Absent, None).await;
        assert!(transient(&put), "{put:?}");
        let entry = store.get("k").await.ok().flatten();
        assert_eq!(
            entry.map(|e| e.record.nonce),
            Some(1),
            "the put took effect"
        );
        let again = link.put("k", &record(2), Expect::Absent, None).await;
        assert!(
            matches!(again, Ok(PutOutcome::Conflict { .. })),
            "{again:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_put_lands_at_its_instant_after_its_caller_gave_up() {
        let (store, link) = link();
        link.no_answer_after(Duration::from_millis(10));
        let at = Instant::now() + Duration::from_millis(50);
        link.late_put(at);
        let put = link.put("k", &record(1), Expect::Absent, None).await;
        assert!(transient(&put), "{put:?}");
        assert_eq!(store.get("k").await.ok(), Some(None), "landed early");
        sleep_until(at).await;
        tokio::task::yield_now().await;
        let entry = store.get("k").await.ok().flatten();
        assert_eq!(entry.map(|e| e.record.nonce), Some(1), "never landed");
        let next = link.put("j", &record(2), Expect::Absent, None).await;
        assert!(next.is_ok(), "only the next put is late: {next:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_per_kind() {
        let (_, link) = link();
        link.delay(Op::Put, Duration::from_millis(30));
        let started = Instant::now();
        let _ = link.get("k").await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        let _ = link.put("k", &record(1), Expect::Absent, None).await;
        assert_eq!(started.elapsed(), Duration::from_millis(30));
        link.delay_all(Duration::from_millis(5));
        let _ = link.get("k").await;
        assert_eq!(started.elapsed(), Duration::from_millis(35));
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_fails_for_good_and_not_transiently() {
        let (_, link) = link();
        link.budget(2);
        assert!(link.get("k").await.is_ok());
        assert!(link.get("k").await.is_ok());
        let third = link.get("k").await;
        assert!(
            matches!(&third, Err(e @ StoreError::Backend { .. }) if !e.is_transient()),
            "{third:?}"
        );
        assert_eq!(link.calls().total(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn hidden_capabilities_are_unsupported() {
        let (_, link) = link();
        assert!(link.capabilities().watch);
        let link = link.with_capabilities(Capabilities::NONE);
        assert_eq!(link.capabilities(), Capabilities::NONE);
        let watch = link.watch("k", None).await;
        assert!(
            matches!(watch, Err(StoreError::Unsupported(_))),
            "{watch:?}"
        );
        let grant = link.grant_lease(Duration::from_secs(1)).await;
        assert!(
            matches!(grant, Err(StoreError::Unsupported(_))),
            "{grant:?}"
        );
        let list = link.list("", 10).await;
        assert!(matches!(list, Err(StoreError::Unsupported(_))), "{list:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn listing_is_forwarded_counted_and_cut() {
        let (store, link) = link();
        let _ = store.put("a/1", &record(1), Expect::Absent, None).await;
        let listed = link.list("a/", 10).await.unwrap_or_default();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "a/1");
        let inspected = link.inspect("a/1").await.ok().flatten();
        assert_eq!(inspected.map(|s| s.index()), Some(listed[0].stored.index()));
        assert_eq!(link.calls().of(Op::List), 1);
        assert_eq!(link.calls().of(Op::Inspect), 1);
        link.cut();
        assert!(transient(&link.list("a/", 10).await));
        assert!(transient(&link.inspect("a/1").await));
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_switches_and_counts() {
        let (_, link) = link();
        let other = link.clone();
        other.cut();
        assert!(link.is_cut());
        let _ = link.get("k").await;
        assert_eq!(other.calls().of(Op::Get), 1);
        assert!(format!("{link:?}").contains("Faults"));
    }
}
