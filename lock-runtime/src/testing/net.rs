//! [`SimNet`]: per-client fault-injecting connections onto one [`SimStore`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, sleep_until, timeout_at};

use super::store::SimStore;
use super::trace::{Event, Fate, Outcome, Request, Trace};
use crate::store::{
    Capabilities, CompareExchange, DeleteOutcome, Entry, Expect, LeaseId, PutOutcome, Record,
    StoreError,
};

/// How often and how long one kind of link fault happens, per client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultPlan {
    /// Mean time between the end of one fault and the start of the next
    /// (the gap is uniform in `0..=2 * every`); zero: never.
    pub every: Duration,
    /// Shortest fault.
    pub min: Duration,
    /// Longest fault.
    pub max: Duration,
}

impl FaultPlan {
    /// No faults of this kind.
    pub const NEVER: FaultPlan = FaultPlan {
        every: Duration::ZERO,
        min: Duration::ZERO,
        max: Duration::ZERO,
    };
}

/// The behaviour of a [`SimNet`]. All randomness comes from the net's seed.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// One-way delay range (uniform) of a request and of its answer while
    /// faults are on. Its upper end is [`SimNet::max_delay`].
    pub delay: (Duration, Duration),
    /// One-way delay range once [`SimNet::heal_all`] switched faults off.
    pub clean_delay: (Duration, Duration),
    /// The client-side timeout: every call but `watch` returns within it,
    /// with [`StoreError::Unavailable`] if no answer came.
    pub timeout: Duration,
    /// Probability that a request is lost (never applied).
    pub lose_request: f64,
    /// Probability that a request is applied and its answer lost.
    pub lose_answer: f64,
    /// Probability that a request is applied only after the caller timed out:
    /// it arrives `timeout + 0..=late_by` after it was sent.
    pub late: f64,
    /// See [`NetConfig::late`].
    pub late_by: Duration,
    /// Partitions of a client's link: requests and answers travelling while it
    /// lasts are lost, and an open watch fails.
    pub partitions: FaultPlan,
    /// Pauses of a client's link: requests and answers are held until it ends.
    pub pauses: FaultPlan,
    /// Partitions and pauses are scheduled in `0..horizon` from the net's start.
    pub horizon: Duration,
}

impl Default for NetConfig {
    /// A clean network: 1-5 ms each way, 500 ms timeout, no faults.
    fn default() -> Self {
        NetConfig {
            delay: (Duration::from_millis(1), Duration::from_millis(5)),
            clean_delay: (Duration::from_millis(1), Duration::from_millis(5)),
            timeout: Duration::from_millis(500),
            lose_request: 0.0,
            lose_answer: 0.0,
            late: 0.0,
            late_by: Duration::ZERO,
            partitions: FaultPlan::NEVER,
            pauses: FaultPlan::NEVER,
            horizon: Duration::ZERO,
        }
    }
}

/// A half-open interval of time `[start, end)`.
type Span = (Instant, Instant);

#[derive(Debug)]
struct Link {
    name: Arc<str>,
    partitions: Vec<Span>,
    pauses: Vec<Span>,
    /// Requests that did not travel cleanly: from their send until their
    /// caller gave up or they were applied, whichever is later.
    faulty: Vec<Span>,
}

impl Link {
    fn partitioned(&self, at: Instant) -> bool {
        self.partitions.iter().any(|&(s, e)| s <= at && at < e)
    }

    fn paused_until(&self, at: Instant) -> Option<Instant> {
        self.pauses
            .iter()
            .filter(|&&(s, e)| s <= at && at < e)
            .map(|&(_, e)| e)
            .max()
    }

    fn next_partition(&self, after: Instant) -> Option<Instant> {
        self.partitions
            .iter()
            .map(|&(s, _)| s)
            .filter(|&s| s > after)
            .min()
    }

    /// When a message leaving at `from` with a transit time `transit`
    /// arrives (`None`: lost in a partition), and whether a pause held it.
    fn travel(&self, from: Instant, transit: Duration) -> (Option<Instant>, bool) {
        let mut held = false;
        let mut depart = from;
        while let Some(end) = self.paused_until(depart) {
            depart = end;
            held = true;
        }
        if self.partitioned(depart) {
            return (None, held);
        }
        let mut at = depart + transit;
        loop {
            if self.partitioned(at) {
                return (None, held);
            }
            match self.paused_until(at) {
                Some(end) => {
                    at = end;
                    held = true;
                }
                None => return (Some(at), held),
            }
        }
    }
}

