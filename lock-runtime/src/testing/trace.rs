//! [`Trace`]: a compact, deterministic event log of a simulation.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::LeaseId;

/// Who made a write recorded in [`SimStore::write_at`](super::SimStore::write_at).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Writer {
    /// A client request (through [`CompareExchange`](crate::store::CompareExchange) or a
    /// [`super::SimNet`] handle).
    Client,
    /// An operator action ([`SimStore::force_delete`](super::SimStore::force_delete),
    /// [`SimStore::force_overwrite`](super::SimStore::force_overwrite)).
    Operator,
    /// The server itself: a lease expired or was revoked and took the key along.
    Lease,
}

/// A request a client sent through a [`super::SimNet`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// `get(key)`.
    Get {
        /// The key.
        key: Arc<str>,
    },
    /// `put(key, record, expect, lease)`; the record by its nonce.
    Put {
        /// The key.
        key: Arc<str>,
        /// The condition: the expected index, `None` for [`Expect::Absent`](crate::store::Expect::Absent).
        expect: Option<u64>,
        /// The record's nonce (with the client's owner, the acquisition).
        nonce: u64,
        /// The record's ttl in milliseconds.
        ttl_ms: u64,
        /// The lease the put attaches the key to.
        lease: Option<LeaseId>,
    },
    /// `delete(key, index)`.
    Delete {
        /// The key.
        key: Arc<str>,
        /// The expected index.
        index: u64,
    },
    /// `watch(key, seen)`.
    Watch {
        /// The key.
        key: Arc<str>,
        /// The index the caller saw (`None`: absent).
        seen: Option<u64>,
    },
    /// `grant_lease(ttl)`.
    Grant {
        /// The requested ttl.
        ttl: Duration,
    },
    /// `keep_alive(lease)`.
    KeepAlive {
        /// The lease.
        lease: LeaseId,
    },
    /// `revoke_lease(lease)`.
    Revoke {
        /// The lease.
        lease: LeaseId,
    },
}

/// What the server did with a request, in short.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A read found this index (`None`: absent).
    Read(Option<u64>),
    /// A put was applied with this index.
    Swapped(u64),
    /// A conditional write conflicted; the key holds this index (`None`: absent).
    Conflict(Option<u64>),
    /// A delete was applied.
    Deleted,
    /// A lease was granted.
    Granted(LeaseId),
    /// A keep-alive renewed the lease (`false`: the lease was gone).
    KeptAlive(bool),
    /// A lease was revoked (or was already gone).
    Revoked,
    /// A watch saw the key change.
    Changed,
    /// The server refused the request with an error.
    Error(&'static str),
}

/// Why a request's answer did not reach the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fate {
    /// The request was lost on the way (never applied).
    RequestLost,
    /// The request was applied, the answer lost.
    AnswerLost,
    /// The request was applied after the caller had timed out.
    Late,
    /// The client was partitioned when the request or its answer travelled.
    Partitioned,
    /// A pause held the request or the answer past the caller's timeout.
    Paused,
    /// The caller dropped the call before an answer or its timeout (the
    /// request, once sent, still travels and may be applied).
    Dropped,
}

/// One event of a simulation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A client sent a request.
    Sent {
        /// Client number.
        client: u32,
        /// Request number (unique within the network).
        req: u64,
        /// The request.
        request: Request,
    },
    /// The server applied a request.
    Applied {
        /// Client number.
        client: u32,
        /// Request number.
        req: u64,
        /// What it did.
        outcome: Outcome,
    },
    /// The caller got the answer.
    Answered {
        /// Client number.
        client: u32,
        /// Request number.
        req: u64,
    },
    /// The caller got `Unavailable` (its timeout, or a broken watch), or
    /// dropped the call ([`Fate::Dropped`]).
    Failed {
        /// Client number.
        client: u32,
        /// Request number.
        req: u64,
        /// What happened to it.
        fate: Fate,
    },
    /// A client's link is partitioned or paused from now for `len`.
    Fault {
        /// Client number.
        client: u32,
        /// `"partition"` or `"pause"`.
        kind: &'static str,
        /// How long.
        len: Duration,
    },
    /// Faults were switched off.
    Healed,
    /// The store stored a record.
    Stored {
        /// The key.
        key: Arc<str>,
        /// The new index.
        index: u64,
        /// The record's owner.
        owner: Arc<str>,
        /// The record's nonce.
        nonce: u64,
        /// The lease attached.
        lease: Option<LeaseId>,
        /// Who wrote it.
        writer: Writer,
        /// Created a missing key under `Expect::Index` (RavenDB 4.1).
        quirk: bool,
    },
    /// The store removed a key.
    Removed {
        /// The key.
        key: Arc<str>,
        /// The index of the removal.
        index: u64,
        /// The index the key had.
        was: u64,
        /// Who removed it.
        writer: Writer,
    },
    /// A lease was granted.
    LeaseGranted {
        /// The lease.
        lease: LeaseId,
        /// Its ttl in whole seconds.
        secs: u64,
    },
    /// A lease ended (`"expired"` or `"revoked"`) with this many keys.
    LeaseEnded {
        /// The lease.
        lease: LeaseId,
        /// `"expired"` or `"revoked"`.
        why: &'static str,
        /// How many keys it took along.
        keys: usize,
    },
    /// Free text from the driver.
    Note(String),
}

