//! `examples/scheduler.rs`: three instances with skewed clocks run the job
//! every second; across them it runs exactly once per tick.

#[path = "../examples/scheduler.rs"]
#[allow(dead_code)]
mod example;

use std::collections::BTreeMap;

// Paused time: the instances' timers, the lock's hold and renewal all run on
// Tokio's clock, which jumps ahead whenever every task waits. The lock
// algorithm itself is unchanged; 20 seconds of schedule take milliseconds.
#[tokio::test(start_paused = true)]
async fn the_job_runs_exactly_once_per_tick_across_three_instances() {
    let runs = example::simulate(20, false).await;
    let mut per_tick: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for run in &runs {
        per_tick.entry(run.tick).or_default().push(run.instance);
    }
    assert_eq!(per_tick.len(), 20, "ticks without a run: {per_tick:?}");
    for (tick, instances) in &per_tick {
        assert_eq!(
            instances.len(),
            1,
            "tick {tick} ran on instances {instances:?}"
        );
    }
    let tokens: Vec<u64> = runs.iter().map(|run| run.token).collect();
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "fencing tokens went back: {tokens:?}"
    );
}
