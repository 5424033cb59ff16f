//! A model of the distlock lock protocol, checked exhaustively with
//! [`stateright`].
//!
//! This crate is not the engine: it is a small, abstract re-statement of the
//! protocol of `lock-runtime` (acquire, read-back of ambiguous writes,
//! renewal, loss, release, takeover by observation, server leases) and of the
//! rules of `DESIGN.md` section 8, written so that a breadth-first search can
//! visit *every* interleaving of a few clients, faults and clock rates within
//! a time bound. The tests in `model/tests/protocol.rs` check the protocol on
//! both kinds of store and show that small changes to it ([`Mutation`], most
//! of them what the engine does today) produce counterexamples.
//!
//! # What is modelled
//!
//! * **Time** is discrete. [`Action::Tick`] advances global time by one.
//!   Every client has its own monotonic clock, advanced by the tick according
//!   to its [`Rate`]: a normal clock by 1 on every tick, a slow one by 0 and a
//!   fast one by 2 on every [`Config::drift_period`]-th tick (rates
//!   `1 - 1/p`, `1`, `1 + 1/p`). Rates are fixed per client
//!   ([`Config::rates`], by default slow, fast, normal): that puts the worst
//!   pair, a slow holder watched by a fast waiter, in every run without
//!   multiplying the state space. Clocks are never compared between clients;
//!   every timer and deadline of a client is on its own clock. Time stops at
//!   [`Config::horizon`]. A tick happens only when no client has a due timer
//!   (timers are exact; being late is what a pause is for).
//! * **One key** in a **linearizable compare-exchange store**: put-if-absent,
//!   put-if-index, get, delete-if-index, and a global index counter bumped by
//!   every successful put (the fencing token of an acquisition is the index
//!   of its acquiring put). A record is `(owner, nonce, lease)`: the nonce
//!   names one acquisition of a client, so a client reading the key back
//!   knows whether an ambiguous write of *this* acquisition committed.
//! * **Two store variants** ([`Config::leases`]):
//!   * without leases (RavenDB, memory): a waiter takes a key over by
//!     `put-if-index(i)` only after it has seen the same index `i` unchanged
//!     for the ttl on its own clock; a holder renews by `put-if-index(own)`
//!     every `ttl/3`;
//!   * with leases (etcd): a client holds one lease, granted by a request and
//!     kept alive every `ttl/3`; the server (on global time) expires it at
//!     *last keep-alive arrival + ttl* and deletes the key attached to it;
//!     there is no takeover and no per-lock renewal.
//! * **The network.** A request is sent by a client step ([`Action::Lock`],
//!   [`Action::Session`]) that also picks its [`Fate`]. Normally the round
//!   trip is atomic: the store applies the request and the client handles the
//!   answer in the same step (a round trip takes no time; requests of
//!   different clients still reach the store in every order, because their
//!   steps interleave in every order). Every other fate is a *fault*, paid
//!   from a budget ([`Config::faults`]) per run:
//!   * the request is lost, or delayed;
//!   * the request is applied and its answer lost, or delayed;
//!
//!   Delayed messages wait in [`State::net`], a multiset, and may be
//!   delivered at any later moment, after others (reordering), or never. A
//!   delayed answer may also be duplicated ([`Action::Duplicate`], a fault).
//!   A client matches answers to its one outstanding request per channel, so
//!   a duplicate, or the answer to a request it gave up on, is ignored; a
//!   request it gave up on is still applied by the store when it arrives.
//! * **Pauses**: [`Action::Pause`] (a fault) stops a client (process stop,
//!   GC, blocked runtime) until [`Action::Resume`], which is free and may
//!   never come (so a pause is also a crash). Its clock keeps running.
//! * **Client protocol** (one acquisition per client by default,
//!   [`Config::cycles`]; clients start by [`Config::start_by`]):
//!   * acquire: `put-if-absent`; on a conflict, poll with `put-if-absent`
//!     every [`Config::poll`] ticks and (without leases) take over as above;
//!   * a request unanswered after [`Config::rto`] ticks times out. A
//!     timed-out put is *unresolved*: it may have committed, or may still be
//!     in flight and commit later. The client reads the key back; a record
//!     with its `(owner, nonce)` (and, with leases, its current lease) is its
//!     acquisition. A failed read-back waits [`Config::backoff`] and retries
//!     the put (as `acquire_with` does);
//!   * **deadline rule**: a lock obtained by a put's own answer counts from
//!     that put's send time; a lock found by reading back counts from the
//!     *earliest* send of any unresolved put of the acquisition; the holder's
//!     deadline is that time + ttl − [`Config::margin`]. On a lease store the
//!     deadline is the session's: send time of the grant or of the last
//!     successful keep-alive + ttl − margin;
//!   * renewal (no leases): `put-if-index(own)` every `ttl/3`; a success moves
//!     the deadline to its send time + ttl − margin; a conflict showing our
//!     record at another index (an earlier renewal committed with its answer
//!     lost) adopts that index and renews again; any other conflict is a loss;
//!     a timed-out renewal is retried at once;
//!   * a holder is *told lost* the moment its clock reaches the deadline (the
//!     renewer's timer; checked in the tick even when the client is paused,
//!     because what a paused body does after its deadline is the fencing
//!     token's job, not the lock's), on a conflicting renewal, and on a lease
//!     store when its session is lost;
//!   * **session rule** (leases): a session is lost when its deadline passes
//!     or the server says the lease is gone; the client then stops using it
//!     (no keep-alive, no write, no lock handed out on it) and grants a new one
//!     for its next write;
//!   * release is a state: `delete-if-index(own)`; on a conflict showing our
//!     record at another index delete that; on a timeout read back; on a
//!     failed read-back retry after the backoff; until the record is gone or
//!     not ours;
//!   * **ambiguous-lease rule** (leases, found with this model): a lease that
//!     carried a put that timed out is retired when that acquisition ends
//!     (the engine should revoke it), because that put may still be in flight
//!     and re-create the key after the release, attached to a lease the
//!     client would otherwise keep alive for as long as it runs.
//!
//! # What is abstracted away
//!
//! Record contents other than owner, nonce and lease; wall-clock timestamps
//! (never used for decisions); watches (a waiter on a lease store polls
//! instead, a superset of waking on a watch); store faults other than lost
//! or delayed messages (the store is linearizable by assumption and its clock
//! runs at the true rate); more than one key (so one lease per client serves
//! one lock); the lock body (a holder may release at any moment); backoff
//! growth and jitter; `hold_at_least`; lock-delay (0); transport-level
//! retransmission of requests.
//!
//! # Properties
//!
//! 1. **exclusion**: never two clients in [`Phase::Holding`] (holding and not
//!    yet told lost);
//! 2. **tokens increase**: each new holder's token is greater than the
//!    previous holder's;
//! 3. **no stuck lock** (lease store; a safety form): never a key attached to
//!    a lease that its owner keeps alive while the owner neither holds, nor
//!    acquires, nor releases that record, and no delete of it is in flight:
//!    no one could ever take it over.
//!    Without leases a key can always be taken over by observation, so the
//!    property is only checked on the lease store.
//!
//! With [`Config::track_events`] the state also records which interesting
//! [`Event`]s happened and the model adds `sometimes` properties for them,
//! which the tests use to show that the bounds reach every fault.

