//! How meshd logs: the subscriber (text or JSON, colours only on a terminal), one way
//! to log a configuration problem, and durations rounded for people.

use std::fmt;
use std::io::IsTerminal;
use std::time::Duration;

use crate::model::{ObjectError, Severity};

/// Sets up the global subscriber. `filter` is an EnvFilter directive; `json` selects
/// JSON lines. Text is coloured only when stdout (where logs go) is a terminal.
pub fn init(filter: &str, json: bool) -> Result<(), String> {
    // notify logs its own races (a watched directory removed under it) at info and warn;
    // meshd reports what matters about its directory itself. Unless asked for by name.
    let directives = if filter.contains("notify") { filter.to_owned() } else { format!("{filter},notify=error") };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).map_err(|e| format!("--log {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stdout().is_terminal()).init();
    }
    Ok(())
}

/// Logs one configuration problem with its place as separate fields; absent parts are
/// left out (never `None` / `Some(..)`).
pub fn log_problem(p: &ObjectError) {
    let file = p.file.as_deref();
    let document = p.document.map(|d| d as u64);
    let kind = p.kind.as_deref();
    let namespace = p.namespace.as_deref().filter(|n| !n.is_empty());
    let name = p.name.as_deref();
    let field = Some(p.field.as_str()).filter(|f| !f.is_empty());
    // Comparisons rather than a match: a milder severity added later logs at info.
    if p.severity == Severity::Error {
        tracing::error!(file, document, kind, namespace, name, field, "{}", p.message);
    } else if p.severity == Severity::Warning {
        tracing::warn!(file, document, kind, namespace, name, field, "{}", p.message);
    } else {
        tracing::info!(file, document, kind, namespace, name, field, "{}", p.message);
    }
}

/// A duration shown as a person would write it: `850µs`, `150ms`, `2.5s`.
#[derive(Clone, Copy, Debug)]
pub struct Rounded(pub Duration);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d < Duration::from_millis(1) {
            write!(f, "{}µs", d.as_micros())
        } else if d < Duration::from_secs(1) {
            write!(f, "{}ms", (d.as_secs_f64() * 1000.0).round() as u64)
        } else if d < Duration::from_secs(60) {
            let tenths = (d.as_secs_f64() * 10.0).round() / 10.0;
            write!(f, "{tenths}s")
        } else {
            write!(f, "{}s", d.as_secs_f64().round() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_rounded() {
        let cases = [
            (Duration::from_nanos(850_400), "850µs"),
            (Duration::from_nanos(150_234_567), "150ms"),
            (Duration::from_nanos(999_400_000), "999ms"),
            (Duration::from_millis(1000), "1s"),
            (Duration::from_millis(2_549), "2.5s"),
            (Duration::from_secs(75), "75s"),
            (Duration::ZERO, "0µs"),
        ];
        for (d, want) in cases {
            assert_eq!(Rounded(d).to_string(), want, "{d:?}");
        }
    }
}
