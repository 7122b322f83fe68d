//! The sidecar's view of its pod: the environment and downward-API files the injected
//! `amime-proxy` container gets, turned into a [`BootstrapConfig`] (the same one `meshctl
//! bootstrap` builds from flags).
//!
//! Inputs (names in [`crate::conventions`]):
//! - env `POD_NAME`, `POD_NAMESPACE`, `INSTANCE_IPS` (comma-separated), `SERVICE_ACCOUNT`
//!   (downward API), `AMIME_XDS_ADDRESS`, `AMIME_XDS_API` (`delta`|`sotw`, default delta),
//!   `AMIME_APP_PROBES` (JSON [`AppProbes`], optional);
//! - the downward-API labels file (`metadata.labels`): one `key="value"` line per label, the
//!   value quoted as Go's `%q` does (kubelet's `fieldpath.FormatMap`).
//!
//! The interception mode is always `REDIRECT`: an injected pod's traffic is captured by the
//! init container's iptables rules.
//!
//! Pure: the caller reads the environment and the file; every error names the variable, or
//! the file's line.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::bootstrap::{BootstrapConfig, BootstrapError, InterceptionMode, ProxyIdentity, XdsApi};
use crate::conventions::env;
use crate::probes::AppProbes;

/// Why the pod's environment cannot make a bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum PodEnvError {
    #[error("environment variable {name} is not set (the injected sidecar container sets it{hint})")]
    MissingEnv { name: &'static str, hint: &'static str },
    #[error("environment variable {name}={value:?}: {reason}")]
    InvalidEnv { name: &'static str, value: String, reason: String },
    #[error("labels file, line {line}: {reason}")]
    LabelsFile { line: usize, reason: String },
    #[error("the pod's identity or labels are not valid for a bootstrap: {0}")]
    Bootstrap(#[from] BootstrapError),
}

fn required<'a>(
    env: &'a BTreeMap<String, String>,
    name: &'static str,
    hint: &'static str,
) -> Result<&'a str, PodEnvError> {
    match env.get(name).map(|v| v.trim()) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(PodEnvError::MissingEnv { name, hint }),
    }
}

fn optional<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn invalid(name: &'static str, value: &str, reason: impl Into<String>) -> PodEnvError {
    PodEnvError::InvalidEnv { name, value: value.to_string(), reason: reason.into() }
}

/// `INSTANCE_IPS`: comma-separated IP addresses (downward API `status.podIPs`).
fn parse_instance_ips(value: &str) -> Result<Vec<IpAddr>, PodEnvError> {
    let name = env::INSTANCE_IPS;
    let ips = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<IpAddr>().map_err(|_| invalid(name, value, format!("{s:?} is not an IP address"))))
        .collect::<Result<Vec<_>, _>>()?;
    if ips.is_empty() {
        return Err(invalid(name, value, "no IP address in the list"));
    }
    Ok(ips)
}

/// `AMIME_APP_PROBES`: the app's rewritten probes (absent or empty: none), which the
/// sidecar's health listener replays.
pub fn parse_app_probes(env: &BTreeMap<String, String>) -> Result<AppProbes, PodEnvError> {
    let Some(value) = optional(env, env::APP_PROBES) else {
        return Ok(AppProbes::new());
    };
    serde_json::from_str(value).map_err(|e| invalid(env::APP_PROBES, value, format!("not a valid probe map: {e}")))
}

/// Builds the sidecar's bootstrap (with the app probes its health listener replays) from
/// the pod's environment and the contents of its downward-API labels file.
pub fn bootstrap_config_from_pod(
    env: &BTreeMap<String, String>,
    labels_file: &str,
) -> Result<BootstrapConfig, PodEnvError> {
    const DOWNWARD: &str = " from the downward API";
    let pod_name = required(env, env::POD_NAME, DOWNWARD)?;
    let namespace = required(env, env::POD_NAMESPACE, DOWNWARD)?;
    let ips = parse_instance_ips(required(env, env::INSTANCE_IPS, " from status.podIPs")?)?;
    let xds_address = required(env, env::XDS_ADDRESS, " to meshd's xDS address, HOST:PORT")?;
    let xds_api = match optional(env, env::XDS_API) {
        None => XdsApi::default(),
        Some(value) => value.parse().map_err(|_| invalid(env::XDS_API, value, "expected \"delta\" or \"sotw\""))?,
    };
    let labels = parse_labels_file(labels_file)?;
    let app_probes = parse_app_probes(env)?;

    let node = ProxyIdentity { pod_name: pod_name.to_string(), namespace: namespace.to_string() };
    let mut builder = BootstrapConfig::builder(node)
        .ips(ips)
        .xds_address(xds_address)
        .xds_api(xds_api)
        .mode(InterceptionMode::Redirect)
        .labels(labels)
        .app_probes(app_probes);
    if let Some(account) = optional(env, env::SERVICE_ACCOUNT) {
        builder = builder.service_account(account);
    }
    Ok(builder.build()?)
}

