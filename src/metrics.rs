//! Metrics kept on the hot path with relaxed atomics (no lock), and their
//! renderings: `stats.json` and Prometheus `metrics.prom`.
//!
//! - `NsMetrics`: one namespace's event counters and latency histograms.
//!   The store hands an `Arc` of it to whatever records (the index entry of
//!   the namespace, a read handle), so recording never takes a lock.
//! - `MountMetrics`: figures that belong to the mount as a whole (corrupt
//!   files, whose damaged header cannot be trusted to name a namespace;
//!   backing I/O errors; start time).
//! - Gauges (entries, bytes, quotas) are not kept here: the store reads
//!   them from its index when it takes a `Snapshot`, so they never drift.
//!
//! Histograms have fixed log-scale buckets (upper bounds 1 µs, 2 µs, 4 µs,
//! … 2^25 µs ≈ 33.6 s, then +Inf); a percentile is estimated by linear
//! interpolation inside the bucket that holds it, so it is exact to within
//! a factor of two and usually much better.
//!
//! A snapshot's total is the sum of its namespaces, computed from the same
//! loaded values, so every rendering is self-consistent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Version of the `stats.json` schema (bumped on incompatible changes).
pub const STATS_FORMAT: u32 = 2;

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
}

impl Default for MountMetrics {
    fn default() -> Self {
        MountMetrics {
            started: SystemTime::now(),
            started_at: Instant::now(),
            corrupt: AtomicU64::new(0),
            io_errors: AtomicU64::new(0),
        }
    }
}

