//! The acquire loop: write, resolve what the answer means, wait, repeat.
//!
//! Each turn is one transition of the acquisition's state machine
//! (`state.rs`): a put is sent (`sending`), its answer swaps (`swapped`), is
//! refused (`refused`, then the conflict is classified), or is lost
//! (`answer_lost`, then read back once: the ambiguity rule). A record of ours
//! is handed out only while its deadline (deadline rule) and, on lease stores,
//! its session are still good; otherwise it is an orphan and goes to the
//! background cleanup while the acquisition starts over with a new nonce.
//!
//! The acquisition is covered by a drop guard from its first write: dropped
//! (or failed) while a write may have left a record, it hands the record to
//! the background task, which deletes it if it is ours.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::clock::later;
use super::events::Event;
use super::rules::{Seen, classify};
use super::session::{Session, SessionUse};
use super::state::Lock;
use super::{Engine, Job};
use crate::error::{LockError, LostReason};
use crate::options::{LockOptions, Wait, validate_key};
use crate::store::{Entry, Expect, PutOutcome, StoreError};

/// How many fresh sessions in a row may be lost before an acquisition backs
/// off between them.
const SESSION_RETRIES: u32 = 3;

/// Hands an abandoned acquisition to the background cleanup if it is dropped
/// (or returns) before it was handed out.
struct Attempt<'a> {
    engine: &'a Arc<Engine>,
    lock: Arc<Lock>,
    armed: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.engine.abandon(&self.lock);
        }
    }
}

impl Engine {
    /// An acquisition is abandoned: clean up whatever its writes may have left.
    fn abandon(self: &Arc<Self>, lock: &Arc<Lock>) {
        if lock.abandon() {
            if let Some(session) = lock.lease_session()
                && lock.write_may_be_pending()
            {
                // A write of ours on this lease may still apply after the
                // cleanup looked: never use the lease again, revoke it once idle.
                session.retire();
            }
            self.hand_over(Job::Cleanup(Arc::clone(lock)));
        }
    }

    fn new_lock(
        self: &Arc<Self>,
        key: &str,
        options: &LockOptions,
        session: Option<SessionUse>,
    ) -> Arc<Lock> {
        let now = self.clock.now();
        Arc::new(Lock::new(
            self.next_id(),
            key.into(),
            self.record(options.ttl, now),
            options.renew,
            options.hold_at_least,
            session,
            self.clock,
            Arc::clone(&self.events),
        ))
    }

    /// A usable session for `ttl`, granting a lease if needed.
    async fn session(self: &Arc<Self>, key: &str, ttl: Duration) -> Result<SessionUse, LockError> {
        if let Some(used) = self.find_session(ttl) {
            return Ok(used);
        }
        let _one_grant = self.granting.lock().await;
        if let Some(used) = self.find_session(ttl) {
            return Ok(used);
        }
        let sent = self.clock.now();
        let lease = self
            .store()
            .grant_lease(ttl)
            .await
            .map_err(|error| self.store_error(key, error))?;
        let session = Arc::new(Session::new(lease, ttl, sent));
        let used = session.enter();
        self.sessions().push(Arc::clone(&session));
        // The background task keeps it alive from now on.
        let next = session.timing().next_keep_alive;
        let work = self.work();
        if work.running {
            self.wake_locked(work, next);
        } else {
            drop(work);
            self.start_background(Some(next));
        }
        Ok(used)
    }

    fn find_session(&self, ttl: Duration) -> Option<SessionUse> {
        let now = self.clock.now();
        let sessions = self.sessions();
        sessions
            .iter()
            .find(|session| session.ttl == ttl && session.usable(now))
            .map(Session::enter)
    }
}

