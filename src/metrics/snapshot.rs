//! The snapshot model: the whole cache's figures at one instant, as
//! `stats.json` holds them and `metrics.prom` renders them.
//!
//! Invariants:
//! 1. A snapshot's total is the sum of its namespaces, computed from the
//!    same loaded values, so every rendering is self-consistent. Only the
//!    total's limits (`max_bytes`, `max_entries`) are not sums: they are
//!    the mount's.
//! 2. A histogram snapshot's count is the sum of its buckets, so a
//!    `_count` always equals its `+Inf` bucket.
//! 3. The serialized structs are the `stats.json` schema, field order
//!    included: an incompatible change to them bumps `STATS_FORMAT`.
//! 4. Derived figures (hit ratio, latency summaries) are computed from the
//!    others by `derive`, never recorded, so they cannot disagree.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::{FINITE_BUCKETS, MountMetrics, NsMetrics, OPS, Op};

/// Version of the `stats.json` schema (bumped on incompatible changes).
pub const STATS_FORMAT: u32 = 2;

/// A histogram's values at one instant. The count is the sum of the
/// buckets, so `_count` always equals the `+Inf` bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<u64>,
    pub sum_nanos: u64,
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        HistogramSnapshot {
            buckets: vec![0; FINITE_BUCKETS + 1],
            sum_nanos: 0,
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn merge(&mut self, o: &HistogramSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.sum_nanos += o.sum_nanos;
    }

    /// The `q` quantile (0 < q <= 1) in microseconds, interpolated inside
    /// its bucket; `None` without observations.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = (q * count as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lower = if i == 0 {
                    0.0
                } else {
                    (1u64 << (i - 1)) as f64
                };
                if i == FINITE_BUCKETS {
                    return Some(lower);
                }
                let upper = (1u64 << i) as f64;
                let within = (rank - seen as f64) / n as f64;
                return Some(lower + (upper - lower) * within);
            }
            seen += n;
        }
        None
    }

    fn summary(&self) -> LatencySummary {
        let round = |v: Option<f64>| v.map(|x| (x * 10.0).round() / 10.0);
        LatencySummary {
            count: self.count(),
            sum_seconds: self.sum_nanos as f64 / 1e9,
            p50_us: round(self.quantile_us(0.50)),
            p95_us: round(self.quantile_us(0.95)),
            p99_us: round(self.quantile_us(0.99)),
        }
    }
}

/// The gauges of one namespace (or of the mount), read from the index.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub entries: u64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub max_bytes: Option<u64>,
    pub max_entries: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rejected {
    pub efbig: u64,
    pub enospc: u64,
    pub einval: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub sum_seconds: f64,
    /// Estimated from the histogram; `null` without observations.
    pub p50_us: Option<f64>,
    pub p95_us: Option<f64>,
    pub p99_us: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub lookup: LatencySummary,
    pub open: LatencySummary,
    pub read: LatencySummary,
    pub publish: LatencySummary,
}

/// One namespace's (or the total's) figures at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NsStats {
    /// Opens for reading that found a live entry.
    pub hits: u64,
    /// Lookups that found no live entry (expired ones included), except
    /// the kernel's lookup that precedes a create of the same key.
    pub misses: u64,
    /// The part of `misses` that found an expired entry.
    pub expired_misses: u64,
    /// hits / (hits + misses); `null` before either.
    pub hit_ratio: Option<f64>,
    pub publishes: u64,
    /// Logical bytes published.
    pub published_bytes: u64,
    /// Bytes served to readers.
    pub read_bytes: u64,
    pub evictions: u64,
    /// Stored bytes evicted.
    pub evicted_bytes: u64,
    /// Expired entries reclaimed by the sweeper (or on access).
    pub expirations: u64,
    pub expired_bytes: u64,
    /// Entries removed by `cachefs purge`.
    pub purged: u64,
    pub purged_bytes: u64,
    pub rejected_writes: Rejected,
    pub entries: u64,
    pub logical_bytes: u64,
    /// Stored bytes: what the entries occupy on the backing volume.
    pub bytes: u64,
    /// logical_bytes / bytes: above 1 where compression saves room
    /// (blocks count, so small plain entries show below 1); `null`
    /// while nothing is stored.
    pub compression_ratio: Option<f64>,
    /// The namespace's own byte quota (the mount's quota in `total`).
    pub max_bytes: Option<u64>,
    pub max_entries: Option<u64>,
    pub latency: Latency,
    /// In `OPS` order. `stats.json` shows their summaries (`latency`);
    /// the buckets themselves are for `metrics.prom`.
    #[serde(skip)]
    pub histograms: [HistogramSnapshot; 4],
}

impl NsStats {
    pub fn new(m: &NsMetrics, g: Gauges) -> Self {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = NsStats {
            hits: l(&m.hits),
            misses: l(&m.misses),
            expired_misses: l(&m.expired_misses),
            hit_ratio: None,
            publishes: l(&m.publishes),
            published_bytes: l(&m.published_bytes),
            read_bytes: l(&m.read_bytes),
            evictions: l(&m.evictions),
            evicted_bytes: l(&m.evicted_bytes),
            expirations: l(&m.expirations),
            expired_bytes: l(&m.expired_bytes),
            purged: l(&m.purged),
            purged_bytes: l(&m.purged_bytes),
            rejected_writes: Rejected {
                efbig: l(&m.rejected_efbig),
                enospc: l(&m.rejected_enospc),
                einval: l(&m.rejected_einval),
            },
            entries: g.entries,
            logical_bytes: g.logical_bytes,
            bytes: g.stored_bytes,
            compression_ratio: None,
            max_bytes: g.max_bytes,
            max_entries: g.max_entries,
            latency: Latency::default(),
            histograms: std::array::from_fn(|i| m.histogram(OPS[i].0).snapshot()),
        };
        s.derive();
        s
    }

