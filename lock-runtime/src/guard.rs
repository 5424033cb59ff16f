//! [`LockGuard`]: proof of holding a lock; and the locked-body core shared by
//! [`crate::LockClient::with_lock`] and `#[distributed_lock]`.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::current::{CURRENT, Current};
use crate::error::{LockError, LostReason};
use crate::lock::{ClientHandle, Lock, LostSignal, lost_error};
use crate::options::OnLost;

/// A held lock. Release it with [`LockGuard::release`]; if it is dropped
/// instead (cancellation, panic, early return), it is released in the
/// background within one round trip.
///
/// While held, the client renews it every ttl/3. Watch [`LockGuard::lost`] (or
/// check [`LockGuard::is_lost`]) and fence every write with
/// [`LockGuard::token`]: a lock can be lost (a pause or partition longer than
/// the ttl), and only a resource that rejects stale tokens is safe then.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct LockGuard {
    client: Arc<ClientHandle>,
    lock: Arc<Lock>,
    open: bool,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.lock.key)
            .field("token", &self.lock.token())
            .field("lost", &self.lock.lost_reason())
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    pub(crate) fn new(client: Arc<ClientHandle>, lock: Arc<Lock>) -> Self {
        LockGuard {
            client,
            lock,
            open: true,
        }
    }

    /// The lock key.
    pub fn key(&self) -> &str {
        &self.lock.key
    }

    /// The fencing token: the store index of the acquiring write. Tokens of
    /// successive holders of a key strictly increase, so a resource that
    /// remembers the highest token it has seen can reject a stale holder.
    pub fn token(&self) -> u64 {
        self.lock.token()
    }

    /// Whether the lock has been lost. True as soon as the lock's local
    /// deadline has passed, before any other client can take it over.
    pub fn is_lost(&self) -> bool {
        self.lock.is_lost()
    }

    /// How long the lock is held at most from now if no renewal succeeds: the
    /// time left until its local deadline (the deadline rule: before anyone
    /// else can take it over). `None` once it is lost or released.
    ///
    /// A supervisor can hand this to a watchdog that stops the work when the
    /// time is up, should this process be paused (`distlock run` does).
    pub fn valid_for(&self) -> Option<Duration> {
        if self.lock.is_lost() || !self.lock.is_holding() {
            return None;
        }
        let deadline = self.client.0.clock.real(self.lock.effective_deadline());
        Some(deadline.saturating_duration_since(tokio::time::Instant::now()))
    }

    /// Completes when the lock is lost; pending forever while it is held.
    pub async fn lost(&self) -> LostReason {
        self.lock.lost().await
    }

    /// A cloneable handle on the lost signal, to hand to other tasks.
    pub fn lost_signal(&self) -> LostSignal {
        LostSignal {
            lock: Arc::clone(&self.lock),
        }
    }

    /// Releases the lock (delete if our index is still there).
    ///
    /// With `hold_at_least`, a release before that time returns at once and the
    /// lock is deleted when the time is reached (kept renewed until then).
    /// Returns [`LockError::Lost`] if the lock had already been lost or taken
    /// over: then nothing of someone else's is deleted. Cancel-safe: dropping
    /// this future leaves the release to the client's background task. A
    /// backend that answers "unavailable" is retried here for a short while (a
    /// tenth of the ttl, within 50 ms and 2 s, and never past the lock's
    /// deadline); after that the release returns [`LockError::Unavailable`]
    /// and the background task retries until the record is gone or not ours.
    /// A delete that got no answer may have applied: if the key then holds
    /// someone else's record, they acquired the freed key, and the release
    /// counts as done (`Ok`), not as a takeover.
    pub async fn release(mut self) -> Result<(), LockError> {
        self.open = false;
        self.client.0.release(&self.lock).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.open {
            self.client.0.dropped(&self.lock);
        }
    }
}

/// Runs `body` under `guard` (the core of [`crate::LockClient::with_lock`] and of
/// `#[distributed_lock]`): inside a task-local [`crate::current`] scope, raced
/// against the lost signal when `on_lost` is [`OnLost::Cancel`], then released.
///
/// The body is polled first and the lost waiter registered only while the
/// body is pending, so a body that completes at once pays one check for the
/// race; a lock already lost is seen before every poll of the body.
pub(crate) async fn run_locked<F: Future>(
    guard: LockGuard,
    on_lost: OnLost,
    body: F,
) -> Result<F::Output, LockError> {
    let current = Current {
        signal: guard.lost_signal(),
    };
    let body = CURRENT.scope(current, body);
    let outcome = match on_lost {
        OnLost::Continue => Ok(body.await),
        OnLost::Cancel => {
            let mut lost = pin!(guard.lost());
            let mut body = pin!(body);
            poll_fn(|cx| {
                if guard.is_lost()
                    && let Poll::Ready(reason) = lost.as_mut().poll(cx)
                {
                    return Poll::Ready(Err(reason));
                }
                if let Poll::Ready(output) = body.as_mut().poll(cx) {
                    return Poll::Ready(Ok(output));
                }
                lost.as_mut().poll(cx).map(Err)
            })
            .await
        }
    };
    match outcome {
        Ok(output) => {
            let key = Arc::clone(&guard.lock.key);
            if let Err(error) = guard.release().await {
                tracing::warn!(key = %key, %error, "distlock: the body finished but the release failed");
            }
            Ok(output)
        }
        Err(reason) => {
            let error = lost_error(&guard.lock, reason);
            drop(guard);
            Err(error)
        }
    }
}
