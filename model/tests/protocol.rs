//! Exhaustive checks of the lock protocol model (`model/src/lib.rs`).
//!
//! - Both store variants, breadth-first to completion within the bounds of
//!   `Config::without_leases()` / `Config::with_leases()`: no property fails.
//! - The same bounds reach every interesting event (takeover, loss, a lock
//!   found by read-back, a late commit of an abandoned put, lease expiry, a
//!   second holder, a release), so the clean runs above are not vacuous.
//! - Each `Mutation` of the protocol (and a margin of 0) gives a
//!   counterexample, printed as a trace cut at its first violating state.
//!
//! Run with `cargo test -p distlock-model --test protocol -- --nocapture` to
//! see the figures and traces.
#![allow(clippy::unwrap_used, clippy::expect_used)] // in a test, a failed unwrap is the failure report

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Instant;

use distlock_model::{Action, Config, Event, LockModel, Mutation, Rate, State};
use stateright::{Checker, HasDiscoveries, Model};

type Trace = Vec<(State, Option<Action>)>;

struct Run {
    model: LockModel,
    report: String,
    unique: usize,
    discoveries: HashMap<&'static str, Trace>,
}

/// Breadth-first search of `cfg` until `finish` (default: every property
/// has a discovery, which for `always` properties means to completion).
fn bfs(title: &str, cfg: Config, finish: Option<HasDiscoveries>) -> Run {
    let model = LockModel::new(cfg);
    let mut builder = model.clone().checker().threads(2);
    if let Some(finish) = finish {
        builder = builder.finish_when(finish);
    }
    let started = Instant::now();
    let checker = builder.spawn_bfs().join();
    let elapsed = started.elapsed();
    let unique = checker.unique_state_count();
    let report = format!(
        "== {title}\n   bounds: {}\n   {} unique states ({} generated), max depth {}, {:.1?}{}\n",
        model.cfg.summary(),
        unique,
        checker.state_count(),
        checker.max_depth(),
        elapsed,
        if checker.is_done() {
            ""
        } else {
            " (stopped early)"
        },
    );
    let discoveries = checker
        .discoveries()
        .into_iter()
        .map(|(name, path)| (name, first_violation(&model, name, path.into_vec())))
        .collect();
    Run {
        model,
        report,
        unique,
        discoveries,
    }
}

/// Whether `state` satisfies (for `always`) or shows (for `sometimes`) the
/// property called `name`.
fn condition(model: &LockModel, name: &str, state: &State) -> bool {
    let property = model
        .properties()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap();
    (property.condition)(model, state)
}

/// Stateright keeps the *last* path it found to a property's discovery; cut
/// it at the first state where the discovery holds (an `always` property
/// fails, a `sometimes` property is shown).
fn first_violation(model: &LockModel, name: &'static str, mut path: Trace) -> Trace {
    let always = model
        .properties()
        .into_iter()
        .find(|p| p.name == name)
        .is_some_and(|p| p.expectation == stateright::Expectation::Always);
    let hit = |state: &State| condition(model, name, state) != always;
    if let Some(at) = path.iter().position(|(state, _)| hit(state)) {
        path.truncate(at + 1);
        if let Some(last) = path.last_mut() {
            last.1 = None;
        }
    }
    path
}

fn steps(trace: &Trace) -> usize {
    trace.len().saturating_sub(1)
}

fn check_clean(title: &str, cfg: Config, at_least: usize) {
    let run = bfs(title, cfg, None);
    let mut report = run.report;
    for (name, trace) in &run.discoveries {
        let _ = write!(
            report,
            "   FAILED {name} after {} steps:\n{}",
            steps(trace),
            run.model.trace(trace)
        );
    }
    println!("{report}");
    assert!(
        run.discoveries.is_empty(),
        "{title}: properties failed: {:?}",
        run.discoveries.keys().collect::<Vec<_>>()
    );
    // A model that cannot move would pass vacuously.
    assert!(run.unique > at_least, "{title}: only {} states", run.unique);
}

#[test]
fn without_leases_every_property_holds() {
    check_clean(
        "no leases: protocol of DESIGN.md section 8",
        Config::without_leases(),
        100_000,
    );
}

#[test]
fn with_leases_every_property_holds() {
    check_clean(
        "leases: protocol of DESIGN.md section 8",
        Config::with_leases(),
        100_000,
    );
}

