//! A fixed-bucket latency histogram that records without a lock, and its Prometheus
//! text form.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) for the time a configuration change takes to reach proxies:
/// fine below a second, where a healthy mesh converges (meshd's debounce alone is 100 ms
/// by default), coarse above, where only a stalled proxy lands.
pub const CONVERGENCE_BUCKETS: [f64; 14] =
    [0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Counts of observations per bucket, their sum and count.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts: `counts[i]` holds observations in `(bounds[i-1], bounds[i]]`;
    /// the last one those above every bound.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    /// Buckets for convergence times ([`CONVERGENCE_BUCKETS`]).
    fn default() -> Self {
        Histogram::new(&CONVERGENCE_BUCKETS)
    }
}

impl Histogram {
    /// A histogram with buckets of upper bounds `bounds` (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let at = self.bounds.iter().position(|bound| seconds <= *bound).unwrap_or(self.bounds.len());
        self.counts[at].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The `_bucket`, `_sum` and `_count` lines of metric `name` with `labels` (e.g.
    /// `type="CDS"`, or empty); HELP and TYPE are the caller's, once per metric.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_last_holds_everything() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(100));
        h.observe(Duration::from_millis(250));
        h.observe(Duration::from_secs(3));
        let mut out = String::new();
        h.render(&mut out, "t_seconds", "type=\"CDS\"");
        assert_eq!(
            out,
            "t_seconds_bucket{type=\"CDS\",le=\"0.1\"} 1\n\
             t_seconds_bucket{type=\"CDS\",le=\"1\"} 2\n\
             t_seconds_bucket{type=\"CDS\",le=\"+Inf\"} 3\n\
             t_seconds_sum{type=\"CDS\"} 3.35\n\
             t_seconds_count{type=\"CDS\"} 3\n"
        );
        assert_eq!(h.count(), 3);
        let mut out = String::new();
        Histogram::new(&[0.5]).render(&mut out, "u", "");
        assert_eq!(out, "u_bucket{le=\"0.5\"} 0\nu_bucket{le=\"+Inf\"} 0\nu_sum 0\nu_count 0\n");
    }
}