#[derive(Debug)]
struct State {
    rng: fastrand::Rng,
    faults_on: bool,
    next_req: u64,
    links: Vec<Link>,
    /// Which client each lease was granted to (at the server).
    lease_owners: BTreeMap<LeaseId, u32>,
    /// The latest time a request sent while faults were on reaches the
    /// server or its caller.
    settles: Instant,
}

#[derive(Debug)]
struct Net {
    store: SimStore,
    config: NetConfig,
    trace: Trace,
    start: Instant,
    state: Mutex<State>,
    /// Woken when partitions change by hand, so open watches re-check.
    faults_changed: Notify,
}

impl Net {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A simulated network between clients and one [`SimStore`].
///
/// Each [`SimNet::client`] gets its own [`SimClient`], a [`CompareExchange`]
/// handle whose requests travel over that client's own faulty link. Per
/// request the net draws a delivery delay and an answer delay; a request may
/// be lost (never applied), applied with its answer lost, or applied after the
/// caller already timed out. The caller always gets an answer or
/// [`StoreError::Unavailable`] within [`NetConfig::timeout`] (like a real
/// adapter), except for `watch`, which waits for a change and fails when the
/// link is partitioned. A request that was sent is applied even if the
/// caller's future is dropped, as on a real network.
///
/// Partitions and pauses are scheduled per client from the seed when the
/// client is created. [`SimNet::heal_all`] switches every fault off: from then
/// on, requests travel with [`NetConfig::clean_delay`] and are never lost
/// (requests already under way keep their fate).
///
/// Deterministic: all randomness comes from the seed, all time from Tokio's
/// clock (run it paused).
///
/// ```
/// use std::time::Duration;
/// use distlock::LockClient;
/// use distlock::testing::{NetConfig, SimNet, SimStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let net = SimNet::new(SimStore::cas_only(), NetConfig::default(), 7);
/// let a = LockClient::builder(net.client("a")).owner("a").build()?;
/// let b = LockClient::builder(net.client("b")).owner("b").build()?;
/// let guard = a.acquire("k").await?;
/// net.partition(0, Duration::from_secs(5));
/// assert!(b.try_acquire("k").await?.is_none());
/// # Ok::<(), distlock::LockError>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct SimNet {
    net: Arc<Net>,
}

/// Draws a duration uniformly in `range`.
fn between(rng: &mut fastrand::Rng, (lo, hi): (Duration, Duration)) -> Duration {
    let lo_us = u64::try_from(lo.as_micros()).unwrap_or(u64::MAX);
    let hi_us = u64::try_from(hi.as_micros()).unwrap_or(u64::MAX);
    if hi_us <= lo_us {
        return lo;
    }
    Duration::from_micros(rng.u64(lo_us..=hi_us))
}

fn chance(rng: &mut fastrand::Rng, p: f64) -> bool {
    p > 0.0 && rng.f64() < p
}

fn schedule(
    rng: &mut fastrand::Rng,
    plan: FaultPlan,
    start: Instant,
    horizon: Duration,
) -> Vec<Span> {
    let mut spans = Vec::new();
    if plan.every.is_zero() || plan.max.is_zero() {
        return spans;
    }
    let end = start + horizon;
    let mut at = start;
    loop {
        at += between(rng, (Duration::ZERO, plan.every * 2));
        if at >= end {
            return spans;
        }
        let len = between(rng, (plan.min, plan.max));
        spans.push((at, at + len));
        at += len;
    }
}

/// What the net decided for one request when it was sent.
#[derive(Debug)]
struct Plan {
    req: u64,
    deadline: Instant,
    /// When it reaches the server (`None`: lost on the way).
    arrives: Option<Instant>,
    /// The answer's transit time (a watch's answer leaves at the change).
    back: Duration,
    /// When the answer reaches the caller (`None`: lost).
    answer_at: Option<Instant>,
    lose_answer: bool,
    fate: Option<Fate>,
}

impl SimNet {
    /// A net onto `store` (recording into the store's trace), with `seed`.
    pub fn new(store: SimStore, config: NetConfig, seed: u64) -> SimNet {
        let trace = store.trace();
        SimNet {
            net: Arc::new(Net {
                store,
                config,
                trace,
                start: Instant::now(),
                state: Mutex::new(State {
                    rng: fastrand::Rng::with_seed(seed),
                    faults_on: true,
                    next_req: 1,
                    links: Vec::new(),
                    lease_owners: BTreeMap::new(),
                    settles: Instant::now(),
                }),
                faults_changed: Notify::new(),
            }),
        }
    }

