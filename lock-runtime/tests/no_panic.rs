//! "No public input panics": arbitrary durations in [`LockOptions`] (ttl,
//! `Wait::For(any Duration)`, `hold_at_least`) and in the builder
//! (`lock_delay`, `backoff`) drive acquire, release, drop and a contended
//! acquire on the in-memory store. Every run must end without a panic, in the
//! test's own code or in a task the library spawned, and every outcome must be
//! `Ok`, the contention error the wait implies, or `LockError::Config` naming
//! an option.
//!
//! Each scenario runs on a current-thread runtime with a paused clock, so
//! waits of any length take no real time; panics are caught with
//! `catch_unwind` and, for the library's background tasks, by a panic hook
//! that records panics on the test's thread.
//!
//! Run: `cargo test -p lock-runtime --test no_panic`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

use lock_runtime::store::Capabilities;
use lock_runtime::store::memory::MemoryStore;
use lock_runtime::testing::faults::Faults;
use lock_runtime::{Backoff, LockClient, LockError, LockOptions, MIN_TTL, Wait};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Catching panics, including those of spawned tasks

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Installs (once) a hook that records panics on threads running a guarded
/// scenario and leaves every other panic to the previous hook.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let trace = std::backtrace::Backtrace::force_capture().to_string();
                let message = match library_frame(&trace) {
                    Some(frame) => format!("{info} [in {frame}]"),
                    None => info.to_string(),
                };
                PANICS.with(|p| p.borrow_mut().push(message));
            } else {
                previous(info);
            }
        }));
    });
}

/// The innermost frame of the library in a backtrace: `function (file:line)`.
fn library_frame(trace: &str) -> Option<String> {
    let mut function = "";
    for line in trace.lines() {
        let line = line.trim();
        if let Some(at) = line.strip_prefix("at ") {
            if function.starts_with("lock_runtime::") {
                let file = at.trim_start_matches("./");
                return Some(format!("{function} (lock-runtime/{file})"));
            }
        } else if let Some((_, name)) = line.split_once(": ") {
            function = name;
        }
    }
    None
}

/// Runs `scenario` on a fresh paused current-thread runtime. `Err` carries
/// every panic message seen on this thread meanwhile (the scenario's own or
/// those of tasks it spawned, which tokio catches and would otherwise hide).
fn guarded<F, T>(scenario: F) -> Result<T, String>
where
    F: Future<Output = T>,
{
    install_hook();
    PANICS.with(|p| p.borrow_mut().clear());
    GUARDED.with(|g| g.set(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map_err(|e| format!("cannot build a runtime: {e}"))?;
        let result = panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(scenario)));
        // Dropping the runtime drops the library's tasks (and any guards they
        // hold): outside the inner catch, so that it never runs while unwinding.
        drop(runtime);
        result.map_err(|_| "the scenario panicked".to_owned())
    }));
    GUARDED.with(|g| g.set(false));
    let panics = PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()));
    match outcome {
        Ok(Ok(value)) if panics.is_empty() => Ok(value),
        Ok(Err(message)) if panics.is_empty() => Err(message),
        _ => Err(format!("panicked: {}", panics.join(" | "))),
    }
}

// ---------------------------------------------------------------------------
// Cases

#[derive(Clone, Debug)]
struct Case {
    ttl: Duration,
    wait: Wait,
    renew: bool,
    hold_at_least: Option<Duration>,
    lock_delay: Duration,
    backoff: Option<Backoff>,
    /// Waiters poll (a store without watch) instead of waiting on a watch.
    polling: bool,
}

const DAY: Duration = Duration::from_secs(86_400);
/// How long the rival holds the contended key (virtual time).
const RIVAL_HOLDS: Duration = Duration::from_millis(100);

impl Case {
    fn sane() -> Case {
        Case {
            ttl: Duration::from_secs(1),
            wait: Wait::For(Duration::from_secs(1)),
            renew: true,
            hold_at_least: None,
            lock_delay: Duration::ZERO,
            backoff: None,
            polling: false,
        }
    }

