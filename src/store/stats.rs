//! Figures: counters recorded on callers' behalf, usage against the
//! limits, and the stats snapshot.
//!
//! Invariants: `stats()` reads gauges and counters under the index lock,
//! so a publish or an eviction is either wholly in a snapshot or not at
//! all; it is O(namespaces), never O(entries).

use std::sync::Arc;
use std::time::Duration;

use super::names::Namespace;
use super::{ENTRY_FORMAT, FORMAT_VERSION, Store};
use crate::metrics::{self, Formats, Gauges, NsMetrics, NsStats, Op, Rejection, Snapshot};

/// Space and entry usage against the mount's limits.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub quota_bytes: u64,
    pub used_bytes: u64,
    pub entries: u64,
    pub max_entries: Option<u64>,
}

impl Store {
    /// Takes back a miss counted by `lookup`: the kernel looks a key up
    /// before it creates it, and that lookup is part of the write, not a
    /// read that missed (see README, "Metrics").
    pub fn uncount_miss(&self, ns: &Namespace, expired: bool) {
        if let Some(m) = self.ns_metrics(ns) {
            metrics::sub(&m.misses, 1);
            if expired {
                metrics::sub(&m.expired_misses, 1);
            }
        }
    }

    /// Counts a write refused with EFBIG, ENOSPC or EINVAL.
    pub fn record_rejection(&self, ns: &Namespace, why: Rejection) {
        if let Some(m) = self.ns_metrics(ns) {
            m.reject(why);
        }
    }

    /// Counts a backing-volume failure reported to a caller as EIO.
    pub fn record_io_error(&self) {
        metrics::add(&self.metrics.io_errors, 1);
    }

    /// Records the latency of `op` in `ns` (for steps timed by the caller).
    pub fn record_latency(&self, ns: &Namespace, op: Op, d: Duration) {
        if let Some(m) = self.ns_metrics(ns) {
            m.histogram(op).record(d);
        }
    }

    pub(super) fn ns_metrics(&self, ns: &Namespace) -> Option<Arc<NsMetrics>> {
        self.lock().namespace(ns).map(|s| Arc::clone(&s.metrics))
    }

    pub fn usage(&self) -> Usage {
        let idx = self.lock();
        Usage {
            quota_bytes: idx.limits.max_bytes,
            used_bytes: idx.total_bytes(),
            entries: idx.total_entries(),
            max_entries: idx.limits.max_entries,
        }
    }

    /// One consistent snapshot of every figure: gauges and counters are
    /// read under the index lock, so a publish or an eviction is either
    /// wholly in it or not at all. O(namespaces), never O(entries).
    pub fn stats(&self) -> Snapshot {
        let idx = self.lock();
        let per_ns = idx
            .namespaces()
            .map(|(ns, s)| {
                let gauges = Gauges {
                    entries: s.len(),
                    logical_bytes: s.logical_bytes(),
                    stored_bytes: s.bytes(),
                    max_bytes: s.policy.max_bytes,
                    max_entries: s.policy.max_entries,
                };
                (ns.to_string(), NsStats::new(&s.metrics, gauges))
            })
            .collect();
        let total = NsStats {
            max_bytes: Some(idx.limits.max_bytes),
            max_entries: idx.limits.max_entries,
            ..NsStats::default()
        };
        Snapshot::new(
            per_ns,
            &self.metrics,
            total,
            Formats {
                backing: FORMAT_VERSION,
                entry: ENTRY_FORMAT,
            },
        )
    }

    /// Space and entry usage of one namespace against its own limits, for
    /// a namespace that has a byte quota; `None` otherwise.
    pub fn namespace_usage(&self, ns: &Namespace) -> Option<Usage> {
        let idx = self.lock();
        let s = idx.namespace(ns)?;
        let quota = s.policy.max_bytes?;
        Some(Usage {
            quota_bytes: quota.min(idx.limits.max_bytes),
            used_bytes: s.bytes(),
            entries: s.len(),
            max_entries: s.policy.max_entries,
        })
    }
}