/// Parses a downward-API labels (or annotations) file: `key="value"` lines, values quoted
/// as Go's `%q`. Blank lines are ignored; a key given twice keeps its last value.
pub fn parse_labels_file(text: &str) -> Result<BTreeMap<String, String>, PodEnvError> {
    let mut labels = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let err = |reason: String| PodEnvError::LabelsFile { line, reason };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let Some((key, quoted)) = trimmed.split_once('=') else {
            return Err(err(format!("{trimmed:?} is not key=\"value\"")));
        };
        if key.is_empty() {
            return Err(err(format!("{trimmed:?} has an empty key")));
        }
        let value = unquote_go(quoted).map_err(|reason| err(format!("the value of {key:?}: {reason}")))?;
        labels.insert(key.to_string(), value);
    }
    Ok(labels)
}

/// Reverses Go's `strconv.Quote`: a double-quoted string with Go escapes.
fn unquote_go(quoted: &str) -> Result<String, String> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .filter(|_| quoted.len() >= 2)
        .ok_or_else(|| format!("{quoted:?} is not a double-quoted string"))?;
    // Bytes, not chars: `\xNN` and octal escapes are bytes of a UTF-8 sequence.
    let mut bytes: Vec<u8> = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err(format!("{quoted:?} has an unescaped '\"' inside")),
            '\\' => unescape_one(&mut chars, &mut bytes).map_err(|e| format!("{quoted:?}: {e}"))?,
            c => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("{quoted:?} is not valid UTF-8 once unescaped"))
}

fn take_digits(chars: &mut std::str::Chars<'_>, n: usize, radix: u32) -> Result<u32, String> {
    let digits: String = chars.by_ref().take(n).collect();
    if digits.chars().count() != n {
        return Err(format!("escape needs {n} digits, got {digits:?}"));
    }
    u32::from_str_radix(&digits, radix).map_err(|_| format!("{digits:?} is not a base-{radix} number"))
}

