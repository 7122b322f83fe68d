//! The sidecar's traffic capture: the iptables `nat` rules the init step (`amime-agent
//! init`) installs in a pod's network namespace (MISSION §4), as plain data.
//!
//! - outbound (`OUTPUT`): TCP from every process but the proxy's uid, and not to an excluded
//!   range or port, goes to `outbound_port` (15001), where Envoy hands it to the listener of
//!   its original destination;
//! - inbound (`PREROUTING`): TCP arriving from outside, except to the sidecar's own ports and
//!   the excluded ones, goes to `inbound_port` (15006);
//! - the sidecar's hand-off to the app (source [`INBOUND_SOURCE_IP`] over `lo`) is never
//!   captured again.
//!
//! [`CaptureSpec::restore_input`] renders the rules for `iptables-restore --noflush`, which
//! installs them in one transaction; [`CaptureSpec::to_args`] / the agent's flags carry the
//! spec from the injected pod to the init container.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The uid (and gid) the sidecar runs as; its own traffic is never captured (as Istio's 1337).
pub const DEFAULT_PROXY_UID: u32 = 1337;
/// Where captured outbound TCP goes (MISSION §2).
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// Where captured inbound TCP goes (MISSION §2).
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
/// Envoy's admin port.
pub const ENVOY_ADMIN_PORT: u16 = 15000;
/// Source address of the sidecar's inbound hand-off to the app (`InboundPassthroughCluster`).
pub const INBOUND_SOURCE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// The sidecar's own ports, never captured inbound: admin, outbound, inbound, health, stats.
pub const SIDECAR_PORTS: [u16; 5] = [
    ENVOY_ADMIN_PORT,
    OUTBOUND_CAPTURE_PORT,
    INBOUND_CAPTURE_PORT,
    crate::bootstrap::HEALTH_PORT,
    crate::bootstrap::PROMETHEUS_PORT,
];

/// The chains the capture owns in the `nat` table (created, flushed and removed as a set).
pub const CHAINS: [&str; 4] = [INBOUND_CHAIN, INBOUND_REDIRECT_CHAIN, OUTPUT_CHAIN, OUTBOUND_REDIRECT_CHAIN];
/// Inbound classification, jumped to from `PREROUTING`.
pub const INBOUND_CHAIN: &str = "AMIME_INBOUND";
/// Inbound redirect to [`CaptureSpec::inbound_port`].
pub const INBOUND_REDIRECT_CHAIN: &str = "AMIME_IN_REDIRECT";
/// Outbound classification, jumped to from `OUTPUT`.
pub const OUTPUT_CHAIN: &str = "AMIME_OUTPUT";
/// Outbound redirect to [`CaptureSpec::outbound_port`].
pub const OUTBOUND_REDIRECT_CHAIN: &str = "AMIME_REDIRECT";

/// An IPv4 network in CIDR notation (`10.0.0.0/8`, `192.168.1.7/32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = CaptureError;

    /// Parses `A.B.C.D/LEN` or a bare address (a /32).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| CaptureError::InvalidCidr { value: s.to_string(), reason: reason.to_string() };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| {
            if addr.contains(':') {
                bad("IPv6 ranges are not supported yet (the capture is IPv4 only)")
            } else {
                bad("not an IPv4 address")
            }
        })?;
        let prefix = match prefix {
            None => 32,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= 32 => p,
                _ => return Err(bad("the prefix length must be a number from 0 to 32")),
            },
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A capture value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("{value:?} is not a valid IP range: {reason}")]
    InvalidCidr { value: String, reason: String },
    #[error("{value:?} is not a valid port: {reason}")]
    InvalidPort { value: String, reason: String },
}

/// Parses a comma-separated port list (`"5432, 6379"`; empty entries are ignored).
pub fn parse_ports(list: &str) -> Result<BTreeSet<u16>, CaptureError> {
    let mut ports = BTreeSet::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.parse::<u16>() {
            Ok(0) => {
                return Err(CaptureError::InvalidPort { value: item.into(), reason: "port 0 is not a port".into() })
            }
            Ok(port) => {
                ports.insert(port);
            }
            Err(_) => {
                return Err(CaptureError::InvalidPort {
                    value: item.into(),
                    reason: "expected a number from 1 to 65535".into(),
                })
            }
        }
    }
    Ok(ports)
}

/// Parses a comma-separated IPv4 CIDR list (`"10.0.0.0/8,192.168.0.0/16"`).
pub fn parse_cidrs(list: &str) -> Result<BTreeSet<Ipv4Cidr>, CaptureError> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect()
}