fn expect(e: &Option<u64>) -> String {
    match e {
        None => "absent".into(),
        Some(i) => format!("@{i}"),
    }
}

fn lease(l: &Option<LeaseId>) -> String {
    l.map_or(String::new(), |l| format!(" lease {}", l.0))
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Get { key } => write!(f, "get {key}"),
            Request::Put {
                key,
                expect: e,
                nonce,
                ttl_ms,
                lease: l,
            } => write!(
                f,
                "put {key} if {} (nonce {nonce}, ttl {ttl_ms}ms{})",
                expect(e),
                lease(l)
            ),
            Request::Delete { key, index } => write!(f, "delete {key} if @{index}"),
            Request::Watch { key, seen } => write!(f, "watch {key} from {seen:?}"),
            Request::Grant { ttl } => write!(f, "grant lease {ttl:?}"),
            Request::KeepAlive { lease: l } => write!(f, "keep-alive lease {}", l.0),
            Request::Revoke { lease: l } => write!(f, "revoke lease {}", l.0),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Sent {
                client,
                req,
                request,
            } => write!(f, "c{client} #{req} send {request}"),
            Event::Applied {
                client,
                req,
                outcome,
            } => write!(f, "c{client} #{req}   applied: {outcome:?}"),
            Event::Answered { client, req } => write!(f, "c{client} #{req}   answered"),
            Event::Failed {
                client,
                req,
                fate: Fate::Dropped,
            } => write!(f, "c{client} #{req}   dropped by the caller"),
            Event::Failed { client, req, fate } => {
                write!(f, "c{client} #{req}   FAILED (Unavailable): {fate:?}")
            }
            Event::Fault { client, kind, len } => write!(f, "c{client} ** {kind} for {len:?}"),
            Event::Healed => write!(f, "** faults off (heal_all)"),
            Event::Stored {
                key,
                index,
                owner,
                nonce,
                lease: l,
                writer,
                quirk,
            } => write!(
                f,
                "   store: {key} = {owner}/{nonce} @{index}{}{}{}",
                lease(l),
                if *writer == Writer::Client {
                    ""
                } else {
                    " BY OPERATOR"
                },
                if *quirk {
                    " (created by Expect::Index: 4.1 quirk)"
                } else {
                    ""
                }
            ),
            Event::Removed {
                key,
                index,
                was,
                writer,
            } => write!(
                f,
                "   store: {key} removed (was @{was}) @{index} by {writer:?}"
            ),
            Event::LeaseGranted { lease: l, secs } => {
                write!(f, "   store: lease {} granted ({secs}s)", l.0)
            }
            Event::LeaseEnded {
                lease: l,
                why,
                keys,
            } => write!(f, "   store: lease {} {why}, {keys} key(s) deleted", l.0),
            Event::Note(text) => f.write_str(text),
        }
    }
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    enabled: bool,
    events: Vec<(Duration, Event)>,
}

/// A shared, append-only event log with times relative to its creation (on
/// Tokio's clock). Cheap to clone; clones share the log. A disabled trace
/// records nothing.
#[derive(Clone, Debug)]
pub struct Trace {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace::new()
    }
}

impl Trace {
    /// A recording trace starting now.
    pub fn new() -> Trace {
        Trace::build(true)
    }

    /// A trace that records nothing.
    pub fn disabled() -> Trace {
        Trace::build(false)
    }

    fn build(enabled: bool) -> Trace {
        Trace {
            inner: Arc::new(Mutex::new(Inner {
                start: Instant::now(),
                enabled,
                events: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this trace records.
    pub fn is_enabled(&self) -> bool {
        self.lock().enabled
    }

    /// The time since the trace started.
    pub fn elapsed(&self) -> Duration {
        let start = self.lock().start;
        Instant::now().saturating_duration_since(start)
    }

    /// The trace's start, on Tokio's clock.
    pub fn start(&self) -> Instant {
        self.lock().start
    }

    /// Appends an event stamped with the current time.
    pub fn push(&self, event: Event) {
        let mut inner = self.lock();
        if inner.enabled {
            let at = Instant::now().saturating_duration_since(inner.start);
            inner.events.push((at, event));
        }
    }

    /// Appends a free-text note.
    pub fn note(&self, text: impl FnOnce() -> String) {
        if self.is_enabled() {
            self.push(Event::Note(text()));
        }
    }

    /// How many events were recorded.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the events.
    pub fn events(&self) -> Vec<(Duration, Event)> {
        self.lock().events.clone()
    }

    /// A hash of every event and its time: equal for two runs of the same
    /// seed if the simulation is deterministic.
    pub fn digest(&self) -> u64 {
        let inner = self.lock();
        let mut hasher = Fnv(0xcbf2_9ce4_8422_2325);
        inner.events.hash(&mut hasher);
        hasher.finish()
    }

    /// The events rendered one per line (`   12.345s  c0 #7 send ...`),
    /// keeping only those for which `keep` is true.
    pub fn render(&self, mut keep: impl FnMut(&Event) -> bool) -> Vec<String> {
        self.lock()
            .events
            .iter()
            .filter(|(_, e)| keep(e))
            .map(|(at, e)| format!("{:>9.3}s  {e}", at.as_secs_f64()))
            .collect()
    }
}

/// FNV-1a: a fixed, dependency-free hash (std's `DefaultHasher` may change
/// between Rust releases).
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
