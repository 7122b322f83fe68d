//! The live view as plain data: [`render`] turns one moment of a step into lines of styled
//! text that fit the terminal (no line wider than it, no more lines than its height).

use std::time::Duration;

use super::stats::{format_latency, Summary, User, ERRORS};
use super::steps::Step;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Bold,
    Dim,
    Version(usize),
    Error,
    Good,
    Bad,
    Note,
}

/// How what was seen compares with what is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Shown,
    NotShown,
    /// meshd says it ignores what the step needs.
    Ignored,
}

/// One line: text segments, each with a style.
pub type Line = Vec<(String, Style)>;

/// What the view shows of a step at one moment.
pub struct Frame<'a> {
    pub block: u8,
    pub index: usize,
    pub steps: usize,
    pub step: &'a Step,
    /// How the rule got to the sidecar (or that it is on its way).
    pub status: (String, Style),
    pub summary: &'a Summary,
    /// The step's check, once enough requests were measured.
    pub check: Option<(Mark, &'a str)>,
    pub notes: &'a [String],
    pub elapsed: Duration,
    /// Requests recorded in this step (the summary holds the latest of them).
    pub recorded: usize,
    pub footer: String,
    pub rules_yaml: &'a str,
}

/// Width of everything on a row but the bar: indent 3, label 7, space, counts and latencies.
const ROW_FIXED: usize = 3 + 7 + 1 + 8 + 8 + 9 + 9;

/// The view for a `width` × `height` terminal.
pub fn render(f: &Frame<'_>, width: usize, height: usize) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    let right = format!("step {}/{} · {:>3} s ", f.index + 1, f.steps, f.elapsed.as_secs());
    let mut title = format!(" Amime demo · meshd + Envoy sidecar + reviews v1/v2/v3 on 127.0.{}.x", f.block);
    if title.chars().count() + right.chars().count() + 1 > width {
        title = format!(" Amime demo on 127.0.{}.x", f.block);
    }
    let gap = width.saturating_sub(title.chars().count() + right.chars().count()).max(1);
    lines.push(vec![(title, Style::Bold), (" ".repeat(gap), Style::Plain), (right, Style::Dim)]);
    lines.push(vec![("─".repeat(width), Style::Dim)]);
    lines.push(vec![(format!(" Step {}: {}", f.index + 1, f.step.title), Style::Bold)]);
    lines.push(vec![(format!("   {}", f.step.explain), Style::Plain)]);
    lines.push(vec![("   ".to_string(), Style::Plain), f.status.clone()]);
    lines.push(Vec::new());
    lines.extend(table(f.summary, width));
    lines.push(Vec::new());
    lines.extend(details(f));
    let mut optional: Vec<Line> = f.notes.iter().map(|n| vec![(format!("   meshd: {n}"), Style::Note)]).collect();
    // A tall terminal also shows the rule itself.
    if height >= lines.len() + optional.len() + f.rules_yaml.lines().count() + 4 {
        optional.push(Vec::new());
        optional.push(vec![("   the rule (VirtualService reviews):".to_string(), Style::Dim)]);
        let yaml = f.rules_yaml.lines().skip_while(|l| !l.starts_with("apiVersion"));
        optional.extend(yaml.map(|l| vec![(format!("     {l}"), Style::Dim)]));
    }
    lines.extend(optional);
    lines.truncate(height.saturating_sub(1));
    while lines.len() + 1 < height {
        lines.push(Vec::new());
    }
    lines.push(vec![(format!(" {}", f.footer), Style::Dim)]);
    lines.into_iter().map(|l| fit(l, width)).collect()
}

fn table(s: &Summary, width: usize) -> Vec<Line> {
    let bar_width = width.saturating_sub(ROW_FIXED + 1).max(4);
    let mut lines = vec![vec![(
        format!(
            "   {:<7} {:<bar_width$}{:>8}{:>8}{:>9}{:>9}",
            "answer", "share of requests", "count", "share", "p50", "p99"
        ),
        Style::Dim,
    )]];
    for (i, row) in s.rows.iter().enumerate() {
        let style = if row.label == ERRORS { Style::Error } else { Style::Version(i) };
        let share = s.share(&row.label);
        let bar = bar(share / 100.0, bar_width);
        let pad = bar_width - bar.chars().count();
        lines.push(vec![
            (format!("   {:<7} ", row.label), Style::Bold),
            (bar, style),
            (" ".repeat(pad), Style::Plain),
            (
                format!("{:>8}{:>7.1}%{:>9}{:>9}", row.count, share, format_latency(row.p50), format_latency(row.p99)),
                Style::Plain,
            ),
        ]);
    }
    lines
}

/// A horizontal bar `fraction` of `width` long, in eighths of a cell.
pub fn bar(fraction: f64, width: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * width as f64 * 8.0).round() as usize;
    let mut out = "█".repeat(eighths / 8);
    let rest = eighths % 8;
    if rest > 0 {
        out.push(PARTS[rest]);
    }
    out
}