use std::fmt;

use stateright::{Model, Property};

/// How fast a client's clock runs compared with global time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rate {
    /// Stands still on every `drift_period`-th tick.
    Slow,
    /// Advances by one on every tick.
    Normal,
    /// Advances by two on every `drift_period`-th tick.
    Fast,
}

/// A deliberate change to the protocol, to show that the checker finds what
/// it breaks. `None` in [`Config::mutation`] is the protocol of DESIGN.md §8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// A lock found by reading back after a retry counts its deadline from
    /// the *latest* put's send instead of the earliest unresolved one (what
    /// `acquire_with` in `lock-runtime/src/client.rs` does today: `sent` is
    /// read afresh before every retry).
    DeadlineFromRetry,
    /// When a session is declared lost, an acquisition already under way
    /// keeps writing with its lease and is handed the lock on it (what the
    /// acquire loop does today: it keeps the `session` it started with until
    /// the server answers `LeaseGone`). Keep-alives stop, as in `session.rs`.
    LockOnLostLease,
    /// Release gives up when the read-back after an ambiguous delete fails
    /// (what `delete_ours` in `lock-runtime/src/guard.rs` does today).
    ReleaseGivesUp,
    /// A lease that carried a timed-out put is kept alive after the
    /// acquisition ends (what the engine does today: a session is cached and
    /// kept alive for the client's lifetime).
    KeepAmbiguousLease,
    /// A read-back accepts a record with our `(owner, nonce)` whatever lease
    /// it is attached to (what `Record::same_acquisition` does today). The
    /// engine does not reach this yet, because it replaces a session only
    /// when the server says `LeaseGone` (and the old lease's keys are gone
    /// with it); it becomes reachable once the session rule is followed (a
    /// fresh lease as soon as the old one is *declared* lost), so that fix
    /// needs this check too.
    ReadBackIgnoresLease,
}

/// The bounds and parameters of one model. Durations are in ticks of the
/// client's own clock, except [`Config::horizon`] and [`Config::start_by`]
/// (global time).
#[derive(Clone, Debug)]
pub struct Config {
    /// Server leases (etcd) instead of takeover by observation (RavenDB, memory).
    pub leases: bool,
    /// Number of clients.
    pub clients: u8,
    /// Acquisitions per client.
    pub cycles: u8,
    /// Global time bound: no tick after this.
    pub horizon: u8,
    /// Every client starts its first acquisition at or before this global time.
    pub start_by: u8,
    /// The lock's (and lease's) ttl.
    pub ttl: u8,
    /// The holder gives up this long before its ttl runs out.
    pub margin: u8,
    /// Renewal / keep-alive period (ttl/3).
    pub renew_every: u8,
    /// A request unanswered for this long times out.
    pub rto: u8,
    /// A waiter polls the key this often.
    pub poll: u8,
    /// Wait after a failed read-back.
    pub backoff: u8,
    /// One tick in this many is skipped by a slow clock and doubled by a fast one.
    pub drift_period: u8,
    /// Clock rate of each client (missing ones are normal).
    pub rates: Vec<Rate>,
    /// Faults per run (lost or delayed messages, duplicates, pauses together).
    pub faults: u8,
    /// Faults strike only before this global time (later the run is
    /// fault-free; delayed messages may still arrive late).
    pub fault_window: u8,
    /// How long each client's body runs (local ticks from acquiring) before
    /// it releases; `None`: until the lock is lost or time runs out. Missing
    /// clients release at once.
    pub bodies: Vec<Option<u8>>,
    /// Record [`Event`]s in the state and add `sometimes` properties for them.
    pub track_events: bool,
    /// A deliberate protocol change (`None`: the protocol of DESIGN.md §8).
    pub mutation: Option<Mutation>,
}

impl Config {
    /// The store without leases: takeover by observation.
    pub fn without_leases() -> Config {
        Config {
            leases: false,
            clients: 3,
            cycles: 1,
            horizon: 24,
            start_by: 0,
            ttl: 6,
            margin: 2,
            renew_every: 2,
            rto: 2,
            poll: 2,
            backoff: 1,
            drift_period: 5,
            rates: vec![Rate::Slow, Rate::Fast, Rate::Normal],
            faults: 2,
            fault_window: 8,
            bodies: vec![None, Some(0), Some(3)],
            track_events: false,
            mutation: None,
        }
    }

    /// The store with server leases.
    pub fn with_leases() -> Config {
        Config {
            leases: true,
            ..Config::without_leases()
        }
    }

    /// The same configuration with `mutation`.
    pub fn mutated(self, mutation: Mutation) -> Config {
        Config {
            mutation: Some(mutation),
            ..self
        }
    }

    /// The bounds in one line, for reports.
    pub fn summary(&self) -> String {
        let store = if self.leases { "leases" } else { "no leases" };
        let rates: Vec<String> = (0..usize::from(self.clients))
            .map(|c| format!("{:?}", self.rate(c)).to_lowercase())
            .collect();
        let bodies: Vec<String> = (0..usize::from(self.clients))
            .map(|c| {
                self.body(c)
                    .map_or("forever".to_string(), |b| b.to_string())
            })
            .collect();
        let mutation = self
            .mutation
            .map_or(String::new(), |m| format!(", mutation {m:?}"));
        format!(
            "{store}, {} clients x {} cycle, ttl {}, margin {}, renew {}, rto {}, poll {}, \
             backoff {}, clocks {} (drift 1/{}), bodies {}, horizon {}, {} faults before t={}{mutation}",
            self.clients,
            self.cycles,
            self.ttl,
            self.margin,
            self.renew_every,
            self.rto,
            self.poll,
            self.backoff,
            rates.join("/"),
            self.drift_period,
            bodies.join("/"),
            self.horizon,
            self.faults,
            self.fault_window,
        )
    }

    fn is(&self, mutation: Mutation) -> bool {
        self.mutation == Some(mutation)
    }

    fn rate(&self, client: usize) -> Rate {
        self.rates.get(client).copied().unwrap_or(Rate::Normal)
    }

    /// How far a client's clock moves on the tick that makes global time `now`.
    fn advance(&self, client: usize, now: u8) -> u8 {
        let drift_tick = self.drift_period > 0 && now.is_multiple_of(self.drift_period);
        match (self.rate(client), drift_tick) {
            (Rate::Slow, true) => 0,
            (Rate::Fast, true) => 2,
            _ => 1,
        }
    }

    fn body(&self, client: usize) -> Option<u8> {
        self.bodies.get(client).copied().unwrap_or(Some(0))
    }

    fn hold_for(&self) -> u8 {
        self.ttl.saturating_sub(self.margin)
    }
}

/// A server lease: the client that was granted it and its grant number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId {
    /// The client.
    pub client: u8,
    /// Which of the client's grants.
    pub generation: u8,
}

