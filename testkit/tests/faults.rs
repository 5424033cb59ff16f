//! Fault tests against real servers through a loopback TCP fault proxy
//! (`testkit::proxy`), and dropped-future tests on every backend.
//!
//! Every lock client talks to its server through its own [`FaultProxy`], so one client
//! can be partitioned (`BlackHole`), lose its answers (`DropAnswers`) or be slowed
//! (`Delay`) while its rival is not. "Never two holders" is checked by an independent
//! observer ([`Exclusion`]): when a holder's acquire returns, every other registered
//! holder must already have been told it lost the lock.
//!
//! Run everything: `cargo test -p testkit --all-features --test faults -- --nocapture`
//! (needs `scripts/etcd.sh` and `scripts/ravendb.sh install`, as tests/etcd.rs and
//! tests/ravendb.rs do). With the default features only the proxy's own tests and the
//! memory dropped-future test run. Set `DISTLOCK_FAULT_SEED` to replay the random
//! drop points of a run (each run prints its seed).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use distlock::testing::unique_key;
use distlock::{LockClient, LockError, LockOptions, Wait};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use testkit::proxy::{FaultProxy, Mode};

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

// ---------------------------------------------------------------------------------------
// The proxy's own behaviour (no server needed).

/// An echo server on a free loopback port that counts the bytes it received.
async fn echo_server() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local addr: {e}"));
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    // Bounded by the test's runtime; at most 16 connections.
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, received)
}

async fn connect(proxy: &FaultProxy) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(proxy.addr())
        .await
        .unwrap_or_else(|e| panic!("connect to the proxy: {e}"))
}

/// Sends `message` and reads the same number of bytes back, within `limit`.
async fn round_trip(
    socket: &mut tokio::net::TcpStream,
    message: &[u8],
    limit: Duration,
) -> Option<Vec<u8>> {
    socket
        .write_all(message)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut answer = vec![0u8; message.len()];
    match tokio::time::timeout(limit, socket.read_exact(&mut answer)).await {
        Ok(Ok(_)) => Some(answer),
        _ => None,
    }
}

/// Whether the peer closed `socket` within `limit` (EOF or a reset).
async fn closed_within(socket: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    let until = Instant::now() + limit;
    while Instant::now() < until {
        match tokio::time::timeout_at(until, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // stale bytes; keep reading (bounded by `until`)
            Err(_) => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_passes_delays_black_holes_drops_answers_and_heals() {
    let (upstream, received) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await;

    // Pass: bytes flow both ways and are counted.
    let mut a = connect(&proxy).await;
    assert_eq!(
        round_trip(&mut a, b"ping", Duration::from_secs(2)).await,
        Some(b"ping".to_vec())
    );
    let stats = proxy.stats();
    assert_eq!((stats.bytes_up, stats.bytes_down), (4, 4), "{stats:?}");
    assert_eq!((stats.connections, stats.open), (1, 1), "{stats:?}");

    // Delay: each direction 60 ms late.
    proxy.delay(Duration::from_millis(60));
    assert_eq!(proxy.mode(), Mode::Delay(Duration::from_millis(60)));
    let sent = Instant::now();
    assert_eq!(
        round_trip(&mut a, b"slow", Duration::from_secs(2)).await,
        Some(b"slow".to_vec())
    );
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(120),
        "a delayed round trip took only {took:?}"
    );
    assert_eq!(proxy.heal(), 0, "nothing was lost, nothing to reset");

    // A second connection that stays idle through the partition survives the heal.
    let mut idle = connect(&proxy).await;
    assert_eq!(
        round_trip(&mut idle, b"idle", Duration::from_secs(2)).await,
        Some(b"idle".to_vec())
    );

    // BlackHole: nothing reaches the server, nothing comes back.
    proxy.black_hole();
    let before = received.load(Ordering::SeqCst);
    assert_eq!(
        round_trip(&mut a, b"lost", Duration::from_millis(300)).await,
        None
    );
    assert_eq!(
        received.load(Ordering::SeqCst),
        before,
        "a black hole forwarded bytes"
    );
    // A new connection is accepted but stalls too.
    let mut during = connect(&proxy).await;
    assert_eq!(
        round_trip(&mut during, b"new", Duration::from_millis(300)).await,
        None
    );
    assert!(proxy.stats().dropped_up >= 7, "{:?}", proxy.stats());
    // Heal closes the two connections that lost bytes, not the idle one.
    assert_eq!(proxy.heal(), 2);
    assert!(closed_within(&mut a, Duration::from_secs(2)).await);
    assert!(closed_within(&mut during, Duration::from_secs(2)).await);
    assert_eq!(
        round_trip(&mut idle, b"again", Duration::from_secs(2)).await,
        Some(b"again".to_vec()),
        "a connection that lost nothing must survive a heal"
    );

    // DropAnswers: requests reach the server, answers are discarded.
    let mut b = connect(&proxy).await;
    proxy.drop_answers();
    let before = received.load(Ordering::SeqCst);
    assert_eq!(
        round_trip(&mut b, b"applied", Duration::from_millis(300)).await,
        None
    );
    // More requests on the same connection still reach the server.
    b.write_all(b"more")
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let until = Instant::now() + Duration::from_secs(2);
    while received.load(Ordering::SeqCst) < before + 11 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(received.load(Ordering::SeqCst), before + 11);
    assert!(proxy.stats().dropped_down >= 11, "{:?}", proxy.stats());
    // Back to Pass: the connection that lost answers is closed; a new one works.
    assert_eq!(proxy.set_mode(Mode::Pass), 1);
    assert!(closed_within(&mut b, Duration::from_secs(2)).await);
    let mut c = connect(&proxy).await;
    assert_eq!(
        round_trip(&mut c, b"fresh", Duration::from_secs(2)).await,
        Some(b"fresh".to_vec())
    );
    let stats = proxy.stats();
    println!("proxy self-test: {stats:?}");
    assert_eq!(stats.reset, 3, "{stats:?}");

    // Dropping the proxy closes its connections and stops listening.
    let addr = proxy.addr();
    drop(proxy);
    assert!(closed_within(&mut c, Duration::from_secs(2)).await);
    assert!(closed_within(&mut idle, Duration::from_secs(2)).await);
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the dropped proxy still accepts connections");
}

// ---------------------------------------------------------------------------------------
// Dropped futures at random points (memory, etcd, RavenDB).

/// Which operation a try starts and then drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    AcquireWith,
    WithLock,
    Release,
}

/// When the future is dropped.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Before it was ever polled (its captured state, a guard for instance, is dropped).
    Unpolled,
    /// Right after its first poll.
    FirstPoll,
    /// After this long (it may have completed by then).
    After(Duration),
}