    /// The store behind the net (for inspection and operator actions).
    pub fn store(&self) -> &SimStore {
        &self.net.store
    }

    /// The configuration.
    pub fn config(&self) -> &NetConfig {
        &self.net.config
    }

    /// The trace the net records into (the store's).
    pub fn trace(&self) -> &Trace {
        &self.net.trace
    }

    /// The longest one-way delay of a request that travels cleanly.
    pub fn max_delay(&self) -> Duration {
        self.net.config.delay.1.max(self.net.config.clean_delay.1)
    }

    /// A new client link named `name` (numbered from 0 in creation order),
    /// with its partitions and pauses drawn from the seed.
    pub fn client(&self, name: &str) -> SimClient {
        let net = &self.net;
        let mut state = net.lock();
        let State {
            rng,
            links,
            faults_on,
            ..
        } = &mut *state;
        let mut partitions = schedule(rng, net.config.partitions, net.start, net.config.horizon);
        let mut pauses = schedule(rng, net.config.pauses, net.start, net.config.horizon);
        if !*faults_on {
            // Healed before this client existed: its link is clean.
            partitions.clear();
            pauses.clear();
        }
        let id = u32::try_from(links.len()).unwrap_or(u32::MAX);
        if net.trace.is_enabled() {
            let show = |spans: &[Span]| {
                spans
                    .iter()
                    .map(|(s, e)| {
                        format!(
                            "{:.3}s+{:.3}s",
                            (*s - net.start).as_secs_f64(),
                            (*e - *s).as_secs_f64()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            net.trace.push(Event::Note(format!(
                "c{id} ({name}) partitions: [{}] pauses: [{}]",
                show(&partitions),
                show(&pauses)
            )));
        }
        links.push(Link {
            name: name.into(),
            partitions,
            pauses,
            faulty: Vec::new(),
        });
        SimClient {
            net: Arc::clone(net),
            id,
        }
    }

    /// Partitions client `client` (its number) from now for `len`: requests
    /// and answers that travel meanwhile are lost, open watches fail.
    pub fn partition(&self, client: usize, len: Duration) {
        self.add_fault(client, len, "partition");
    }

    /// Pauses client `client`'s link from now for `len`: its requests and
    /// answers are held until the pause ends.
    pub fn pause(&self, client: usize, len: Duration) {
        self.add_fault(client, len, "pause");
    }

    fn add_fault(&self, client: usize, len: Duration, kind: &'static str) {
        let now = Instant::now();
        {
            let mut state = self.net.lock();
            let Some(link) = state.links.get_mut(client) else {
                return;
            };
            let spans = if kind == "pause" {
                &mut link.pauses
            } else {
                &mut link.partitions
            };
            spans.push((now, now + len));
            spans.sort();
        }
        self.net.trace.push(Event::Fault {
            client: u32::try_from(client).unwrap_or(u32::MAX),
            kind,
            len,
        });
        self.net.faults_changed.notify_waiters();
    }

    /// Switches every fault off from now on: current partitions and pauses
    /// end, none start later, and new requests travel with
    /// [`NetConfig::clean_delay`] and are never lost.
    pub fn heal_all(&self) {
        let now = Instant::now();
        {
            let mut state = self.net.lock();
            state.faults_on = false;
            for link in &mut state.links {
                for spans in [&mut link.partitions, &mut link.pauses] {
                    spans.retain(|&(s, _)| s < now);
                    for span in spans.iter_mut() {
                        span.1 = span.1.min(now);
                    }
                }
            }
        }
        self.net.trace.push(Event::Healed);
        self.net.faults_changed.notify_waiters();
    }

    /// Whether faults are still on (no [`SimNet::heal_all`] yet).
    pub fn faults_on(&self) -> bool {
        self.net.lock().faults_on
    }

    /// The client (by number) a lease was granted to through this net.
    pub fn lease_owner(&self, lease: LeaseId) -> Option<usize> {
        self.net
            .lock()
            .lease_owners
            .get(&lease)
            .map(|&c| c as usize)
    }

    /// When every request sent while faults were on has arrived, been
    /// answered or timed out: after [`SimNet::heal_all`], waiting until then
    /// leaves only clean traffic in flight.
    pub fn settled_at(&self) -> Instant {
        self.net.lock().settles
    }

    /// How many clients were created.
    pub fn clients(&self) -> usize {
        self.net.lock().links.len()
    }

    /// The end of the first window of length `len`, starting at or after
    /// `from` and ending by `now`, in which client `client`'s link was clean:
    /// no partition or pause, and no request of the client in flight that was
    /// lost, held or late. `None` if there was no such window (yet).
    ///
    /// In such a window every request of the client is answered within twice
    /// [`SimNet::max_delay`]: what a lock algorithm can be held to.
    pub fn clean_window(
        &self,
        client: usize,
        from: Instant,
        len: Duration,
        now: Instant,
    ) -> Option<Instant> {
        let state = self.net.lock();
        let link = state.links.get(client)?;
        let mut spans: Vec<Span> = link
            .partitions
            .iter()
            .chain(&link.pauses)
            .chain(&link.faulty)
            .copied()
            .filter(|&(_, e)| e > from)
            .collect();
        spans.sort();
        let mut start = from;
        for (s, e) in spans {
            if e <= start {
                continue;
            }
            if s < start + len {
                start = start.max(e);
            }
        }
        let end = start + len;
        (end <= now).then_some(end)
    }

    /// How long client `client` was paused between `from` and `to` (a paused
    /// client cannot even run its own timers).
    pub fn paused_between(&self, client: usize, from: Instant, to: Instant) -> Duration {
        let state = self.net.lock();
        let Some(link) = state.links.get(client) else {
            return Duration::ZERO;
        };
        link.pauses
            .iter()
            .map(|&(s, e)| e.min(to).saturating_duration_since(s.max(from)))
            .sum()
    }

    /// The spans in which client `client`'s link was not clean, relative to
    /// the net's start (for reports).
    pub fn faulty_spans(&self, client: usize) -> Vec<(Duration, Duration)> {
        let state = self.net.lock();
        let Some(link) = state.links.get(client) else {
            return Vec::new();
        };
        let mut spans: Vec<Span> = link
            .partitions
            .iter()
            .chain(&link.pauses)
            .chain(&link.faulty)
            .copied()
            .collect();
        spans.sort();
        spans
            .into_iter()
            .map(|(s, e)| (s - self.net.start, e - self.net.start))
            .collect()
    }
}

/// One client's connection to the [`SimStore`] through a [`SimNet`]: a
/// [`CompareExchange`] whose requests suffer that client's faults.
#[derive(Clone, Debug)]
pub struct SimClient {
    net: Arc<Net>,
    id: u32,
}

/// Records a call dropped by its caller before it completed.
struct Pending<'a> {
    trace: &'a Trace,
    client: u32,
    req: u64,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.trace.push(Event::Failed {
                client: self.client,
                req: self.req,
                fate: Fate::Dropped,
            });
        }
    }
}

type Apply<T> = Box<dyn FnOnce(&SimStore) -> (Result<T, StoreError>, Outcome) + Send>;

impl SimClient {
    /// This client's number in its net (creation order).
    pub fn id(&self) -> usize {
        self.id as usize
    }

