//! The client's background task: one per client, for all its locks.
//!
//! - Renewal of locks on compare-exchange stores: every ttl/3 a
//!   `put(Expect::Index(current))`; a conflict with someone else's record
//!   means lost; no success before the deadline (deadline rule) means lost.
//! - Lease sessions: one keep-alive per session every ttl/3; a lease the
//!   server no longer has, or no success before the session's deadline, loses
//!   every lock on it; idle and retired sessions are revoked.
//! - Held-key watches (lease stores): a key deleted or overwritten behind the
//!   holder loses the lock at once (the keep-alive alone says nothing about
//!   the key).
//! - Releases: scheduled ones (`hold_at_least`), dropped guards, and cleanups
//!   of records that cancelled or failed operations may have left: read back,
//!   delete if ours, retry transient failures until the record is gone or not
//!   ours.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::clock::later;
use super::events::Event;
use super::rules::{Seen, classify};
use super::session::Session;
use super::state::{Lock, Phase};
use super::{Engine, Job, lost_error};
use crate::error::{LockError, LostReason};
use crate::store::{DeleteOutcome, Expect, PutOutcome, StoreError};

/// Clears `running` when the task ends, also when its runtime drops it
/// (polled or not: made before the task is spawned, see
/// `Engine::start_background`).
pub(super) struct Running(pub(super) Arc<Engine>);

impl Drop for Running {
    fn drop(&mut self) {
        let mut work = self.0.work();
        work.running = false;
        work.wake_at = None;
    }
}

pub(super) async fn run(running: Running) {
    let engine = Arc::clone(&running.0);
    loop {
        let now = engine.clock.now();
        let mut next: Option<Instant> = None;
        let mut earliest = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        let (jobs, due) = {
            let mut work = engine.work();
            let jobs: Vec<Job> = work.jobs.drain(..).collect();
            let mut due = Vec::new();
            let mut done = Vec::new();
            for lock in work.locks.values() {
                match lock.phase() {
                    Phase::Held | Phase::Scheduled { .. } => {}
                    Phase::Done => {
                        done.push(Arc::clone(lock));
                        continue;
                    }
                    _ => continue,
                }
                if let Some(index) = lock.scheduled_due(now) {
                    due.push(Job::Release(Arc::clone(lock), index, false));
                    continue;
                }
                if let Phase::Scheduled { at } = lock.phase() {
                    earliest(at);
                }
                if let Some(reason) = lock.check_lost(now) {
                    if lock.lost_while_scheduled(reason) {
                        // Kept for hold_at_least, then lost: clean up now.
                        due.push(Job::Cleanup(Arc::clone(lock)));
                    }
                    continue;
                }
                earliest(lock.effective_deadline());
                if lock.renew && lock.session.is_none() {
                    // The phase is checked again under the same lock that sets
                    // `renewing`: a release that began since the check above
                    // (it sets `Releasing` under this lock, then waits while
                    // `renewing`) must not have a renewal started behind it.
                    let mut state = lock.state();
                    let holding = matches!(state.phase, Phase::Held | Phase::Scheduled { .. });
                    if holding && !state.renewing {
                        if state.next_renew <= now {
                            state.renewing = true;
                            drop(state);
                            let in_flight = InFlight {
                                engine: Arc::clone(&engine),
                                flag: Flag::Renewing(Arc::clone(lock)),
                            };
                            tokio::spawn(renew_once(
                                Arc::clone(&engine),
                                Arc::clone(lock),
                                in_flight,
                            ));
                        } else {
                            earliest(state.next_renew);
                        }
                    }
                }
            }
            for lock in done {
                work.locks.remove(&lock.id);
                lock.finish();
            }
            (jobs, due)
        };
        for job in jobs.into_iter().chain(due) {
            let running = JobRunning::start(&engine);
            tokio::spawn(run_job(Arc::clone(&engine), job, running));
        }
        if let Some(at) = engine.tend_sessions(now) {
            earliest(at);
        }
        {
            let mut work = engine.work();
            if !work.jobs.is_empty() {
                continue;
            }
            if work.locks.is_empty() && engine.is_closed() && engine.sessions().is_empty() {
                return;
            }
            work.wake_at = next;
        }
        let wake = engine.wake.notified();
        match next {
            Some(at) => {
                tokio::select! {
                    biased;
                    () = wake => {}
                    () = engine.clock.sleep_until(at) => {}
                }
            }
            None => wake.await,
        }
    }
}

