//! One acquisition as an explicit state machine.
//!
//! ```text
//!            put answered / read back ours
//! Acquiring ──────────────────────────────▶ Held ──release()──▶ Releasing ──▶ Done
//!     │  (a write's answer lost: the        │  ▲                    ▲
//!     │   acquisition stays Acquiring        │  └─ renewed           │
//!     │   with `ambiguous_since` set)        ├─ release() inside hold_at_least
//!     │                                      │        ▼
//!     │                                      │    Scheduled ──at──────┘
//!     │                                      └─ deadline / conflict / lease gone: lost (a flag
//!     │                                         on top of the phase, seen by guard and body)
//!     └─ dropped or failed with a write in flight ──▶ Cleanup (background: read back,
//!                                                     delete if ours) ──▶ Done
//! ```
//!
//! The phase changes only through the methods below, under one mutex; the
//! deadline rule and the ambiguity bookkeeping are applied in them and nowhere
//! else.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::clock::{Clock, later};
use super::events::{Event, Events};
use super::rules;
use super::session::{Session, SessionUse};
use crate::error::LostReason;
use crate::store::Record;

/// Where an acquisition is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Writes are being made; none known to hold the key for us yet.
    Acquiring,
    /// The caller's guard holds it.
    Held,
    /// Released inside `hold_at_least`: kept (and renewed) until `at`.
    Scheduled { at: Instant },
    /// Being deleted (by the caller or in the background).
    Releasing,
    /// Abandoned with a write that may have committed: the background task
    /// reads back and deletes the record if it is ours.
    Cleanup,
    /// Nothing of ours is left at the key (or it is someone else's now).
    Done,
}

#[derive(Debug)]
pub(crate) struct State {
    pub phase: Phase,
    /// The index of the acquiring write: the fencing token (0 until held).
    pub token: u64,
    /// The last index known to hold our record (0: none known).
    pub index: u64,
    /// The local deadline of the record at `index` (deadline rule).
    pub deadline: Instant,
    /// Send time of the write whose answer we are waiting for.
    pub sending: Option<Instant>,
    /// Send time of the latest write of ours, answered or not.
    pub last_send: Option<Instant>,
    /// A write of this acquisition lost its answer and was never found to
    /// be the one that produced our record: it may still land later (a
    /// put-if-absent, once the key is free again), leaving a stray record.
    pub stray: bool,
    /// A cleanup after the lock is done must look for such a late record.
    pub recheck: bool,
    /// Earliest send time of a write whose answer was lost and which may
    /// still have produced (or later produce) a record of ours.
    pub ambiguous_since: Option<Instant>,
    /// The send time of the write that produced `index` (for the token: when
    /// the lock was acquired, which `hold_at_least` counts from).
    pub produced_at: Instant,
    /// When the token's write was sent.
    pub acquired_at: Instant,
    pub next_renew: Instant,
    pub renewing: bool,
    /// The held-key watch task (lease stores).
    pub watch: Option<AbortHandle>,
}

/// What [`Lock::begin_release`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// Delete the record at this index now.
    Now(u64),
    /// Kept until `hold_at_least` has passed; the background task releases it.
    Scheduled(Instant),
    /// It was lost; if it may still be ours, the background cleans up.
    Lost(LostReason),
    /// Already released.
    Done,
}

/// One acquisition: shared by the acquire future, the guard, the background
/// task and the lost signals.
#[derive(Debug)]
pub(crate) struct Lock {
    pub id: u64,
    pub key: Arc<str>,
    pub record: Record,
    pub ttl: Duration,
    pub renew: bool,
    pub hold_at_least: Option<Duration>,
    /// The lease session the record is attached to (lease stores, renewed locks).
    pub session: Option<Arc<Session>>,
    /// Counts this lock as a user of `session` until it is done (lost signals
    /// and `Current`s may outlive it).
    session_use: Mutex<Option<SessionUse>>,
    clock: Clock,
    events: Arc<Events>,
    state: Mutex<State>,
    lost: OnceLock<LostReason>,
    lost_notify: Notify,
}