/// The IPv4 ranges of a comma-separated list that may also hold IPv6 ranges (a dual-stack
/// pod's `excludeOutboundIPRanges`). IPv6 ranges are checked, then left out: the capture is
/// IPv4 only, so IPv6 traffic is never captured and they are excluded already.
pub fn parse_ipv4_cidrs_of_dual_stack(list: &str) -> Result<BTreeSet<Ipv4Cidr>, CaptureError> {
    let mut ipv4 = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, prefix) = item.split_once('/').map_or((item, None), |(a, p)| (a, Some(p)));
        if !addr.contains(':') {
            ipv4.push(item);
            continue;
        }
        let bad = |reason: &str| CaptureError::InvalidCidr { value: item.to_string(), reason: reason.to_string() };
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| bad("not an IPv6 address"))?;
        if prefix.is_some_and(|p| p.parse::<u8>().map_or(true, |p| p > 128)) {
            return Err(bad("the prefix length of an IPv6 range must be a number from 0 to 128"));
        }
    }
    parse_cidrs(&ipv4.join(","))
}

/// What the init step captures in one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureSpec {
    /// Traffic from this uid (the sidecar's) is never captured.
    pub proxy_uid: u32,
    pub outbound_port: u16,
    pub inbound_port: u16,
    /// Inbound ports not captured, besides [`SIDECAR_PORTS`] (always excluded).
    pub exclude_inbound_ports: BTreeSet<u16>,
    /// Outbound destination ports not captured.
    pub exclude_outbound_ports: BTreeSet<u16>,
    /// Outbound destination ranges not captured, besides `127.0.0.1/32` (always excluded:
    /// Envoy's admin and the app's own loopback traffic).
    pub exclude_outbound_cidrs: BTreeSet<Ipv4Cidr>,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        Self {
            proxy_uid: DEFAULT_PROXY_UID,
            outbound_port: OUTBOUND_CAPTURE_PORT,
            inbound_port: INBOUND_CAPTURE_PORT,
            exclude_inbound_ports: BTreeSet::new(),
            exclude_outbound_ports: BTreeSet::new(),
            exclude_outbound_cidrs: BTreeSet::new(),
        }
    }
}