fn details(f: &Frame<'_>) -> Vec<Line> {
    let s = f.summary;
    let rate = f.recorded as f64 / f.elapsed.as_secs_f64().max(0.25);
    let mut lines = vec![vec![(
        format!(
            "   {} requests{} · {rate:.0}/s · p50 {} · p99 {}",
            f.recorded.max(s.total),
            if f.recorded > s.total { format!(" (shown: the latest {})", s.total) } else { String::new() },
            format_latency(s.p50),
            format_latency(s.p99)
        ),
        Style::Plain,
    )]];
    lines.push(vec![(
        format!("   by user: jason → {} | others → {}", s.user_line(User::Jason), s.user_line(User::Other)),
        Style::Plain,
    )]);
    let failures = if s.failures.is_empty() { "none".to_string() } else { s.failure_line() };
    let slow = match s.slow_threshold {
        Some(t) => format!(" · {} took >= {}", s.slow, format_latency(Some(t))),
        None => String::new(),
    };
    lines.push(vec![(
        format!("   errors: {failures}{slow}"),
        if s.failures.is_empty() { Style::Plain } else { Style::Error },
    )]);
    lines.push(vec![(format!("   expected: {}", f.step.expect), Style::Plain)]);
    lines.push(match f.check {
        None => vec![("   seen:     measuring…".to_string(), Style::Dim)],
        Some((Mark::Shown, seen)) => {
            vec![("   seen:     ✓ ".to_string(), Style::Good), (seen.to_string(), Style::Plain)]
        }
        Some((Mark::NotShown, seen)) => {
            vec![("   seen:     ✗ ".to_string(), Style::Bad), (seen.to_string(), Style::Plain)]
        }
        Some((Mark::Ignored, seen)) => {
            vec![
                ("   seen:     - not shown, meshd ignores it: ".to_string(), Style::Note),
                (seen.to_string(), Style::Plain),
            ]
        }
    });
    lines
}

/// Cut a line to `width` columns (every character the view uses is one column wide).
pub fn fit(line: Line, width: usize) -> Line {
    let mut left = width;
    let mut out = Vec::new();
    for (text, style) in line {
        if left == 0 {
            break;
        }
        let n = text.chars().count();
        if n <= left {
            left -= n;
            out.push((text, style));
        } else {
            let cut: String = text.chars().take(left.saturating_sub(1)).chain(std::iter::once('…')).collect();
            out.push((cut, style));
            left = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::stats::{Answer, Sample};
    use super::super::steps::{check, virtual_service, STEPS};
    use super::*;

    fn summary() -> Summary {
        let mut samples = Vec::new();
        for i in 0..300u64 {
            let (user, answer) = match i % 3 {
                0 => (User::Jason, Answer::Version("v2".into())),
                1 => (User::Other, Answer::Version("v1".into())),
                _ => (User::Other, Answer::Failed("HTTP 503".into())),
            };
            samples.push(Sample { user, answer, latency: Duration::from_millis(5 + i % 40) });
        }
        Summary::of(&samples, Some(Duration::from_millis(400)))
    }

    fn line_width(line: &Line) -> usize {
        line.iter().map(|(t, _)| t.chars().count()).sum()
    }

    fn text(lines: &[Line]) -> String {
        lines.iter().map(|l| l.iter().map(|(t, _)| t.as_str()).collect::<String>()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn fits_every_terminal_size() {
        let s = summary();
        let step = &STEPS[1];
        let c = check(step, &s);
        let notes = vec!["spec.http[0].fault: a very long note from meshd ".repeat(5)];
        let yaml = virtual_service(step);
        for (width, height) in [(80, 24), (200, 50), (60, 15), (120, 40), (20, 5)] {
            let frame = Frame {
                block: 210,
                index: 1,
                steps: 4,
                step,
                status: ("✓ the sidecar has the rule, 184 ms after the file was saved".into(), Style::Good),
                summary: &s,
                check: Some((Mark::Shown, &c.seen)),
                notes: &notes,
                elapsed: Duration::from_secs(12),
                recorded: 960,
                footer: "[Enter/space] next step   [q] quit".into(),
                rules_yaml: &yaml,
            };
            let lines = render(&frame, width, height);
            assert_eq!(lines.len(), height, "{width}x{height}");
            for line in &lines {
                assert!(line_width(line) <= width, "{width}x{height}: {:?}", text(std::slice::from_ref(line)));
            }
            let all = text(&lines);
            if width >= 80 {
                assert!(all.starts_with(" Amime demo") && all.contains("step 2/4 ·  12 s"), "{all}");
            }
            if height >= 24 {
                for want in ["Step 2: Header-based routing", "v1 ", "v2 ", "v3 ", "errors", "p99", "next step"] {
                    assert!(all.contains(want), "{width}x{height} lacks {want:?}:\n{all}");
                }
            }
            if height >= 50 {
                assert!(all.contains("subset: v2"), "a tall terminal shows the rule:\n{all}");
            }
        }
    }

    #[test]
    fn bars_scale_with_the_share() {
        assert_eq!(bar(1.0, 10).chars().count(), 10);
        assert_eq!(bar(0.0, 10), "");
        assert_eq!(bar(0.5, 10), "█████");
        assert_eq!(bar(0.55, 10), "█████▌");
        assert_eq!(bar(2.0, 3), "███");
    }

    #[test]
    fn cuts_long_lines() {
        let line = vec![("abcdef".to_string(), Style::Plain), ("ghij".to_string(), Style::Bold)];
        let cut = fit(line, 8);
        assert_eq!(cut, vec![("abcdef".to_string(), Style::Plain), ("g…".to_string(), Style::Bold)]);
    }
}
