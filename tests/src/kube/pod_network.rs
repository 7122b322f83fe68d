//! Pod addresses a test can serve on: `10.244.N.0/24` (N = the test's [`IpBlock`]) made local
//! to this host by one route on `lo`, so upstreams bind to pod IPs and Envoy reaches them.
//!
//! Pod IPs cannot be loopback addresses (the EndpointSlice controller refuses 127.0.0.0/8, see
//! [`super::kubelet`]). `ip route add local PREFIX dev lo` makes every address of the prefix
//! local without adding each one (needs root, as the transparent-mode tests do). The route is
//! removed when the [`PodNetwork`] is dropped; a route left by a killed run is replaced.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::mesh::IpBlock;

/// The pod address range of one test, routed to `lo` while this value lives.
#[derive(Debug)]
pub struct PodNetwork {
    block: IpBlock,
}

fn ip_route(verb: &str, prefix: &str) -> Result<()> {
    let out = Command::new("ip")
        .args(["route", verb, "local", prefix, "dev", "lo"])
        .output()
        .context("run `ip` (iproute2) to route pod addresses to lo")?;
    if !out.status.success() {
        bail!("ip route {verb} local {prefix} dev lo: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl PodNetwork {
    /// Routes `10.244.N.0/24` to `lo` (needs root).
    pub fn claim(block: IpBlock) -> Result<PodNetwork> {
        let network = PodNetwork { block };
        ip_route("replace", &network.prefix()).context(
            "pod addresses must be local to this host for Envoy to reach the test's upstreams (run as root)",
        )?;
        Ok(network)
    }

    /// `10.244.N.0/24`.
    pub fn prefix(&self) -> String {
        format!("10.244.{}.0/24", self.block.0)
    }

    /// `10.244.N.host`.
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.block.0, host)
    }

    pub fn addr(&self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip(host), port))
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        if let Err(e) = ip_route("del", &self.prefix()) {
            eprintln!("removing the pod route of block {}: {e:#}", self.block.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_lie_in_the_blocks_prefix() {
        let net = PodNetwork { block: IpBlock(42) };
        assert_eq!(net.prefix(), "10.244.42.0/24");
        assert_eq!(net.addr(11, 9080).to_string(), "10.244.42.11:9080");
        std::mem::forget(net); // never routed: nothing to remove
    }
}