pub(super) async fn acquire(
    engine: &Arc<Engine>,
    key: &str,
    options: &LockOptions,
) -> Result<Arc<Lock>, LockError> {
    validate_key(key)?;
    options.validate()?;
    let started = engine.clock.now();
    let deadline = options.wait.limit().map(|limit| later(started, limit));
    // Locks that are not renewed need no lease: they are plain records that
    // others take over once they stayed unchanged for their ttl.
    let leased = engine.caps.leases && options.renew;
    let mut session_failures = 0;
    let mut contended = false;
    let mut attempt: u32 = 0;
    // Answers in a row that showed the key neither ours nor someone else's.
    let mut unreported: u32 = 0;
    let mut fresh_starts: u32 = 0;
    'fresh: loop {
        fresh_starts += 1;
        if fresh_starts > 1
            && let Some(d) = deadline
            && engine.clock.now() >= d
        {
            // Every record we got was already past its deadline (or its
            // session was lost) by the time its answer came back.
            return Err(LockError::Timeout {
                key: key.to_owned(),
                waited: engine.clock.now().saturating_duration_since(started),
                holder: "nobody: the backend answered too slowly for the ttl".to_owned(),
            });
        }
        let session = if leased {
            match engine.session(key, options.ttl).await {
                Ok(session) => Some(session),
                Err(error) if error.is_unavailable() => {
                    // No lease without the backend: wait and try again, as
                    // for any write that gets no answer.
                    if deadline.is_some_and(|d| engine.clock.now() >= d) {
                        return Err(error);
                    }
                    engine
                        .sleep_bounded(engine.backoff.delay(attempt), deadline)
                        .await;
                    attempt = attempt.saturating_add(1);
                    if deadline.is_some_and(|d| engine.clock.now() >= d) {
                        return Err(error);
                    }
                    fresh_starts = 0;
                    continue 'fresh;
                }
                Err(error) => return Err(error),
            }
        } else {
            None
        };
        let mut current = Attempt {
            engine,
            lock: engine.new_lock(key, options, session),
            armed: true,
        };
        let lock = Arc::clone(&current.lock);
        let mut expect = Expect::Absent;
        let mut takeover = false;
        loop {
            // Session rule: never write with a lease we consider lost.
            if let Some(session) = lock.lease_session()
                && !session.usable(engine.clock.now())
            {
                // A fresh session, after a pause if leases keep getting lost.
                session_failures += 1;
                if session_failures > SESSION_RETRIES {
                    engine
                        .sleep_bounded(engine.backoff.delay(attempt), deadline)
                        .await;
                    attempt = attempt.saturating_add(1);
                }
                continue 'fresh;
            }
            lock.sending(engine.clock.now());
            let lease = lock.lease_session().map(|session| session.lease);
            let seen = match engine.store().put(key, &lock.record, expect, lease).await {
                Ok(PutOutcome::Swapped { index }) => {
                    lock.swapped(index);
                    Seen::Ours(index)
                }
                Ok(PutOutcome::Conflict { current }) => resolve(&lock, current),
                Err(StoreError::LeaseGone(_)) if lock.session.is_some() => {
                    lock.refused();
                    if let Some(session) = lock.lease_session() {
                        engine.session_lost(session, LostReason::LeaseExpired);
                    }
                    continue;
                }
                Err(error) if error.is_transient() => {
                    lock.answer_lost();
                    tracing::debug!(key, %error, "distlock: write answer lost; reading back");
                    match engine.store().get(key).await {
                        Ok(found) => resolve(&lock, found),
                        Err(_) => {
                            if deadline.is_some_and(|d| engine.clock.now() >= d) {
                                return Err(engine.store_error(key, error));
                            }
                            engine
                                .sleep_bounded(engine.backoff.delay(attempt), deadline)
                                .await;
                            attempt = attempt.saturating_add(1);
                            expect = Expect::Absent;
                            continue;
                        }
                    }
                }
                Err(error) => {
                    lock.refused();
                    return Err(engine.store_error(key, error));
                }
            };
            let entry = match seen {
                Seen::Ours(0) => {
                    // An orphan of ours: clean it up, start over.
                    drop(current);
                    continue 'fresh;
                }
                Seen::Ours(_) => {
                    let now = engine.clock.now();
                    if lock.hand_out(now) {
                        current.armed = false;
                        engine.acquired(
                            &lock,
                            takeover,
                            now.saturating_duration_since(started),
                            contended,
                        );
                        return Ok(lock);
                    }
                    // The deadline passed, or its session is gone, before we
                    // could hand it out: an orphan; clean up and start over.
                    if let Some(session) = lock.lease_session()
                        && !session.alive(now)
                    {
                        session_failures += 1;
                    }
                    drop(current);
                    continue 'fresh;
                }
                Seen::Absent => {
                    // Freed between our write and the read: try again at
                    // once. Seen again (a backend whose conflicts do not say
                    // what the key holds, which the contract allows): back
                    // off, and not past the wait.
                    expect = Expect::Absent;
                    takeover = false;
                    attempt = attempt.saturating_add(1);
                    unreported = unreported.saturating_add(1);
                    if unreported > 1 {
                        let now = engine.clock.now();
                        if let Some(d) = deadline
                            && now >= d
                        {
                            return Err(unreported_error(
                                key,
                                options.wait,
                                now.saturating_duration_since(started),
                            ));
                        }
                        engine
                            .sleep_bounded(engine.backoff.delay(attempt), deadline)
                            .await;
                    }
                    continue;
                }
                Seen::Other(entry) => {
                    unreported = 0;
                    entry
                }
            };
            if !contended {
                contended = true;
                engine.events.emit(Event::Contended {
                    key,
                    holder: &entry.record.owner,
                });
            }
            let now = engine.clock.now();
            let takeover_at = engine.observations().takeover_at(key, &entry, now);
            if let Some(at) = takeover_at
                && at <= now
            {
                expect = Expect::Index(entry.index);
                takeover = true;
                continue;
            }
            expect = Expect::Absent;
            takeover = false;
            if let Some(d) = deadline
                && now >= d
            {
                return Err(contention_error(
                    key,
                    &entry,
                    options.wait,
                    now.saturating_duration_since(started),
                ));
            }
            let wake = match (deadline, takeover_at) {
                (Some(d), Some(t)) => Some(d.min(t)),
                (d, t) => d.or(t),
            };
            let poll = engine.poll_delay(attempt, now.saturating_duration_since(started));
            engine.wait_for_change(key, &entry, wake, poll).await;
            attempt = attempt.saturating_add(1);
        }
    }
}