/// Flag names of `amime-agent init` (one home for the injector, which writes them, and the
/// agent, which reads them).
pub mod flags {
    pub const PROXY_UID: &str = "--proxy-uid";
    pub const OUTBOUND_PORT: &str = "--outbound-port";
    pub const INBOUND_PORT: &str = "--inbound-port";
    pub const EXCLUDE_INBOUND_PORTS: &str = "--exclude-inbound-ports";
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "--exclude-outbound-ports";
    pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "--exclude-outbound-ip-ranges";
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

impl CaptureSpec {
    /// The `amime-agent init` arguments that reproduce this spec (empty lists are left out).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            flags::PROXY_UID.to_string(),
            self.proxy_uid.to_string(),
            flags::OUTBOUND_PORT.to_string(),
            self.outbound_port.to_string(),
            flags::INBOUND_PORT.to_string(),
            self.inbound_port.to_string(),
        ];
        for (flag, value) in [
            (flags::EXCLUDE_INBOUND_PORTS, join(&self.exclude_inbound_ports)),
            (flags::EXCLUDE_OUTBOUND_PORTS, join(&self.exclude_outbound_ports)),
            (flags::EXCLUDE_OUTBOUND_IP_RANGES, join(&self.exclude_outbound_cidrs)),
        ] {
            if !value.is_empty() {
                args.push(flag.to_string());
                args.push(value);
            }
        }
        args
    }

    /// Every inbound port left alone: the sidecar's own and the excluded ones.
    pub fn inbound_ports_not_captured(&self) -> BTreeSet<u16> {
        SIDECAR_PORTS.iter().copied().chain(self.exclude_inbound_ports.iter().copied()).collect()
    }

    /// The rules as `iptables -t nat` argument lists, in order, chains' creation (`-N`) first.
    pub fn rules(&self) -> Vec<Vec<String>> {
        let mut rules: Vec<String> = CHAINS.iter().map(|c| format!("-N {c}")).collect();
        rules.extend(self.chain_rules());
        rules.extend(self.jump_rules());
        rules.into_iter().map(|r| r.split_whitespace().map(str::to_string).collect()).collect()
    }

    /// The rules inside the capture's own chains.
    fn chain_rules(&self) -> Vec<String> {
        let mut rules = vec![
            format!("-A {INBOUND_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}", self.inbound_port),
            format!("-A {OUTBOUND_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}", self.outbound_port),
            format!("-A {INBOUND_CHAIN} -s {INBOUND_SOURCE_IP}/32 -j RETURN"),
        ];
        for port in self.inbound_ports_not_captured() {
            rules.push(format!("-A {INBOUND_CHAIN} -p tcp --dport {port} -j RETURN"));
        }
        rules.push(format!("-A {INBOUND_CHAIN} -p tcp -j {INBOUND_REDIRECT_CHAIN}"));
        rules.push(format!("-A {OUTPUT_CHAIN} -s {INBOUND_SOURCE_IP}/32 -o lo -j RETURN"));
        rules.push(format!("-A {OUTPUT_CHAIN} -m owner --uid-owner {} -j RETURN", self.proxy_uid));
        rules.push(format!("-A {OUTPUT_CHAIN} -d 127.0.0.1/32 -j RETURN"));
        for cidr in &self.exclude_outbound_cidrs {
            rules.push(format!("-A {OUTPUT_CHAIN} -d {cidr} -j RETURN"));
        }
        for port in &self.exclude_outbound_ports {
            rules.push(format!("-A {OUTPUT_CHAIN} -p tcp --dport {port} -j RETURN"));
        }
        rules.push(format!("-A {OUTPUT_CHAIN} -j {OUTBOUND_REDIRECT_CHAIN}"));
        rules
    }

    /// The two rules in the built-in chains that send TCP into the capture's chains.
    pub fn jump_rules(&self) -> Vec<String> {
        vec![format!("-A PREROUTING -p tcp -j {INBOUND_CHAIN}"), format!("-A OUTPUT -p tcp -j {OUTPUT_CHAIN}")]
    }

    /// Input for `iptables-restore --noflush`: declares (and so creates or empties) the
    /// capture's chains and fills them, in one transaction. The jumps from `PREROUTING` and
    /// `OUTPUT` are included; whoever applies it removes earlier jumps first so that running
    /// twice leaves one set of rules.
    pub fn restore_input(&self) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for rule in self.chain_rules().into_iter().chain(self.jump_rules()) {
            let _ = writeln!(out, "{rule}");
        }
        out.push_str("COMMIT\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CaptureSpec {
        CaptureSpec {
            exclude_inbound_ports: parse_ports("8081").unwrap(),
            exclude_outbound_ports: parse_ports("5432, 6379").unwrap(),
            exclude_outbound_cidrs: parse_cidrs("10.0.0.0/8,192.168.1.7").unwrap(),
            ..CaptureSpec::default()
        }
    }

    #[test]
    fn exclusions_come_before_the_redirects() {
        let rules: Vec<String> = spec().rules().iter().map(|r| r.join(" ")).collect();
        let pos = |needle: &str| {
            rules
                .iter()
                .position(|r| r.contains(needle))
                .unwrap_or_else(|| panic!("no rule with {needle:?} in {rules:#?}"))
        };
        let redirect_out = pos("-A AMIME_OUTPUT -j AMIME_REDIRECT");
        let redirect_in = pos("-A AMIME_INBOUND -p tcp -j AMIME_IN_REDIRECT");
        for needle in ["--uid-owner 1337 -j RETURN", "-d 127.0.0.1/32 -j RETURN", "-d 10.0.0.0/8", "-d 192.168.1.7/32"]
        {
            assert!(pos(needle) < redirect_out, "{needle}");
        }
        assert!(pos("AMIME_OUTPUT -p tcp --dport 5432 -j RETURN") < redirect_out);
        for port in ["15000", "15001", "15006", "15021", "15090", "8081"] {
            assert!(pos(&format!("AMIME_INBOUND -p tcp --dport {port} -j RETURN")) < redirect_in, "{port}");
        }
        assert!(rules.contains(&"-A AMIME_REDIRECT -p tcp -j REDIRECT --to-ports 15001".to_string()));
        assert!(rules.contains(&"-A AMIME_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006".to_string()));
    }

    #[test]
    fn restore_input_declares_every_chain_and_commits() {
        let input = spec().restore_input();
        assert!(input.starts_with("*nat\n:AMIME_INBOUND - [0:0]\n"));
        assert!(input.ends_with("-A PREROUTING -p tcp -j AMIME_INBOUND\n-A OUTPUT -p tcp -j AMIME_OUTPUT\nCOMMIT\n"));
        assert_eq!(input.matches("-j AMIME_INBOUND").count(), 1);
    }

    #[test]
    fn args_name_only_what_is_set() {
        assert_eq!(
            CaptureSpec::default().to_args().join(" "),
            "--proxy-uid 1337 --outbound-port 15001 --inbound-port 15006"
        );
        assert_eq!(
            spec().to_args()[6..].join(" "),
            "--exclude-inbound-ports 8081 --exclude-outbound-ports 5432,6379 \
             --exclude-outbound-ip-ranges 10.0.0.0/8,192.168.1.7/32"
        );
    }

    #[test]
    fn bad_lists_name_the_bad_item() {
        let cases = [
            (parse_ports("80,http").unwrap_err().to_string(), "\"http\" is not a valid port"),
            (parse_ports("0").unwrap_err().to_string(), "port 0"),
            (parse_ports("70000").unwrap_err().to_string(), "\"70000\""),
            (parse_cidrs("10.0.0.0/33").unwrap_err().to_string(), "prefix length"),
            (parse_cidrs("fd00::/8").unwrap_err().to_string(), "IPv6"),
            (parse_cidrs("10.0.0/8").unwrap_err().to_string(), "not an IPv4 address"),
        ];
        for (got, want) in cases {
            assert!(got.contains(want), "{got:?} should contain {want:?}");
        }
        assert_eq!(parse_ports(" 80 , ,443").unwrap().into_iter().collect::<Vec<_>>(), vec![80, 443]);
    }
}
