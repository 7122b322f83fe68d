//! Pod addresses made local to this machine for one test.
//!
//! kube-apiserver refuses loopback (127.0.0.0/8) addresses in EndpointSlices, so where
//! kube-controller-manager publishes endpoints the pods need other addresses, and the
//! upstreams behind them must be reachable there: each is added to `lo` (needs root).

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{ensure, Context as _, Result};

/// Addresses added to `lo` as `/32`; removed when dropped.
pub struct LocalAddrs(Vec<Ipv4Addr>);

impl LocalAddrs {
    pub fn add(ips: impl IntoIterator<Item = Ipv4Addr>) -> Result<LocalAddrs> {
        let mut added = LocalAddrs(Vec::new());
        for ip in ips {
            let cidr = format!("{ip}/32");
            let _ = ip_addr("del", &cidr);
            let out = ip_addr("add", &cidr).with_context(|| format!("run ip addr add {cidr} dev lo"))?;
            ensure!(out.status.success(), "ip addr add {cidr} dev lo: {}", String::from_utf8_lossy(&out.stderr).trim());
            added.0.push(ip);
        }
        Ok(added)
    }
}

fn ip_addr(verb: &str, cidr: &str) -> std::io::Result<std::process::Output> {
    Command::new("ip").args(["addr", verb, cidr, "dev", "lo"]).output()
}

impl Drop for LocalAddrs {
    fn drop(&mut self) {
        for ip in &self.0 {
            let _ = ip_addr("del", &format!("{ip}/32"));
        }
    }
}
