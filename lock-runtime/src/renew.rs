//! The client's renewer: one task per client for all its held locks.
//!
//! Every ttl/3 a held lock is renewed by `put(Expect::Index(current))`. A
//! conflict means another holder took it over; no successful renewal before
//! the local deadline (last successful send + ttl − margin) means it may be
//! taken over soon: either way the lost signal fires first. Locks on a
//! lease-capable store are renewed by their session instead; the renewer only
//! runs their scheduled releases. Locks released inside `hold_at_least` stay
//! here, renewed, until their release time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout_at};

use crate::client::Shared;
use crate::error::LostReason;
use crate::held::{Held, safety_margin};
use crate::store::{Expect, PutOutcome};

enum Due {
    Renew(Arc<Held>),
    Release(Arc<Held>),
}

pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut expired = Vec::new();
        let next = {
            let mut registry = shared.registry();
            if registry.held.is_empty() && shared.is_closed() {
                registry.renewer_running = false;
                registry.wake_at = None;
                return;
            }
            let mut next: Option<Instant> = None;
            let mut earliest = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
            for held in registry.held.values() {
                let mut timing = held.timing();
                if let Some(at) = timing.release_at {
                    if at <= now {
                        timing.release_at = None;
                        due.push(Due::Release(Arc::clone(held)));
                        continue;
                    }
                    earliest(at);
                }
                let releasing =
                    held.releasing.load(Ordering::Acquire) && timing.release_at.is_none();
                if releasing || held.lost_reason().is_some() {
                    continue;
                }
                let session_renewed = held.renew && held.session.is_some();
                if session_renewed {
                    continue;
                }
                if timing.deadline <= now {
                    expired.push(Arc::clone(held));
                    continue;
                }
                earliest(timing.deadline);
                if held.renew && !timing.in_flight {
                    if timing.next_renew <= now {
                        timing.in_flight = true;
                        due.push(Due::Renew(Arc::clone(held)));
                    } else {
                        earliest(timing.next_renew);
                    }
                }
            }
            registry.wake_at = next;
            next
        };
        for held in expired {
            let reason = if held.renew {
                LostReason::RenewalTimedOut
            } else {
                LostReason::TtlElapsed
            };
            shared.mark_lost(&held, reason);
        }
        for item in due {
            let shared = Arc::clone(&shared);
            match item {
                Due::Renew(held) => {
                    tokio::spawn(renew_once(shared, held));
                }
                Due::Release(held) => {
                    tokio::spawn(async move {
                        let _ = crate::guard::release_now(&shared, &held).await;
                    });
                }
            }
        }
        let wake = shared.renewer_wake.notified();
        match next {
            Some(at) => {
                tokio::select! {
                    () = sleep_until(at) => {}
                    () = wake => {}
                }
            }
            None => wake.await,
        }
    }
}

async fn renew_once(shared: Arc<Shared>, held: Arc<Held>) {
    let deadline = held.timing().deadline;
    let sent = Instant::now();
    let expected = held.index();
    let outcome = timeout_at(
        deadline,
        shared
            .store()
            .put(&held.key, &held.record, Expect::Index(expected), None),
    )
    .await;
    let ttl = held.record.ttl();
    let retry_after = (ttl / 20).max(Duration::from_millis(5));
    match outcome {
        Ok(Ok(PutOutcome::Swapped { index })) => {
            held.index.store(index, Ordering::Release);
            let mut timing = held.timing();
            timing.in_flight = false;
            timing.deadline = sent + ttl.saturating_sub(safety_margin(ttl));
            timing.next_renew = sent + ttl / 3;
        }
        Ok(Ok(PutOutcome::Conflict { current })) => {
            // Our write may have committed with the answer lost on an earlier
            // attempt; the record then carries our nonce.
            match current {
                Some(entry) if entry.record.same_acquisition(&held.record) => {
                    held.index.store(entry.index, Ordering::Release);
                    let mut timing = held.timing();
                    timing.in_flight = false;
                    timing.next_renew = Instant::now();
                }
                _ => {
                    held.timing().in_flight = false;
                    shared.mark_lost(&held, LostReason::TakenOver);
                }
            }
        }
        Ok(Err(error)) => {
            tracing::warn!(key = %held.key, %error, "distlock: renewal failed; retrying until the deadline");
            let mut timing = held.timing();
            timing.in_flight = false;
            timing.next_renew = Instant::now() + retry_after;
        }
        Err(_elapsed) => {
            held.timing().in_flight = false;
            shared.mark_lost(&held, LostReason::RenewalTimedOut);
        }
    }
    shared.renewer_wake.notify_one();
}