/// What the key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// The client that wrote it.
    pub owner: u8,
    /// The owner's acquisition (1 = its first).
    pub nonce: u8,
    /// The store index of the write that produced it.
    pub index: u8,
    /// The lease it is attached to (lease store).
    pub lease: Option<LeaseId>,
}

impl Entry {
    /// Whether this is `client`'s record of its current acquisition.
    fn owner_is(&self, client: &Client) -> bool {
        self.owner == client.id && self.nonce == client.nonce
    }
}

/// The condition of a put.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expect {
    /// The key must be absent.
    Absent,
    /// The key must hold this index.
    Index(u8),
}

/// The store: the key, the index counter, and the live leases with the
/// global time the server expires them at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Store {
    /// The key's entry, if any.
    pub key: Option<Entry>,
    /// The last index assigned.
    pub counter: u8,
    /// Live leases and their expiry (sorted).
    pub leases: Vec<(LeaseId, u8)>,
}

impl Store {
    fn alive(&self, lease: LeaseId) -> bool {
        self.leases.iter().any(|(id, _)| *id == lease)
    }
}

/// A request from a client to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Request {
    /// Conditional put of the client's record for acquisition `nonce`.
    Put {
        /// The condition.
        expect: Expect,
        /// The acquisition.
        nonce: u8,
        /// The lease to attach the key to.
        lease: Option<LeaseId>,
    },
    /// Read the key.
    Get,
    /// Delete if the key holds `index`.
    Delete {
        /// The expected index.
        index: u8,
    },
    /// Grant a lease.
    Grant {
        /// The client's grant number.
        generation: u8,
    },
    /// Keep a lease alive.
    KeepAlive {
        /// The lease.
        lease: LeaseId,
    },
}

impl Request {
    fn session_channel(&self) -> bool {
        matches!(self, Request::Grant { .. } | Request::KeepAlive { .. })
    }
}

/// The store's answer to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Answer {
    /// The put committed at this index.
    Swapped {
        /// The new index.
        index: u8,
    },
    /// The put's condition failed; the key holds `current`.
    PutConflict {
        /// What the key holds.
        current: Option<Entry>,
    },
    /// The put named a lease the server no longer has.
    LeaseGone,
    /// The key holds `current`.
    Got {
        /// What the key holds.
        current: Option<Entry>,
    },
    /// The delete happened.
    Deleted,
    /// The delete's index did not match; the key holds `current`.
    DeleteConflict {
        /// What the key holds.
        current: Option<Entry>,
    },
    /// A lease was granted.
    Granted {
        /// The new lease.
        lease: LeaseId,
    },
    /// The keep-alive's verdict.
    KeptAlive {
        /// Whether the lease was still alive (and is now extended).
        alive: bool,
    },
}

impl Answer {
    fn session_channel(&self) -> bool {
        matches!(self, Answer::Granted { .. } | Answer::KeptAlive { .. })
    }
}

/// What a delayed message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Payload {
    /// Client to store.
    Request(Request),
    /// Store to client.
    Answer(Answer),
}

impl Payload {
    fn session_channel(&self) -> bool {
        match self {
            Payload::Request(request) => request.session_channel(),
            Payload::Answer(answer) => answer.session_channel(),
        }
    }
}

/// A delayed message between client `client` and the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msg {
    /// The client it is from or to.
    pub client: u8,
    /// The content.
    pub payload: Payload,
    /// A request the client has given up on: the store still applies it,
    /// but its answer is not sent (the client would not match it).
    pub orphan: bool,
}

/// What becomes of a request a client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Applied and answered at once.
    Normal,
    /// Fault: lost on the way to the store.
    LoseRequest,
    /// Fault: delayed on the way to the store.
    DelayRequest,
    /// Fault: applied, the answer lost.
    LoseAnswer,
    /// Fault: applied, the answer delayed.
    DelayAnswer,
}

impl Fate {
    const FAULTS: [Fate; 4] = [
        Fate::LoseRequest,
        Fate::DelayRequest,
        Fate::LoseAnswer,
        Fate::DelayAnswer,
    ];
}

/// A lock-channel operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A put (acquire, poll, takeover or renewal).
    Put(Expect),
    /// A read-back.
    Get,
    /// A delete-if-index (release).
    Delete(u8),
}

/// The client's outstanding lock request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pending {
    /// What was asked.
    pub op: Op,
    /// Local send time.
    pub sent: u8,
    /// The lease a put carried.
    pub lease: Option<LeaseId>,
}

/// Where a client is in its lock cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Not interested in the lock (before its first or after its last cycle).
    Idle,
    /// Trying to get the lock.
    Acquiring {
        /// The next request and when to send it (local time); `None` while
        /// one is outstanding.
        next: Option<(Op, u8)>,
        /// Earliest send time of a timed-out put of this acquisition.
        unresolved: Option<u8>,
        /// Send time of the latest put.
        last: u8,
        /// Index seen at the key and since when (local time), for takeover.
        seen: Option<(u8, u8)>,
    },
    /// Holding, not told lost.
    Holding {
        /// The fencing token.
        token: u8,
        /// The index of our latest write.
        index: u8,
        /// Told lost when the local clock reaches this (no-lease store).
        deadline: u8,
        /// When to renew (no-lease store).
        next_renew: u8,
        /// When the body is done and the holder releases.
        release_at: Option<u8>,
    },
    /// Deleting our record.
    Releasing {
        /// The next request and when to send it; `None` while one is
        /// outstanding.
        next: Option<(Op, u8)>,
    },
}

/// A client's lease session (lease store).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Session {
    /// No lease.
    None,
    /// A grant was sent at this local time.
    Granting {
        /// The grant number.
        generation: u8,
        /// Local send time.
        sent: u8,
    },
    /// A lease the client believes alive.
    Active {
        /// The lease.
        lease: LeaseId,
        /// Lost when the local clock reaches this.
        deadline: u8,
        /// When to send the next keep-alive.
        next_ka: u8,
        /// Send time of the outstanding keep-alive.
        ka_sent: Option<u8>,
        /// Declared lost but still used ([`Mutation::LockOnLostLease`] only).
        lost: bool,
        /// Carried a put that timed out: retire it when the acquisition ends.
        tainted: bool,
    },
}

/// One client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    /// Its position in [`State::clients`] (the owner written into records).
    pub id: u8,
    /// Local monotonic clock.
    pub clk: u8,
    /// Stopped by a fault.
    pub paused: bool,
    /// Acquisitions started (the current one's nonce).
    pub nonce: u8,
    /// Lock cycle.
    pub phase: Phase,
    /// Outstanding lock request.
    pub req: Option<Pending>,
    /// Lease session.
    pub session: Session,
    /// Leases requested so far.
    pub grants: u8,
}

