//! The webhook's counters for `/metrics`: requests by result and a latency histogram.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::review::Verdict;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Debug)]
pub struct WebhookStats {
    requests: [AtomicU64; 4],
    latency: xds::Histogram,
}

impl Default for WebhookStats {
    fn default() -> Self {
        WebhookStats { requests: Default::default(), latency: xds::Histogram::new(&BUCKETS) }
    }
}

fn index(verdict: Verdict) -> usize {
    Verdict::ALL.iter().position(|v| *v == verdict).expect("every verdict is in ALL")
}

impl WebhookStats {
    pub fn record(&self, verdict: Verdict, took: Duration) {
        self.requests[index(verdict)].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(took);
    }

    pub fn requests(&self, verdict: Verdict) -> u64 {
        self.requests[index(verdict)].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let name = "amime_webhook_requests_total";
        let _ = writeln!(out, "# HELP {name} Admission requests answered by the injection webhook, by result.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for verdict in Verdict::ALL {
            let _ = writeln!(out, "{name}{{result=\"{}\"}} {}", verdict.label(), self.requests(verdict));
        }
        let name = "amime_webhook_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time from a request's headers to its answer.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        self.latency.render(out, name, "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_a_cumulative_histogram() {
        let stats = WebhookStats::default();
        stats.record(Verdict::Injected, Duration::from_micros(800));
        stats.record(Verdict::Injected, Duration::from_millis(30));
        stats.record(Verdict::Error, Duration::from_secs(7));
        let mut out = String::new();
        stats.render(&mut out);
        for line in [
            "amime_webhook_requests_total{result=\"injected\"} 2",
            "amime_webhook_requests_total{result=\"skipped\"} 0",
            "amime_webhook_requests_total{result=\"error\"} 1",
            "amime_webhook_request_duration_seconds_bucket{le=\"0.001\"} 1",
            "amime_webhook_request_duration_seconds_bucket{le=\"0.05\"} 2",
            "amime_webhook_request_duration_seconds_bucket{le=\"5\"} 2",
            "amime_webhook_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "amime_webhook_request_duration_seconds_sum 7.0308",
            "amime_webhook_request_duration_seconds_count 3",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in:\n{out}");
        }
    }
}
