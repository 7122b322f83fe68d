//! Name validation (Kubernetes / RFC 1123 rules) for what a bootstrap names: pods,
//! namespaces, service accounts, labels, hosts.

/// Why a name (pod name, namespace, service account, label, host) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("it is empty")]
    Empty,
    #[error("it is {len} characters long, the maximum is {max}")]
    TooLong { len: usize, max: usize },
    #[error("character {ch:?} at position {pos} is not allowed ({allowed})")]
    InvalidChar {
        ch: char,
        /// 1-based character position.
        pos: usize,
        allowed: &'static str,
    },
    #[error("it must start and end with a letter or digit")]
    BadEdge,
    #[error("it has an empty dot-separated part")]
    EmptyPart,
    #[error("dot-separated part {part:?} is {len} characters long, the maximum is 63")]
    PartTooLong { part: String, len: usize },
    #[error("it ends in an all-numeric part, so it looks like an IP address but is not a valid one")]
    NumericTail,
}

const LOWER_ALNUM_DASH: &str = "use lowercase letters, digits and '-'";
const LOWER_ALNUM_DASH_DOT: &str = "use lowercase letters, digits, '-' and '.'";
const LABEL_CHARS: &str = "use letters, digits, '-', '_' and '.'";
const HOST_CHARS: &str = "use letters, digits, '-' and '.'";

fn check_len(s: &str, max: usize) -> Result<(), NameError> {
    let len = s.chars().count();
    if len == 0 {
        Err(NameError::Empty)
    } else if len > max {
        Err(NameError::TooLong { len, max })
    } else {
        Ok(())
    }
}

fn check_chars(s: &str, allowed: &'static str, ok: impl Fn(char) -> bool) -> Result<(), NameError> {
    match s.chars().enumerate().find(|&(_, c)| !ok(c)) {
        Some((i, ch)) => Err(NameError::InvalidChar { ch, pos: i + 1, allowed }),
        None => Ok(()),
    }
}

fn check_edges(s: &str, edge_ok: impl Fn(char) -> bool) -> Result<(), NameError> {
    let first = s.chars().next().is_some_and(&edge_ok);
    let last = s.chars().next_back().is_some_and(&edge_ok);
    if first && last {
        Ok(())
    } else {
        Err(NameError::BadEdge)
    }
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 DNS label as Kubernetes uses it (namespaces): `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 63.
pub fn validate_dns_label(s: &str) -> Result<(), NameError> {
    check_len(s, 63)?;
    check_chars(s, LOWER_ALNUM_DASH, |c| is_lower_alnum(c) || c == '-')?;
    check_edges(s, is_lower_alnum)
}

/// RFC 1123 DNS subdomain as Kubernetes uses it (pod and service-account
/// names): dot-separated DNS labels, ≤ 253 characters in all.
pub fn validate_dns_subdomain(s: &str) -> Result<(), NameError> {
    check_len(s, 253)?;
    check_chars(s, LOWER_ALNUM_DASH_DOT, |c| is_lower_alnum(c) || c == '-' || c == '.')?;
    for part in s.split('.') {
        if part.is_empty() {
            return Err(NameError::EmptyPart);
        }
        check_edges(part, is_lower_alnum)?;
    }
    Ok(())
}

/// A DNS host name as used in an address (case-insensitive, optional trailing dot).
pub(crate) fn validate_hostname(s: &str) -> Result<(), NameError> {
    let name = s.strip_suffix('.').unwrap_or(s);
    check_len(name, 253)?;
    check_chars(name, HOST_CHARS, |c| c.is_ascii_alphanumeric() || c == '-' || c == '.')?;
    for part in name.split('.') {
        if part.is_empty() {
            return Err(NameError::EmptyPart);
        }
        if part.len() > 63 {
            return Err(NameError::PartTooLong { part: part.to_string(), len: part.len() });
        }
        check_edges(part, |c| c.is_ascii_alphanumeric())?;
    }
    if name.rsplit('.').next().is_some_and(|tail| tail.chars().all(|c| c.is_ascii_digit())) {
        return Err(NameError::NumericTail);
    }
    Ok(())
}

/// Name part of a label key, or a label value: `[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?`, ≤ 63.
pub(crate) fn validate_label_name(s: &str) -> Result<(), NameError> {
    check_len(s, 63)?;
    check_chars(s, LABEL_CHARS, |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))?;
    check_edges(s, |c| c.is_ascii_alphanumeric())
}
