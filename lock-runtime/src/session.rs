//! Server-lease sessions (stores with [`crate::store::Capabilities::leases`]).
//!
//! One lease per (client, ttl) is kept alive by one task, however many locks
//! are attached to it, so renewal traffic does not grow with the number of
//! held locks (etcd's `concurrency.Session`). If the server reports the lease
//! gone, or no keep-alive succeeds before the local deadline, every lock of the
//! session is marked lost before the server could hand it to someone else.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout_at};

use crate::client::Shared;
use crate::error::LostReason;
use crate::held::safety_margin;
use crate::store::{LeaseId, StoreError};

#[derive(Debug)]
pub(crate) struct Session {
    pub lease: LeaseId,
    pub ttl: Duration,
    /// Send time of the last successful grant or keep-alive, plus ttl minus margin.
    deadline: Mutex<Instant>,
    lost: OnceLock<LostReason>,
}

impl Session {
    pub fn is_lost(&self) -> bool {
        self.lost.get().is_some()
    }

    fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn renewed(&self, sent: Instant) {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner) =
            sent + self.ttl.saturating_sub(safety_margin(self.ttl));
    }

    /// Grants a lease and starts its keep-alive task.
    pub async fn start(
        shared: &Arc<Shared>,
        ttl: Duration,
        keep_alive: bool,
    ) -> Result<Arc<Session>, StoreError> {
        let sent = Instant::now();
        let lease = shared.store().grant_lease(ttl).await?;
        let session = Arc::new(Session {
            lease,
            ttl,
            deadline: Mutex::new(sent + ttl.saturating_sub(safety_margin(ttl))),
            lost: OnceLock::new(),
        });
        if keep_alive {
            tokio::spawn(keep_alive_loop(Arc::clone(shared), Arc::clone(&session)));
        }
        Ok(session)
    }
}

async fn keep_alive_loop(shared: Arc<Shared>, session: Arc<Session>) {
    let interval = session.ttl / 3;
    let retry = (session.ttl / 20).max(Duration::from_millis(5));
    let mut next = Instant::now() + interval;
    // Once the client is closed, keep the lease alive only while locks still
    // use it (releases scheduled by `hold_at_least`), then revoke it.
    let mut closing = false;
    let reason = loop {
        if closing && !shared.session_in_use(&session) {
            // Best effort: free the keys now rather than after the ttl.
            let _ =
                tokio::time::timeout(session.ttl, shared.store().revoke_lease(session.lease)).await;
            return;
        }
        tokio::select! {
            () = sleep_until(next) => {}
            () = shared.closed(), if !closing => {
                closing = true;
                continue;
            }
        }
        let deadline = session.deadline();
        let sent = Instant::now();
        if sent >= deadline {
            break LostReason::RenewalTimedOut;
        }
        match timeout_at(deadline, shared.store().keep_alive(session.lease)).await {
            Ok(Ok(Some(_))) => {
                session.renewed(sent);
                next = sent + interval;
            }
            Ok(Ok(None)) | Ok(Err(StoreError::LeaseGone(_))) => break LostReason::LeaseExpired,
            Ok(Err(error)) => {
                tracing::warn!(lease = session.lease.0, %error, "distlock: lease keep-alive failed; retrying");
                next = Instant::now() + retry;
            }
            Err(_) => break LostReason::RenewalTimedOut,
        }
    };
    shared.session_lost(&session, reason);
}

impl Session {
    pub(crate) fn set_lost(&self, reason: LostReason) -> bool {
        self.lost.set(reason).is_ok()
    }
}
