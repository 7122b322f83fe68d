//! Durations as Istio's API writes them: the protobuf JSON form (`1.5s`) or Go's form
//! (`1h2m`, `250ms`), as the CRD's CEL `duration()` accepts. Istio refuses a duration
//! under 1ms or with a finer precision than milliseconds; so does meshd.

use std::time::Duration;

use super::{Context, Diagnostic};

/// Parses `text` (`field` names it in errors). `allow_zero`: `0s` is a valid value
/// (a timeout of 0 means none); otherwise the duration must be at least 1ms.
pub(super) fn parse_duration(
    cx: &Context<'_>,
    field: &str,
    text: &str,
    allow_zero: bool,
) -> Result<Duration, Diagnostic> {
    let d = duration(text).map_err(|why| cx.error(field, format!("{text:?} is not a duration ({why})")))?;
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(cx.error(field, format!("{text:?}: only durations to millisecond precision are supported")));
    }
    if d.is_zero() && allow_zero {
        return Ok(d);
    }
    if d < Duration::from_millis(1) {
        return Err(cx.error(field, format!("{text:?}: the duration must be at least 1ms")));
    }
    Ok(d)
}

/// `<number><unit>` one or more times; units ns, us, µs, ms, s, m, h; `0` alone. The one
/// reader of Go's duration notation (route actions and traffic policies).
pub(super) fn duration(text: &str) -> Result<Duration, &'static str> {
    let s = text.trim();
    if s.starts_with('-') {
        return Err("a duration cannot be negative");
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty");
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err("expected a number, such as 5s, 1.5s or 250ms");
        }
        let value: f64 = number.parse().map_err(|_| "expected a number, such as 5s, 1.5s or 250ms")?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err("a unit is missing (h, m, s, ms, us or ns)"),
            _ => return Err("unknown unit (use h, m, s, ms, us or ns)"),
        };
        total += value * scale;
        rest = tail;
    }
    if total > 315_576_000_000.0 {
        return Err("longer than protobuf's maximum of 10000 years");
    }
    // Rounded to the nanosecond, which floating point sums would miss (`0.1s`).
    Ok(Duration::from_nanos((total * 1e9).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        let ok = [
            ("5s", Duration::from_secs(5)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            ("250ms", Duration::from_millis(250)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("10us", Duration::from_micros(10)),
        ];
        for (text, want) in ok {
            assert_eq!(duration(text), Ok(want), "{text}");
        }
        for bad in ["", "-1s", "5", "s", "1.2.3s", "5 seconds", "1d", ".s", "1e3s"] {
            assert!(duration(bad).is_err(), "{bad} should be refused");
        }
    }
}
