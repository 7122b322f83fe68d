//! Counters of the Kubernetes source, for `/metrics`: watch events, errors and relists
//! per watched resource, status writes, leadership.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchCounters {
    pub events: u64,
    pub errors: u64,
    /// `410 Gone` on a watch (its resource version compacted away or older than the
    /// API server's watch cache): the watcher relists.
    pub expired: u64,
    /// Lists after the first (410 Gone, API-server restarts, watch errors).
    pub relists: u64,
}

/// Name, help and value of one counter family.
type Family = (&'static str, &'static str, fn(&WatchCounters) -> u64);

#[derive(Debug, Default)]
pub struct KubeStats {
    watches: Mutex<BTreeMap<String, WatchCounters>>,
    pub status_writes: AtomicU64,
    pub status_write_errors: AtomicU64,
    pub leader: AtomicBool,
}

impl KubeStats {
    pub fn count(&self, resource: &str, f: impl FnOnce(&mut WatchCounters)) {
        let mut watches = crate::sync::lock(&self.watches);
        match watches.get_mut(resource) {
            Some(c) => f(c),
            None => f(watches.entry(resource.to_owned()).or_default()),
        }
    }

    pub fn watch(&self, resource: &str) -> WatchCounters {
        crate::sync::lock(&self.watches).get(resource).copied().unwrap_or_default()
    }

    /// Appends the Prometheus text of these counters to `out`.
    pub fn render(&self, out: &mut String) {
        let watches = crate::sync::lock(&self.watches).clone();
        let families: [Family; 4] = [
            ("amime_kube_watch_events_total", "Watch events received, by resource.", |c| c.events),
            ("amime_kube_watch_errors_total", "Watch errors (retried with backoff), by resource.", |c| c.errors),
            ("amime_kube_watch_expired_total", "Watches ended by 410 Gone (then relisted), by resource.", |c| {
                c.expired
            }),
            ("amime_kube_relists_total", "Relists after the initial list, by resource.", |c| c.relists),
        ];
        for (name, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (resource, c) in &watches {
                let _ = writeln!(out, "{name}{{resource=\"{resource}\"}} {}", get(c));
            }
        }
        let r = Ordering::Relaxed;
        let single = [
            ("amime_kube_status_writes_total", "counter", "CRD status patches written.", self.status_writes.load(r)),
            (
                "amime_kube_status_write_errors_total",
                "counter",
                "CRD status patches that failed.",
                self.status_write_errors.load(r),
            ),
            (
                "amime_kube_leader",
                "gauge",
                "1 while this replica holds the status Lease.",
                u64::from(self.leader.load(r)),
            ),
        ];
        for (name, kind, help, value) in single {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
    }
}