/// Interesting things that happened, recorded only with
/// [`Config::track_events`] (bit flags in [`State::events`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A lock was acquired by a takeover put (no-lease store).
    Takeover = 1,
    /// A holder was told it lost the lock.
    Lost = 2,
    /// A lock was found by reading back after an ambiguous write.
    Ambiguous = 4,
    /// A put the client had given up on committed.
    LateCommit = 8,
    /// The server expired a lease and deleted the key with it.
    Expired = 16,
    /// A second holder after a first one.
    Succession = 32,
    /// A lock was released by its delete.
    Released = 64,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 7] = [
        Event::Takeover,
        Event::Lost,
        Event::Ambiguous,
        Event::LateCommit,
        Event::Expired,
        Event::Succession,
        Event::Released,
    ];

    /// The name of this event's `sometimes` property.
    pub fn property(self) -> &'static str {
        match self {
            Event::Takeover => "sometimes: takeover",
            Event::Lost => "sometimes: holder told lost",
            Event::Ambiguous => "sometimes: lock found by read-back",
            Event::LateCommit => "sometimes: abandoned put commits later",
            Event::Expired => "sometimes: lease expiry deletes the key",
            Event::Succession => "sometimes: a second holder",
            Event::Released => "sometimes: released by delete",
        }
    }

    /// Whether the event can happen on this kind of store.
    pub fn applies(self, leases: bool) -> bool {
        match self {
            Event::Takeover => !leases,
            Event::Expired => leases,
            _ => true,
        }
    }
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Global time.
    pub now: u8,
    /// Faults left in the budget.
    pub faults_left: u8,
    /// The store.
    pub store: Store,
    /// The clients.
    pub clients: Vec<Client>,
    /// Delayed messages in flight (sorted).
    pub net: Vec<Msg>,
    /// Ghost: the token of the latest holder.
    pub last_token: u8,
    /// Ghost: a holder got a token not above its predecessor's.
    pub token_regressed: bool,
    /// Ghost: [`Event`] flags (only with [`Config::track_events`]).
    pub events: u8,
}

impl State {
    /// Clients holding the lock and not told lost.
    pub fn holders(&self) -> usize {
        self.clients
            .iter()
            .filter(|client| matches!(client.phase, Phase::Holding { .. }))
            .count()
    }
}

/// One step of the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Global time advances (only when no timer is due).
    Tick,
    /// The client starts an acquisition.
    Start(u8),
    /// The client runs its due lock timer: sends its next lock request (with
    /// a fate) or handles a timeout.
    Lock(u8, Fate),
    /// The client runs its due session timer: sends a grant or keep-alive
    /// (with a fate) or handles a timeout.
    Session(u8, Fate),
    /// Deliver delayed message `n` of [`State::net`].
    Deliver(u8),
    /// Fault: duplicate delayed answer `n`.
    Duplicate(u8),
    /// Fault: stop the client.
    Pause(u8),
    /// The client runs again.
    Resume(u8),
}

/// Lock-channel work that is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockWork {
    Timeout(Pending),
    Send(Op),
    Release,
}

/// Session-channel work that is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionWork {
    Grant,
    GrantTimeout,
    KeepAlive,
    KeepAliveTimeout,
}

impl SessionWork {
    fn sends(self) -> bool {
        matches!(self, SessionWork::Grant | SessionWork::KeepAlive)
    }
}

/// The model: a [`Config`] and the transition rules.
#[derive(Clone, Debug)]
pub struct LockModel {
    /// Bounds and parameters.
    pub cfg: Config,
}

impl LockModel {
    /// A model of `cfg`.
    pub fn new(cfg: Config) -> LockModel {
        LockModel { cfg }
    }

    /// Whether `state` is a stuck lock (property 3 of the crate docs).
    pub fn stuck(&self, state: &State) -> bool {
        let Some(entry) = state.store.key else {
            return false;
        };
        let Some(lease) = entry.lease else {
            return false;
        };
        if !state.store.alive(lease) {
            return false;
        }
        let Some(owner) = state.clients.get(usize::from(entry.owner)) else {
            return false;
        };
        let keeps_alive = matches!(owner.session,
            Session::Active { lease: kept, lost: false, .. } if kept == lease);
        let working_on_it = owner.nonce == entry.nonce && owner.phase != Phase::Idle;
        let delete_in_flight = state.net.iter().any(|m| {
            matches!(m.payload, Payload::Request(Request::Delete { index }) if index == entry.index)
        });
        keeps_alive && !working_on_it && !delete_in_flight
    }

    /// A readable description of taking `action` in `state`.
    pub fn describe(&self, state: &State, action: &Action) -> String {
        let fate = |fate: &Fate| match fate {
            Fate::Normal => String::new(),
            other => format!(" FAULT {other:?}"),
        };
        match action {
            Action::Deliver(n) | Action::Duplicate(n) => {
                let verb = if matches!(action, Action::Deliver(_)) {
                    "deliver late"
                } else {
                    "FAULT duplicate"
                };
                match state.net.get(usize::from(*n)) {
                    Some(m) => {
                        let what = match m.payload {
                            Payload::Request(r) => format!("c{}->store {r:?}", m.client),
                            Payload::Answer(a) => format!("store->c{} {a:?}", m.client),
                        };
                        let orphan = if m.orphan { " (given up)" } else { "" };
                        format!("{verb} {what}{orphan}")
                    }
                    None => format!("{verb} ?"),
                }
            }
            Action::Lock(c, f) => match self.lock_due(state, usize::from(*c)) {
                Some(LockWork::Timeout(p)) => format!("c{c} times out {:?}", p.op),
                Some(LockWork::Release) => format!("c{c} body done: releases"),
                Some(LockWork::Send(op)) => {
                    let what = match state.clients.get(usize::from(*c)).map(|cl| cl.phase) {
                        Some(Phase::Holding { .. }) => "renews",
                        Some(Phase::Releasing { .. }) => "releasing",
                        _ => "acquiring",
                    };
                    format!("c{c} {what}: {op:?}{}", fate(f))
                }
                None => format!("c{c} lock timer"),
            },
            Action::Session(c, f) => match self.session_due(state, usize::from(*c)) {
                Some(work) => format!("c{c} session {work:?}{}", fate(f)),
                None => format!("c{c} session timer"),
            },
            Action::Tick => "tick".to_string(),
            Action::Start(c) => match self.cfg.body(usize::from(*c)) {
                Some(ticks) => format!("c{c} starts (body {ticks} ticks)"),
                None => format!("c{c} starts (body runs forever)"),
            },
            Action::Pause(c) => format!("FAULT pause c{c}"),
            Action::Resume(c) => format!("c{c} resumes"),
        }
    }

    /// The trace of a path, one line per step: the step, then global time,
    /// every client's clock and phase, and the key after it.
    pub fn trace(&self, path: &[(State, Option<Action>)]) -> String {
        let mut out = String::new();
        for (n, (state, action)) in path.iter().enumerate() {
            let Some(action) = action else {
                continue;
            };
            let after = path.get(n + 1).map_or(state, |(next, _)| next);
            out.push_str(&format!(
                "  {:>2}. {:<46} => {}\n",
                n + 1,
                self.describe(state, action),
                Summary {
                    state: after,
                    leases: self.cfg.leases,
                }
            ));
        }
        out
    }

