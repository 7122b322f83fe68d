//! What the demo measures: one [`Sample`] per request, summarised per version and per user.

use std::collections::BTreeMap;
use std::time::Duration;

/// The versions of reviews the demo runs, in display order.
pub const VERSIONS: [&str; 3] = ["v1", "v2", "v3"];

/// Who sends a request: half of the demo's traffic carries `end-user: jason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum User {
    Jason,
    Other,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200 from this version of reviews.
    Version(String),
    /// Anything else: `HTTP 503`, `timeout`, `connection refused`, ...
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub user: User,
    pub answer: Answer,
    pub latency: Duration,
}

/// One row of the view: a version, or the failed requests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub label: String,
    pub count: usize,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
}

/// The samples of one step, summarised.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub total: usize,
    /// v1, v2, v3, then `errors`.
    pub rows: Vec<Row>,
    /// Failed requests by reason (`HTTP 503` → 12).
    pub failures: BTreeMap<String, usize>,
    /// Per user: answers by version (or `errors`).
    pub by_user: BTreeMap<User, BTreeMap<String, usize>>,
    /// Latency over every request.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// Requests that took at least [`Summary::slow_threshold`].
    pub slow: usize,
    pub slow_threshold: Option<Duration>,
}

pub const ERRORS: &str = "errors";

impl Summary {
    /// Summarise `samples`; `slow_threshold` counts the requests at least that slow.
    pub fn of(samples: &[Sample], slow_threshold: Option<Duration>) -> Summary {
        let mut latencies: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
        let mut summary = Summary { total: samples.len(), slow_threshold, ..Summary::default() };
        for sample in samples {
            let key = match &sample.answer {
                Answer::Version(v) => v.as_str(),
                Answer::Failed(reason) => {
                    *summary.failures.entry(reason.clone()).or_default() += 1;
                    ERRORS
                }
            };
            latencies.entry(key).or_default().push(sample.latency);
            *summary.by_user.entry(sample.user).or_default().entry(key.to_string()).or_default() += 1;
            if slow_threshold.is_some_and(|t| sample.latency >= t) {
                summary.slow += 1;
            }
        }
        let mut all: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        all.sort();
        summary.p50 = percentile(&all, 50.0);
        summary.p99 = percentile(&all, 99.0);
        let mut labels: Vec<&str> = VERSIONS.to_vec();
        // A version the demo did not start (it should never happen) still gets a row.
        labels.extend(latencies.keys().filter(|k| !VERSIONS.contains(k) && **k != ERRORS));
        labels.push(ERRORS);
        for label in labels {
            let mut l = latencies.remove(label).unwrap_or_default();
            l.sort();
            summary.rows.push(Row {
                label: label.to_string(),
                count: l.len(),
                p50: percentile(&l, 50.0),
                p99: percentile(&l, 99.0),
            });
        }
        summary
    }

    /// Requests answered by `label` (a version or [`ERRORS`]).
    pub fn count(&self, label: &str) -> usize {
        self.rows.iter().find(|r| r.label == label).map_or(0, |r| r.count)
    }

    /// Requests of `user` answered by `label`, and all requests of `user`.
    pub fn user_count(&self, user: User, label: &str) -> (usize, usize) {
        let counts = self.by_user.get(&user);
        let n = counts.and_then(|c| c.get(label)).copied().unwrap_or(0);
        (n, counts.map_or(0, |c| c.values().sum()))
    }

    /// `label`'s share of all requests, in percent.
    pub fn share(&self, label: &str) -> f64 {
        percent(self.count(label), self.total)
    }

    /// Where `user`'s requests went: `v2 100%` or `v1 48% · v3 52%`.
    pub fn user_line(&self, user: User) -> String {
        let Some(counts) = self.by_user.get(&user) else { return "no requests".to_string() };
        let total: usize = counts.values().sum();
        counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(label, n)| format!("{label} {:.0}%", percent(*n, total)))
            .collect::<Vec<_>>()
            .join(" · ")
    }

    /// The failures as `HTTP 503 ×12, timeout ×1`.
    pub fn failure_line(&self) -> String {
        self.failures.iter().map(|(reason, n)| format!("{reason} ×{n}")).collect::<Vec<_>>().join(", ")
    }
}

pub fn percent(part: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `6 ms`, `1.20 s`, or `-` when there is nothing to show.
pub fn format_latency(d: Option<Duration>) -> String {
    match d {
        None => "-".to_string(),
        Some(d) if d < Duration::from_secs(1) => format!("{} ms", d.as_millis()),
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample(user: User, answer: &str, ms: u64) -> Sample {
        let answer = if answer.starts_with('v') {
            Answer::Version(answer.to_string())
        } else {
            Answer::Failed(answer.to_string())
        };
        Sample { user, answer, latency: Duration::from_millis(ms) }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&values, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&values[..1], 99.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summarises_rows_users_and_failures() {
        let samples = vec![
            sample(User::Jason, "v2", 20),
            sample(User::Jason, "v2", 30),
            sample(User::Other, "v1", 5),
            sample(User::Other, "HTTP 503", 400),
        ];
        let s = Summary::of(&samples, Some(Duration::from_millis(300)));
        let labels: Vec<&str> = s.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["v1", "v2", "v3", "errors"]);
        assert_eq!((s.count("v2"), s.count("v3"), s.count("errors"), s.total), (2, 0, 1, 4));
        assert_eq!(s.rows[1].p50, Some(Duration::from_millis(20)));
        assert_eq!(s.rows[2].p50, None);
        assert_eq!(s.user_count(User::Jason, "v2"), (2, 2));
        assert_eq!(s.user_count(User::Other, "v1"), (1, 2));
        assert_eq!(s.user_line(User::Other), "errors 50% · v1 50%");
        assert_eq!(s.failure_line(), "HTTP 503 ×1");
        assert_eq!(s.slow, 1);
        assert_eq!(s.share("v2"), 50.0);
    }

    #[test]
    fn formats_latency() {
        assert_eq!(format_latency(None), "-");
        assert_eq!(format_latency(Some(Duration::from_micros(6_400))), "6 ms");
        assert_eq!(format_latency(Some(Duration::from_millis(1_204))), "1.20 s");
    }
}