    fn unavailable(&self, why: &str) -> StoreError {
        let name = self
            .net
            .lock()
            .links
            .get(self.id())
            .map(|l| Arc::clone(&l.name));
        StoreError::Unavailable {
            endpoint: format!("sim:{}", name.as_deref().unwrap_or("?")),
            source: why.to_owned().into(),
        }
    }

    /// Decides the fate of a request sent now.
    fn plan(&self, request: Request) -> Plan {
        let sent = Instant::now();
        let config = &self.net.config;
        let mut state = self.net.lock();
        let req = state.next_req;
        state.next_req += 1;
        let faults_on = state.faults_on;
        let range = if faults_on {
            config.delay
        } else {
            config.clean_delay
        };
        let State { rng, links, .. } = &mut *state;
        // Always draw the same numbers in the same order, whatever is used.
        let d1 = between(rng, range);
        let d2 = between(rng, range);
        let lose_request = chance(rng, config.lose_request) && faults_on;
        let lose_answer = chance(rng, config.lose_answer) && faults_on;
        let late = chance(rng, config.late) && faults_on;
        let late_by = between(rng, (Duration::ZERO, config.late_by));
        let deadline = sent + config.timeout;
        let mut fate = None;
        let mut arrives = None;
        let mut lose = lose_answer;
        let mut answer_at = None;
        if let Some(link) = links.get_mut(self.id as usize) {
            let transit = if late { config.timeout + late_by } else { d1 };
            if lose_request {
                fate = Some(Fate::RequestLost);
            } else {
                let (at, held) = link.travel(sent, transit);
                arrives = at;
                fate = match (at, held) {
                    (None, _) => Some(Fate::Partitioned),
                    (Some(_), _) if late => Some(Fate::Late),
                    (Some(_), true) => Some(Fate::Paused),
                    (Some(_), false) => None,
                };
                if let Some(at) = at
                    && !lose_answer
                    && !matches!(request, Request::Watch { .. })
                {
                    let (back, held) = link.travel(at, d2);
                    answer_at = back;
                    match back {
                        None => {
                            lose = true;
                            fate = fate.or(Some(Fate::Partitioned));
                        }
                        Some(back) if back > deadline => {
                            fate = fate.or(Some(if held { Fate::Paused } else { Fate::Late }));
                        }
                        Some(_) if held => fate = fate.or(Some(Fate::Paused)),
                        Some(_) => {}
                    }
                }
            }
            if lose_answer {
                fate = fate.or(Some(Fate::AnswerLost));
            }
            if fate.is_some() {
                let end = arrives.map_or(deadline, |at| at.max(deadline));
                link.faulty.push((sent, end));
            }
        }
        if faults_on {
            let last = [Some(deadline), arrives, answer_at]
                .into_iter()
                .flatten()
                .max();
            if let Some(last) = last {
                state.settles = state.settles.max(last);
            }
        }
        drop(state);
        self.net.trace.push(Event::Sent {
            client: self.id,
            req,
            request,
        });
        Plan {
            req,
            deadline,
            arrives,
            back: d2,
            answer_at: if lose { None } else { answer_at },
            lose_answer: lose,
            fate,
        }
    }