    fn initial(&self) -> State {
        let clients = (0..self.cfg.clients)
            .map(|id| Client {
                id,
                clk: 0,
                paused: false,
                nonce: 0,
                phase: Phase::Idle,
                req: None,
                session: Session::None,
                grants: 0,
            })
            .collect();
        State {
            now: 0,
            faults_left: self.cfg.faults,
            store: Store::default(),
            clients,
            net: Vec::new(),
            last_token: 0,
            token_regressed: false,
            events: 0,
        }
    }

    fn event(&self, state: &mut State, event: Event) {
        if self.cfg.track_events {
            state.events |= event as u8;
        }
    }

    /// The session lease a client may write with now.
    fn usable_lease(&self, client: &Client) -> Option<LeaseId> {
        match client.session {
            Session::Active { lease, lost, .. }
                if !lost || self.cfg.is(Mutation::LockOnLostLease) =>
            {
                Some(lease)
            }
            _ => None,
        }
    }

    fn lock_due(&self, state: &State, c: usize) -> Option<LockWork> {
        let client = state.clients.get(c)?;
        if client.paused {
            return None;
        }
        if let Some(p) = client.req {
            let due = client.clk >= p.sent.saturating_add(self.cfg.rto);
            return due.then_some(LockWork::Timeout(p));
        }
        match client.phase {
            Phase::Acquiring {
                next: Some((op, at)),
                ..
            } if client.clk >= at => {
                let waits_for_lease = self.cfg.leases
                    && matches!(op, Op::Put(_))
                    && self.usable_lease(client).is_none();
                (!waits_for_lease).then_some(LockWork::Send(op))
            }
            Phase::Holding {
                release_at: Some(at),
                ..
            } if client.clk >= at => Some(LockWork::Release),
            Phase::Holding {
                next_renew, index, ..
            } if !self.cfg.leases && client.clk >= next_renew => {
                Some(LockWork::Send(Op::Put(Expect::Index(index))))
            }
            Phase::Releasing {
                next: Some((op, at)),
            } if client.clk >= at => Some(LockWork::Send(op)),
            _ => None,
        }
    }

    fn session_due(&self, state: &State, c: usize) -> Option<SessionWork> {
        let client = state.clients.get(c)?;
        if client.paused || !self.cfg.leases {
            return None;
        }
        let expired = |sent: u8| client.clk >= sent.saturating_add(self.cfg.rto);
        match client.session {
            Session::None => {
                matches!(client.phase, Phase::Acquiring { .. }).then_some(SessionWork::Grant)
            }
            Session::Granting { sent, .. } => expired(sent).then_some(SessionWork::GrantTimeout),
            Session::Active {
                ka_sent: Some(sent),
                ..
            } => expired(sent).then_some(SessionWork::KeepAliveTimeout),
            Session::Active {
                next_ka,
                ka_sent: None,
                lost: false,
                ..
            } if client.clk >= next_ka => Some(SessionWork::KeepAlive),
            Session::Active { .. } => None,
        }
    }

    fn must_start(&self, state: &State, c: usize) -> bool {
        state.clients.get(c).is_some_and(|client| {
            !client.paused
                && client.nonce == 0
                && self.cfg.cycles > 0
                && state.now >= self.cfg.start_by
        })
    }

    fn deliverable(state: &State, m: &Msg) -> bool {
        match m.payload {
            Payload::Request(_) => true,
            Payload::Answer(_) => state
                .clients
                .get(usize::from(m.client))
                .is_some_and(|client| !client.paused),
        }
    }

    fn timer_due(&self, state: &State) -> bool {
        (0..state.clients.len()).any(|c| {
            self.lock_due(state, c).is_some()
                || self.session_due(state, c).is_some()
                || self.must_start(state, c)
        })
    }

    // ---- messages ----------------------------------------------------

    /// Sends `request` from client `c` with `fate`: a normal round trip is
    /// applied and answered at once.
    fn rpc(&self, state: &mut State, c: usize, request: Request, fate: Fate) {
        let delayed = |payload| Msg {
            client: c as u8,
            payload,
            orphan: false,
        };
        match fate {
            Fate::LoseRequest => {}
            Fate::DelayRequest => state.net.push(delayed(Payload::Request(request))),
            Fate::Normal | Fate::LoseAnswer | Fate::DelayAnswer => {
                let answer = self.store_apply(state, c, request, false);
                match fate {
                    Fate::Normal => self.receive(state, c, answer),
                    Fate::DelayAnswer => state.net.push(delayed(Payload::Answer(answer))),
                    _ => {}
                }
            }
        }
    }

    /// The client stops waiting for its messages on one channel: delayed
    /// requests become orphans (still applied, never answered), delayed
    /// answers are dropped (the client would not match them).
    fn abandon(state: &mut State, c: usize, session_channel: bool) {
        state.net.retain_mut(|m| {
            if usize::from(m.client) != c || m.payload.session_channel() != session_channel {
                return true;
            }
            match m.payload {
                Payload::Request(_) => {
                    m.orphan = true;
                    true
                }
                Payload::Answer(_) => false,
            }
        });
    }

    fn send_lock(&self, state: &mut State, c: usize, op: Op, fate: Fate) {
        let leases = self.cfg.leases;
        let lease = match state.clients.get(c) {
            Some(client) if leases && matches!(op, Op::Put(_)) => self.usable_lease(client),
            _ => None,
        };
        let Some(client) = state.clients.get_mut(c) else {
            return;
        };
        let clk = client.clk;
        client.req = Some(Pending {
            op,
            sent: clk,
            lease,
        });
        match &mut client.phase {
            Phase::Acquiring { next, last, .. } => {
                *next = None;
                if matches!(op, Op::Put(_)) {
                    *last = clk;
                }
            }
            Phase::Releasing { next } => *next = None,
            _ => {}
        }
        let request = match op {
            Op::Put(expect) => Request::Put {
                expect,
                nonce: client.nonce,
                lease,
            },
            Op::Get => Request::Get,
            Op::Delete(index) => Request::Delete { index },
        };
        self.rpc(state, c, request, fate);
    }

