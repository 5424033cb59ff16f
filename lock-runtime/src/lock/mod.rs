//! The lock engine: the one implementation of the algorithm, generic over the
//! store. It imports only [`crate::store`], [`crate::error`] and
//! [`crate::options`]; the public handles (`LockClient`, `LockGuard`,
//! `current`) sit on top of it and nothing here imports them.
//!
//! Where each rule lives:
//! - `rules.rs`: the takeover rule, the deadline rule, the ambiguity rule;
//! - `state.rs`: one acquisition as a state machine (acquiring, held,
//!   scheduled, releasing, cleanup, done; lost on top);
//! - `acquire.rs`: the acquire loop (write, resolve, wait) and its drop guard;
//! - `background.rs`: the client's background task: renewals, deadlines,
//!   scheduled releases, cleanups handed over by drop guards, lease
//!   keep-alives, held-key watches, idle sessions;
//! - `session.rs`: server-lease sessions and the session rule;
//! - `events.rs`: every event, counted and logged in one place.
//!
//! Waiting is a phase of its own (`acquire.rs`, `wait_for_change`): a FIFO
//! queue of waiters would replace that one step without touching the rest.

mod acquire;
mod background;
pub(crate) mod clock;
pub(crate) mod events;
mod rules;
mod session;
mod state;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use clock::{SystemClock, WallClock};
pub use state::LostSignal;

use crate::error::{LockError, LostReason};
use crate::options::LockOptions;
use crate::store::{Backoff, Capabilities, CompareExchange, Record, StoreError};
use clock::{Clock, WallStamp};
use events::Events;
use rules::Observations;
use session::Session;
pub(crate) use state::Lock;
use state::Release;

/// How the engine is configured (from the client's builder).
#[derive(Debug)]
pub(crate) struct Config {
    pub owner: String,
    pub defaults: LockOptions,
    pub wall: Arc<dyn WallClock>,
    pub backoff: Option<Backoff>,
    pub lock_delay: Duration,
    pub clock_rate: f64,
}

/// Work for the background task.
#[derive(Debug)]
enum Job {
    /// Delete a released lock at this index (a dropped guard, or a release
    /// whose delete may already have been sent: `true`).
    Release(Arc<Lock>, u64, bool),
    /// Read back and delete whatever of ours an abandoned operation left.
    Cleanup(Arc<Lock>),
}

#[derive(Debug, Default)]
struct Work {
    /// Locks the background task looks after (held, scheduled, lost but not
    /// yet released), by id (ordered, so runs are deterministic).
    locks: BTreeMap<u64, Arc<Lock>>,
    jobs: VecDeque<Job>,
    /// The background task is running.
    running: bool,
    /// When it will next wake up on its own (`None`: idle).
    wake_at: Option<Instant>,
}

/// State shared by a client's handles, guards and its background task.
#[derive(Debug)]
pub(crate) struct Engine {
    pub store: Arc<dyn CompareExchange>,
    pub backend: &'static str,
    pub caps: Capabilities,
    pub owner: Arc<str>,
    pub defaults: LockOptions,
    pub clock: Clock,
    pub events: Arc<Events>,
    wall: WallStamp,
    backoff: Backoff,
    nonce: AtomicU64,
    next_id: AtomicU64,
    observations: Mutex<Observations>,
    work: Mutex<Work>,
    wake: Notify,
    sessions: Mutex<Vec<Arc<Session>>>,
    /// One lease grant at a time, so concurrent acquisitions share a session.
    granting: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    /// Background jobs (releases, cleanups) spawned and not yet finished.
    jobs_running: AtomicUsize,
}

impl Engine {
    pub fn new(store: Arc<dyn CompareExchange>, config: Config) -> Self {
        let caps = store.capabilities();
        Engine {
            backend: store.backend(),
            caps,
            store,
            owner: config.owner.into(),
            defaults: config.defaults,
            clock: Clock::new(config.clock_rate),
            events: Arc::default(),
            wall: WallStamp::new(&*config.wall),
            backoff: config.backoff.or(caps.poll).unwrap_or_default(),
            // From 1: nonce 0 is never ours (a backend's synthetic record
            // of a foreign holder has it; see `Record::nonce`).
            nonce: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            observations: Mutex::new(Observations::new(config.lock_delay)),
            work: Mutex::default(),
            wake: Notify::new(),
            sessions: Mutex::default(),
            granting: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            jobs_running: AtomicUsize::new(0),
        }
    }