/// Polls `future` until `cut`, then drops it. Returns whether it completed first
/// (its output, a guard for instance, is dropped right away then).
async fn run_until<F: Future>(future: F, cut: Cut) -> bool {
    match cut {
        Cut::Unpolled => {
            drop(future);
            false
        }
        Cut::FirstPoll => {
            let mut future = pin!(future);
            poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await
        }
        Cut::After(after) => tokio::time::timeout(after, future).await.is_ok(),
    }
}

/// What the rival found at the key after a dropped try.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Found {
    Free,
    Held,
    Error(String),
}

#[derive(Debug)]
struct TryReport {
    op: Op,
    cut: Cut,
    contended: bool,
    completed: bool,
    /// One ttl + slack after the drop.
    first: Found,
    /// A further ttl + slack later, only when `first` was `Held`.
    second: Option<Found>,
}

/// What the rival finds, looking again (up to 3 times, 1 s apart) when it cannot
/// tell: a check that the server answers too slowly says nothing about the key. Here
/// the RavenDB server sometimes answered nothing, or too slowly for the ttl, for a few
/// seconds (in 2 of about 12 runs of this file on one day; cause not found, the CPU
/// was mostly idle in a similar stall). Only an error on every look counts as one.
async fn rival_finds(rival: &LockClient, key: &str) -> Found {
    let mut found = rival_looks(rival, key).await;
    for _ in 0..2 {
        if !matches!(found, Found::Error(_)) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        found = rival_looks(rival, key).await;
    }
    found
}

async fn rival_looks(rival: &LockClient, key: &str) -> Found {
    match rival.try_acquire(key).await {
        Ok(Some(guard)) => match guard.release().await {
            Ok(()) => Found::Free,
            Err(error) => Found::Error(format!("the rival's release failed: {error}")),
        },
        Ok(None) => Found::Held,
        Err(error) => Found::Error(error.to_string()),
    }
}

/// One try: start `op` on `key` with client `a`, drop it at a random point, then check
/// (one ttl + `slack` later, `a` still alive) that `rival` can take the key.
async fn one_try(
    a: LockClient,
    rival: LockClient,
    key: String,
    ttl: Duration,
    slack: Duration,
    seed: u64,
) -> TryReport {
    let mut rng = fastrand::Rng::with_seed(seed);
    let op = match rng.u8(0..3) {
        0 => Op::AcquireWith,
        1 => Op::WithLock,
        _ => Op::Release,
    };
    let cut = match rng.u8(0..16) {
        0 => Cut::Unpolled,
        1..=4 => Cut::FirstPoll,
        _ => Cut::After(Duration::from_micros(rng.u64(0..=4_000))),
    };
    let options = LockOptions::default()
        .ttl(ttl)
        .wait(Wait::For(Duration::from_secs(5)));
    let error = |what: &str, e: LockError| TryReport {
        op,
        cut,
        contended: false,
        completed: false,
        first: Found::Error(format!("{what}: {e}")),
        second: None,
    };
    // A third of the acquires start while the rival holds the key for 0-3 ms.
    let contended = op != Op::Release && rng.u8(0..3) == 0;
    let rival_release = if contended {
        let guard = match rival.acquire_with(&key, &options).await {
            Ok(guard) => guard,
            Err(e) => return error("the rival's first acquire", e),
        };
        let after = Duration::from_micros(rng.u64(0..=3_000));
        Some(tokio::spawn(async move {
            tokio::time::sleep(after).await;
            guard.release().await
        }))
    } else {
        None
    };
    let body_for = Duration::from_micros(rng.u64(0..=3_000));
    let completed = match op {
        Op::AcquireWith => run_until(a.acquire_with(&key, &options), cut).await,
        Op::WithLock => {
            let body = tokio::time::sleep(body_for);
            run_until(a.with_lock(&key, &options, body), cut).await
        }
        Op::Release => {
            let guard = match a.acquire_with(&key, &options).await {
                Ok(guard) => guard,
                Err(e) => return error("the acquire before the release", e),
            };
            run_until(guard.release(), cut).await
        }
    };
    let dropped_at = Instant::now();
    if let Some(release) = rival_release {
        match release.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return error("the rival's release", e),
            Err(e) => panic!("the rival's release task: {e}"),
        }
    }
    tokio::time::sleep_until(dropped_at + ttl + slack).await;
    let first = rival_finds(&rival, &key).await;
    let second = if first == Found::Held {
        tokio::time::sleep(ttl + slack).await;
        Some(rival_finds(&rival, &key).await)
    } else {
        None
    };
    drop(a); // Alive until here: a key still held now is held by a live client.
    TryReport {
        op,
        cut,
        contended,
        completed,
        first,
        second,
    }
}

