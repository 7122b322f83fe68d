//! YAML as kubectl reads it. kubectl (sigs.k8s.io/yaml, go-yaml v2) reads YAML 1.1, where a
//! plain (unquoted) `yes`, `on`, `y`, `off`, `no` is a bool, `0644` is the octal number 420,
//! `1_000` is 1000 and `0b101` is 5; the YAML 1.2 library this crate uses reads all of these
//! as strings. `meshctl inject` rewrites documents, so it must read them as kubectl does
//! ([`read_as_kubectl`]) and write strings kubectl would not read as strings quoted
//! ([`kubectl_plain_scalar`] says which).

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle};
use serde_yaml::Value as Yaml;

/// The bool or number kubectl reads the plain scalar `s` as, where YAML 1.2 reads the
/// string `s`; `None` when kubectl reads a string too (or when YAML 1.2 already agrees on a
/// non-string: `true`, `null`, `12`, `0x1F`, `0o17`, `1.5`).
pub fn kubectl_plain_scalar(s: &str) -> Option<Yaml> {
    const TRUE: [&str; 8] = ["y", "Y", "yes", "Yes", "YES", "on", "On", "ON"];
    const FALSE: [&str; 8] = ["n", "N", "no", "No", "NO", "off", "Off", "OFF"];
    if TRUE.contains(&s) {
        return Some(Yaml::Bool(true));
    }
    if FALSE.contains(&s) {
        return Some(Yaml::Bool(false));
    }
    let first = s.chars().next()?;
    if !(first.is_ascii_digit() || "+-.".contains(first)) {
        return None;
    }
    // go-yaml drops every '_' of a number before parsing it.
    let plain = if first == '.' { s.to_string() } else { s.replace('_', "") };
    if let Some(int) = go_int(&plain) {
        return Some(int);
    }
    if yaml_style_float(&plain) {
        return plain.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| Yaml::Number(f.into()));
    }
    None
}

/// Go's `strconv.ParseInt(s, 0, 64)` (then `ParseUint`): an optional sign, then `0x`, `0o`,
/// `0b` or a leading `0` (octal) or decimal digits.
fn go_int(s: &str) -> Option<Yaml> {
    let (negative, unsigned) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let prefixed = |lower: &str, upper: &str| unsigned.strip_prefix(lower).or_else(|| unsigned.strip_prefix(upper));
    let (radix, digits) = if let Some(d) = prefixed("0x", "0X") {
        (16, d)
    } else if let Some(d) = prefixed("0o", "0O") {
        (8, d)
    } else if let Some(d) = prefixed("0b", "0B") {
        (2, d)
    } else if unsigned.len() > 1 && unsigned.starts_with('0') {
        (8, &unsigned[1..])
    } else {
        (10, unsigned)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    let number = match (negative, i64::try_from(magnitude)) {
        (false, Ok(v)) => serde_yaml::Number::from(v),
        (false, Err(_)) => serde_yaml::Number::from(magnitude),
        (true, Ok(v)) => serde_yaml::Number::from(-v),
        (true, Err(_)) if magnitude == 1 << 63 => serde_yaml::Number::from(i64::MIN),
        (true, Err(_)) => return None,
    };
    Some(Yaml::Number(number))
}

/// go-yaml's float pattern: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn yaml_style_float(s: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => digits(fraction),
        Some((int, fraction)) => digits(int) && (fraction.is_empty() || digits(fraction)),
        None => digits(mantissa),
    };
    mantissa_ok && exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)))
}

/// Turns `doc` (the YAML 1.2 library's reading of the one document `body`) into kubectl's
/// reading: each plain, untagged scalar the library read as a string that kubectl reads as
/// a bool or number becomes that bool or number. `Err`: the document's structure could not
/// be followed (the message says where).
pub fn read_as_kubectl(body: &str, doc: &mut Yaml) -> Result<(), String> {
    let mut walk = Walk { events: Parser::new_from_str(body), anchors: HashMap::new() };
    walk.node(doc)
}