    fn store_apply(&self, state: &mut State, c: usize, request: Request, orphan: bool) -> Answer {
        let ttl = self.cfg.ttl;
        let now = state.now;
        let store = &mut state.store;
        let answer = match request {
            Request::Put {
                expect,
                nonce,
                lease,
            } => {
                if lease.is_some_and(|l| !store.alive(l)) {
                    Answer::LeaseGone
                } else {
                    let ok = match (expect, store.key) {
                        (Expect::Absent, None) => true,
                        (Expect::Index(i), Some(e)) => e.index == i,
                        _ => false,
                    };
                    if ok {
                        store.counter = store.counter.saturating_add(1);
                        store.key = Some(Entry {
                            owner: c as u8,
                            nonce,
                            index: store.counter,
                            lease,
                        });
                        Answer::Swapped {
                            index: store.counter,
                        }
                    } else {
                        Answer::PutConflict { current: store.key }
                    }
                }
            }
            Request::Get => Answer::Got { current: store.key },
            Request::Delete { index } => match store.key {
                Some(e) if e.index == index => {
                    store.key = None;
                    Answer::Deleted
                }
                current => Answer::DeleteConflict { current },
            },
            Request::Grant { generation } => {
                let lease = LeaseId {
                    client: c as u8,
                    generation,
                };
                store.leases.push((lease, now.saturating_add(ttl)));
                store.leases.sort();
                Answer::Granted { lease }
            }
            Request::KeepAlive { lease } => {
                let mut alive = false;
                for (id, expiry) in &mut store.leases {
                    if *id == lease {
                        *expiry = now.saturating_add(ttl);
                        alive = true;
                    }
                }
                Answer::KeptAlive { alive }
            }
        };
        if orphan && matches!(answer, Answer::Swapped { .. }) {
            self.event(state, Event::LateCommit);
        }
        if matches!(answer, Answer::Deleted) {
            self.event(state, Event::Released);
        }
        answer
    }

    /// A delayed message arrives.
    fn deliver(&self, state: &mut State, m: Msg) {
        let c = usize::from(m.client);
        match m.payload {
            Payload::Request(request) => {
                let answer = self.store_apply(state, c, request, m.orphan);
                if m.orphan {
                    return;
                }
                let paused = state.clients.get(c).is_none_or(|client| client.paused);
                if paused {
                    // Waits in the network until the client runs again.
                    state.net.push(Msg {
                        client: m.client,
                        payload: Payload::Answer(answer),
                        orphan: false,
                    });
                } else {
                    self.receive(state, c, answer);
                }
            }
            Payload::Answer(answer) => self.receive(state, c, answer),
        }
    }

    fn receive(&self, state: &mut State, c: usize, answer: Answer) {
        if answer.session_channel() {
            self.session_answer(state, c, answer);
        } else {
            self.lock_answer(state, c, answer);
        }
    }

    // ---- lock cycle --------------------------------------------------

    /// The end of an acquisition (released, lost, or given up).
    fn end_cycle(&self, state: &mut State, c: usize) {
        let retire = !self.cfg.is(Mutation::KeepAmbiguousLease);
        let Some(client) = state.clients.get_mut(c) else {
            return;
        };
        client.phase = Phase::Idle;
        client.req = None;
        if retire && matches!(client.session, Session::Active { tainted: true, .. }) {
            client.session = Session::None;
            Self::abandon(state, c, true);
        }
        Self::abandon(state, c, false);
    }

    fn lose_lock(&self, state: &mut State, c: usize) {
        self.event(state, Event::Lost);
        self.end_cycle(state, c);
    }

    fn session_lost(&self, state: &mut State, c: usize) {
        let keep_using = self.cfg.is(Mutation::LockOnLostLease);
        let Some(client) = state.clients.get_mut(c) else {
            return;
        };
        match &mut client.session {
            Session::Active { lost, ka_sent, .. } if keep_using => {
                *lost = true;
                *ka_sent = None;
            }
            session => *session = Session::None,
        }
        let holding = matches!(client.phase, Phase::Holding { .. });
        Self::abandon(state, c, true);
        if holding {
            self.lose_lock(state, c);
        }
    }

    fn hold(&self, state: &mut State, c: usize, token: u8, base: u8, takeover: bool) {
        let deadline = base.saturating_add(self.cfg.hold_for());
        let Some(client) = state.clients.get_mut(c) else {
            return;
        };
        if !self.cfg.leases && client.clk >= deadline {
            // Found too late: it would be handed out already lost.
            self.lose_lock(state, c);
            return;
        }
        let body = self.cfg.body(c);
        client.phase = Phase::Holding {
            token,
            index: token,
            deadline,
            next_renew: base.saturating_add(self.cfg.renew_every),
            release_at: body.map(|ticks| client.clk.saturating_add(ticks)),
        };
        if token <= state.last_token {
            state.token_regressed = true;
        }
        if state.last_token > 0 {
            self.event(state, Event::Succession);
        }
        state.last_token = token;
        if takeover {
            self.event(state, Event::Takeover);
        }
    }

    /// Whether `entry` is this client's record of its current acquisition
    /// (on a lease store: attached to the lease it may use).
    fn own(&self, client: &Client, entry: &Entry) -> bool {
        entry.owner_is(client)
            && (!self.cfg.leases
                || self.cfg.is(Mutation::ReadBackIgnoresLease)
                || entry.lease.is_some() && entry.lease == self.usable_lease(client))
    }

    fn set_next(state: &mut State, c: usize, op: Op, at: u8, seen_now: Option<(u8, u8)>) {
        if let Some(client) = state.clients.get_mut(c)
            && let Phase::Acquiring { next, seen, .. } = &mut client.phase
        {
            *next = Some((op, at));
            *seen = seen_now;
        }
    }

    /// An acquiring client learned what the key holds (conflict or read-back).
    fn acquire_saw(&self, state: &mut State, c: usize, current: Option<Entry>) {
        let Some(client) = state.clients.get(c) else {
            return;
        };
        let Phase::Acquiring {
            unresolved,
            last,
            seen,
            ..
        } = client.phase
        else {
            return;
        };
        let clk = client.clk;
        match current {
            None => Self::set_next(state, c, Op::Put(Expect::Absent), clk, seen),
            Some(entry) if self.own(client, &entry) => {
                let base = if self.cfg.is(Mutation::DeadlineFromRetry) {
                    last
                } else {
                    unresolved.map_or(last, |u| u.min(last))
                };
                self.event(state, Event::Ambiguous);
                self.hold(state, c, entry.index, base, false);
            }
            Some(_) if self.cfg.leases => {
                let at = clk.saturating_add(self.cfg.poll);
                Self::set_next(state, c, Op::Put(Expect::Absent), at, None);
            }
            Some(entry) => {
                let since = match seen {
                    Some((index, since)) if index == entry.index => since,
                    _ => clk,
                };
                let takeover_at = since.saturating_add(self.cfg.ttl);
                let seen = Some((entry.index, since));
                if clk >= takeover_at {
                    Self::set_next(state, c, Op::Put(Expect::Index(entry.index)), clk, seen);
                } else {
                    let at = clk.saturating_add(self.cfg.poll).min(takeover_at);
                    Self::set_next(state, c, Op::Put(Expect::Absent), at, seen);
                }
            }
        }
    }

