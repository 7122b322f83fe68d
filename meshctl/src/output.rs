//! Printing: aligned tables for people, JSON and YAML for tools.

use std::io::Write;

use anyhow::Context;

use crate::meshd::OutputFormat;

/// Rows under a header, printed with columns aligned (two spaces apart, the last
/// column unpadded), as kubectl does.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table { header: header.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints `value` as JSON (pretty) or YAML.
pub fn print_document(format: OutputFormat, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = match format {
        OutputFormat::Yaml => serde_yaml::to_string(value).context("writing YAML")?,
        OutputFormat::Json | OutputFormat::Table => {
            let mut text = serde_json::to_string_pretty(value).context("writing JSON")?;
            text.push('\n');
            text
        }
    };
    print_text(&text)
}

/// Writes to standard output; a closed pipe (`| head`) is not an error.
pub fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}

/// A short form of a content-derived version, enough to tell two apart in a table.
pub fn short_version(version: &str) -> String {
    if version.is_empty() {
        "-".to_owned()
    } else {
        version.chars().take(12).collect()
    }
}

/// How long ago a protobuf timestamp was, as kubectl's AGE column (`5s`, `3m`, `2h`, `4d`).
pub fn age(at: Option<&envoy_types::pb::google::protobuf::Timestamp>) -> String {
    let Some(at) = at else { return "-".to_owned() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let secs = (now - at.seconds).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_leave_the_last_unpadded() {
        let mut t = Table::new(&["NAME", "TYPE", "NOTE"]);
        t.row(vec!["a".into(), "EDS".into(), "".into()]);
        t.row(vec!["longer-name".into(), "STATIC".into(), "x y".into()]);
        assert_eq!(t.render(), "NAME         TYPE    NOTE\na            EDS\nlonger-name  STATIC  x y\n");
    }

    #[test]
    fn versions_are_shortened_and_ages_rounded() {
        assert_eq!(short_version("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_version(""), "-");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let ts = |ago: i64| envoy_types::pb::google::protobuf::Timestamp { seconds: now - ago, nanos: 0 };
        assert_eq!(age(Some(&ts(5))), "5s");
        assert_eq!(age(Some(&ts(600))), "10m");
        assert_eq!(age(Some(&ts(3 * 3600))), "3h");
        assert_eq!(age(Some(&ts(3 * 86400))), "3d");
        assert_eq!(age(None), "-");
    }
}
