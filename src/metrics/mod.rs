//! Metrics kept on the hot path, and the way out to their renderings.
//!
//! This file holds what recording touches: `NsMetrics` (one namespace's
//! event counters and latency histograms; the store hands an `Arc` of it to
//! whatever records, its index entry or a read handle) and `MountMetrics`
//! (figures of the mount as a whole: corrupt files, whose damaged header
//! cannot be trusted to name a namespace; backing I/O errors; a full
//! backing volume; start time).
//! `snapshot.rs` turns them into a `Snapshot` and `stats.json`;
//! `prometheus.rs` renders a `Snapshot` as `metrics.prom`. Everything the
//! rest of the crate names is re-exported here, as `crate::metrics::X`.
//!
//! Invariants:
//! 1. Recording takes no lock: every figure is a relaxed atomic. Counters
//!    order nothing, so no stronger ordering is paid for on the hot path.
//! 2. A counter never goes below zero (`sub` saturates), so a take-back
//!    without its matching count cannot wrap it to 2^64 under a scraper.
//! 3. Histograms have fixed log-scale buckets: bucket `i` counts
//!    (2^(i-1), 2^i] µs up to 2^25 µs ≈ 33.6 s, the last everything above.
//!    A percentile is interpolated inside its bucket, so it is exact to
//!    within a factor of two and usually much better.
//! 4. `OPS` order is the order of `NsStats::histograms` and of the
//!    histogram families in `metrics.prom`.
//! 5. Gauges (entries, bytes, quotas) are not kept here: the store reads
//!    them from its index when it takes a `Snapshot`, so they never drift.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

mod prometheus;
mod snapshot;
#[cfg(test)]
mod tests;

pub use snapshot::{
    Formats, Gauges, HistogramSnapshot, IndexStatus, Latency, LatencySummary, NsStats, Rejected,
    STATS_FORMAT, Snapshot,
};

/// Finite buckets: upper bounds 2^0 .. 2^(N-1) microseconds.
pub const FINITE_BUCKETS: usize = 26;

/// A latency histogram: lock-free, fixed log-scale buckets.
#[derive(Debug)]
pub struct Histogram {
    /// `buckets[i]` counts observations in (2^(i-1), 2^i] µs; the last one
    /// counts everything above the largest finite bound.
    buckets: [AtomicU64; FINITE_BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// The bucket an observation of `nanos` falls in.
fn bucket_of(nanos: u64) -> usize {
    let micros = nanos.div_ceil(1000);
    if micros <= 1 {
        0
    } else {
        ((64 - (micros - 1).leading_zeros()) as usize).min(FINITE_BUCKETS)
    }
}

/// Upper bound of finite bucket `i`, in seconds.
pub fn bucket_bound_seconds(i: usize) -> f64 {
    (1u64 << i) as f64 / 1e6
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let nanos = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Records the time since `start`.
    pub fn since(&self, start: Instant) {
        self.record(start.elapsed());
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// Why a write was refused, as the writer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// EFBIG: over `max_entry_bytes` or a quota.
    TooBig,
    /// ENOSPC: no room could be made, or the backing volume is full.
    NoSpace,
    /// EINVAL: a key the namespace does not accept.
    Invalid,
}

/// The operations whose latency is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A key looked up in the index (a FUSE LOOKUP of an entry).
    Lookup,
    /// An entry opened for reading (first open includes the checksum check).
    Open,
    /// One read request served from an open entry.
    Read,
    /// A staged write published (trailer, rename, eviction).
    Publish,
}

/// Each op with its name in `metrics.prom`; the order is that of
/// `NsStats::histograms`.
pub const OPS: [(Op, &str); 4] = [
    (Op::Lookup, "lookup"),
    (Op::Open, "open"),
    (Op::Read, "read"),
    (Op::Publish, "publish"),
];

/// One namespace's counters and histograms.
#[derive(Debug, Default)]
pub struct NsMetrics {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub expired_misses: AtomicU64,
    pub publishes: AtomicU64,
    pub published_bytes: AtomicU64,
    pub read_bytes: AtomicU64,
    pub evictions: AtomicU64,
    pub evicted_bytes: AtomicU64,
    pub expirations: AtomicU64,
    pub expired_bytes: AtomicU64,
    pub purged: AtomicU64,
    pub purged_bytes: AtomicU64,
    pub rejected_efbig: AtomicU64,
    pub rejected_enospc: AtomicU64,
    pub rejected_einval: AtomicU64,
    pub lookup: Histogram,
    pub open: Histogram,
    pub read: Histogram,
    pub publish: Histogram,
}

/// Adds `n` to a counter (relaxed: counters order nothing).
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Takes `n` back from a counter, never below zero.
pub fn sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

impl NsMetrics {
    pub fn histogram(&self, op: Op) -> &Histogram {
        match op {
            Op::Lookup => &self.lookup,
            Op::Open => &self.open,
            Op::Read => &self.read,
            Op::Publish => &self.publish,
        }
    }

    pub fn reject(&self, why: Rejection) {
        add(
            match why {
                Rejection::TooBig => &self.rejected_efbig,
                Rejection::NoSpace => &self.rejected_enospc,
                Rejection::Invalid => &self.rejected_einval,
            },
            1,
        );
    }
}

/// Figures of the mount as a whole.
#[derive(Debug)]
pub struct MountMetrics {
    pub started: SystemTime,
    started_at: Instant,
    /// Files found damaged or foreign (and quarantined).
    pub corrupt: AtomicU64,
    /// Backing-volume failures reported to callers as EIO.
    pub io_errors: AtomicU64,
    /// Backing writes that found the volume full (ENOSPC or EDQUOT): each
    /// made room by eviction, or was refused with ENOSPC if it could not.
    pub backing_full: AtomicU64,
    /// Writes abandoned because their writer was killed by a signal
    /// while it held them (nothing published).
    pub killed_writes: AtomicU64,
}

impl Default for MountMetrics {
    fn default() -> Self {
        MountMetrics {
            started: SystemTime::now(),
            started_at: Instant::now(),
            corrupt: AtomicU64::new(0),
            io_errors: AtomicU64::new(0),
            backing_full: AtomicU64::new(0),
            killed_writes: AtomicU64::new(0),
        }
    }
}

impl MountMetrics {
    pub fn uptime(&self) -> Duration {
        self.started_at.elapsed()
    }
}