/// `running` counts the job until this future ends or is dropped (even unpolled,
/// when the runtime shuts down).
async fn run_job(engine: Arc<Engine>, job: Job, running: JobRunning) {
    let _running = running;
    match job {
        Job::Release(lock, index, sent) => match delete_ours(&engine, &lock, index, sent).await {
            // The delete may have applied: go on as a cleanup (read back first).
            Err(LockError::Unavailable { .. }) => cleanup(&engine, &lock).await,
            Err(error) => tracing::debug!(%error, "distlock: background release failed"),
            Ok(()) => {}
        },
        Job::Cleanup(lock) => cleanup(&engine, &lock).await,
    }
}

/// A spawned background job, counted for [`Engine::is_idle`] while it lives.
struct JobRunning(Arc<Engine>);

impl JobRunning {
    fn start(engine: &Arc<Engine>) -> Self {
        engine.jobs_running.fetch_add(1, Ordering::AcqRel);
        JobRunning(Arc::clone(engine))
    }
}

impl Drop for JobRunning {
    fn drop(&mut self) {
        self.0.jobs_running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Engine {
    /// Whether a cleanup of `lock` should go on retrying.
    fn keep_trying(&self, lock: &Lock) -> bool {
        if !self.is_closed() {
            return true;
        }
        // Closed: past the record's own horizon nobody is blocked by it for
        // long (others take it over, or its lease runs out).
        self.clock.now() < later(lock.state().produced_at, lock.ttl.saturating_mul(2))
    }

    fn retry_delay(&self, lock: &Lock, attempt: u32) -> Duration {
        self.backoff
            .delay(attempt)
            .min((lock.ttl / 8).max(Duration::from_millis(5)))
    }
}

/// Deletes our record at `index` (following it if a renewal moved it).
/// Transient failures are `Unavailable` errors: the caller hands them on.
pub(super) async fn delete_ours(
    engine: &Arc<Engine>,
    lock: &Arc<Lock>,
    mut index: u64,
    sent_before: bool,
) -> Result<(), LockError> {
    // No renewal of ours may be in flight when the delete is sent: wait for
    // its answer, then delete at the index it left us.
    if renewal_settled(engine, lock).await {
        index = lock.index();
    }
    // A delete sent before (its future dropped) may have applied: then an
    // absent key is our own doing.
    let mut ambiguous = sent_before;
    // A renewal racing with the release may have moved our index: follow it
    // while the record is still ours (bounded: renewals stop once releasing).
    let mut moves = 0;
    // Transient failures (a node answering "unavailable", a reset connection)
    // are retried with backoff for a short while, then handed on as
    // `Unavailable`: the caller leaves the release to the background task.
    // Never past the lock's deadline: after it, others may take the record
    // over, and our retries would only report their lock as a takeover.
    let patience = later(engine.clock.now(), release_patience(lock)).min(lock.effective_deadline());
    let mut attempt: u32 = 0;
    loop {
        let seen = match engine.store().delete(&lock.key, index).await {
            Ok(DeleteOutcome::Deleted) => {
                engine.events.emit(Event::Released {
                    key: &lock.key,
                    token: lock.token(),
                });
                engine.forget(lock);
                return Ok(());
            }
            Ok(DeleteOutcome::Conflict { current }) => classify(current, &lock.record),
            Err(error) if error.is_transient() => {
                ambiguous = true;
                // Read back: `None` when the store refuses reads too.
                let seen = match engine.store().get(&lock.key).await {
                    Ok(found) => Some(classify(found, &lock.record)),
                    Err(read) if read.is_transient() => None,
                    Err(_) => return Err(engine.store_error(&lock.key, error)),
                };
                match seen {
                    Some(Seen::Ours(current)) if current != index => Seen::Ours(current),
                    Some(seen @ (Seen::Absent | Seen::Other(_))) => seen,
                    // Not applied (yet), or not known: the same delete again,
                    // after a pause, while the patience lasts.
                    _ => {
                        if engine.clock.now() >= patience {
                            return Err(engine.store_error(&lock.key, error));
                        }
                        engine
                            .sleep_bounded(engine.retry_delay(lock, attempt), Some(patience))
                            .await;
                        attempt = attempt.saturating_add(1);
                        continue;
                    }
                }
            }
            Err(error) => {
                engine.forget(lock);
                return Err(engine.store_error(&lock.key, error));
            }
        };
        match seen {
            Seen::Ours(current) if moves < MAX_RELEASE_MOVES => {
                moves += 1;
                index = current;
            }
            Seen::Ours(_) => break,
            // A delete of ours that got no answer may have applied: then the
            // key was free and someone acquired it since. The release began
            // while the lock was held (before its deadline) and nothing of
            // anyone else's was touched: released, not taken over.
            Seen::Absent | Seen::Other(_) if ambiguous => {
                engine.events.emit(Event::Released {
                    key: &lock.key,
                    token: lock.token(),
                });
                engine.forget(lock);
                return Ok(());
            }
            Seen::Absent | Seen::Other(_) => {
                // Someone deleted or took it over before we released it.
                lock.mark_lost(LostReason::TakenOver);
                engine.forget(lock);
                return Err(lost_error(lock, LostReason::TakenOver));
            }
        }
    }
    engine.forget(lock);
    Err(engine.store_error(
        &lock.key,
        StoreError::Backend {
            endpoint: engine.backend.to_owned(),
            source: format!(
                "the lock record kept moving to new indexes while it was being released \
                 ({MAX_RELEASE_MOVES} moves; last seen at index {index})"
            )
            .into(),
        },
    ))
}

/// How many times a release follows our record to a new index (each move is
/// a write of ours that landed meanwhile; renewals stop once releasing).
const MAX_RELEASE_MOVES: u32 = 4;

/// How long a caller's release retries transient failures before it hands the
/// release to the background task and reports `Unavailable`: a tenth of the
/// ttl, within 50 ms and 2 s (long enough for a burst of refusals or a
/// reconnect, short next to the ttl the record blocks others for anyway).
fn release_patience(lock: &Lock) -> Duration {
    (lock.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(2))
}

/// Waits until no renewal of `lock` is in flight, so that a delete is never
/// sent while one is (some stores, RavenDB 4.1, re-create a deleted key on a
/// conditional put: a renewal sent before the delete and applied after it
/// would leave a record behind). Bounded by the renewal's own timeout: it
/// gives up at the lock's deadline. Returns whether it waited (the renewal
/// may have moved the index).
pub(super) async fn renewal_settled(engine: &Arc<Engine>, lock: &Arc<Lock>) -> bool {
    let bound = later(lock.effective_deadline(), Duration::from_millis(50));
    let mut waited = false;
    while lock.state().renewing && engine.clock.now() < bound {
        waited = true;
        engine
            .sleep_bounded(Duration::from_millis(1), Some(bound))
            .await;
    }
    waited
}

/// Reads back and deletes whatever record of ours `lock` may have left;
/// retries transient failures until it is gone or not ours.
async fn cleanup(engine: &Arc<Engine>, lock: &Arc<Lock>) {
    let mut attempt: u32 = 0;
    // A write that was in flight when its future was dropped may still be
    // applied after our read (the server got it; a read can overtake it):
    // while that is possible, look again a few times with growing gaps, until
    // one ttl after that write was sent (after that, others could take the
    // record over anyway).
    let recheck_until = if lock.write_may_be_pending() {
        lock.state().last_send.map(|sent| later(sent, lock.ttl))
    } else {
        None
    };
    let mut recheck = Duration::from_millis(5);
    renewal_settled(engine, lock).await;
    loop {
        let outcome = match engine.store().get(&lock.key).await {
            Ok(found) => match classify(found, &lock.record) {
                Seen::Ours(index) => match engine.store().delete(&lock.key, index).await {
                    Ok(DeleteOutcome::Deleted) => Ok(true),
                    Ok(DeleteOutcome::Conflict { current }) => {
                        match classify(current, &lock.record) {
                            Seen::Ours(_) => Err(None),
                            _ => Ok(false),
                        }
                    }
                    Err(error) => Err(Some(error)),
                },
                Seen::Absent | Seen::Other(_) => Ok(false),
            },
            Err(error) => Err(Some(error)),
        };
        match outcome {
            Ok(deleted) => {
                if deleted {
                    engine.events.emit(Event::CleanedUp { key: &lock.key });
                } else if let Some(until) = recheck_until
                    && engine.clock.now() < until
                {
                    engine.sleep_bounded(recheck, Some(until)).await;
                    recheck = recheck
                        .saturating_mul(4)
                        .min((lock.ttl / 4).max(Duration::from_millis(5)));
                    continue;
                }
                engine.forget(lock);
                return;
            }
            Err(Some(error)) if !error.is_transient() => {
                tracing::warn!(key = %lock.key, %error, "distlock: cannot clean up a lock record");
                engine.forget(lock);
                return;
            }
            Err(_) => {
                if !engine.keep_trying(lock) {
                    engine.forget(lock);
                    return;
                }
                if let Some(session) = lock.lease_session()
                    && session.lost_reason().is_some()
                    && engine.clock.now() >= session.deadline()
                {
                    // Its lease is gone: so is the key.
                    engine.forget(lock);
                    return;
                }
                engine
                    .sleep_bounded(engine.retry_delay(lock, attempt), None)
                    .await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Clears a flag that says "a task of mine is in flight" (`renewing`,
/// `in_flight`) and wakes the background task when that task ends, also when
/// its runtime drops it mid-way or before it ever ran: a flag left set would
/// stop every later renewal or keep-alive, on any runtime the background task
/// restarts on. Made before the task is spawned (with no lock of the lock's or
/// session's state held) and moved into it.
struct InFlight {
    engine: Arc<Engine>,
    flag: Flag,
}

/// Which flag an [`InFlight`] clears.
enum Flag {
    Renewing(Arc<Lock>),
    KeepAlive(Arc<Session>),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        match &self.flag {
            Flag::Renewing(lock) => lock.state().renewing = false,
            Flag::KeepAlive(session) => session.timing().in_flight = false,
        }
        self.engine.wake.notify_one();
    }
}

/// One renewal of a lock on a compare-exchange store.
/// `_in_flight` clears `renewing` when this ends (or is dropped, run or not).
async fn renew_once(engine: Arc<Engine>, lock: Arc<Lock>, _in_flight: InFlight) {
    let expected = lock.index();
    let deadline = lock.effective_deadline();
    lock.sending(engine.clock.now());
    let answer = engine
        .clock
        .timeout_at(
            deadline,
            engine
                .store()
                .put(&lock.key, &lock.record, Expect::Index(expected), None),
        )
        .await;
    let retry_after = (lock.ttl / 20).max(Duration::from_millis(5));
    match answer {
        Some(Ok(PutOutcome::Swapped { index })) => {
            if lock.is_holding() {
                lock.swapped(index);
                engine.events.emit(Event::Renewed {
                    key: &lock.key,
                    index,
                });
            } else {
                // Released meanwhile: the release follows the moved index.
                lock.swapped(index);
            }
        }
        Some(Ok(PutOutcome::Conflict { current })) => {
            match classify(current, &lock.record) {
                Seen::Ours(index) => {
                    // A renewal of ours whose answer was lost did commit.
                    if lock.found_ours(index) {
                        lock.state().next_renew = engine.clock.now();
                    }
                }
                _ => {
                    lock.refused();
                    // Once released, a renewal that was in flight finds the
                    // key deleted by our own release: not a loss. (A release
                    // under way learns of a takeover itself.)
                    if lock.is_holding() {
                        lock.mark_lost(LostReason::TakenOver);
                    }
                }
            }
        }
        Some(Err(error)) => {
            lock.answer_lost();
            engine.events.emit(Event::RenewalFailed {
                key: &lock.key,
                error: &error,
            });
            lock.state().next_renew = later(engine.clock.now(), retry_after);
        }
        None => {
            lock.answer_lost();
            lock.check_lost(engine.clock.now());
        }
    }
}

/// Watches a held key on a lease store: deleted or overwritten behind the
/// holder, the lock is lost at once.
pub(super) fn watch_held(engine: &Arc<Engine>, lock: &Arc<Lock>) {
    let task = tokio::spawn(watch_loop(Arc::clone(engine), Arc::clone(lock)));
    let mut state = lock.state();
    if state.phase == Phase::Done {
        task.abort();
    } else {
        state.watch = Some(task.abort_handle());
    }
}

async fn watch_loop(engine: Arc<Engine>, lock: Arc<Lock>) {
    let mut attempt: u32 = 0;
    while lock.is_holding() && lock.lost_reason().is_none() {
        let index = lock.index();
        match engine.store().watch(&lock.key, Some(index)).await {
            Ok(()) => attempt = 0,
            Err(error) => {
                tracing::debug!(key = %lock.key, %error, "distlock: held-key watch failed; retrying");
                engine
                    .sleep_bounded(engine.retry_delay(&lock, attempt), None)
                    .await;
                attempt = attempt.saturating_add(1);
            }
        }
        if !lock.is_holding() {
            return;
        }
        match engine.store().get(&lock.key).await {
            Ok(found) => match classify(found, &lock.record) {
                // Ours at another index (a late write of ours re-created the
                // key): watch that index from now on, or the watch of the old
                // one returns at once, again and again.
                Seen::Ours(index) => lock.follow(index),
                Seen::Absent | Seen::Other(_) => {
                    if lock.is_holding() {
                        lock.mark_lost(LostReason::TakenOver);
                    }
                    return;
                }
            },
            // A value that is not a lock record of ours now sits at the key:
            // someone else wrote it.
            Err(StoreError::Foreign { .. }) => {
                if lock.is_holding() {
                    lock.mark_lost(LostReason::TakenOver);
                }
                return;
            }
            Err(_) => {
                engine
                    .sleep_bounded(engine.retry_delay(&lock, attempt), None)
                    .await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

impl Engine {
    /// A session's lease is gone (or may be): every lock on it is lost, and
    /// it is never used again.
    pub(super) fn session_lost(self: &Arc<Self>, session: &Arc<Session>, reason: LostReason) {
        if !session.set_lost(reason) {
            return;
        }
        self.events.emit(Event::SessionLost {
            lease: session.lease,
            reason,
        });
        let affected: Vec<Arc<Lock>> = self
            .work()
            .locks
            .values()
            .filter(|lock| {
                lock.lease_session()
                    .is_some_and(|s| Arc::ptr_eq(s, session))
            })
            .cloned()
            .collect();
        for lock in affected {
            if lock.is_holding() {
                lock.mark_lost(reason);
            }
        }
        self.wake.notify_one();
    }

    /// Keep-alives, lost and idle sessions. Returns when to look again.
    fn tend_sessions(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut earliest = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        let mut lost = Vec::new();
        let mut revoke = Vec::new();
        let mut due = Vec::new();
        {
            let mut sessions = self.sessions();
            sessions.retain(|session| {
                let users = session.users();
                let mut timing = session.timing();
                if users == 0 {
                    let idle_since = *timing.idle_since.get_or_insert(now);
                    let grace = if self.is_closed()
                        || session.is_retired()
                        || session.lost_reason().is_some()
                    {
                        Duration::ZERO
                    } else {
                        session.ttl
                    };
                    let until = later(idle_since, grace);
                    if until <= now {
                        revoke.push(Arc::clone(session));
                        return false;
                    }
                    earliest(until);
                } else {
                    timing.idle_since = None;
                }
                if session.lost_reason().is_some() {
                    return true;
                }
                if now >= timing.deadline {
                    lost.push(Arc::clone(session));
                    return true;
                }
                earliest(timing.deadline);
                if !timing.in_flight {
                    if timing.next_keep_alive <= now {
                        timing.in_flight = true;
                        // Spawned below, once no session's state is locked.
                        due.push(Arc::clone(session));
                    } else {
                        earliest(timing.next_keep_alive);
                    }
                }
                true
            });
        }
        for session in due {
            let in_flight = InFlight {
                engine: Arc::clone(self),
                flag: Flag::KeepAlive(Arc::clone(&session)),
            };
            tokio::spawn(keep_alive(Arc::clone(self), session, in_flight));
        }
        for session in lost {
            self.session_lost(&session, LostReason::RenewalTimedOut);
        }
        for session in revoke {
            let engine = Arc::clone(self);
            tokio::spawn(async move {
                // Best effort: a revoked lease frees its keys now rather than
                // after its ttl, and makes any late write with it fail.
                let _ = engine.store().revoke_lease(session.lease).await;
            });
        }
        next
    }
}

/// `_in_flight` clears the session's `in_flight` when this ends (or is dropped).
async fn keep_alive(engine: Arc<Engine>, session: Arc<Session>, _in_flight: InFlight) {
    let sent = engine.clock.now();
    let deadline = session.deadline();
    let retry = (session.ttl / 20).max(Duration::from_millis(5));
    match engine
        .clock
        .timeout_at(deadline, engine.store().keep_alive(session.lease))
        .await
    {
        Some(Ok(Some(_))) => session.renewed(sent),
        Some(Ok(None)) | Some(Err(StoreError::LeaseGone(_))) => {
            session.timing().in_flight = false;
            engine.session_lost(&session, LostReason::LeaseExpired);
        }
        Some(Err(error)) => {
            tracing::warn!(lease = session.lease.0, %error, "distlock: lease keep-alive failed; retrying");
            let mut timing = session.timing();
            timing.in_flight = false;
            timing.next_keep_alive = later(engine.clock.now(), retry);
        }
        None => {
            session.timing().in_flight = false;
            engine.session_lost(&session, LostReason::RenewalTimedOut);
        }
    }
}
