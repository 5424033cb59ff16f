//! [`LockGuard`]: proof of holding a lock, and its release paths.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use tokio::time::Instant;

use crate::client::{LockClient, Shared};
use crate::current::{CURRENT, Current};
use crate::error::{LockError, LostReason};
use crate::held::{Held, LostSignal};
use crate::options::OnLost;
use crate::store::DeleteOutcome;

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
    client: LockClient,
    held: Arc<Held>,
    open: bool,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.held.key)
            .field("token", &self.held.token)
            .field("lost", &self.held.lost_reason())
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    pub(crate) fn new(client: LockClient, held: Arc<Held>) -> Self {
        LockGuard {
            client,
            held,
            open: true,
        }
    }

    /// The lock key.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The fencing token: the store index of the acquiring write. Tokens of
    /// successive holders of a key strictly increase, so a resource that
    /// remembers the highest token it has seen can reject a stale holder.
    pub fn token(&self) -> u64 {
        self.held.token
    }

    /// Whether the lock has been lost.
    pub fn is_lost(&self) -> bool {
        self.held.lost_reason().is_some()
    }

    /// Completes when the lock is lost; pending forever while it is held.
    pub async fn lost(&self) -> LostReason {
        self.held.lost().await
    }

    /// A cloneable handle on the lost signal, to hand to other tasks.
    pub fn lost_signal(&self) -> LostSignal {
        LostSignal {
            held: Arc::clone(&self.held),
        }
    }

    /// Releases the lock (delete if our index is still there).
    ///
    /// With `hold_at_least`, a release before that time returns at once and the
    /// lock is deleted when the time is reached (kept renewed until then).
    /// Returns [`LockError::Lost`] if the lock had already been lost or taken
    /// over: then nothing is deleted, since it may be someone else's now.
    pub async fn release(mut self) -> Result<(), LockError> {
        self.open = false;
        let shared = Arc::clone(self.client.shared());
        if schedule_hold(&shared, &self.held) {
            return Ok(());
        }
        release_now(&shared, &self.held).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let shared = Arc::clone(self.client.shared());
        if schedule_hold(&shared, &self.held) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let held = Arc::clone(&self.held);
                runtime.spawn(async move {
                    if let Err(error) = release_now(&shared, &held).await {
                        tracing::debug!(%error, "distlock: background release of a dropped guard failed");
                    }
                });
            }
            Err(_) => {
                shared.registry().held.remove(&self.held.id);
                tracing::warn!(
                    key = %self.held.key,
                    "distlock: lock guard dropped outside a Tokio runtime; \
                     the lock is freed when its ttl runs out"
                );
            }
        }
    }
}

/// Runs `body` under `guard` (the core of [`LockClient::with_lock`] and of
/// `#[distributed_lock]`): inside a task-local [`crate::current`] scope, raced
/// against the lost signal when `on_lost` is [`OnLost::Cancel`], then released.
///
/// The body is polled first and the lost waiter registered only while the
/// body is pending, so a body that completes at once pays one atomic load for
/// the race; a lock already lost is seen before every poll of the body.
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
            let key = guard.held.key.clone();
            if let Err(error) = guard.release().await {
                tracing::warn!(key = %key, %error, "distlock: the body finished but the release failed");
            }
            Ok(output)
        }
        Err(reason) => Err(lost(&guard.held, reason)),
    }
}

/// If `hold_at_least` has not passed yet, hands the release to the renewer.
fn schedule_hold(shared: &Arc<Shared>, held: &Arc<Held>) -> bool {
    held.releasing.store(true, Ordering::Release);
    let Some(hold) = held.hold_at_least else {
        return false;
    };
    let release_at = held.acquired_at + hold;
    if release_at <= Instant::now() || held.lost_reason().is_some() {
        return false;
    }
    held.timing().release_at = Some(release_at);
    shared.wake_renewer_by(shared.registry(), release_at);
    true
}

/// Deletes the lock if it still holds one of our indexes.
pub(crate) async fn release_now(shared: &Arc<Shared>, held: &Arc<Held>) -> Result<(), LockError> {
    held.releasing.store(true, Ordering::Release);
    shared.registry().held.remove(&held.id);
    let result = delete_ours(shared, held).await;
    if result.is_ok() {
        shared.stats.released.fetch_add(1, Ordering::Relaxed);
    }
    result
}

async fn delete_ours(shared: &Arc<Shared>, held: &Held) -> Result<(), LockError> {
    if let Some(reason) = held.lost_reason() {
        return Err(lost(held, reason));
    }
    let mut index = held.index();
    // A renewal racing with the release may have moved our index: follow it
    // while the record is still ours (bounded: renewals stop once releasing).
    for _ in 0..4 {
        match shared.store().delete(&held.key, index).await {
            Ok(DeleteOutcome::Deleted) => return Ok(()),
            Ok(DeleteOutcome::Conflict {
                current: Some(entry),
            }) if entry.record.same_acquisition(&held.record) => index = entry.index,
            Ok(DeleteOutcome::Conflict { .. }) => {
                shared.mark_lost(held, LostReason::TakenOver);
                return Err(lost(held, LostReason::TakenOver));
            }
            Err(error) if error.is_transient() => {
                // The delete may have been applied: read back.
                match shared.store().get(&held.key).await {
                    Ok(Some(entry)) if entry.record.same_acquisition(&held.record) => {
                        index = entry.index;
                    }
                    Ok(_) => return Ok(()),
                    Err(_) => return Err(shared.store_error(&held.key, error)),
                }
            }
            Err(error) => return Err(shared.store_error(&held.key, error)),
        }
    }
    Err(shared.store_error(
        &held.key,
        crate::store::StoreError::Backend {
            endpoint: shared.backend.to_owned(),
            source: "the lock record kept changing while it was being released".into(),
        },
    ))
}

fn lost(held: &Held, reason: LostReason) -> LockError {
    LockError::Lost {
        key: held.key.to_string(),
        token: held.token,
        reason,
    }
}