fn seed() -> u64 {
    std::env::var("DISTLOCK_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        })
}

/// `tries` dropped futures on distinct keys, started `spacing` apart; prints the
/// figures and fails if any key was still held one ttl + `slack` after its drop.
async fn dropped_futures_leave_no_key_held(
    backend: &str,
    a: LockClient,
    rival: LockClient,
    tries: u64,
    spacing: Duration,
    ttl: Duration,
    slack: Duration,
) {
    let seed = seed();
    println!("{backend}: dropped futures: {tries} tries, seed {seed} (DISTLOCK_FAULT_SEED)");
    let prefix = unique_key(&format!("faults/dropped/{backend}"));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..tries {
        let (a, rival) = (a.clone(), rival.clone());
        let key = format!("{prefix}/{i}");
        tasks.spawn(async move {
            tokio::time::sleep(spacing * i as u32).await;
            one_try(a, rival, key, ttl, slack, seed.wrapping_add(i)).await
        });
    }
    let mut reports = Vec::new();
    let bound = spacing * tries as u32 + (ttl + slack) * 2 + Duration::from_secs(60);
    let drained = tokio::time::timeout(bound, async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(report) => reports.push(report),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the tries did not finish within {bound:?}");
    let mut stuck = 0;
    let mut stuck_for_good = 0;
    let mut errors = Vec::new();
    for op in [Op::AcquireWith, Op::WithLock, Op::Release] {
        let of_op: Vec<&TryReport> = reports.iter().filter(|r| r.op == op).collect();
        let dropped = of_op.iter().filter(|r| !r.completed).count();
        let contended = of_op.iter().filter(|r| r.contended).count();
        let held: Vec<&&TryReport> = of_op.iter().filter(|r| r.first == Found::Held).collect();
        let still = held
            .iter()
            .filter(|r| r.second == Some(Found::Held))
            .count();
        let by_cut =
            |of: &[&&TryReport], kind: fn(&Cut) -> bool| of.iter().filter(|r| kind(&r.cut)).count();
        let unpolled = |c: &Cut| matches!(c, Cut::Unpolled);
        let first_poll = |c: &Cut| matches!(c, Cut::FirstPoll);
        let after = |c: &Cut| matches!(c, Cut::After(_));
        let all: Vec<&&TryReport> = of_op.iter().collect();
        println!(
            "{backend}: {op:?}: {} tries ({dropped} dropped before completing, {contended} \
             contended; cut unpolled/first poll/after 0-4 ms: {}/{}/{}): {} keys still held \
             one ttl + {} after the drop (by cut: {}/{}/{}), {still} still held another \
             ttl + {} later",
            of_op.len(),
            by_cut(&all, unpolled),
            by_cut(&all, first_poll),
            by_cut(&all, after),
            held.len(),
            ms(slack),
            by_cut(&held, unpolled),
            by_cut(&held, first_poll),
            by_cut(&held, after),
            ms(slack)
        );
        stuck += held.len();
        stuck_for_good += still;
        for report in &of_op {
            for found in [Some(&report.first), report.second.as_ref()]
                .into_iter()
                .flatten()
            {
                if let Found::Error(error) = found {
                    errors.push(format!("{op:?}: {error}"));
                }
            }
        }
    }
    println!(
        "{backend}: dropped futures: {} tries in {:?} (seed {seed}, ttl {ttl:?}): {stuck} keys \
         stuck one ttl + {} after the drop, {stuck_for_good} of them still held after \
         another ttl (a live client keeps them), {} errors",
        reports.len(),
        started.elapsed(),
        ms(slack),
        errors.len()
    );
    assert!(errors.is_empty(), "{backend}: errors: {errors:#?}");
    assert_eq!(
        stuck,
        0,
        "{backend}: {stuck} of {tries} keys were still held one ttl + {} after their \
         future was dropped, while the client was alive ({stuck_for_good} still after \
         another ttl); seed {seed}",
        ms(slack)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_dropped_futures_leave_no_key_held() {
    let store = distlock::store::memory::MemoryStore::new();
    let a = LockClient::new(store.clone());
    let rival = LockClient::new(store);
    dropped_futures_leave_no_key_held(
        "memory",
        a,
        rival,
        400,
        Duration::from_millis(5),
        Duration::from_secs(1),
        Duration::from_millis(500),
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Real-server scenarios, the same for etcd and RavenDB.

#[cfg(any(feature = "etcd", feature = "ravendb"))]
mod scenarios {
    use super::*;
    use distlock::{LockGuard, LostReason, LostSignal};
    use std::sync::{Mutex, PoisonError};

    // The independent observer.

    /// Watches holders from outside the library. A holder enters when its acquire returns
    /// and leaves when it releases. Entering while another holder is inside and has not
    /// been told it lost the lock (its [`LostSignal`] is not set) is an overlap: two
    /// holders at once. Tokens of successive entries must grow.
    #[derive(Default)]
    struct Exclusion {
        state: Mutex<ExclusionState>,
    }

    #[derive(Default)]
    struct ExclusionState {
        next: u64,
        inside: Vec<Inside>,
        overlaps: Vec<String>,
        last_token: u64,
        regressions: Vec<String>,
    }

    struct Inside {
        ticket: u64,
        who: &'static str,
        token: u64,
        since: Instant,
        signal: LostSignal,
    }

    impl Exclusion {
        fn state(&self) -> std::sync::MutexGuard<'_, ExclusionState> {
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// `who` just got `guard`; returns the ticket for [`Exclusion::exit`].
        fn enter(&self, who: &'static str, guard: &LockGuard) -> u64 {
            let now = Instant::now();
            let mut state = self.state();
            let overlaps: Vec<String> = state
                .inside
                .iter()
                .filter(|other| !other.signal.is_lost())
                .map(|other| {
                    format!(
                        "{who} (token {}) got the lock while {} (token {}, holding for \
                         {:?}) had not been told it lost it",
                        guard.token(),
                        other.who,
                        other.token,
                        now - other.since
                    )
                })
                .collect();
            state.overlaps.extend(overlaps);
            if guard.token() <= state.last_token {
                let regression = format!(
                    "{who} entered with token {} after token {}",
                    guard.token(),
                    state.last_token
                );
                state.regressions.push(regression);
            }
            state.last_token = state.last_token.max(guard.token());
            state.next += 1;
            let ticket = state.next;
            state.inside.push(Inside {
                ticket,
                who,
                token: guard.token(),
                since: now,
                signal: guard.lost_signal(),
            });
            ticket
        }

        fn exit(&self, ticket: u64) {
            self.state().inside.retain(|inside| inside.ticket != ticket);
        }

        /// Overlaps and token regressions seen so far (empty when all is well).
        fn violations(&self) -> Vec<String> {
            let state = self.state();
            state
                .overlaps
                .iter()
                .chain(&state.regressions)
                .cloned()
                .collect()
        }
    }

    /// What a holder saw while holding.
    #[derive(Debug)]
    struct Held {
        token: u64,
        acquired_at: Instant,
        /// When it was told it lost the lock, and why (within the holding time).
        lost: Option<(Instant, LostReason)>,
        /// The release's outcome, as text.
        release: String,
    }

    /// Enters `exclusion`, holds `guard` for `hold` or until it is lost, leaves, releases.
    async fn hold(
        exclusion: &Exclusion,
        who: &'static str,
        guard: LockGuard,
        hold: Duration,
    ) -> Held {
        let acquired_at = Instant::now();
        let ticket = exclusion.enter(who, &guard);
        let lost = tokio::time::timeout(hold, guard.lost())
            .await
            .ok()
            .map(|reason| (Instant::now(), reason));
        exclusion.exit(ticket);
        let token = guard.token();
        let release = match tokio::time::timeout(Duration::from_secs(10), guard.release()).await {
            Ok(Ok(())) => "released".to_owned(),
            Ok(Err(error)) => format!("release failed: {error}"),
            Err(_) => "release hung for 10 s".to_owned(),
        };
        Held {
            token,
            acquired_at,
            lost,
            release,
        }
    }

    /// Whether a lock error is one a caller can act on (not a panic, not a config error).
    fn is_typed_failure(error: &LockError) -> bool {
        matches!(
            error,
            LockError::Timeout { .. }
                | LockError::Unavailable { .. }
                | LockError::Backend { .. }
                | LockError::Lost { .. }
        )
    }

    /// `at - from` in ms, signed.
    fn since(from: Instant, at: Instant) -> String {
        if at >= from {
            format!("+{} ms", (at - from).as_millis())
        } else {
            format!("-{} ms", (from - at).as_millis())
        }
    }

    /// The lock ttl of the scenarios (etcd leases are whole seconds).
    pub const TTL: Duration = Duration::from_secs(2);
    /// Per-request (and connect) timeout of the stores.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);
    /// "A round trip", generously: two shared cores and five engineers.
    pub const SLACK: Duration = Duration::from_secs(1);
    /// How long a holder keeps a lock to show it is really held: longer than any
    /// lease or takeover clock started before it got the lock can run.
    pub const HOLD: Duration = Duration::from_millis(3_500);
    /// How long the acquires of the scenarios may wait.
    pub const WAIT: Duration = Duration::from_secs(15);

    /// Makes a lock client of the backend under test on one endpoint URL.
    pub type MakeClient = Arc<dyn Fn(&str, Duration, Duration) -> LockClient + Send + Sync>;

    /// The backend under test: where its server listens and how to make a client.
    #[derive(Clone)]
    pub struct Target {
        pub name: &'static str,
        pub upstream: std::net::SocketAddr,
        pub make: MakeClient,
    }

    impl Target {
        /// A client with `ttl` talking to the server through a new proxy of its own.
        pub async fn proxied(&self, ttl: Duration) -> (FaultProxy, LockClient) {
            let proxy = FaultProxy::start(self.upstream).await;
            let client = (self.make)(&proxy.url(), REQUEST_TIMEOUT, ttl);
            (proxy, client)
        }
    }

    fn waiting(wait: Duration) -> LockOptions {
        LockOptions::default().ttl(TTL).wait(Wait::For(wait))
    }

    /// One acquire and release on a side key, so the client has its connection (and
    /// on etcd its lease session) before the fault starts, as a running service would.
    async fn warm_up(client: &LockClient, key: &str) {
        let guard = client
            .acquire_with(&format!("{key}/warm-up"), &waiting(Duration::from_secs(5)))
            .await
            .unwrap_or_else(|e| panic!("warm-up acquire: {e}"));
        guard
            .release()
            .await
            .unwrap_or_else(|e| panic!("warm-up release: {e}"));
    }

    /// How a contender's acquire ended.
    #[derive(Debug)]
    enum Outcome {
        Held(Held),
        Failed { at: Instant, error: LockError },
    }

    async fn contend(
        client: LockClient,
        key: String,
        wait: Duration,
        exclusion: Arc<Exclusion>,
        who: &'static str,
        hold_for: Duration,
    ) -> Outcome {
        match client.acquire_with(&key, &waiting(wait)).await {
            Ok(guard) => Outcome::Held(hold(&exclusion, who, guard, hold_for).await),
            Err(error) => Outcome::Failed {
                at: Instant::now(),
                error,
            },
        }
    }

    async fn join<T>(what: &str, task: tokio::task::JoinHandle<T>, limit: Duration) -> T {
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("{what} did not finish within {limit:?}"),
        }
    }

    fn describe(outcome: &Outcome, zero: Instant) -> String {
        match outcome {
            Outcome::Held(held) => format!(
                "got token {} at {}, {}, {}",
                held.token,
                since(zero, held.acquired_at),
                match held.lost {
                    Some((at, reason)) => format!("told lost at {} ({reason})", since(zero, at)),
                    None => "never told lost".to_owned(),
                },
                held.release
            ),
            Outcome::Failed { at, error } => format!("failed at {}: {error}", since(zero, *at)),
        }
    }

    /// Checks a holder that got the lock after the network healed: it really holds
    /// it, or, if it is told lost anyway (say its session ran out just then), its
    /// record is cleaned up: `rival_got` within ttl + slack of the lost signal. One
    /// that failed must have failed with a typed error and left the key free for
    /// `rival_got` within ttl + slack of the heal (or of its failure, if later).
    /// (Two holders at once are the observer's to report.)
    fn check_after_heal(
        failures: &mut Vec<String>,
        round: &str,
        who: &str,
        outcome: &Outcome,
        healed: Instant,
        rival_got: Option<Instant>,
    ) {
        match outcome {
            Outcome::Held(held) => {
                if let Some((at, reason)) = held.lost {
                    let note = format!(
                        "{round}: {who} got a guard at {} (after the heal) and was told lost \
                         {} later ({reason}) on a healed network",
                        since(healed, held.acquired_at),
                        ms(at - held.acquired_at)
                    );
                    match rival_got {
                        Some(got) if got <= at + TTL + SLACK => println!("NOTE {note}"),
                        Some(got) => failures.push(format!(
                            "{note}; its record was not cleaned up: the rival got the key only \
                             {} after that",
                            ms(got.saturating_duration_since(at))
                        )),
                        None => failures.push(format!(
                            "{note}; its record was not cleaned up: the rival never got the key"
                        )),
                    }
                }
            }
            Outcome::Failed { at, error } => {
                if !is_typed_failure(error) {
                    failures.push(format!("{round}: {who} failed with {error:?}"));
                }
                let limit = healed.max(*at) + TTL + SLACK;
                match rival_got {
                    Some(got) if got <= limit => {}
                    Some(got) => failures.push(format!(
                        "{round}: {who} failed ({error}) and the rival got the key only {} \
                         after the heal (limit ttl + {})",
                        since(healed, got),
                        ms(SLACK)
                    )),
                    None => failures.push(format!(
                        "{round}: {who} failed ({error}) and the rival never got the key"
                    )),
                }
            }
        }
    }

    fn acquired_at(outcome: &Outcome) -> Option<Instant> {
        match outcome {
            Outcome::Held(held) => Some(held.acquired_at),
            Outcome::Failed { .. } => None,
        }
    }

    fn finish(name: &str, scenario: &str, failures: Vec<String>) {
        assert!(
            failures.is_empty(),
            "{name}: {scenario}: {} failure(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// Partition during acquire: B holds the key; A waits for it; A is black-holed;
    /// B releases during the partition; heal after `partition`. A must end with a
    /// guard it really holds or a typed error; never two holders.
    pub async fn partition_during_acquire(target: &Target) {
        // The rounds run side by side, each with its own key, clients and proxies.
        let mut rounds = tokio::task::JoinSet::new();
        // Shorter than the ttl; just past the client's local deadline (ttl - ttl/10 after
        // its last renewal) but inside the server's own expiry; past both.
        for partition in [
            Duration::from_millis(800),
            Duration::from_millis(1_900),
            Duration::from_millis(3_000),
        ] {
            rounds.spawn(acquire_round(target.clone(), partition));
        }
        let mut failures = Vec::new();
        while let Some(round) = rounds.join_next().await {
            match round {
                Ok(found) => failures.extend(found),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        finish(target.name, "partition during acquire", failures);
    }

    /// One round of [`partition_during_acquire`]; returns its failures.
    async fn acquire_round(target: Target, partition: Duration) -> Vec<String> {
        let mut failures = Vec::new();
        let round = format!(
            "{} partition during acquire, {}",
            target.name,
            ms(partition)
        );
        let key = unique_key("faults/partition-acquire");
        let exclusion = Arc::new(Exclusion::default());
        let (proxy_a, a) = target.proxied(TTL).await;
        let (_proxy_b, b) = target.proxied(TTL).await;
        warm_up(&a, &key).await;
        let b_guard = b
            .acquire_with(&key, &waiting(Duration::from_secs(5)))
            .await
            .unwrap_or_else(|e| panic!("{round}: B's first acquire: {e}"));
        let b_ticket = exclusion.enter("B", &b_guard);
        let a_task = tokio::spawn(contend(
            a.clone(),
            key.clone(),
            WAIT,
            Arc::clone(&exclusion),
            "A",
            HOLD,
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Start the partition right after A's latest message (on etcd, with A
        // waiting on a watch, that is its lease keep-alive).
        let aligned = proxy_a.wait_for_request(Duration::from_secs(1)).await;
        proxy_a.black_hole();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        exclusion.exit(b_ticket);
        b_guard
            .release()
            .await
            .unwrap_or_else(|e| panic!("{round}: B's release: {e}"));
        tokio::time::sleep_until(t0 + partition).await;
        let reset = proxy_a.heal();
        let healed = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b_task = tokio::spawn(contend(
            b.clone(),
            key.clone(),
            WAIT,
            Arc::clone(&exclusion),
            "B",
            Duration::from_millis(300),
        ));
        let a_out = join("A's acquire", a_task, WAIT + HOLD + SLACK * 5).await;
        let b_out = join("B's acquire", b_task, WAIT + HOLD + SLACK * 5).await;
        println!(
            "{round}: partition from t0 (aligned to a request: {aligned}), healed at {} \
             ({reset} connections reset); A {}; B {}; proxy A {:?}",
            since(t0, healed),
            describe(&a_out, t0),
            describe(&b_out, t0),
            proxy_a.stats()
        );
        failures.extend(
            exclusion
                .violations()
                .into_iter()
                .map(|v| format!("{round}: TWO HOLDERS: {v}")),
        );
        check_after_heal(
            &mut failures,
            &round,
            "A",
            &a_out,
            healed,
            acquired_at(&b_out),
        );
        if let Outcome::Failed { error, .. } = &b_out {
            failures.push(format!(
                "{round}: B could not get the key after A was done: {error}"
            ));
        }
        failures
    }

    /// Partition while holding past the ttl: A holds, B waits, A is black-holed.
    /// A must be told lost before B's acquire returns.
    pub async fn partition_while_holding(target: &Target) {
        let round = format!("{} partition while holding", target.name);
        let key = unique_key("faults/partition-hold");
        let exclusion = Arc::new(Exclusion::default());
        let (proxy_a, a) = target.proxied(TTL).await;
        let (_proxy_b, b) = target.proxied(TTL).await;
        let a_guard = a
            .acquire_with(&key, &waiting(Duration::from_secs(5)))
            .await
            .unwrap_or_else(|e| panic!("{round}: A's acquire: {e}"));
        let a_ticket = exclusion.enter("A", &a_guard);
        let signal = a_guard.lost_signal();
        let lost_task = tokio::spawn(async move {
            let reason = signal.lost().await;
            (Instant::now(), reason)
        });
        let b_task = {
            let exclusion = Arc::clone(&exclusion);
            let b = b.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let guard = b
                    .acquire_with(&key, &waiting(TTL * 3 + SLACK))
                    .await
                    .map_err(|e| e.to_string())?;
                let at = Instant::now();
                let ticket = exclusion.enter("B", &guard);
                tokio::time::sleep(Duration::from_millis(100)).await;
                exclusion.exit(ticket);
                let _ = guard.release().await;
                Ok::<Instant, String>(at)
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy_a.black_hole();
        let t0 = Instant::now();
        let b_got = join("B's acquire", b_task, TTL * 3 + SLACK * 5).await;
        let lost = tokio::time::timeout(TTL * 2, lost_task).await;
        proxy_a.heal();
        exclusion.exit(a_ticket);
        let a_release = match a_guard.release().await {
            Ok(()) => "released".to_owned(),
            Err(e) => e.to_string(),
        };
        let lost = match lost {
            Ok(Ok(lost)) => Some(lost),
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        };
        let margin = match (&b_got, &lost) {
            (Ok(b_at), Some((a_at, _))) => Some(b_at.saturating_duration_since(*a_at)),
            _ => None,
        };
        let negative = matches!((&b_got, &lost), (Ok(b_at), Some((a_at, _))) if b_at < a_at);
        println!(
            "{round}: partition at t0; A told lost at {}; B acquired at {}; margin (B's \
             acquire minus A's lost signal) {}{}; A's release afterwards: {a_release}",
            lost.as_ref()
                .map_or("never".to_owned(), |(at, reason)| format!(
                    "{} ({reason})",
                    since(t0, *at)
                )),
            b_got
                .as_ref()
                .map_or_else(|e| format!("never ({e})"), |at| since(t0, *at)),
            if negative { "-" } else { "" },
            margin.map_or("n/a".to_owned(), ms),
        );
        let mut failures: Vec<String> = exclusion
            .violations()
            .into_iter()
            .map(|v| format!("{round}: TWO HOLDERS: {v}"))
            .collect();
        if lost.is_none() {
            failures.push(format!(
                "{round}: A was never told it lost the lock while partitioned"
            ));
        }
        if let Err(e) = &b_got {
            failures.push(format!("{round}: B never got the key: {e}"));
        }
        if negative || margin.is_some_and(|m| m.is_zero()) {
            failures.push(format!(
                "{round}: A was told lost only after B's acquire returned (margin \
                 -{})",
                margin.map_or("?".to_owned(), ms)
            ));
        }
        finish(target.name, "partition while holding", failures);
    }

    /// Partition during release: A holds, is black-holed, releases (once running the
    /// release until it fails, once dropping its future after 100 ms); heal after
    /// 800 ms. A rival must get the key within ttl + slack of the heal.
    pub async fn partition_during_release(target: &Target) {
        let mut failures = Vec::new();
        for drop_release in [false, true] {
            release_round(target, drop_release, &mut failures).await;
        }
        finish(target.name, "partition during release", failures);
    }

    async fn release_round(target: &Target, drop_release: bool, failures: &mut Vec<String>) {
        let variant = if drop_release {
            "dropped after 100 ms"
        } else {
            "run to its end"
        };
        let round = format!("{} partition during release ({variant})", target.name);
        let key = unique_key("faults/partition-release");
        let (proxy_a, a) = target.proxied(TTL).await;
        let (_proxy_b, b) = target.proxied(TTL).await;
        let guard = a
            .acquire_with(&key, &waiting(Duration::from_secs(5)))
            .await
            .unwrap_or_else(|e| panic!("{round}: A's acquire: {e}"));
        let token = guard.token();
        proxy_a.black_hole();
        let t0 = Instant::now();
        let release = if drop_release {
            match tokio::time::timeout(Duration::from_millis(100), guard.release()).await {
                Ok(Ok(())) => "returned Ok during the partition".to_owned(),
                Ok(Err(e)) => format!("failed: {e}"),
                Err(_) => "dropped after 100 ms".to_owned(),
            }
        } else {
            match tokio::time::timeout(Duration::from_secs(10), guard.release()).await {
                Ok(Ok(())) => "returned Ok during the partition".to_owned(),
                Ok(Err(e)) => format!("failed: {e}"),
                Err(_) => "hung 10 s".to_owned(),
            }
        };
        let release_done = Instant::now();
        // Shorter than the ttl: a client that keeps its session or renewals going keeps
        // them going across this partition.
        tokio::time::sleep_until(t0 + Duration::from_millis(800)).await;
        let reset = proxy_a.heal();
        let healed = Instant::now();
        let rival = b
            .acquire_with(&key, &waiting(TTL + SLACK))
            .await
            .map(|guard| (Instant::now(), guard));
        let got = match rival {
            Ok((at, guard)) => {
                let _ = guard.release().await;
                since(healed, at)
            }
            Err(error) => {
                // Still held: is it held for good (a live client keeps it), or only late?
                tokio::time::sleep(TTL + SLACK).await;
                let later = match b.try_acquire(&key).await {
                    Ok(Some(guard)) => {
                        let _ = guard.release().await;
                        "free another ttl + 1 s later".to_owned()
                    }
                    Ok(None) => "STILL HELD another ttl + 1 s later (by a live client)".to_owned(),
                    Err(e) => format!("then: {e}"),
                };
                failures.push(format!(
                    "{round}: the key (token {token}) was not free within ttl + {} of the \
                     heal: {error}; {later}",
                    ms(SLACK)
                ));
                format!("never within the limit; {later}")
            }
        };
        println!(
            "{round}: A's release {release} (at {}), healed at {} ({reset} connections \
             reset); the rival got the key at {got} after the heal; proxy A {:?}",
            since(t0, release_done),
            since(t0, healed),
            proxy_a.stats()
        );
        drop(a); // Alive until after the check.
    }

    /// Lost answers on acquire: A's answers are dropped while it acquires a free key
    /// (its writes reach the server); B starts waiting 100 ms later; heal after
    /// `drop_for`. A's acquire must return a guard that is really held, or fail and
    /// leave the key to B within ttl + slack; never two holders.
    pub async fn lost_answers_on_acquire(target: &Target) {
        // The rounds run side by side, each with its own key, clients and proxies.
        let mut rounds = tokio::task::JoinSet::new();
        // Inside the client's local deadline; past the takeover point of a rival that
        // saw the first write; past the client's local lease deadline on etcd.
        for drop_for in [
            Duration::from_millis(1_000),
            Duration::from_millis(1_600),
            Duration::from_millis(2_500),
        ] {
            rounds.spawn(lost_answers_round(target.clone(), drop_for));
        }
        let mut failures = Vec::new();
        while let Some(round) = rounds.join_next().await {
            match round {
                Ok(found) => failures.extend(found),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        finish(target.name, "lost answers on acquire", failures);
    }

    /// One round of [`lost_answers_on_acquire`]; returns its failures.
    async fn lost_answers_round(target: Target, drop_for: Duration) -> Vec<String> {
        let mut failures = Vec::new();
        let round = format!("{} lost answers on acquire, {}", target.name, ms(drop_for));
        let key = unique_key("faults/lost-answers");
        let exclusion = Arc::new(Exclusion::default());
        let (proxy_a, a) = target.proxied(TTL).await;
        let (_proxy_b, b) = target.proxied(TTL).await;
        warm_up(&a, &key).await;
        let aligned = proxy_a.wait_for_request(Duration::from_secs(1)).await;
        proxy_a.drop_answers();
        let t0 = Instant::now();
        let a_task = tokio::spawn(contend(
            a.clone(),
            key.clone(),
            WAIT,
            Arc::clone(&exclusion),
            "A",
            HOLD,
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b_task = tokio::spawn(contend(
            b.clone(),
            key.clone(),
            WAIT,
            Arc::clone(&exclusion),
            "B",
            Duration::from_millis(300),
        ));
        tokio::time::sleep_until(t0 + drop_for).await;
        let reset = proxy_a.heal();
        let healed = Instant::now();
        let a_out = join("A's acquire", a_task, WAIT + HOLD + SLACK * 5).await;
        let b_out = join("B's acquire", b_task, WAIT + HOLD + SLACK * 5).await;
        println!(
            "{round}: answers dropped from t0 (aligned to a request: {aligned}), healed \
             at {} ({reset} connections reset); A {}; B {}; proxy A {:?}",
            since(t0, healed),
            describe(&a_out, t0),
            describe(&b_out, t0),
            proxy_a.stats()
        );
        failures.extend(
            exclusion
                .violations()
                .into_iter()
                .map(|v| format!("{round}: TWO HOLDERS: {v}")),
        );
        check_after_heal(
            &mut failures,
            &round,
            "A",
            &a_out,
            healed,
            acquired_at(&b_out),
        );
        if let Outcome::Failed { error, .. } = &b_out {
            failures.push(format!("{round}: B never got the key: {error}"));
        }
        failures
    }

    /// Dropped futures against a real server: `a` through a proxy that delays every
    /// chunk by 1 ms each way (so drops land mid-flight more often), the rival direct;
    /// tries start `spacing` apart. No fault here, so the request timeout is generous
    /// (5 s, the RavenDB store's default): a slow answer under load must not count as a
    /// stuck key. With 2 s, one full run here saw the server answer nothing for about
    /// 3 s (every check of 145 tries timed out; the next two runs of the file passed).
    pub async fn dropped_futures(target: &Target, direct_url: &str, tries: u64, spacing: Duration) {
        let proxy = FaultProxy::start(target.upstream).await;
        proxy.delay(Duration::from_millis(1));
        let timeout = Duration::from_secs(5);
        let a = (target.make)(&proxy.url(), timeout, TTL);
        let rival = (target.make)(direct_url, timeout, TTL);
        let warm = unique_key("faults/dropped-warm-up");
        warm_up(&a, &warm).await;
        warm_up(&rival, &warm).await;
        dropped_futures_leave_no_key_held(target.name, a, rival, tries, spacing, TTL, SLACK).await;
        println!(
            "{}: dropped futures: proxy {:?}",
            target.name,
            proxy.stats()
        );
    }
}

// ---------------------------------------------------------------------------------------
// etcd (single node).

#[cfg(feature = "etcd")]
mod etcd {
    use super::scenarios::{self, Target};
    use super::*;
    use lock_runtime::store::etcd::EtcdStore;
    use testkit::etcd::Cluster as EtcdCluster;

    fn target(etcd: &EtcdCluster) -> Target {
        Target {
            name: "etcd",
            upstream: std::net::SocketAddr::from(([127, 0, 0, 1], etcd.client_port(0))),
            make: Arc::new(|url: &str, timeout: Duration, ttl: Duration| {
                let store = EtcdStore::builder()
                    .endpoint(url)
                    .prefix("faults/")
                    .request_timeout(timeout)
                    .connect_timeout(timeout)
                    .build()
                    .unwrap_or_else(|e| panic!("building the etcd store: {e}"));
                LockClient::builder(store)
                    .defaults(LockOptions::default().ttl(ttl))
                    .build()
                    .unwrap_or_else(|e| panic!("building the client: {e}"))
            }),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partition_during_acquire() {
        let etcd = EtcdCluster::single();
        scenarios::partition_during_acquire(&target(&etcd)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partition_while_holding_past_the_ttl() {
        let etcd = EtcdCluster::single();
        scenarios::partition_while_holding(&target(&etcd)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partition_during_release() {
        let etcd = EtcdCluster::single();
        scenarios::partition_during_release(&target(&etcd)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lost_answers_on_acquire() {
        let etcd = EtcdCluster::single();
        scenarios::lost_answers_on_acquire(&target(&etcd)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_futures_leave_no_key_held() {
        let etcd = EtcdCluster::single();
        let spacing = Duration::from_millis(10);
        scenarios::dropped_futures(&target(&etcd), &etcd.client_url(0), 300, spacing).await;
    }
}

// ---------------------------------------------------------------------------------------
// RavenDB (one node).

#[cfg(feature = "ravendb")]
mod ravendb {
    use super::scenarios::{self, Target};
    use super::*;
    use lock_runtime::store::ravendb::RavenDbStore;
    use testkit::ravendb::Server as RavenServer;

    fn target(server: &RavenServer) -> Target {
        let database = server.database.clone();
        Target {
            name: "ravendb",
            upstream: std::net::SocketAddr::from(([127, 0, 0, 1], server.port())),
            make: Arc::new(move |url: &str, timeout: Duration, ttl: Duration| {
                let store = RavenDbStore::builder()
                    .url(url)
                    .database(database.clone())
                    .request_timeout(timeout)
                    .connect_timeout(timeout)
                    .build()
                    .unwrap_or_else(|e| panic!("building the RavenDB store: {e}"));
                LockClient::builder(store)
                    .defaults(LockOptions::default().ttl(ttl))
                    .build()
                    .unwrap_or_else(|e| panic!("building the client: {e}"))
            }),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partition_during_acquire() {
        let server = RavenServer::start().await;
        scenarios::partition_during_acquire(&target(&server)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partition_while_holding_past_the_ttl() {
        let server = RavenServer::start().await;
        scenarios::partition_while_holding(&target(&server)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partition_during_release() {
        let server = RavenServer::start().await;
        scenarios::partition_during_release(&target(&server)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lost_answers_on_acquire() {
        let server = RavenServer::start().await;
        scenarios::lost_answers_on_acquire(&target(&server)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_futures_leave_no_key_held() {
        let server = RavenServer::start().await;
        // RavenDB commits every write through Raft: fewer tries per second.
        let spacing = Duration::from_millis(20);
        scenarios::dropped_futures(&target(&server), &server.url(), 200, spacing).await;
    }
}