    fn lock_answer(&self, state: &mut State, c: usize, answer: Answer) {
        let Some(client) = state.clients.get_mut(c) else {
            return;
        };
        let Some(pending) = client.req.take() else {
            return; // not waiting for it: ignored
        };
        Self::abandon(state, c, false);
        let Some(client) = state.clients.get(c) else {
            return;
        };
        let clk = client.clk;
        match (client.phase, answer) {
            (Phase::Acquiring { seen, .. }, Answer::Swapped { index }) => {
                if self.cfg.leases && pending.lease != self.usable_lease(client) {
                    // Committed on a lease this client has given up: not a
                    // lock (the record expires with that lease).
                    Self::set_next(state, c, Op::Put(Expect::Absent), clk, seen);
                } else {
                    let takeover = matches!(pending.op, Op::Put(Expect::Index(_)));
                    self.hold(state, c, index, pending.sent, takeover);
                }
            }
            (
                Phase::Acquiring { .. },
                Answer::PutConflict { current } | Answer::Got { current },
            ) => self.acquire_saw(state, c, current),
            (Phase::Acquiring { seen, .. }, Answer::LeaseGone) => {
                self.session_lost(state, c);
                if let Some(client) = state.clients.get_mut(c) {
                    // The server says so, whatever the client believed.
                    client.session = Session::None;
                }
                Self::set_next(state, c, Op::Put(Expect::Absent), clk, seen);
            }
            (Phase::Holding { .. }, Answer::Swapped { index }) => {
                let hold_for = self.cfg.hold_for();
                let renew_every = self.cfg.renew_every;
                if let Some(client) = state.clients.get_mut(c)
                    && let Phase::Holding {
                        index: held,
                        deadline,
                        next_renew,
                        ..
                    } = &mut client.phase
                {
                    *held = index;
                    *deadline = (*deadline).max(pending.sent.saturating_add(hold_for));
                    *next_renew = pending.sent.saturating_add(renew_every);
                }
            }
            (Phase::Holding { .. }, Answer::PutConflict { current }) => match current {
                Some(entry) if entry.owner_is(client) => {
                    if let Some(client) = state.clients.get_mut(c)
                        && let Phase::Holding {
                            index, next_renew, ..
                        } = &mut client.phase
                    {
                        *index = entry.index;
                        *next_renew = clk;
                    }
                }
                _ => self.lose_lock(state, c),
            },
            (Phase::Releasing { .. }, Answer::Deleted) => self.end_cycle(state, c),
            (
                Phase::Releasing { .. },
                Answer::DeleteConflict { current } | Answer::Got { current },
            ) => match current {
                Some(entry) if entry.owner_is(client) => {
                    if let Some(client) = state.clients.get_mut(c) {
                        client.phase = Phase::Releasing {
                            next: Some((Op::Delete(entry.index), clk)),
                        };
                    }
                }
                _ => self.end_cycle(state, c),
            },
            _ => {}
        }
    }

    fn lock_timeout(&self, state: &mut State, c: usize, pending: Pending) {
        let backoff = self.cfg.backoff;
        let gives_up = self.cfg.is(Mutation::ReleaseGivesUp);
        let Some(client) = state.clients.get_mut(c) else {
            return;
        };
        client.req = None;
        let clk = client.clk;
        match (&mut client.phase, pending.op) {
            (
                Phase::Acquiring {
                    unresolved, next, ..
                },
                Op::Put(_),
            ) => {
                *unresolved = Some(unresolved.map_or(pending.sent, |u| u.min(pending.sent)));
                *next = Some((Op::Get, clk));
                if let Session::Active { lease, tainted, .. } = &mut client.session
                    && pending.lease == Some(*lease)
                {
                    *tainted = true;
                }
            }
            (Phase::Acquiring { next, .. }, Op::Get) => {
                *next = Some((Op::Put(Expect::Absent), clk.saturating_add(backoff)));
            }
            (Phase::Holding { next_renew, .. }, Op::Put(_)) => *next_renew = clk,
            (Phase::Releasing { next }, Op::Delete(_)) => *next = Some((Op::Get, clk)),
            (Phase::Releasing { next }, Op::Get) => {
                if gives_up {
                    Self::abandon(state, c, false);
                    self.end_cycle(state, c);
                    return;
                }
                *next = Some((Op::Get, clk.saturating_add(backoff)));
            }
            _ => {}
        }
        Self::abandon(state, c, false);
    }

    // ---- session -----------------------------------------------------

    fn session_answer(&self, state: &mut State, c: usize, answer: Answer) {
        let hold_for = self.cfg.hold_for();
        let renew_every = self.cfg.renew_every;
        let Some(client) = state.clients.get_mut(c) else {
            return;
        };
        let clk = client.clk;
        match (client.session, answer) {
            (Session::Granting { generation, sent }, Answer::Granted { lease })
                if lease.generation == generation =>
            {
                let deadline = sent.saturating_add(hold_for);
                client.session = if clk >= deadline {
                    // Granted too late to use: its time is used up.
                    Session::None
                } else {
                    Session::Active {
                        lease,
                        deadline,
                        next_ka: sent.saturating_add(renew_every),
                        ka_sent: None,
                        lost: false,
                        tainted: false,
                    }
                };
                Self::abandon(state, c, true);
            }
            (
                Session::Active {
                    ka_sent: Some(sent),
                    ..
                },
                Answer::KeptAlive { alive },
            ) => {
                Self::abandon(state, c, true);
                if !alive {
                    self.session_lost(state, c);
                    return;
                }
                if let Some(client) = state.clients.get_mut(c)
                    && let Session::Active {
                        deadline,
                        next_ka,
                        ka_sent,
                        ..
                    } = &mut client.session
                {
                    *deadline = (*deadline).max(sent.saturating_add(hold_for));
                    *next_ka = sent.saturating_add(renew_every);
                    *ka_sent = None;
                }
            }
            _ => {} // not waiting for it: ignored
        }
    }

    fn session_work(&self, state: &mut State, c: usize, work: SessionWork, fate: Fate) {
        let Some(client) = state.clients.get_mut(c) else {
            return;
        };
        let clk = client.clk;
        match work {
            SessionWork::Grant => {
                let generation = client.grants;
                client.grants = client.grants.saturating_add(1);
                client.session = Session::Granting {
                    generation,
                    sent: clk,
                };
                self.rpc(state, c, Request::Grant { generation }, fate);
            }
            SessionWork::GrantTimeout => {
                client.session = Session::None;
                Self::abandon(state, c, true);
            }
            SessionWork::KeepAlive => {
                if let Session::Active { lease, ka_sent, .. } = &mut client.session {
                    *ka_sent = Some(clk);
                    let lease = *lease;
                    self.rpc(state, c, Request::KeepAlive { lease }, fate);
                }
            }
            SessionWork::KeepAliveTimeout => {
                if let Session::Active {
                    ka_sent, next_ka, ..
                } = &mut client.session
                {
                    *ka_sent = None;
                    *next_ka = clk;
                }
                Self::abandon(state, c, true);
            }
        }
    }

    // ---- time --------------------------------------------------------

