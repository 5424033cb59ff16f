//! The task-local view of the lock an annotated body runs under.

use crate::error::LostReason;
use crate::lock::LostSignal;

tokio::task_local! {
    pub(crate) static CURRENT: Current;
}

/// The lock the current task runs under (inside [`crate::LockClient::with_lock`]
/// or a `#[distributed_lock]` fn).
#[derive(Clone, Debug)]
pub struct Current {
    pub(crate) signal: LostSignal,
}

impl Current {
    /// The lock key.
    pub fn key(&self) -> &str {
        self.signal.key()
    }

    /// The fencing token: pass it with every write to the protected resource.
    pub fn token(&self) -> u64 {
        self.signal.token()
    }

    /// Whether the lock has been lost (relevant with `on_lost = continue`).
    pub fn is_lost(&self) -> bool {
        self.signal.is_lost()
    }

    /// Completes when the lock is lost.
    pub async fn lost(&self) -> LostReason {
        self.signal.lost().await
    }

    /// A cloneable lost signal to hand to spawned tasks.
    pub fn lost_signal(&self) -> LostSignal {
        self.signal.clone()
    }
}

/// The lock the current task runs under, or `None` outside a locked body.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let client = distlock::LockClient::memory();
/// let token = client
///     .with_lock("jobs/report", &Default::default(), async {
///         distlock::current().map(|lock| lock.token())
///     })
///     .await
///     .unwrap();
/// assert!(token.is_some());
/// assert!(distlock::current().is_none());
/// # });
/// ```
pub fn current() -> Option<Current> {
    CURRENT.try_with(Clone::clone).ok()
}
