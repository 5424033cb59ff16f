//! Small statistics shared by the server benchmarks (`mod stats;`).

use std::time::Duration;

/// The `p` quantile (0.0..=1.0) of `samples`, by nearest rank; sorts them.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() - 1) as f64 * p).round() as usize;
    samples[rank]
}

/// `d` in milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