    /// Sends a request; `apply` runs on the server when it arrives.
    async fn call<T: Send + 'static>(
        &self,
        request: Request,
        apply: Apply<T>,
    ) -> Result<T, StoreError> {
        let plan = self.plan(request);
        let (tx, rx) = oneshot::channel();
        let net = Arc::clone(&self.net);
        let client = self.id;
        let req = plan.req;
        if let Some(arrives) = plan.arrives {
            let answer_at = plan.answer_at;
            tokio::spawn(async move {
                sleep_until(arrives).await;
                let (result, outcome) = apply(&net.store);
                net.trace.push(Event::Applied {
                    client,
                    req,
                    outcome,
                });
                if let Some(at) = answer_at {
                    sleep_until(at).await;
                    let _ = tx.send(result);
                }
            });
        }
        let mut pending = Pending {
            trace: &self.net.trace,
            client,
            req,
            done: false,
        };
        let result = match timeout_at(plan.deadline, rx).await {
            Ok(Ok(result)) => {
                self.net.trace.push(Event::Answered { client, req });
                result
            }
            _ => {
                sleep_until(plan.deadline).await;
                self.net.trace.push(Event::Failed {
                    client,
                    req,
                    fate: plan.fate.unwrap_or(Fate::Late),
                });
                Err(self.unavailable("no answer within the request timeout (simulated)"))
            }
        };
        pending.done = true;
        result
    }