    /// The store as a trait object. Calling through `&dyn` (not the `Arc`,
    /// which implements the trait too) avoids boxing every call twice.
    pub fn store(&self) -> &dyn CompareExchange {
        &*self.store
    }

    fn work(&self) -> MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn observations(&self) -> MutexGuard<'_, Observations> {
        self.observations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sessions(&self) -> MutexGuard<'_, Vec<Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn store_error(&self, key: &str, error: StoreError) -> LockError {
        LockError::from_store(self.backend, key, error)
    }

    fn record(&self, ttl: Duration, now: Instant) -> Record {
        Record {
            owner: Arc::clone(&self.owner),
            nonce: self.nonce.fetch_add(1, Ordering::Relaxed),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            written_at_ms: self.wall.millis(now),
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Every handle of the client is gone: finish what is pending, then stop.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Nothing is left for the background task to finish: no lock held,
    /// scheduled or being cleaned up, no job queued or running.
    pub fn is_idle(&self) -> bool {
        let work = self.work();
        work.locks.is_empty()
            && work.jobs.is_empty()
            && self.jobs_running.load(Ordering::Acquire) == 0
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Acquires `key`: see `acquire.rs`.
    pub async fn acquire(
        self: &Arc<Self>,
        key: &str,
        options: &LockOptions,
    ) -> Result<Arc<Lock>, LockError> {
        acquire::acquire(self, key, options).await
    }

    /// The caller releases `lock` and waits for the delete. Cancel-safe: if
    /// this future is dropped before the delete is answered, the background
    /// task finishes the job.
    pub async fn release(self: &Arc<Self>, lock: &Arc<Lock>) -> Result<(), LockError> {
        match lock.begin_release(self.clock.now()) {
            Release::Done => Ok(()),
            Release::Scheduled(at) => {
                self.wake_by(at);
                Ok(())
            }
            Release::Lost(reason) => {
                self.lost_released(lock);
                Err(lost_error(lock, reason))
            }
            Release::Now(index) => {
                let mut pending = HandOver::new(self, Job::Release(Arc::clone(lock), index, true));
                let result = background::delete_ours(self, lock, index, false).await;
                match &result {
                    // A failed delete stays with the background task, which
                    // retries until the record is gone or not ours.
                    Err(LockError::Unavailable { .. }) => {}
                    _ => pending.disarm(),
                }
                result
            }
        }
    }

    /// A guard was dropped without `release()`: release in the background
    /// (works outside a runtime as long as the client's background task lives).
    pub fn dropped(self: &Arc<Self>, lock: &Arc<Lock>) {
        match lock.begin_release(self.clock.now()) {
            Release::Done => {}
            Release::Scheduled(at) => self.wake_by(at),
            Release::Lost(_) => self.lost_released(lock),
            Release::Now(index) => self.hand_over(Job::Release(Arc::clone(lock), index, false)),
        }
    }

    /// A lost lock is released: if its record may still be ours (lost by
    /// deadline, not taken over), the background task deletes it.
    fn lost_released(self: &Arc<Self>, lock: &Arc<Lock>) {
        if lock.phase() == state::Phase::Cleanup {
            self.hand_over(Job::Cleanup(Arc::clone(lock)));
        } else {
            self.forget(lock);
        }
    }

    /// Hands `job` to the background task (starting it if we are on a
    /// runtime and it is not running).
    ///
    /// Outside a runtime, with no background task running (the runtime that
    /// ran it is gone), the job stays queued: the task runs it when it starts
    /// again, the next time the client is used on a runtime. Dropping the job
    /// instead would leave the lock in the task's map for good, its lease
    /// session in use and kept alive by that new task: a key never freed.
    fn hand_over(self: &Arc<Self>, job: Job) {
        let key = match &job {
            Job::Release(lock, _, _) | Job::Cleanup(lock) => Arc::clone(&lock.key),
        };
        let mut work = self.work();
        work.jobs.push_back(job);
        let running = work.running;
        drop(work);
        if !running && !self.start_background(None) {
            tracing::warn!(
                key = %key,
                "distlock: a lock was released outside a Tokio runtime while the client's \
                 background task is not running; it is deleted when the client is next used on \
                 a runtime, and until then freed when its ttl (or lease) runs out"
            );
            return;
        }
        self.wake.notify_one();
    }

    /// Starts the background task on the current runtime unless it runs;
    /// returns whether it runs (false: it does not, and we are on no runtime).
    ///
    /// Never called with `work` locked: its `Running` guard (which clears
    /// `work.running`) is made here, outside the task's future, so that it
    /// is dropped also when the task never runs (a runtime that is shutting
    /// down drops a task spawned onto it at once, inside `spawn`; a runtime
    /// dropped before it polled the task drops it unpolled). Otherwise
    /// `running` would stay set and the client would never start the task
    /// again.
    fn start_background(self: &Arc<Self>, wake_at: Option<Instant>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.work().running;
        };
        {
            let mut work = self.work();
            if work.running {
                return true;
            }
            work.running = true;
            work.wake_at = wake_at;
        }
        runtime.spawn(background::run(background::Running(Arc::clone(self))));
        true
    }

    /// Registers a held lock with the background task.
    fn register(self: &Arc<Self>, lock: &Arc<Lock>) {
        let deadline = lock.effective_deadline();
        let wake_at = if lock.renew && lock.session.is_none() {
            lock.state().next_renew.min(deadline)
        } else {
            deadline
        };
        let mut work = self.work();
        work.locks.insert(lock.id, Arc::clone(lock));
        if work.running {
            self.wake_locked(work, wake_at);
        } else {
            drop(work);
            self.start_background(Some(wake_at));
        }
    }

    /// Removes a finished lock from the background task's care (released, or
    /// someone else's now). If a write
    /// of it may still land (its answer was lost), its lease is retired
    /// (revoked once idle, so a late record cannot stay on a live lease) and
    /// the background task looks for a late record of ours for a while.
    fn forget(self: &Arc<Self>, lock: &Arc<Lock>) {
        let stray = lock.take_stray();
        if stray && let Some(session) = lock.lease_session() {
            session.retire();
        }
        lock.finish();
        self.work().locks.remove(&lock.id);
        if stray {
            self.hand_over(Job::Cleanup(Arc::clone(lock)));
        }
    }

    /// Makes sure the background task wakes by `at`.
    fn wake_by(&self, at: Instant) {
        let work = self.work();
        self.wake_locked(work, at);
    }

    fn wake_locked(&self, mut work: MutexGuard<'_, Work>, at: Instant) {
        if work.wake_at.is_none_or(|wake_at| at < wake_at) {
            work.wake_at = Some(at);
            drop(work);
            self.wake.notify_one();
        }
    }
}

/// A client handle: the engine is closed when the last one goes (the client's
/// clones and every guard hold one).
#[derive(Debug)]
pub(crate) struct ClientHandle(pub Arc<Engine>);

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A drop guard: if the future holding it is dropped before `disarm`, its job
/// goes to the background task.
struct HandOver<'a> {
    engine: &'a Arc<Engine>,
    job: Option<Job>,
}

impl<'a> HandOver<'a> {
    fn new(engine: &'a Arc<Engine>, job: Job) -> Self {
        HandOver {
            engine,
            job: Some(job),
        }
    }

    fn disarm(&mut self) {
        self.job = None;
    }
}

impl Drop for HandOver<'_> {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            self.engine.hand_over(job);
        }
    }
}

pub(crate) fn lost_error(lock: &Lock, reason: LostReason) -> LockError {
    LockError::Lost {
        key: lock.key.to_string(),
        token: lock.token(),
        reason,
    }
}
