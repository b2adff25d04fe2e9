//! Figures: counters recorded on callers' behalf, usage against the
//! limits, and the stats snapshot.
//!
//! Invariants: `stats()` reads gauges and counters under the index lock,
//! so a publish or an eviction is either wholly in a snapshot or not at
//! all; it is O(namespaces), never O(entries).

use std::sync::Arc;
use std::time::Duration;

use super::misses::TakeBack;
use super::{ENTRY_FORMAT, FORMAT_VERSION, Store, StoreError};
use crate::metrics::{self, Formats, Gauges, NsMetrics, NsStats, Op, Rejection, Snapshot};
use crate::names::{Key, NameError, Namespace};

/// Space and entry usage against the mount's limits.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub quota_bytes: u64,
    pub used_bytes: u64,
    pub entries: u64,
    pub max_entries: Option<u64>,
}

/// Counts a refused write by why it was refused (the writer sees EFBIG,
/// ENOSPC or EINVAL); other failures are not refusals.
pub(super) fn count_refusal(m: &NsMetrics, e: &StoreError) {
    let why = match e {
        StoreError::TooBig => Rejection::TooBig,
        StoreError::NoSpace => Rejection::NoSpace,
        StoreError::Io(io) if matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
            Rejection::NoSpace
        }
        StoreError::InvalidName(NameError::Invalid | NameError::NotSha256) => Rejection::Invalid,
        _ => return,
    };
    m.reject(why);
}

impl Store {
    /// Takes back a miss this lookup ledger counted: the kernel looks a
    /// key up before it creates it, and that lookup is part of the write,
    /// not a read that missed (see README, "Metrics").
    pub(super) fn take_back_miss(&self, ns_metrics: &NsMetrics, t: TakeBack) {
        if let TakeBack::Miss { expired } = t {
            metrics::sub(&ns_metrics.misses, 1);
            if expired {
                metrics::sub(&ns_metrics.expired_misses, 1);
            }
        }
    }

    /// Thread `pid` renamed an entry onto `key` in `ns`: its lookup of
    /// the target just before counted no miss (see `MissLedger`).
    pub fn renamed_onto(&self, pid: u32, ns: &Namespace, key: &Key) {
        let back = self
            .misses
            .renamed_onto(pid, ns, key, std::time::Instant::now());
        if back != TakeBack::Nothing
            && let Some(m) = self.ns_metrics(ns)
        {
            self.take_back_miss(&m, back);
        }
    }

    /// Counts a refused write (see `count_refusal`) in `ns`.
    pub(super) fn record_refusal(&self, ns: &Namespace, e: &StoreError) {
        if let Some(m) = self.ns_metrics(ns) {
            count_refusal(&m, e);
        }
    }

    /// Counts a backing-volume failure reported to a caller as EIO.
    pub fn record_io_error(&self) {
        metrics::add(&self.metrics.io_errors, 1);
    }

    /// Counts a write abandoned because its writer was killed by a signal.
    pub fn record_killed_write(&self) {
        metrics::add(&self.metrics.killed_writes, 1);
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
        let mut snap = Snapshot::new(
            per_ns,
            &self.metrics,
            total,
            Formats {
                backing: FORMAT_VERSION,
                entry: ENTRY_FORMAT,
            },
        );
        snap.index = self.index_status();
        snap
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
