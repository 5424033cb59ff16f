//! The one error type of the lock API.

use std::time::Duration;

use crate::store::{BoxError, StoreError};

/// Everything that can go wrong when taking, holding or releasing a lock.
///
/// Contention is not an error unless you asked for it to be: [`LockError::Busy`]
/// comes only from try-once modes and [`LockError::Timeout`] only when the
/// `wait` you chose ran out. Every message names the key and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Waited the whole `wait` for the lock and another holder kept it.
    #[error(
        "timed out after {waited:?} waiting for lock `{key}` (held by {holder}); \
         raise `wait`, or make the holder finish sooner"
    )]
    Timeout {
        /// The lock key.
        key: String,
        /// How long we waited.
        waited: Duration,
        /// The last holder seen (`owner` of its record).
        holder: String,
    },
    /// The lock is held and the caller asked not to wait.
    #[error("lock `{key}` is held by {holder}; retry later, or wait for it")]
    Busy {
        /// The lock key.
        key: String,
        /// The holder's identity (`uuid@host:pid`).
        holder: String,
    },
    /// The lock was lost while held: a renewal conflicted (someone took it over)
    /// or did not succeed in time (pause, partition, backend down).
    #[error(
        "lost lock `{key}` (fencing token {token}): {reason}; another holder may run now, \
         so writes fenced with this token must be rejected"
    )]
    Lost {
        /// The lock key.
        key: String,
        /// The fencing token the lost lock had.
        token: u64,
        /// Why it was lost.
        reason: LostReason,
    },
    /// The backend could not be reached or did not answer in time.
    #[error(
        "the {backend} backend is unreachable (while working on lock `{key}`): {source}; \
         check that the server runs and the endpoints are right"
    )]
    Unavailable {
        /// Backend name (`memory`, `etcd`, `ravendb`).
        backend: &'static str,
        /// The lock key being worked on.
        key: String,
        /// The underlying failure.
        #[source]
        source: StoreError,
    },
    /// The backend answered with an error or an answer that cannot be used.
    #[error("the {backend} backend failed on lock `{key}`: {source}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// The lock key being worked on.
        key: String,
        /// The underlying failure.
        #[source]
        source: StoreError,
    },
    /// The key cannot be used as a lock key.
    #[error("invalid lock key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key (possibly truncated to 64 characters).
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The client or the options are misconfigured.
    #[error("invalid lock configuration: {message}")]
    Config {
        /// What is wrong and how to fix it.
        message: String,
        /// The underlying cause, if any.
        #[source]
        source: Option<BoxError>,
    },
}

/// Why a held lock was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LostReason {
    /// A renewal or release found another index at the key: someone took it over
    /// (or it was deleted).
    #[error("another holder took it over")]
    TakenOver,
    /// No renewal succeeded before the local deadline (ttl minus a safety margin).
    #[error("no renewal succeeded within the ttl")]
    RenewalTimedOut,
    /// The server lease the lock was attached to expired or was revoked.
    #[error("its server lease expired")]
    LeaseExpired,
    /// Renewal was disabled and the ttl ran out while the lock was held.
    #[error("the ttl ran out and renewal is disabled")]
    TtlElapsed,
}

impl LockError {
    pub(crate) fn from_store(backend: &'static str, key: &str, source: StoreError) -> Self {
        let key = key.to_owned();
        if source.is_transient() {
            LockError::Unavailable {
                backend,
                key,
                source,
            }
        } else {
            LockError::Backend {
                backend,
                key,
                source,
            }
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        LockError::Config {
            message: message.into(),
            source: None,
        }
    }

    /// The lock key this error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            LockError::Timeout { key, .. }
            | LockError::Busy { key, .. }
            | LockError::Lost { key, .. }
            | LockError::Unavailable { key, .. }
            | LockError::Backend { key, .. }
            | LockError::InvalidKey { key, .. } => Some(key),
            LockError::Config { .. } => None,
        }
    }

    /// Whether the backend could not be reached (retrying later may work).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, LockError::Unavailable { .. })
    }

    /// Whether the lock was simply held by someone else (`Busy` or `Timeout`).
    pub fn is_contention(&self) -> bool {
        matches!(self, LockError::Busy { .. } | LockError::Timeout { .. })
    }
}