    /// The histogram of `op`.
    pub fn histogram(&self, op: Op) -> &HistogramSnapshot {
        let i = OPS.iter().position(|&(o, _)| o == op);
        &self.histograms[i.expect("OPS lists every Op")]
    }

    /// Fills the figures computed from the others.
    fn derive(&mut self) {
        let looked = self.hits + self.misses;
        self.hit_ratio =
            (looked > 0).then(|| (self.hits as f64 / looked as f64 * 10_000.0).round() / 10_000.0);
        self.compression_ratio = (self.bytes > 0)
            .then(|| (self.logical_bytes as f64 / self.bytes as f64 * 100.0).round() / 100.0);
        self.latency = Latency {
            lookup: self.histogram(Op::Lookup).summary(),
            open: self.histogram(Op::Open).summary(),
            read: self.histogram(Op::Read).summary(),
            publish: self.histogram(Op::Publish).summary(),
        };
    }

    fn accumulate(&mut self, o: &NsStats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.expired_misses += o.expired_misses;
        self.publishes += o.publishes;
        self.published_bytes += o.published_bytes;
        self.read_bytes += o.read_bytes;
        self.evictions += o.evictions;
        self.evicted_bytes += o.evicted_bytes;
        self.expirations += o.expirations;
        self.expired_bytes += o.expired_bytes;
        self.purged += o.purged;
        self.purged_bytes += o.purged_bytes;
        self.rejected_writes.efbig += o.rejected_writes.efbig;
        self.rejected_writes.enospc += o.rejected_writes.enospc;
        self.rejected_writes.einval += o.rejected_writes.einval;
        self.entries += o.entries;
        self.logical_bytes += o.logical_bytes;
        self.bytes += o.bytes;
        for (a, b) in self.histograms.iter_mut().zip(&o.histograms) {
            a.merge(b);
        }
    }
}

/// The whole cache's figures at one instant: what `stats.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The schema version of this document (`STATS_FORMAT`).
    pub format: u32,
    /// cachefs's version.
    pub version: &'static str,
    /// Format versions of the backing dir and of entry files.
    pub backing_format: u32,
    pub entry_format: u32,
    /// Unix seconds when the daemon started, and seconds since.
    pub started_unix: f64,
    pub uptime_seconds: f64,
    /// Damaged or foreign files found (and quarantined) since the start.
    pub corrupt_entries: u64,
    /// Backing-volume failures reported to callers as EIO since the start.
    pub backing_io_errors: u64,
    /// Backing writes that found the volume full since the start (each
    /// made room by eviction, or was refused with ENOSPC).
    pub backing_full: u64,
    /// Writes abandoned since the start because their writer was killed
    /// by a signal (nothing of them was published).
    pub killed_writes: u64,
    /// The index: whether it is still being rebuilt behind the serving
    /// daemon, and what the rebuild has found so far.
    pub index: IndexStatus,
    pub total: NsStats,
    pub namespaces: BTreeMap<String, NsStats>,
}

/// Where the daemon's index stands (see the store's `rebuild.rs`). While
/// `rebuilding`, entries and bytes in `total` and `namespaces` count only
/// what the index knows so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexStatus {
    pub rebuilding: bool,
    /// The rebuild ended having put in everything it found.
    pub complete: bool,
    /// "snapshot" (of the last clean stop) or "scan" (of the trailers).
    pub source: &'static str,
    /// Entries and stored bytes the rebuild has found so far.
    pub found_entries: u64,
    pub found_bytes: u64,
    /// How long the rebuild took, once complete.
    pub seconds: f64,
}

/// Format versions recorded in a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Formats {
    pub backing: u32,
    pub entry: u32,
}

impl Snapshot {
    /// Builds a snapshot; `total` gauges carry the mount's limits.
    pub fn new(
        namespaces: Vec<(String, NsStats)>,
        mount: &MountMetrics,
        mut total: NsStats,
        formats: Formats,
    ) -> Snapshot {
        for (_, s) in &namespaces {
            total.accumulate(s);
        }
        total.derive();
        Snapshot {
            format: STATS_FORMAT,
            version: env!("CARGO_PKG_VERSION"),
            backing_format: formats.backing,
            entry_format: formats.entry,
            started_unix: mount
                .started
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0),
            uptime_seconds: (mount.uptime().as_millis() as f64) / 1000.0,
            corrupt_entries: mount.corrupt.load(Ordering::Relaxed),
            backing_io_errors: mount.io_errors.load(Ordering::Relaxed),
            backing_full: mount.backing_full.load(Ordering::Relaxed),
            killed_writes: mount.killed_writes.load(Ordering::Relaxed),
            index: IndexStatus::default(),
            total,
            namespaces: namespaces.into_iter().collect(),
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("stats serialize");
        s.push('\n');
        s
    }
}
