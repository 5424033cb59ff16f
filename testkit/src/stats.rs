//! Small statistics for the benchmarks: nearest-rank percentiles and milliseconds.

use std::time::Duration;

/// The `p` quantile (0.0..=1.0, clamped) of `samples`, by nearest rank; sorts them.
/// Zero for no samples.
///
/// ```
/// use std::time::Duration;
/// let mut samples = [3, 1, 2].map(Duration::from_millis);
/// assert_eq!(testkit::stats::percentile(&mut samples, 0.5), Duration::from_millis(2));
/// ```
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// `d` in milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