/// The margin is there for clock drift: with every clock at the same rate a
/// margin of 0 is enough. This is the counterpart of
/// `no_margin_breaks_exclusion`, whose counterexample needs one fault (a
/// pause), so it runs with a budget of one fault to stay cheap.
#[test]
fn without_drift_no_margin_is_needed() {
    let cfg = Config {
        margin: 0,
        rates: vec![Rate::Normal; 3],
        faults: 1,
        ..Config::without_leases()
    };
    check_clean("no leases, equal clocks, margin 0, one fault", cfg, 10_000);
}

fn check_coverage(title: &str, base: Config) {
    let cfg = Config {
        track_events: true,
        ..base
    };
    let leases = cfg.leases;
    let events: Vec<Event> = Event::ALL
        .into_iter()
        .filter(|event| event.applies(leases))
        .collect();
    let names: BTreeSet<&'static str> = events.iter().map(|event| event.property()).collect();
    let run = bfs(title, cfg, Some(HasDiscoveries::AllOf(names)));
    let mut report = run.report;
    for event in &events {
        match run.discoveries.get(event.property()) {
            Some(trace) => {
                let _ = writeln!(
                    report,
                    "   {:<45} first after {} steps",
                    event.property(),
                    steps(trace)
                );
            }
            None => {
                let _ = writeln!(report, "   {:<45} NOT REACHED", event.property());
            }
        }
    }
    println!("{report}");
    for event in &events {
        assert!(
            run.discoveries.contains_key(event.property()),
            "{title}: the bounds never reach `{}`",
            event.property()
        );
    }
    for name in ["exclusion", "tokens increase", "no stuck lock"] {
        assert!(
            !run.discoveries.contains_key(name),
            "{title}: {name} failed"
        );
    }
}

#[test]
fn without_leases_bounds_reach_every_event() {
    check_coverage("no leases: coverage", Config::without_leases());
}

#[test]
fn with_leases_bounds_reach_every_event() {
    check_coverage("leases: coverage", Config::with_leases());
}

/// Searches `cfg` until `property` fails; returns the counterexample's length.
fn counterexample(title: &str, cfg: Config, property: &'static str) -> usize {
    let run = bfs(
        title,
        cfg,
        Some(HasDiscoveries::AnyOf(BTreeSet::from([property]))),
    );
    let mut report = run.report;
    let trace = run.discoveries.get(property);
    if let Some(trace) = trace {
        let _ = write!(
            report,
            "   counterexample to {property}: {} steps\n{}",
            steps(trace),
            run.model.trace(trace)
        );
    }
    println!("{report}");
    let trace = trace.unwrap_or_else(|| panic!("{title}: no counterexample to {property}"));
    let last = &trace.last().unwrap().0;
    assert!(
        !condition(&run.model, property, last),
        "{title}: the trace does not end in a violation"
    );
    steps(trace)
}

#[test]
fn deadline_from_retry_breaks_exclusion() {
    let cfg = Config::without_leases().mutated(Mutation::DeadlineFromRetry);
    let steps = counterexample(
        "MUTATION deadline counted from the retry's send",
        cfg,
        "exclusion",
    );
    assert!(steps > 0);
}

#[test]
fn no_margin_breaks_exclusion() {
    let cfg = Config {
        margin: 0,
        ..Config::without_leases()
    };
    let steps = counterexample(
        "MUTATION takeover after ttl with no margin on a slower holder clock",
        cfg,
        "exclusion",
    );
    assert!(steps > 0);
}

#[test]
fn lock_on_lost_lease_breaks_exclusion() {
    let cfg = Config::with_leases().mutated(Mutation::LockOnLostLease);
    let steps = counterexample(
        "MUTATION acquisition keeps writing with a lease declared lost",
        cfg,
        "exclusion",
    );
    assert!(steps > 0);
}

#[test]
fn release_giving_up_leaves_a_stuck_lock() {
    let cfg = Config::with_leases().mutated(Mutation::ReleaseGivesUp);
    let steps = counterexample(
        "MUTATION release gives up after a failed read-back",
        cfg,
        "no stuck lock",
    );
    assert!(steps > 0);
}

#[test]
fn keeping_an_ambiguous_lease_leaves_a_stuck_lock() {
    let cfg = Config::with_leases().mutated(Mutation::KeepAmbiguousLease);
    let steps = counterexample(
        "MUTATION a lease that carried a timed-out put is kept alive",
        cfg,
        "no stuck lock",
    );
    assert!(steps > 0);
}

#[test]
fn read_back_ignoring_the_lease_breaks_exclusion() {
    let cfg = Config::with_leases().mutated(Mutation::ReadBackIgnoresLease);
    let steps = counterexample(
        "MUTATION read-back accepts our record on a lease we gave up",
        cfg,
        "exclusion",
    );
    assert!(steps > 0);
}