/// What a conflict's or read-back's `current` means for this acquisition
/// (the ambiguity rule, applied to its state). `Ours(0)`: a record of ours
/// that no known write of ours can have produced (an orphan).
fn resolve(lock: &Lock, current: Option<Entry>) -> Seen {
    match classify(current, &lock.record) {
        Seen::Ours(index) => {
            if lock.found_ours(index) {
                Seen::Ours(index)
            } else {
                Seen::Ours(0)
            }
        }
        seen => {
            lock.refused();
            seen
        }
    }
}

fn contention_error(key: &str, entry: &Entry, wait: Wait, waited: Duration) -> LockError {
    busy_or_timeout(key, entry.record.owner.to_string(), wait, waited)
}

/// The wait ran out while the backend kept refusing our writes without saying
/// what the key holds.
fn unreported_error(key: &str, wait: Wait, waited: Duration) -> LockError {
    busy_or_timeout(
        key,
        "unknown: the backend refused the write without saying who holds the key".to_owned(),
        wait,
        waited,
    )
}

fn busy_or_timeout(key: &str, holder: String, wait: Wait, waited: Duration) -> LockError {
    if wait == Wait::Never {
        LockError::Busy {
            key: key.to_owned(),
            holder,
        }
    } else {
        LockError::Timeout {
            key: key.to_owned(),
            waited,
            holder,
        }
    }
}

impl Engine {
    /// The waiting phase: until the key may have changed from `entry`, or
    /// `wake` (the wait's deadline or the takeover time). A FIFO waiter
    /// queue would go here.
    /// The polling rule: how long a waiter that has waited `waited` (and polled
    /// `attempt` times) pauses before it polls again. Doubling from the
    /// backoff's `min` to its `max`; in proportion to the wait on stores whose
    /// polls are reads ([`Capabilities::cheap_polls`](crate::store::Capabilities)).
    fn poll_delay(&self, attempt: u32, waited: Duration) -> Duration {
        if self.caps.cheap_polls {
            self.backoff.delay_after(waited)
        } else {
            self.backoff.delay(attempt)
        }
    }

    async fn wait_for_change(
        &self,
        key: &str,
        entry: &Entry,
        wake: Option<Instant>,
        poll: Duration,
    ) {
        if self.caps.watch {
            let watched = match wake {
                Some(wake) => self
                    .clock
                    .timeout_at(wake, self.store().watch(key, Some(entry.index)))
                    .await
                    .unwrap_or(Ok(())),
                None => self.store().watch(key, Some(entry.index)).await,
            };
            if let Err(error) = watched {
                tracing::debug!(key, %error, "distlock: watch failed; polling instead");
                self.sleep_bounded(poll, wake).await;
            }
        } else {
            self.sleep_bounded(poll, wake).await;
        }
    }

    pub(super) async fn sleep_bounded(&self, delay: Duration, bound: Option<Instant>) {
        let until = later(self.clock.now(), delay);
        self.clock
            .sleep_until(bound.map_or(until, |bound| bound.min(until)))
            .await;
    }

    /// Acquiring -> Held is done: count it, register it with the background task.
    fn acquired(
        self: &Arc<Self>,
        lock: &Arc<Lock>,
        takeover: bool,
        waited: Duration,
        contended: bool,
    ) {
        if contended {
            self.observations().forget(&lock.key);
        }
        self.events.emit(Event::Acquired {
            key: &lock.key,
            token: lock.token(),
            takeover,
            waited,
        });
        self.register(lock);
        // Key rule: renewal by CAS sees a changed key within ttl/3; leased and
        // unrenewed locks would never look at it, so watch theirs.
        if self.caps.watch && (lock.session.is_some() || !lock.renew) {
            super::background::watch_held(self, lock);
        }
    }
}