    fn options(&self) -> LockOptions {
        let options = LockOptions::default()
            .ttl(self.ttl)
            .wait(self.wait)
            .renew(self.renew);
        match self.hold_at_least {
            Some(hold) => options.hold_at_least(hold),
            None => options,
        }
    }

    fn backoff_valid(&self) -> bool {
        self.backoff
            .is_none_or(|b| !b.min.is_zero() && b.max >= b.min)
    }

    /// The options whose values are out of the ordinary (and may therefore be
    /// refused with a `Config` error naming them).
    fn unusual(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.ttl < MIN_TTL || self.ttl > DAY {
            names.push("ttl");
        }
        if self.wait.limit().is_some_and(|w| w > DAY) {
            names.push("wait");
        }
        if self.hold_at_least.is_some_and(|h| h > DAY) {
            names.push("hold_at_least");
        }
        if self.lock_delay > DAY {
            names.push("lock_delay");
        }
        if !self.backoff_valid() || self.backoff.is_some_and(|b| b.max > DAY) {
            names.push("backoff");
        }
        names
    }
}

/// A `Config` error is acceptable only when it names one of the unusual
/// options (a few spellings are allowed for each).
fn check_config(case: &Case, what: &str, error: &LockError) -> Result<(), String> {
    let LockError::Config { message, .. } = error else {
        return Err(format!("{what}: unexpected error {error:?}"));
    };
    let spellings = |name: &str| -> &'static [&'static str] {
        match name {
            "ttl" => &["ttl"],
            "wait" => &["wait"],
            "hold_at_least" => &["hold_at_least", "hold at least", "hold"],
            "lock_delay" => &["lock_delay", "lock delay"],
            _ => &["backoff"],
        }
    };
    let unusual = case.unusual();
    let named = unusual
        .iter()
        .any(|name| spellings(name).iter().any(|s| message.contains(s)));
    if named {
        Ok(())
    } else {
        Err(format!(
            "{what}: Config error {message:?} does not name any of the unusual options {unusual:?}"
        ))
    }
}