impl MountMetrics {
    pub fn uptime(&self) -> Duration {
        self.started_at.elapsed()
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
    /// The namespace's own byte quota (the mount's quota in `total`).
    pub max_bytes: Option<u64>,
    pub max_entries: Option<u64>,
    pub latency: Latency,
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
            max_bytes: g.max_bytes,
            max_entries: g.max_entries,
            latency: Latency::default(),
            histograms: std::array::from_fn(|i| m.histogram(OPS[i].0).snapshot()),
        };
        s.derive();
        s
    }

    /// Fills the figures computed from the others.
    fn derive(&mut self) {
        let looked = self.hits + self.misses;
        self.hit_ratio =
            (looked > 0).then(|| (self.hits as f64 / looked as f64 * 10_000.0).round() / 10_000.0);
        let h = &self.histograms;
        self.latency = Latency {
            lookup: h[0].summary(),
            open: h[1].summary(),
            read: h[2].summary(),
            publish: h[3].summary(),
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
    pub total: NsStats,
    pub namespaces: BTreeMap<String, NsStats>,
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
            total,
            namespaces: namespaces.into_iter().collect(),
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("stats serialize");
        s.push('\n');
        s
    }

    /// Prometheus text exposition format (0.0.4): `cachefs_` prefix,
    /// `_total` counters, `_bytes`/`_seconds` units, a `namespace` label.
    /// Only per-namespace series are exported for what sums over
    /// namespaces (PromQL's `sum()` gives the total); mount-wide figures
    /// have no label.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        type Field = fn(&NsStats) -> u64;
        let counters: [(&str, &str, Field); 12] = [
            ("hits", "Opens for reading that found a live entry.", |s| {
                s.hits
            }),
            (
                "misses",
                "Lookups that found no live entry (expired included; not the lookup before a create).",
                |s| s.misses,
            ),
            (
                "expired_misses",
                "Misses that found an expired entry.",
                |s| s.expired_misses,
            ),
            ("publishes", "Entries published.", |s| s.publishes),
            ("published_bytes", "Logical bytes published.", |s| {
                s.published_bytes
            }),
            (
                "read_bytes",
                "Size of the entries opened for reading.",
                |s| s.read_bytes,
            ),
            ("evictions", "Entries evicted to meet a quota.", |s| {
                s.evictions
            }),
            (
                "evicted_bytes",
                "Stored bytes evicted to meet a quota.",
                |s| s.evicted_bytes,
            ),
            ("expirations", "Expired entries reclaimed.", |s| {
                s.expirations
            }),
            (
                "expired_bytes",
                "Stored bytes of expired entries reclaimed.",
                |s| s.expired_bytes,
            ),
            ("purged_entries", "Entries removed by purge.", |s| s.purged),
            ("purged_bytes", "Stored bytes removed by purge.", |s| {
                s.purged_bytes
            }),
        ];
        for (name, help, field) in counters {
            family(&mut out, &format!("cachefs_{name}_total"), "counter", help);
            for (ns, s) in &self.namespaces {
                let _ = writeln!(
                    out,
                    "cachefs_{name}_total{{namespace=\"{}\"}} {}",
                    escape_label(ns),
                    field(s)
                );
            }
        }
        family(
            &mut out,
            "cachefs_rejected_writes_total",
            "counter",
            "Writes refused, by errno: efbig (over a limit), enospc (no room), einval (bad key).",
        );
        for (ns, s) in &self.namespaces {
            let r = &s.rejected_writes;
            for (reason, v) in [
                ("efbig", r.efbig),
                ("enospc", r.enospc),
                ("einval", r.einval),
            ] {
                let _ = writeln!(
                    out,
                    "cachefs_rejected_writes_total{{namespace=\"{}\",reason=\"{reason}\"}} {v}",
                    escape_label(ns)
                );
            }
        }
        let gauges: [(&str, &str, Field); 3] = [
            ("entries", "Live entries.", |s| s.entries),
            ("logical_bytes", "Logical size of the live entries.", |s| {
                s.logical_bytes
            }),
            (
                "stored_bytes",
                "Bytes the live entries occupy on the backing volume.",
                |s| s.bytes,
            ),
        ];
        for (name, help, field) in gauges {
            family(&mut out, &format!("cachefs_{name}"), "gauge", help);
            for (ns, s) in &self.namespaces {
                let _ = writeln!(
                    out,
                    "cachefs_{name}{{namespace=\"{}\"}} {}",
                    escape_label(ns),
                    field(s)
                );
            }
        }
        family(
            &mut out,
            "cachefs_quota_bytes",
            "gauge",
            "Byte quota of namespaces that have their own.",
        );
        for (ns, s) in &self.namespaces {
            if let Some(q) = s.max_bytes {
                let _ = writeln!(
                    out,
                    "cachefs_quota_bytes{{namespace=\"{}\"}} {q}",
                    escape_label(ns)
                );
            }
        }
        let mount_gauges: [(&str, &str, &str, String); 5] = [
            (
                "cachefs_mount_quota_bytes",
                "gauge",
                "The mount's byte quota (the size df shows).",
                self.total.max_bytes.unwrap_or(0).to_string(),
            ),
            (
                "cachefs_corrupt_entries_total",
                "counter",
                "Damaged or foreign backing files found and quarantined.",
                self.corrupt_entries.to_string(),
            ),
            (
                "cachefs_backing_io_errors_total",
                "counter",
                "Backing-volume failures reported as EIO.",
                self.backing_io_errors.to_string(),
            ),
            (
                "cachefs_start_time_seconds",
                "gauge",
                "Unix time the daemon started.",
                format!("{:.3}", self.started_unix),
            ),
            (
                "cachefs_uptime_seconds",
                "gauge",
                "Seconds since the daemon started.",
                format!("{:.3}", self.uptime_seconds),
            ),
        ];
        for (name, kind, help, v) in mount_gauges {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
        family(
            &mut out,
            "cachefs_build_info",
            "gauge",
            "Version and format versions, as labels (value 1).",
        );
        let _ = writeln!(
            out,
            "cachefs_build_info{{version=\"{}\",backing_format=\"{}\",entry_format=\"{}\"}} 1",
            escape_label(self.version),
            self.backing_format,
            self.entry_format
        );
        for (i, (_, op)) in OPS.iter().enumerate() {
            let name = format!("cachefs_{op}_duration_seconds");
            family(
                &mut out,
                &name,
                "histogram",
                &format!("Latency of {op} operations."),
            );
            for (ns, s) in &self.namespaces {
                let h = &s.histograms[i];
                let ns = escape_label(ns);
                let mut cum = 0;
                for (b, n) in h.buckets.iter().enumerate() {
                    cum += n;
                    let le = if b == FINITE_BUCKETS {
                        "+Inf".to_string()
                    } else {
                        format!("{}", bucket_bound_seconds(b))
                    };
                    let _ = writeln!(out, "{name}_bucket{{namespace=\"{ns}\",le=\"{le}\"}} {cum}");
                }
                let _ = writeln!(
                    out,
                    "{name}_sum{{namespace=\"{ns}\"}} {}",
                    h.sum_nanos as f64 / 1e9
                );
                let _ = writeln!(out, "{name}_count{{namespace=\"{ns}\"}} {cum}");
            }
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot that exercises every branch of both renderings: three
    /// namespaces (busy, oddly named, idle), all rejection reasons, every
    /// histogram including the +Inf bucket, present and absent quotas, and
    /// mount-wide figures. Times and version are pinned so the text is
    /// reproducible.
    fn representative() -> Snapshot {
        let mount = MountMetrics::default();
        add(&mount.corrupt, 2);
        add(&mount.io_errors, 5);
        let busy = NsMetrics::default();
        for (c, n) in [
            (&busy.hits, 40),
            (&busy.misses, 9),
            (&busy.expired_misses, 3),
            (&busy.publishes, 12),
            (&busy.published_bytes, 123_456),
            (&busy.read_bytes, 987_654),
            (&busy.evictions, 4),
            (&busy.evicted_bytes, 16_384),
            (&busy.expirations, 6),
            (&busy.expired_bytes, 24_576),
            (&busy.purged, 7),
            (&busy.purged_bytes, 28_672),
        ] {
            add(c, n);
        }
        busy.reject(Rejection::TooBig);
        busy.reject(Rejection::TooBig);
        busy.reject(Rejection::NoSpace);
        busy.reject(Rejection::Invalid);
        for us in [0, 1, 3, 3, 900, 70_000] {
            busy.lookup.record(Duration::from_micros(us));
        }
        busy.open.record(Duration::from_nanos(123_456));
        busy.read.record(Duration::from_micros(2));
        busy.read.record(Duration::from_secs(40)); // beyond 2^25 µs: +Inf
        busy.publish.record(Duration::from_millis(7));
        busy.publish.record(Duration::from_millis(1500));
        let odd = NsMetrics::default();
        add(&odd.hits, 1);
        add(&odd.misses, 2);
        odd.reject(Rejection::Invalid);
        odd.lookup.record(Duration::from_micros(50));
        let idle = NsMetrics::default();
        let snap = Snapshot::new(
            vec![
                (
                    "busy".into(),
                    NsStats::new(
                        &busy,
                        Gauges {
                            entries: 5,
                            logical_bytes: 10_000,
                            stored_bytes: 20_480,
                            max_bytes: Some(1 << 20),
                            max_entries: Some(100),
                        },
                    ),
                ),
                (
                    "odd \\ \"q\"\nline".into(),
                    NsStats::new(
                        &odd,
                        Gauges {
                            entries: 1,
                            logical_bytes: 3,
                            stored_bytes: 4096,
                            ..Gauges::default()
                        },
                    ),
                ),
                (
                    "idle".into(),
                    NsStats::new(
                        &idle,
                        Gauges {
                            max_bytes: Some(0),
                            ..Gauges::default()
                        },
                    ),
                ),
            ],
            &mount,
            NsStats {
                max_bytes: Some(1 << 30),
                max_entries: Some(1_000_000),
                ..NsStats::default()
            },
            Formats {
                backing: 3,
                entry: 4,
            },
        );
        Snapshot {
            version: "1.2.3-\"rc\"",
            started_unix: 1_700_000_000.125,
            uptime_seconds: 3723.5,
            ..snap
        }
    }

    /// Equality, but a failure names the first line that differs rather
    /// than printing two texts of hundreds of lines.
    fn assert_same_text(actual: &str, expected: &str, what: &str) {
        let first_diff = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e);
        if let Some(i) = first_diff {
            panic!(
                "{what} differs at line {}:\n  actual:   {}\n  expected: {}",
                i + 1,
                actual.lines().nth(i).unwrap(),
                expected.lines().nth(i).unwrap(),
            );
        }
        assert_eq!(actual, expected, "{what} differs in length or line ends");
    }

    /// The reference texts were rendered by the renderer as it stood
    /// before the table-driven rewrite: scrapers and `stats.json` readers
    /// must not see a byte change.
    #[test]
    fn renderings_are_byte_identical_to_the_reference() {
        let snap = representative();
        assert_same_text(
            &snap.to_prometheus(),
            include_str!("metrics/testdata/snapshot.prom"),
            "metrics.prom",
        );
        assert_same_text(
            &snap.to_json(),
            include_str!("metrics/testdata/snapshot.json"),
            "stats.json",
        );
    }

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1_000), 0);
        assert_eq!(bucket_of(1_001), 1);
        assert_eq!(bucket_of(2_000), 1);
        assert_eq!(bucket_of(3_000), 2);
        assert_eq!(bucket_of(1_000_000), 10); // 1 ms <= 2^10 µs
        assert_eq!(bucket_of(1_000_000_000), 20); // 1 s <= 2^20 µs
        assert_eq!(bucket_of(u64::MAX), FINITE_BUCKETS);
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile_us(0.5), None);
        for _ in 0..100 {
            h.record(Duration::from_micros(3)); // bucket (2, 4]
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        let p50 = s.quantile_us(0.5).unwrap();
        assert!((2.0..=4.0).contains(&p50), "{p50}");
        assert_eq!(s.quantile_us(1.0), Some(4.0));
        // One slow outlier moves p99 only at the very end.
        h.record(Duration::from_millis(100));
        let s = h.snapshot();
        assert!(s.quantile_us(0.99).unwrap() <= 4.0);
        assert!(s.quantile_us(1.0).unwrap() > 65_536.0);
    }

    #[test]
    fn totals_are_sums_and_prometheus_is_well_formed() {
        let mount = MountMetrics::default();
        let a = NsMetrics::default();
        add(&a.hits, 3);
        add(&a.misses, 1);
        a.reject(Rejection::TooBig);
        a.lookup.record(Duration::from_micros(5));
        let b = NsMetrics::default();
        add(&b.hits, 1);
        b.lookup.record(Duration::from_micros(50));
        let g = Gauges {
            entries: 2,
            logical_bytes: 10,
            stored_bytes: 8192,
            ..Gauges::default()
        };
        let snap = Snapshot::new(
            vec![
                ("a".into(), NsStats::new(&a, g)),
                ("b\"x".into(), NsStats::new(&b, g)),
            ],
            &mount,
            NsStats {
                max_bytes: Some(1 << 30),
                ..NsStats::default()
            },
            Formats {
                backing: 1,
                entry: 1,
            },
        );
        assert_eq!(snap.total.hits, 4);
        assert_eq!(snap.total.entries, 4);
        assert_eq!(snap.total.hit_ratio, Some(0.8));
        assert_eq!(snap.total.latency.lookup.count, 2);
        assert_eq!(snap.total.rejected_writes.efbig, 1);
        let prom = snap.to_prometheus();
        assert!(prom.contains("cachefs_hits_total{namespace=\"a\"} 3\n"));
        assert!(prom.contains("cachefs_hits_total{namespace=\"b\\\"x\"} 1\n"));
        assert!(
            prom.contains("cachefs_rejected_writes_total{namespace=\"a\",reason=\"efbig\"} 1\n")
        );
        assert!(
            prom.contains(
                "cachefs_lookup_duration_seconds_bucket{namespace=\"a\",le=\"+Inf\"} 1\n"
            )
        );
        assert!(prom.contains("cachefs_lookup_duration_seconds_count{namespace=\"a\"} 1\n"));
        assert!(prom.contains("cachefs_mount_quota_bytes 1073741824\n"));
        // Every sample line belongs to the family declared just before it.
        let mut current = String::new();
        for line in prom.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_string();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&current), "{line} outside {current}");
            }
        }
        let json: serde_json::Value = serde_json::from_str(&snap.to_json()).unwrap();
        assert_eq!(json["format"], STATS_FORMAT);
        assert_eq!(json["namespaces"]["a"]["rejected_writes"]["efbig"], 1);
        assert!(json["namespaces"]["a"]["latency"]["lookup"]["p50_us"].is_number());
        assert!(json["namespaces"]["a"]["latency"]["open"]["p50_us"].is_null());
    }
}