fn unescape_one(chars: &mut std::str::Chars<'_>, bytes: &mut Vec<u8>) -> Result<(), String> {
    let Some(c) = chars.next() else {
        return Err("ends with a lone '\\'".to_string());
    };
    let simple = match c {
        'a' => Some(0x07),
        'b' => Some(0x08),
        'f' => Some(0x0c),
        'n' => Some(b'\n'),
        'r' => Some(b'\r'),
        't' => Some(b'\t'),
        'v' => Some(0x0b),
        '\\' => Some(b'\\'),
        '"' => Some(b'"'),
        '\'' => Some(b'\''),
        _ => None,
    };
    if let Some(b) = simple {
        bytes.push(b);
        return Ok(());
    }
    let code_point = |v: u32| char::from_u32(v).ok_or_else(|| format!("\\u{v:x} is not a Unicode scalar value"));
    match c {
        'x' => bytes.push(take_digits(chars, 2, 16)? as u8),
        'u' | 'U' => {
            let ch = code_point(take_digits(chars, if c == 'u' { 4 } else { 8 }, 16)?)?;
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
        '0'..='7' => {
            let rest = take_digits(chars, 2, 8)?;
            let value = (c as u32 - '0' as u32) * 64 + rest;
            let byte = u8::try_from(value).map_err(|_| format!("octal escape \\{c}.. is above \\377"))?;
            bytes.push(byte);
        }
        other => return Err(format!("unknown escape \\{other}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_env(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = [
            ("POD_NAME", "reviews-v2-7d9f"),
            ("POD_NAMESPACE", "bookinfo"),
            ("INSTANCE_IPS", "10.1.2.3"),
            ("SERVICE_ACCOUNT", "bookinfo-reviews"),
            ("AMIME_XDS_ADDRESS", "amime-meshd.amime-system.svc:15010"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            if v.is_empty() {
                env.remove(*k);
            } else {
                env.insert(k.to_string(), v.to_string());
            }
        }
        env
    }

    const LABELS: &str = "app=\"reviews\"\npod-template-hash=\"7d9f\"\nversion=\"v2\"";

    #[test]
    fn a_complete_pod_makes_a_redirect_bootstrap() {
        let config = bootstrap_config_from_pod(&pod_env(&[("INSTANCE_IPS", "10.1.2.3, fd00::3")]), LABELS).unwrap();
        assert_eq!(config.node().node_id(), "reviews-v2-7d9f.bookinfo");
        assert_eq!(config.mode(), InterceptionMode::Redirect);
        assert_eq!(config.xds_api(), XdsApi::Delta);
        assert_eq!(config.service_account(), "bookinfo-reviews");
        assert_eq!(config.ips().len(), 2);
        assert_eq!(config.labels().get("version").map(String::as_str), Some("v2"));
        assert_eq!(config.xds_address().to_string(), "amime-meshd.amime-system.svc:15010");
        let sotw = bootstrap_config_from_pod(&pod_env(&[("AMIME_XDS_API", "sotw")]), "").unwrap();
        assert_eq!(sotw.xds_api(), XdsApi::Sotw);
        assert!(sotw.labels().is_empty());
        let no_account = bootstrap_config_from_pod(&pod_env(&[("SERVICE_ACCOUNT", "")]), "").unwrap();
        assert_eq!(no_account.service_account(), "default");
    }

    #[test]
    fn labels_file_values_are_go_quoted() {
        let text = "a=\"plain\"\n\nb=\"say \\\"hi\\\"\\n\\t\\\\\"\nc=\"caf\\u00e9 \\xc3\\xa9 \\303\\251 \\U0001F600 é\"\nd=\"\"\n";
        let labels = parse_labels_file(text).unwrap();
        assert_eq!(labels["a"], "plain");
        assert_eq!(labels["b"], "say \"hi\"\n\t\\");
        assert_eq!(labels["c"], "café é é 😀 é");
        assert_eq!(labels["d"], "");
        assert_eq!(labels.len(), 4);
        // Keys may contain '=' only in the value part; the first '=' splits.
        assert_eq!(parse_labels_file("k=\"a=b\"").unwrap()["k"], "a=b");
    }

    #[test]
    fn bad_labels_files_name_the_line() {
        let cases = [
            ("app=\"x\"\nversion", "line 2", "not key=\"value\""),
            ("app=reviews", "line 1", "not a double-quoted string"),
            ("app=\"x\"\n=\"v\"", "line 2", "empty key"),
            ("a=\"x\"\n\nb=\"bad \\q\"", "line 3", "unknown escape \\q"),
            ("a=\"x\\u12\"", "line 1", "4 digits"),
            ("a=\"x\"y\"", "line 1", "unescaped"),
            ("a=\"\\xff\"", "line 1", "not valid UTF-8"),
            ("a=\"\\", "line 1", "not a double-quoted string"),
        ];
        for (text, line, want) in cases {
            let got = parse_labels_file(text).unwrap_err().to_string();
            assert!(got.contains(line) && got.contains(want), "{text:?}: {got:?} should name {line} and {want:?}");
        }
    }

    #[test]
    fn bad_environments_name_the_variable() {
        let cases: Vec<(BTreeMap<String, String>, &str, &str)> = vec![
            (pod_env(&[("POD_NAME", "")]), "POD_NAME is not set", "downward API"),
            (pod_env(&[("POD_NAMESPACE", "  ")]), "POD_NAMESPACE is not set", ""),
            (pod_env(&[("INSTANCE_IPS", "")]), "INSTANCE_IPS is not set", "podIPs"),
            (pod_env(&[("INSTANCE_IPS", "10.1.2")]), "INSTANCE_IPS=\"10.1.2\"", "\"10.1.2\" is not an IP address"),
            (pod_env(&[("INSTANCE_IPS", " , ")]), "INSTANCE_IPS", "no IP address"),
            (pod_env(&[("INSTANCE_IPS", "0.0.0.0")]), "0.0.0.0", "unspecified"),
            (pod_env(&[("AMIME_XDS_ADDRESS", "")]), "AMIME_XDS_ADDRESS is not set", "HOST:PORT"),
            (pod_env(&[("AMIME_XDS_ADDRESS", "meshd")]), "xDS address \"meshd\"", "no ':PORT'"),
            (pod_env(&[("AMIME_XDS_API", "rest")]), "AMIME_XDS_API=\"rest\"", "delta"),
            (pod_env(&[("POD_NAMESPACE", "Book_Info")]), "namespace \"Book_Info\"", "DNS label"),
            (pod_env(&[("AMIME_APP_PROBES", "{not json")]), "AMIME_APP_PROBES=", "not a valid probe map"),
            (pod_env(&[("AMIME_APP_PROBES", r#"{"/app-health/app/livez":{"path":"/"}}"#)]), "AMIME_APP_PROBES", "port"),
            (pod_env(&[("AMIME_APP_PROBES", r#"{"/x":{"port":70000,"path":"/"}}"#)]), "AMIME_APP_PROBES", "70000"),
        ];
        for (env, want1, want2) in cases {
            let got = bootstrap_config_from_pod(&env, LABELS).unwrap_err().to_string();
            assert!(got.contains(want1) && got.contains(want2), "{got:?} should contain {want1:?} and {want2:?}");
        }
        let bad_label = bootstrap_config_from_pod(&pod_env(&[]), "app=\"not valid!\"").unwrap_err().to_string();
        assert!(bad_label.contains("label \"app\""), "{bad_label}");
    }

    #[test]
    fn app_probes_are_parsed_when_present() {
        let json = r#"{"/app-health/reviews/readyz":{"port":9080,"path":"/ready","scheme":"HTTP"}}"#;
        let config = bootstrap_config_from_pod(&pod_env(&[("AMIME_APP_PROBES", json)]), LABELS).unwrap();
        assert_eq!(config.app_probes()["/app-health/reviews/readyz"].port, 9080);
        assert!(bootstrap_config_from_pod(&pod_env(&[]), LABELS).unwrap().app_probes().is_empty());
    }
}
