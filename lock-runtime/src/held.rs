//! The state one held lock shares between its guard, the client's renewer and
//! [`crate::current`]: key, fencing token, current index, and the lost signal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::LostReason;
use crate::session::Session;
use crate::store::Record;

/// Timing kept by the renewer. Times are on the local monotonic clock.
#[derive(Debug)]
pub(crate) struct Timing {
    /// When to send the next renewal.
    pub next_renew: Instant,
    /// Past this, without a successful renewal, the lock counts as lost: it is
    /// the send time of the last successful write plus ttl minus a margin, so it
    /// always comes before another client's takeover could.
    pub deadline: Instant,
    /// A renewal request is under way.
    pub in_flight: bool,
    /// Release (delete) at this time: set by a release inside `hold_at_least`.
    pub release_at: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Held {
    pub id: u64,
    pub key: Arc<str>,
    pub record: Record,
    /// The index of the acquiring write: the fencing token. Never changes.
    pub token: u64,
    /// The index of the last write by this holder (changes on each renewal).
    pub index: AtomicU64,
    pub acquired_at: Instant,
    pub renew: bool,
    pub hold_at_least: Option<Duration>,
    /// The server lease the key is attached to (lease-capable stores).
    pub session: Option<Arc<Session>>,
    lost: OnceLock<LostReason>,
    lost_notify: Notify,
    /// Set once release started (explicit, drop, or scheduled).
    pub releasing: AtomicBool,
    pub timing: Mutex<Timing>,
}

impl Held {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        key: Arc<str>,
        record: Record,
        token: u64,
        sent_at: Instant,
        renew: bool,
        hold_at_least: Option<Duration>,
        session: Option<Arc<Session>>,
    ) -> Self {
        let ttl = record.ttl();
        Held {
            id,
            key,
            token,
            index: AtomicU64::new(token),
            acquired_at: sent_at,
            renew,
            hold_at_least,
            timing: Mutex::new(Timing {
                next_renew: sent_at + ttl / 3,
                deadline: sent_at + ttl.saturating_sub(safety_margin(ttl)),
                in_flight: false,
                release_at: None,
            }),
            session,
            record,
            lost: OnceLock::new(),
            lost_notify: Notify::new(),
            releasing: AtomicBool::new(false),
        }
    }

    /// Whether this lock is attached to (renewed by) `session`.
    pub fn is_on(&self, session: &Arc<Session>) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, session))
    }

    pub fn timing(&self) -> MutexGuard<'_, Timing> {
        self.timing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn index(&self) -> u64 {
        self.index.load(Ordering::Acquire)
    }

    /// Marks the lock lost (first reason wins) and wakes everyone waiting on it.
    pub fn mark_lost(&self, reason: LostReason) -> bool {
        let first = self.lost.set(reason).is_ok();
        if first {
            tracing::warn!(key = %self.key, token = self.token, %reason, "distlock: lock lost");
            self.lost_notify.notify_waiters();
        }
        first
    }

    pub fn lost_reason(&self) -> Option<LostReason> {
        self.lost.get().copied()
    }

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
            notified.await;
        }
    }
}

/// How long before the ttl runs out a holder gives up: a tenth of the ttl,
/// at least 5 ms, which absorbs clock-rate differences between machines.
pub(crate) fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(5))
}

/// A cloneable handle on a held lock's lost signal, usable from other tasks.
///
/// Obtained from [`crate::LockGuard::lost_signal`] or [`crate::Current::lost_signal`].
#[derive(Clone, Debug)]
pub struct LostSignal {
    pub(crate) held: Arc<Held>,
}

impl LostSignal {
    /// Whether the lock has been lost.
    pub fn is_lost(&self) -> bool {
        self.held.lost_reason().is_some()
    }

    /// Why the lock was lost, if it was.
    pub fn reason(&self) -> Option<LostReason> {
        self.held.lost_reason()
    }

    /// Completes when the lock is lost (never, if it is released first).
    pub async fn lost(&self) -> LostReason {
        self.held.lost().await
    }

    /// The lock key.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The fencing token.
    pub fn token(&self) -> u64 {
        self.held.token
    }
}