/// Uncontended acquire + release, acquire + drop, then a look at the key.
async fn free_key(case: Case) -> Result<(), String> {
    let builder = LockClient::builder(MemoryStore::new()).lock_delay(case.lock_delay);
    let builder = match case.backoff {
        Some(backoff) => builder.backoff(backoff),
        None => builder,
    };
    let client = match builder.build() {
        Ok(client) => {
            if !case.backoff_valid() {
                return Err("an invalid backoff was accepted".into());
            }
            client
        }
        Err(error) => return check_config(&case, "build", &error),
    };
    let options = case.options();
    let acquired = client.acquire_with("free", &options).await;
    if case.ttl < MIN_TTL {
        return match acquired {
            Err(error @ LockError::Config { .. }) => check_config(&case, "acquire", &error),
            other => Err(format!("ttl below MIN_TTL: {other:?}")),
        };
    }
    let guard = match acquired {
        Ok(guard) => guard,
        Err(error) => return check_config(&case, "acquire", &error),
    };
    if guard.is_lost() || guard.token() == 0 {
        return Err(format!("fresh guard lost or without token: {guard:?}"));
    }
    if let Err(error) = guard.release().await {
        return Err(format!("release: {error:?}"));
    }
    // Scheduled releases (hold_at_least) keep the key: use another one.
    let guard = match client.acquire_with("dropped", &options).await {
        Ok(guard) => guard,
        Err(error) => return check_config(&case, "second acquire", &error),
    };
    drop(guard);
    tokio::time::sleep(Duration::from_millis(10)).await;
    if case.renew && case.hold_at_least.is_none() {
        match client.try_acquire("dropped").await {
            Ok(Some(guard)) => drop(guard),
            other => return Err(format!("a dropped guard kept its key: {other:?}")),
        }
    }
    // Let the renewer and the background releases run for a while.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// A rival holds the key for [`RIVAL_HOLDS`]; the client under test waits.
async fn contended_key(case: Case) -> Result<(), String> {
    let store = MemoryStore::new();
    let rival = LockClient::new(store.clone());
    let held = rival
        .acquire("busy")
        .await
        .map_err(|e| format!("rival: {e:?}"))?;
    let rival_task = tokio::spawn(async move {
        tokio::time::sleep(RIVAL_HOLDS).await;
        held.release().await
    });
    let builder = if case.polling {
        // A memory store without watch: waiters poll with the builder's backoff.
        LockClient::builder(Faults::new(store.clone()).with_capabilities(Capabilities::NONE))
    } else {
        LockClient::builder(store.clone())
    };
    let builder = builder.lock_delay(case.lock_delay);
    let builder = match case.backoff {
        Some(backoff) => builder.backoff(backoff),
        None => builder,
    };
    let client = match builder.build() {
        Ok(client) => client,
        Err(error) => return check_config(&case, "build", &error),
    };
    let acquired = client.acquire_with("busy", &case.options()).await;
    match (&acquired, case.wait) {
        (Err(error @ LockError::Config { .. }), _) => check_config(&case, "acquire", error)?,
        (other, _) if case.ttl < MIN_TTL => {
            return Err(format!("ttl below MIN_TTL: {other:?}"));
        }
        (Err(LockError::Busy { .. }), Wait::Never) => {}
        (Err(LockError::Timeout { .. }), Wait::For(limit)) if limit <= RIVAL_HOLDS => {}
        (Err(LockError::Timeout { .. }), Wait::For(_)) if case.polling => {}
        (Ok(_), Wait::Forever) => {}
        (Ok(_), Wait::For(limit)) if limit >= RIVAL_HOLDS => {}
        (other, wait) => return Err(format!("contended acquire with {wait:?}: {other:?}")),
    }
    if let Ok(guard) = acquired
        && let Err(error) = guard.release().await
    {
        return Err(format!("release after contention: {error:?}"));
    }
    match rival_task.await {
        Ok(Ok(())) => {}
        other => return Err(format!("the rival's release: {other:?}")),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Both scenarios, each on its own runtime, each bounded in virtual time.
fn run(case: &Case) -> Result<(), TestCaseError> {
    // Far enough that no legitimate wait of the generated cases reaches it;
    // reaching it counts as a hang only for ordinary values.
    const BOUND: Duration = Duration::from_secs(1_000_000_000_000_000);
    for (name, outcome) in [
        (
            "free key",
            guarded(async { tokio::time::timeout(BOUND, free_key(case.clone())).await }),
        ),
        (
            "contended key",
            guarded(async { tokio::time::timeout(BOUND, contended_key(case.clone())).await }),
        ),
    ] {
        match outcome {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(violation))) => {
                return Err(TestCaseError::fail(format!("{name}: {violation}")));
            }
            Ok(Err(_elapsed)) if !case.unusual().is_empty() => {}
            Ok(Err(_elapsed)) => {
                return Err(TestCaseError::fail(format!("{name}: hung")));
            }
            Err(panic) => return Err(TestCaseError::fail(format!("{name}: {panic}"))),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Strategies

/// Any duration, with the extremes and the overflow region well represented.
fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        1 => Just(Duration::ZERO),
        1 => Just(Duration::MAX),
        1 => Just(Duration::from_secs(u64::MAX)),
        1 => Just(Duration::from_secs(i64::MAX as u64)),
        3 => (0u64..5_000).prop_map(Duration::from_millis),
        3 => (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn any_wait() -> impl Strategy<Value = Wait> {
    prop_oneof![
        1 => Just(Wait::Never),
        1 => Just(Wait::Forever),
        1 => Just(Wait::For(Duration::ZERO)),
        1 => Just(Wait::For(Duration::MAX)),
        4 => any_duration().prop_map(Wait::For),
    ]
}

fn any_ttl() -> impl Strategy<Value = Duration> {
    prop_oneof![
        3 => any_duration(),
        2 => (0u64..100).prop_map(Duration::from_millis),
        2 => (30u64..60_000).prop_map(Duration::from_millis),
        1 => Just(Duration::from_millis(u64::MAX)),
        1 => Just(Duration::from_millis(u64::MAX) + Duration::from_millis(1)),
    ]
}

fn any_backoff() -> impl Strategy<Value = Option<Backoff>> {
    prop::option::of((any_duration(), any_duration()).prop_map(|(min, max)| Backoff { min, max }))
}

fn any_case() -> impl Strategy<Value = Case> {
    (
        any_ttl(),
        any_wait(),
        any::<bool>(),
        prop::option::of(any_duration()),
        any_duration(),
        any_backoff(),
        any::<bool>(),
    )
        .prop_map(
            |(ttl, wait, renew, hold_at_least, lock_delay, backoff, polling)| Case {
                ttl,
                wait,
                renew,
                hold_at_least,
                lock_delay,
                backoff,
                polling,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_wait_no_panic(wait in any_wait(), polling in any::<bool>()) {
        run(&Case { wait, polling, ..Case::sane() })?;
    }

    #[test]
    fn any_ttl_no_panic(ttl in any_ttl(), renew in any::<bool>()) {
        run(&Case { ttl, renew, ..Case::sane() })?;
    }

    #[test]
    fn any_hold_at_least_no_panic(hold in any_duration()) {
        run(&Case { hold_at_least: Some(hold), ..Case::sane() })?;
    }

    #[test]
    fn any_lock_delay_no_panic(lock_delay in any_duration(), polling in any::<bool>()) {
        // The rival holds the key past the wait: the waiter computes its
        // takeover time with the delay, then times out.
        run(&Case { lock_delay, polling, wait: Wait::For(Duration::from_millis(50)), ..Case::sane() })?;
    }

    #[test]
    fn any_backoff_no_panic(
        backoff in any_backoff(),
        wait in prop::sample::select(vec![
            Wait::Never,
            Wait::Forever,
            Wait::For(Duration::from_millis(50)),
            Wait::For(Duration::from_secs(1)),
        ]),
    ) {
        run(&Case { backoff, wait, polling: true, ..Case::sane() })?;
    }

    #[test]
    fn any_options_no_panic(case in any_case()) {
        run(&case)?;
    }

    /// Any key through the client: a guard exactly when the key is valid,
    /// otherwise `InvalidKey`, before any I/O.
    #[test]
    fn any_key_through_the_client(key in prop_oneof![
        any::<String>(),
        "[a-z/\\x00-\\x1f\\x7f\\x{85}é]{0,8}",
        "[a-z]{1020,1030}",
    ]) {
        let valid = !key.is_empty() && key.len() <= 1024 && !key.chars().any(char::is_control);
        let outcome = guarded(async {
            let client = LockClient::memory();
            match client.try_acquire(&key).await {
                Ok(Some(guard)) => guard.release().await.map(|()| true),
                Ok(None) => Ok(false),
                Err(error) => Err(error),
            }
        });
        match outcome {
            Ok(Ok(true)) => prop_assert!(valid, "accepted {:?}", key),
            Ok(Err(LockError::InvalidKey { .. })) => prop_assert!(!valid, "rejected {:?}", key),
            other => prop_assert!(false, "{:?}: {:?}", key, other),
        }
    }
}

/// The harness itself must see panics, also those of spawned tasks.
#[test]
fn the_harness_catches_panics_in_spawned_tasks() {
    let outcome = guarded(async {
        let task = tokio::spawn(async { panic!("boom in a task") });
        let _ = task.await;
    });
    assert!(
        matches!(&outcome, Err(message) if message.contains("boom in a task")),
        "{outcome:?}"
    );
    let outcome = guarded(async { panic!("boom in the scenario") });
    assert!(
        matches!(&outcome, Err(message) if message.contains("boom in the scenario")),
        "{outcome:?}"
    );
    assert_eq!(guarded(async { 7 }), Ok(7));
}

/// The sane case passes (the property is not vacuous the other way either).
#[test]
fn ordinary_options_work() {
    run(&Case::sane()).unwrap_or_else(|e| panic!("{e}"));
    run(&Case {
        wait: Wait::Forever,
        polling: true,
        hold_at_least: Some(Duration::from_secs(5)),
        ..Case::sane()
    })
    .unwrap_or_else(|e| panic!("{e}"));
}
