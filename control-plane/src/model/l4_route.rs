//! VirtualService `tcp` and `tls` rules (Istio's `TCPRoute` and `TLSRoute`): plain data,
//! as the user wrote them, validated.

use std::fmt;
use std::net::IpAddr;

use super::RouteDestination;

/// An address range (`10.0.0.0/8`; a bare IP is a /32 or /128), host bits cleared,
/// as Envoy keeps it (so two spellings of one range compare equal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// Parses `ip` or `ip/len`; None when it is neither.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, Some(len.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix_len = len.unwrap_or(max);
        if prefix_len > max {
            return None;
        }
        let address = match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(u32::from(32 - prefix_len)).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(u32::from(128 - prefix_len)).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Some(Cidr { address, prefix_len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// One entry of a rule's `match`: Istio's `L4MatchAttributes` (tcp) or
/// `TLSMatchAttributes` (tls), the conditions meshd evaluates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct L4Match {
    /// `sniHosts` (tls rules only, where at least one is required).
    pub sni_hosts: Vec<String>,
    /// `destinationSubnets`: the connection's destination address is in one of them.
    pub destination_subnets: Vec<Cidr>,
    /// `port`: the service port the connection is for.
    pub port: Option<u16>,
    /// `gateways`: empty means the VirtualService's own; sidecars are `mesh`.
    pub gateways: Vec<String>,
}

impl L4Match {
    /// Whether the match can apply to a sidecar's traffic to service port `port`
    /// (Istio's `matchTCP` / `matchTLS` for the `mesh` gateway).
    pub fn applies_to(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && (self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh"))
    }
}

/// A `tcp` or `tls` rule: the connections its matches take (all, without matches, for
/// tcp) go to the weighted destinations.
#[derive(Clone, Debug, PartialEq)]
pub struct L4Route {
    pub matches: Vec<L4Match>,
    pub route: Vec<RouteDestination>,
}

/// Whether SNI host `sni` is within host `host` as Istio's `host.Name.SubsetOf` says
/// (case as written, `*.` wildcards, `*` covers everything).
pub fn sni_within(sni: &str, host: &str) -> bool {
    if sni == host {
        return true;
    }
    match host.strip_prefix('*') {
        Some(suffix) => match sni.strip_prefix('*') {
            Some(rest) => rest.len() >= suffix.len() && rest.ends_with(suffix),
            None => sni.ends_with(suffix),
        },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_with_host_bits_cleared() {
        let cases = [
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            ("10.1.2.3", Some("10.1.2.3/32")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("2001:db8::1/32", Some("2001:db8::/32")),
            ("::1", Some("::1/128")),
            ("10.0.0.0/33", None),
            ("10.0.0/8", None),
            ("10.0.0.0/", None),
            ("example.com", None),
        ];
        for (text, want) in cases {
            assert_eq!(Cidr::parse(text).map(|c| c.to_string()).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn sni_hosts_are_within_hosts_as_istio_says() {
        let cases = [
            ("a.example", "a.example", true),
            ("a.example", "*.example", true),
            ("*.a.example", "*.example", true),
            ("*.example", "*.example", true),
            ("example", "*.example", false),
            ("*.example", "a.example", false),
            ("b.example", "a.example", false),
            ("anything.at.all", "*", true),
        ];
        for (sni, host, want) in cases {
            assert_eq!(sni_within(sni, host), want, "{sni} within {host}");
        }
    }

    #[test]
    fn matches_apply_to_their_port_and_the_mesh() {
        let m = |port: Option<u16>, gateways: &[&str]| L4Match {
            port,
            gateways: gateways.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        };
        assert!(m(None, &[]).applies_to(27017));
        assert!(m(Some(27017), &["mesh"]).applies_to(27017));
        assert!(!m(Some(27018), &[]).applies_to(27017));
        assert!(!m(None, &["istio-system/egress"]).applies_to(27017));
        assert!(m(None, &["istio-system/egress", "mesh"]).applies_to(27017));
    }
}
