//! Server-lease sessions (stores with [`crate::store::Capabilities::leases`]).
//!
//! One lease per (client, ttl) is kept alive by the client's background task,
//! however many locks are attached to it (etcd's `concurrency.Session`). The
//! session rule lives here:
//!
//! - its deadline is the *send* time of the last successful grant or
//!   keep-alive plus ttl minus the margin, so it passes before the server can
//!   expire the lease and hand a key to someone else;
//! - once lost (deadline passed, or the server says the lease is gone) it is
//!   never used for a write again, and every lock on it is lost;
//! - a session that may have a write of ours in flight that we gave up on is
//!   *retired*: no new lock uses it, and it is revoked once its last lock is
//!   gone, so a late write cannot leave a key stuck on a live lease;
//! - a session nobody uses for a grace period (its ttl) is revoked.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::rules;
use crate::error::LostReason;
use crate::store::LeaseId;

#[derive(Debug)]
pub(crate) struct Session {
    pub lease: LeaseId,
    pub ttl: Duration,
    timing: Mutex<Timing>,
    lost: OnceLock<LostReason>,
    retired: AtomicBool,
    /// Acquisitions in progress and locks (held or being released) on it.
    users: AtomicUsize,
}

#[derive(Debug)]
pub(crate) struct Timing {
    /// Past this without a successful keep-alive, the session is lost.
    pub deadline: Instant,
    /// When to send the next keep-alive.
    pub next_keep_alive: Instant,
    pub in_flight: bool,
    /// Since when nobody has used the session.
    pub idle_since: Option<Instant>,
}

impl Session {
    /// A session for a lease whose grant was sent at `sent`.
    pub fn new(lease: LeaseId, ttl: Duration, sent: Instant) -> Self {
        Session {
            lease,
            ttl,
            timing: Mutex::new(Timing {
                deadline: rules::deadline(sent, ttl),
                next_keep_alive: super::clock::later(sent, ttl / 3),
                in_flight: false,
                idle_since: None,
            }),
            lost: OnceLock::new(),
            retired: AtomicBool::new(false),
            users: AtomicUsize::new(0),
        }
    }

    pub fn timing(&self) -> MutexGuard<'_, Timing> {
        self.timing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn deadline(&self) -> Instant {
        self.timing().deadline
    }

    pub fn lost_reason(&self) -> Option<LostReason> {
        self.lost.get().copied()
    }

    /// Whether locks on this session are still held at local time `now`.
    pub fn alive(&self, now: Instant) -> bool {
        self.lost_reason().is_none() && now < self.deadline()
    }

    /// Whether a new write may use this session's lease.
    pub fn usable(&self, now: Instant) -> bool {
        !self.retired.load(Ordering::Acquire) && self.alive(now)
    }

    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Marks the session lost; true the first time.
    pub fn set_lost(&self, reason: LostReason) -> bool {
        self.lost.set(reason).is_ok()
    }

    /// A keep-alive sent at `sent` succeeded.
    pub fn renewed(&self, sent: Instant) {
        let mut timing = self.timing();
        timing.in_flight = false;
        timing.deadline = timing.deadline.max(rules::deadline(sent, self.ttl));
        timing.next_keep_alive = super::clock::later(sent, self.ttl / 3);
    }

    pub fn users(&self) -> usize {
        self.users.load(Ordering::Acquire)
    }

    /// Counts one user until the returned handle is dropped.
    pub fn enter(self: &Arc<Self>) -> SessionUse {
        self.users.fetch_add(1, Ordering::AcqRel);
        SessionUse(Arc::clone(self))
    }
}

/// One user of a session (an acquisition, or a lock until it is gone).
#[derive(Debug)]
pub(crate) struct SessionUse(pub Arc<Session>);

impl Drop for SessionUse {
    fn drop(&mut self) {
        self.0.users.fetch_sub(1, Ordering::AcqRel);
    }
}