struct Walk<'a> {
    events: Parser<'a, granit_parser::StrInput<'a>>,
    /// Anchored nodes as kubectl reads them, for their aliases.
    anchors: HashMap<usize, Yaml>,
}

impl<'a> Walk<'a> {
    /// The next event that is part of the document's nodes.
    fn next(&mut self) -> Result<Event<'a>, String> {
        loop {
            let (event, _) = match self.events.next() {
                Some(Ok(next)) => next,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the document ends early".to_string()),
            };
            match event {
                Event::StreamStart | Event::DocumentStart(..) | Event::Comment(..) | Event::Anchor(..) => {}
                Event::StreamEnd | Event::DocumentEnd => return Err("the document ends early".to_string()),
                event => return Ok(event),
            }
        }
    }

    /// Follows one node of the event stream and `value`, its reading.
    fn node(&mut self, value: &mut Yaml) -> Result<(), String> {
        let mismatch = || "the YAML parsers disagree on the document's structure".to_string();
        let value = match value {
            Yaml::Tagged(tagged) => &mut tagged.value,
            value => value,
        };
        let anchor = match self.next()? {
            Event::Scalar(text, style, anchor, tag) => {
                if style == ScalarStyle::Plain && tag.is_none() && value.is_string() {
                    if let Some(read) = kubectl_plain_scalar(&text) {
                        *value = read;
                    }
                }
                anchor
            }
            Event::SequenceStart(_, anchor, _) => {
                let Yaml::Sequence(items) = &mut *value else { return Err(mismatch()) };
                for item in items {
                    self.node(item)?;
                }
                self.end(|e| matches!(e, Event::SequenceEnd))?;
                anchor
            }
            Event::MappingStart(_, anchor, _) => {
                let Yaml::Mapping(map) = &mut *value else { return Err(mismatch()) };
                for (_, entry) in map.iter_mut() {
                    self.skip()?; // the key
                    self.node(entry)?;
                }
                self.end(|e| matches!(e, Event::MappingEnd))?;
                anchor
            }
            Event::Alias(id) => {
                if let Some(read) = self.anchors.get(&id) {
                    *value = read.clone();
                }
                0
            }
            _ => return Err(mismatch()),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        Ok(())
    }

    /// Consumes one node (a key: keys are left as read).
    fn skip(&mut self) -> Result<(), String> {
        let mut depth = 0usize;
        loop {
            match self.next()? {
                Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
                Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }

    fn end(&mut self, is_end: impl Fn(&Event) -> bool) -> Result<(), String> {
        match self.next()? {
            event if is_end(&event) => Ok(()),
            _ => Err("the YAML parsers disagree on the document's structure".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_as_kubectl_reads_them() {
        let number = |s: &str| kubectl_plain_scalar(s).and_then(|v| v.as_f64());
        for (text, want) in [("0644", 420.0), ("1_000", 1000.0), ("0b101", 5.0), ("-010", -8.0), ("1_0.5", 10.5)] {
            assert_eq!(number(text), Some(want), "{text}");
        }
        for (text, want) in [("yes", true), ("Y", true), ("ON", true), ("n", false), ("Off", false)] {
            assert_eq!(kubectl_plain_scalar(text), Some(Yaml::Bool(want)), "{text}");
        }
        for text in ["hello", "12:30", "2001-12-14", "1.2.3", "0x", "09x", "--1", "+", ".", "=", "yess", ""] {
            assert_eq!(kubectl_plain_scalar(text), None, "{text}");
        }
    }

    #[test]
    fn only_plain_scalars_change() {
        let body = "a: 0644\nb: '0644'\nc: !!str 0644\nd: [yes, \"yes\"]\ne: &x {f: on}\ng: *x\nh: plain\n? k\n: 0b1\n";
        let mut doc: Yaml = serde_yaml::from_str(body).unwrap();
        read_as_kubectl(body, &mut doc).unwrap();
        let want: Yaml = serde_yaml::from_str(
            "a: 420\nb: '0644'\nc: '0644'\nd: [true, 'yes']\ne: {f: true}\ng: {f: true}\nh: plain\nk: 1\n",
        )
        .unwrap();
        assert_eq!(doc, want);
    }
}