impl Lock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        key: Arc<str>,
        record: Record,
        renew: bool,
        hold_at_least: Option<Duration>,
        session: Option<SessionUse>,
        clock: Clock,
        events: Arc<Events>,
    ) -> Self {
        let now = clock.now();
        let ttl = record.ttl();
        Lock {
            id,
            key,
            ttl,
            record,
            renew,
            hold_at_least,
            session: session.as_ref().map(|used| Arc::clone(&used.0)),
            session_use: Mutex::new(session),
            clock,
            events,
            state: Mutex::new(State {
                phase: Phase::Acquiring,
                token: 0,
                index: 0,
                deadline: now,
                sending: None,
                last_send: None,
                stray: false,
                recheck: false,
                ambiguous_since: None,
                produced_at: now,
                acquired_at: now,
                next_renew: now,
                renewing: false,
                watch: None,
            }),
            lost: OnceLock::new(),
            lost_notify: Notify::new(),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn lease_session(&self) -> Option<&Arc<Session>> {
        self.session.as_ref()
    }

    pub fn phase(&self) -> Phase {
        self.state().phase
    }

    pub fn token(&self) -> u64 {
        self.state().token
    }

    pub fn index(&self) -> u64 {
        self.state().index
    }

    // ---- writes and their answers (the deadline and ambiguity bookkeeping) ----

    /// A write is about to be sent at `now`.
    pub fn sending(&self, now: Instant) {
        let mut state = self.state();
        state.sending = Some(now);
        state.last_send = Some(now);
    }

    /// The write being sent produced `index`: the record there is ours,
    /// produced by that write, so its deadline counts from that send. Writes
    /// whose answers were lost before cannot apply any more (the key exists
    /// now, or its index moved past the one they expect).
    pub fn swapped(&self, index: u64) {
        let mut state = self.state();
        let sent = state.sending.take().unwrap_or(state.produced_at);
        state.ambiguous_since = None;
        self.produced(&mut state, index, sent);
    }

    /// The write being sent was refused (a definite answer: it did not apply).
    pub fn refused(&self) {
        self.state().sending = None;
    }

    /// The write being sent got no answer: it may have applied, now or later.
    pub fn answer_lost(&self) {
        let mut state = self.state();
        if let Some(sent) = state.sending.take() {
            state.ambiguous_since = Some(state.ambiguous_since.map_or(sent, |a| a.min(sent)));
            state.stray = true;
        }
    }

    /// A conflict or read-back showed our record at `index`. Only a write of
    /// ours can have produced it: one whose answer was lost, or the one being
    /// sent (a backend may replay it on another node and answer with a
    /// conflict that shows it). So (deadline rule) it counts from the
    /// earliest of those sends. Returns false if no such write is known: the
    /// record is then an orphan, never treated as held.
    pub fn found_ours(&self, index: u64) -> bool {
        let mut state = self.state();
        let producer = match (state.ambiguous_since.take(), state.sending.take()) {
            (Some(a), Some(s)) => Some(a.min(s)),
            (a, s) => a.or(s),
        };
        let Some(sent) = producer else {
            state.index = index;
            return false;
        };
        // A lock already handed out that finds its record at an index it did
        // not know cannot tell which write of its own produced it: besides the
        // writes still counted as ambiguous, a write whose answer was lost and
        // that a later success made look superseded can land whenever the key
        // is absent (a put-if-absent after an operator delete; RavenDB 4.1
        // creating a missing key), long after it was sent. Indexes only grow,
        // so the record was written after the one at `state.index`, whose
        // write was sent at `produced_at`: count from there (the deadline does
        // not move; the next renewal, at once, moves it).
        let sent = if state.phase == Phase::Acquiring {
            sent
        } else {
            sent.min(state.produced_at)
        };
        self.produced(&mut state, index, sent);
        true
    }

    /// The key holds our record at `index`, found by a read that no write of
    /// ours is waiting for (the held-key watch): follow it. The deadline does
    /// not move: that record was written after the one we knew (see
    /// [`Lock::found_ours`]).
    pub fn follow(&self, index: u64) {
        self.state().index = index;
    }

    fn produced(&self, state: &mut State, index: u64, sent: Instant) {
        state.index = index;
        state.produced_at = sent;
        state.deadline = rules::deadline(sent, self.ttl);
        state.next_renew = later(sent, self.ttl / 3);
    }

    /// Whether a write of ours may be in flight or may have left a record.
    pub fn may_have_written(&self) -> bool {
        let state = self.state();
        state.sending.is_some() || state.ambiguous_since.is_some() || state.index != 0
    }

    /// Whether a write of ours may still apply later: one is in flight, or one
    /// got no answer (even if a later success or a read-back made it look
    /// resolved: see [`State::stray`]).
    pub fn write_may_be_pending(&self) -> bool {
        let state = self.state();
        state.sending.is_some() || state.ambiguous_since.is_some() || state.stray || state.recheck
    }

    /// Whether a write of ours may still land after this lock is done; true
    /// once (the caller then looks after it).
    pub fn take_stray(&self) -> bool {
        let mut state = self.state();
        let stray = std::mem::take(&mut state.stray);
        state.recheck |= stray;
        stray
    }

    // ---- phases ----

    /// Acquiring -> Held, if the record is still good at local `now`
    /// (deadline rule; on lease stores, the session must still be alive).
    pub fn hand_out(&self, now: Instant) -> bool {
        if let Some(session) = self.lease_session()
            && !session.alive(now)
        {
            return false;
        }
        let mut state = self.state();
        if state.phase != Phase::Acquiring || state.index == 0 {
            return false;
        }
        if self.session.is_none() && now >= state.deadline {
            return false;
        }
        state.phase = Phase::Held;
        state.token = state.index;
        state.acquired_at = state.produced_at;
        true
    }

    /// Acquiring (or any phase) -> Cleanup, when the acquisition is abandoned.
    /// Returns whether the background task has something to clean up.
    pub fn abandon(&self) -> bool {
        let needs = self.may_have_written();
        let mut state = self.state();
        if state.phase == Phase::Acquiring {
            state.phase = if needs { Phase::Cleanup } else { Phase::Done };
        }
        let cleanup = needs && state.phase == Phase::Cleanup;
        drop(state);
        if !cleanup {
            self.finish();
        }
        cleanup
    }

    /// The caller releases (guard released or dropped).
    pub fn begin_release(&self, now: Instant) -> Release {
        let lost = self.check_lost(now);
        let mut state = self.state();
        match state.phase {
            Phase::Held => {}
            Phase::Scheduled { at } => return Release::Scheduled(at),
            _ => return Release::Done,
        }
        if let Some(reason) = lost {
            state.phase = if reason == LostReason::TakenOver {
                Phase::Done
            } else {
                Phase::Cleanup
            };
            return Release::Lost(reason);
        }
        if let Some(hold) = self.hold_at_least {
            let at = later(state.acquired_at, hold);
            if at > now {
                state.phase = Phase::Scheduled { at };
                return Release::Scheduled(at);
            }
        }
        state.phase = Phase::Releasing;
        Release::Now(state.index)
    }

    /// Scheduled -> Releasing once its time has come (background task).
    pub fn scheduled_due(&self, now: Instant) -> Option<u64> {
        let mut state = self.state();
        match state.phase {
            Phase::Scheduled { at } if at <= now => {
                state.phase = Phase::Releasing;
                Some(state.index)
            }
            _ => None,
        }
    }

    /// Scheduled and lost -> Cleanup (or Done if someone else has it now).
    /// Returns whether there is something to clean up.
    pub fn lost_while_scheduled(&self, reason: LostReason) -> bool {
        let mut state = self.state();
        if !matches!(state.phase, Phase::Scheduled { .. }) {
            return false;
        }
        if reason == LostReason::TakenOver {
            state.phase = Phase::Done;
            false
        } else {
            state.phase = Phase::Cleanup;
            true
        }
    }

    /// Any phase -> Done.
    pub fn finish(&self) {
        let mut state = self.state();
        state.phase = Phase::Done;
        if let Some(watch) = state.watch.take() {
            watch.abort();
        }
        drop(state);
        self.session_use
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Whether the holder still counts on the lock (held, or kept for
    /// `hold_at_least`).
    pub fn is_holding(&self) -> bool {
        matches!(self.phase(), Phase::Held | Phase::Scheduled { .. })
    }

    // ---- loss ----

    /// The deadline past which the lock counts as lost.
    pub fn effective_deadline(&self) -> Instant {
        match self.lease_session() {
            Some(session) => session.deadline(),
            None => self.state().deadline,
        }
    }

    /// Marks the lock lost if it is held and its deadline has passed at local
    /// `now`; returns the reason it is lost, if it is.
    pub fn check_lost(&self, now: Instant) -> Option<LostReason> {
        if let Some(reason) = self.lost_reason() {
            return Some(reason);
        }
        if !self.is_holding() {
            return None;
        }
        let reason = match self.lease_session() {
            Some(session) => match session.lost_reason() {
                Some(reason) => reason,
                None if now >= session.deadline() => LostReason::RenewalTimedOut,
                None => return None,
            },
            None if now >= self.state().deadline => {
                if self.renew {
                    LostReason::RenewalTimedOut
                } else {
                    LostReason::TtlElapsed
                }
            }
            None => return None,
        };
        self.mark_lost(reason);
        self.lost_reason()
    }

    /// Marks the lock lost (first reason wins) and wakes everyone waiting on it.
    pub fn mark_lost(&self, reason: LostReason) -> bool {
        let first = self.lost.set(reason).is_ok();
        if first {
            self.events.emit(Event::Lost {
                key: &self.key,
                token: self.token(),
                reason,
            });
            self.lost_notify.notify_waiters();
        }
        first
    }

    pub fn lost_reason(&self) -> Option<LostReason> {
        self.lost.get().copied()
    }

    /// Whether the lock is lost, judged now (deadline included).
    pub fn is_lost(&self) -> bool {
        self.check_lost(self.clock.now()).is_some()
    }

    /// Completes when the lock is lost.
    pub async fn lost(&self) -> LostReason {
        loop {
            if let Some(reason) = self.lost_reason() {
                return reason;
            }
            let notified = self.lost_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.lost_reason() {
                return reason;
            }
            // The background task marks the loss at the deadline; waking at
            // the deadline ourselves as well keeps the signal on time even if
            // that task is late.
            if !self.is_holding() {
                notified.await;
                continue;
            }
            let deadline = self.effective_deadline();
            if self
                .clock
                .timeout_at(deadline, notified.as_mut())
                .await
                .is_none()
            {
                self.check_lost(self.clock.now());
            }
        }
    }
}

/// A cloneable handle on a held lock's lost signal, usable from other tasks.
///
/// Obtained from [`crate::LockGuard::lost_signal`] or [`crate::Current::lost_signal`].
#[derive(Clone, Debug)]
pub struct LostSignal {
    pub(crate) lock: Arc<Lock>,
}

impl LostSignal {
    /// Whether the lock has been lost. Also true as soon as the lock's local
    /// deadline has passed, even before the background task noticed.
    pub fn is_lost(&self) -> bool {
        self.lock.is_lost()
    }

    /// Why the lock was lost, if it was.
    pub fn reason(&self) -> Option<LostReason> {
        self.lock.is_lost();
        self.lock.lost_reason()
    }

    /// Completes when the lock is lost (never, if it is released first).
    pub async fn lost(&self) -> LostReason {
        self.lock.lost().await
    }

    /// The lock key.
    pub fn key(&self) -> &str {
        &self.lock.key
    }

    /// The fencing token.
    pub fn token(&self) -> u64 {
        self.lock.token()
    }
}