    fn tick(&self, state: &mut State) {
        state.now = state.now.saturating_add(1);
        let now = state.now;
        for c in 0..state.clients.len() {
            let advance = self.cfg.advance(c, now);
            let Some(client) = state.clients.get_mut(c) else {
                continue;
            };
            client.clk = client.clk.saturating_add(advance);
            let clk = client.clk;
            if let Phase::Holding { deadline, .. } = client.phase
                && !self.cfg.leases
                && clk >= deadline
            {
                self.lose_lock(state, c);
            }
            if let Some(client) = state.clients.get(c)
                && let Session::Active {
                    deadline,
                    lost: false,
                    ..
                } = client.session
                && clk >= deadline
            {
                self.session_lost(state, c);
            }
        }
        let expired: Vec<LeaseId> = state
            .store
            .leases
            .iter()
            .filter(|(_, expiry)| *expiry <= now)
            .map(|(id, _)| *id)
            .collect();
        if !expired.is_empty() {
            state.store.leases.retain(|(_, expiry)| *expiry > now);
            if let Some(entry) = state.store.key
                && entry.lease.is_some_and(|l| expired.contains(&l))
            {
                state.store.key = None;
                self.event(state, Event::Expired);
            }
        }
    }
}

struct Summary<'a> {
    state: &'a State,
    leases: bool,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state;
        write!(f, "t={:<2}", state.now)?;
        for client in &state.clients {
            let phase = match client.phase {
                Phase::Idle if client.nonce == 0 => "-".to_string(),
                Phase::Idle => "done".to_string(),
                Phase::Acquiring { .. } => "acq".to_string(),
                Phase::Holding {
                    token, deadline, ..
                } if !self.leases => format!("HOLDS#{token} until {deadline}"),
                Phase::Holding { token, .. } => format!("HOLDS#{token}"),
                Phase::Releasing { .. } => "rel".to_string(),
            };
            let paused = if client.paused { ",paused" } else { "" };
            write!(f, " | c{} clk {:<2} {phase}{paused}", client.id, client.clk)?;
        }
        match state.store.key {
            Some(e) => write!(f, " | key c{}#{}", e.owner, e.index),
            None => write!(f, " | key -"),
        }
    }
}

impl Model for LockModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.initial()]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let faults = state.faults_left > 0 && state.now < self.cfg.fault_window;
        // Session steps commute with other clients' steps (a put checks only
        // whether its own lease is alive, which changes only on a tick): run
        // the lowest client's due session step first, racing only its own
        // delayed messages.
        let session_first =
            (0..state.clients.len()).find_map(|c| self.session_due(state, c).map(|work| (c, work)));
        if let Some((c, work)) = session_first {
            let id = c as u8;
            actions.push(Action::Session(id, Fate::Normal));
            if work.sends() && faults {
                actions.extend(Fate::FAULTS.map(|fate| Action::Session(id, fate)));
            }
            for (n, m) in state.net.iter().enumerate() {
                if usize::from(m.client) == c && Self::deliverable(state, m) {
                    actions.push(Action::Deliver(n as u8));
                }
            }
            return;
        }
        for (n, m) in state.net.iter().enumerate() {
            let n = n as u8;
            if Self::deliverable(state, m) {
                actions.push(Action::Deliver(n));
            }
            if faults && matches!(m.payload, Payload::Answer(_)) {
                actions.push(Action::Duplicate(n));
            }
        }
        for (c, client) in state.clients.iter().enumerate() {
            let id = c as u8;
            if client.paused {
                actions.push(Action::Resume(id));
                continue;
            }
            let sends = match self.lock_due(state, c) {
                Some(LockWork::Send(_)) => Some(true),
                Some(LockWork::Timeout(_) | LockWork::Release) => Some(false),
                None => None,
            };
            if let Some(sends) = sends {
                actions.push(Action::Lock(id, Fate::Normal));
                if sends && faults {
                    actions.extend(Fate::FAULTS.map(|fate| Action::Lock(id, fate)));
                }
            }
            if client.phase == Phase::Idle
                && client.nonce < self.cfg.cycles
                && state.now <= self.cfg.start_by
            {
                actions.push(Action::Start(id));
            }
            if faults {
                actions.push(Action::Pause(id));
            }
        }
        if state.now < self.cfg.horizon && !self.timer_due(state) {
            actions.push(Action::Tick);
        }
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        let mut next = state.clone();
        let fault = |next: &mut State| -> Option<()> {
            next.faults_left = next.faults_left.checked_sub(1)?;
            Some(())
        };
        match action {
            Action::Tick => self.tick(&mut next),
            Action::Start(c) => {
                let client = next.clients.get_mut(usize::from(c))?;
                client.nonce = client.nonce.saturating_add(1);
                client.phase = Phase::Acquiring {
                    next: Some((Op::Put(Expect::Absent), client.clk)),
                    unresolved: None,
                    last: client.clk,
                    seen: None,
                };
            }
            Action::Lock(c, fate) => {
                if fate != Fate::Normal {
                    fault(&mut next)?;
                }
                let c = usize::from(c);
                match self.lock_due(&next, c)? {
                    LockWork::Timeout(pending) => self.lock_timeout(&mut next, c, pending),
                    LockWork::Send(op) => self.send_lock(&mut next, c, op, fate),
                    LockWork::Release => {
                        let client = next.clients.get_mut(c)?;
                        let Phase::Holding { index, .. } = client.phase else {
                            return None;
                        };
                        client.phase = Phase::Releasing {
                            next: Some((Op::Delete(index), client.clk)),
                        };
                    }
                }
            }
            Action::Session(c, fate) => {
                if fate != Fate::Normal {
                    fault(&mut next)?;
                }
                let c = usize::from(c);
                let work = self.session_due(&next, c)?;
                self.session_work(&mut next, c, work, fate);
            }
            Action::Deliver(n) => {
                let m = next.net.remove(usize::from(n));
                self.deliver(&mut next, m);
            }
            Action::Duplicate(n) => {
                fault(&mut next)?;
                let copy = *next.net.get(usize::from(n))?;
                next.net.push(copy);
            }
            Action::Pause(c) => {
                fault(&mut next)?;
                next.clients.get_mut(usize::from(c))?.paused = true;
            }
            Action::Resume(c) => next.clients.get_mut(usize::from(c))?.paused = false,
        }
        next.net.sort();
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always("exclusion", |_, state: &State| state.holders() <= 1),
            Property::always("tokens increase", |_, state: &State| !state.token_regressed),
        ];
        if self.cfg.leases {
            properties.push(Property::always(
                "no stuck lock",
                |model: &LockModel, state| !model.stuck(state),
            ));
        }
        if self.cfg.track_events {
            properties.extend(
                Event::ALL
                    .into_iter()
                    .filter(|event| event.applies(self.cfg.leases))
                    .map(sometimes),
            );
        }
        properties
    }
}

fn sometimes(event: Event) -> Property<LockModel> {
    macro_rules! flag {
        ($event:expr) => {
            Property::sometimes($event.property(), |_, state: &State| {
                state.events & ($event as u8) != 0
            })
        };
    }
    match event {
        Event::Takeover => flag!(Event::Takeover),
        Event::Lost => flag!(Event::Lost),
        Event::Ambiguous => flag!(Event::Ambiguous),
        Event::LateCommit => flag!(Event::LateCommit),
        Event::Expired => flag!(Event::Expired),
        Event::Succession => flag!(Event::Succession),
        Event::Released => flag!(Event::Released),
    }
}