    async fn watch_inner(&self, key: &str, seen: Option<u64>) -> Result<(), StoreError> {
        let plan = self.plan(Request::Watch {
            key: key.into(),
            seen,
        });
        let client = self.id;
        let req = plan.req;
        let fail = |fate: Fate| {
            self.net.trace.push(Event::Failed { client, req, fate });
            Err(self.unavailable("the watch failed (simulated)"))
        };
        let Some(registered) = plan.arrives else {
            sleep_until(plan.deadline).await;
            return fail(plan.fate.unwrap_or(Fate::RequestLost));
        };
        if plan.lose_answer {
            // The "created" answer is lost: the adapter gives up at its timeout.
            sleep_until(plan.deadline.max(registered)).await;
            return fail(Fate::AnswerLost);
        }
        sleep_until(registered).await;
        loop {
            let changes = self.net.faults_changed.notified();
            tokio::pin!(changes);
            changes.as_mut().enable();
            let (partitioned, next_partition) = {
                let state = self.net.lock();
                let link = state.links.get(self.id());
                let now = Instant::now();
                (
                    link.is_some_and(|l| l.partitioned(now)),
                    link.and_then(|l| l.next_partition(now)),
                )
            };
            if partitioned {
                return fail(Fate::Partitioned);
            }
            let cut = async {
                match next_partition {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = self.net.store.changed(key, seen) => break,
                () = cut => {}
                () = &mut changes => {}
            }
        }
        self.net.trace.push(Event::Applied {
            client,
            req,
            outcome: Outcome::Changed,
        });
        let answer_at = {
            let state = self.net.lock();
            state
                .links
                .get(self.id())
                .and_then(|link| link.travel(Instant::now(), plan.back).0)
        };
        match answer_at {
            Some(at) => {
                sleep_until(at).await;
                self.net.trace.push(Event::Answered { client, req });
                Ok(())
            }
            None => fail(Fate::Partitioned),
        }
    }
}

fn index_of(entry: &Option<Entry>) -> Option<u64> {
    entry.as_ref().map(|e| e.index)
}

fn error_name(error: &StoreError) -> &'static str {
    match error {
        StoreError::LeaseGone(_) => "lease gone",
        StoreError::Unsupported(_) => "unsupported",
        _ => "error",
    }
}

#[async_trait]
impl CompareExchange for SimClient {
    fn backend(&self) -> &'static str {
        if self.net.store.mode().has_leases() {
            "sim-etcd"
        } else {
            "sim-cas"
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.net.store.caps()
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let k: Arc<str> = key.into();
        self.call(
            Request::Get {
                key: Arc::clone(&k),
            },
            Box::new(move |store| {
                let entry = store.get_now(&k);
                let outcome = Outcome::Read(index_of(&entry));
                (Ok(entry), outcome)
            }),
        )
        .await
    }

    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        let k: Arc<str> = key.into();
        let request = Request::Put {
            key: Arc::clone(&k),
            expect: match expect {
                Expect::Absent => None,
                Expect::Index(i) => Some(i),
            },
            nonce: record.nonce,
            ttl_ms: record.ttl_ms,
            lease,
        };
        let record = record.clone();
        self.call(
            request,
            Box::new(move |store| {
                let result = store.put_now(&k, &record, expect, lease);
                let outcome = match &result {
                    Ok(PutOutcome::Swapped { index }) => Outcome::Swapped(*index),
                    Ok(PutOutcome::Conflict { current }) => Outcome::Conflict(index_of(current)),
                    Err(e) => Outcome::Error(error_name(e)),
                };
                (result, outcome)
            }),
        )
        .await
    }

    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
        let k: Arc<str> = key.into();
        self.call(
            Request::Delete {
                key: Arc::clone(&k),
                index,
            },
            Box::new(move |store| {
                let result = store.delete_now(&k, index);
                let outcome = match &result {
                    DeleteOutcome::Deleted => Outcome::Deleted,
                    DeleteOutcome::Conflict { current } => Outcome::Conflict(index_of(current)),
                };
                (Ok(result), outcome)
            }),
        )
        .await
    }

    async fn watch(&self, key: &str, seen: Option<u64>) -> Result<(), StoreError> {
        if !self.net.store.mode().has_leases() {
            return Err(StoreError::Unsupported("watch"));
        }
        self.watch_inner(key, seen).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let net = Arc::clone(&self.net);
        let client = self.id;
        self.call(
            Request::Grant { ttl },
            Box::new(move |store| {
                let result = store.grant_lease_now(ttl);
                if let Ok(id) = &result {
                    net.lock().lease_owners.insert(*id, client);
                }
                let outcome = match &result {
                    Ok(id) => Outcome::Granted(*id),
                    Err(e) => Outcome::Error(error_name(e)),
                };
                (result, outcome)
            }),
        )
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        self.call(
            Request::KeepAlive { lease },
            Box::new(move |store| {
                let result = store.keep_alive_now(lease);
                let outcome = match &result {
                    Ok(ttl) => Outcome::KeptAlive(ttl.is_some()),
                    Err(e) => Outcome::Error(error_name(e)),
                };
                (result, outcome)
            }),
        )
        .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.call(
            Request::Revoke { lease },
            Box::new(move |store| {
                let result = store.revoke_lease_now(lease);
                let outcome = match &result {
                    Ok(()) => Outcome::Revoked,
                    Err(e) => Outcome::Error(error_name(e)),
                };
                (result, outcome)
            }),
        )
        .await
    }
}
