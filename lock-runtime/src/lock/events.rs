//! Every event of a lock's life is emitted from here, once: the counters
//! behind [`crate::ClientStats`] and the log lines. Tracing spans and metrics
//! hang here too, so no transition has to know about them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::LostReason;
use crate::store::{LeaseId, StoreError};

/// Something that happened to a lock (or to a client's lease session).
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// An acquisition got the lock.
    Acquired {
        key: &'a str,
        token: u64,
        takeover: bool,
        waited: Duration,
    },
    /// An acquisition found the lock held (first time only).
    Contended { key: &'a str, holder: &'a str },
    /// A renewal write succeeded.
    Renewed { key: &'a str, index: u64 },
    /// A renewal attempt failed (it is retried until the deadline).
    RenewalFailed { key: &'a str, error: &'a StoreError },
    /// A held lock was lost.
    Lost {
        key: &'a str,
        token: u64,
        reason: LostReason,
    },
    /// A lock was deleted by its holder.
    Released { key: &'a str, token: u64 },
    /// A record of ours left behind by a cancelled or failed operation was removed.
    CleanedUp { key: &'a str },
    /// A lease session was lost: every lock on it is lost.
    SessionLost { lease: LeaseId, reason: LostReason },
}

/// The counters of one client.
#[derive(Debug, Default)]
pub(crate) struct Events {
    pub acquired: AtomicU64,
    pub contended: AtomicU64,
    pub takeovers: AtomicU64,
    pub lost: AtomicU64,
    pub released: AtomicU64,
}

impl Events {
    /// The one place an event is counted and logged.
    pub fn emit(&self, event: Event<'_>) {
        match event {
            Event::Acquired {
                key,
                token,
                takeover,
                waited,
            } => {
                bump(&self.acquired);
                if takeover {
                    bump(&self.takeovers);
                    tracing::info!(key, token, ?waited, "distlock: took over an abandoned lock");
                } else {
                    tracing::trace!(key, token, ?waited, "distlock: acquired");
                }
            }
            Event::Contended { key, holder } => {
                bump(&self.contended);
                tracing::debug!(key, holder, "distlock: lock is held; waiting");
            }
            Event::Renewed { key, index } => tracing::trace!(key, index, "distlock: renewed"),
            Event::RenewalFailed { key, error } => {
                tracing::warn!(key, %error, "distlock: renewal failed; retrying until the deadline");
            }
            Event::Lost { key, token, reason } => {
                bump(&self.lost);
                tracing::warn!(key, token, %reason, "distlock: lock lost");
            }
            Event::Released { key, token } => {
                bump(&self.released);
                tracing::trace!(key, token, "distlock: released");
            }
            Event::CleanedUp { key } => {
                tracing::debug!(
                    key,
                    "distlock: removed a record left by a cancelled operation"
                );
            }
            Event::SessionLost { lease, reason } => {
                tracing::warn!(lease = lease.0, %reason, "distlock: lease session lost");
            }
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
