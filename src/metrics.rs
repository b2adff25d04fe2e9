//! Counters kept on the hot path with relaxed atomics (no lock), and their
//! renderings: `stats.json` and Prometheus `metrics.prom`.
//!
//! Gauges (entries, bytes, quota) are not counters: they are read from the
//! index when a snapshot is taken, so they can never drift from it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Per-namespace event counters.
#[derive(Debug, Default)]
pub struct NsCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub publishes: AtomicU64,
    pub evictions: AtomicU64,
    pub expirations: AtomicU64,
}

impl NsCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One namespace's (or the total's) figures at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NsStats {
    pub hits: u64,
    pub misses: u64,
    pub publishes: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub entries: u64,
    /// Stored bytes: what the entries occupy on the backing volume.
    pub bytes: u64,
    /// The namespace's own byte quota, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

impl NsStats {
    pub fn from_counters(c: &NsCounters, entries: u64, bytes: u64, max_bytes: Option<u64>) -> Self {
        NsStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            publishes: c.publishes.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            entries,
            bytes,
            max_bytes,
        }
    }

    fn accumulate(&mut self, o: &NsStats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.publishes += o.publishes;
        self.evictions += o.evictions;
        self.expirations += o.expirations;
        self.entries += o.entries;
        self.bytes += o.bytes;
    }
}

/// The whole cache's figures at one instant: what `stats.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub format: u32,
    pub total: NsStats,
    pub namespaces: std::collections::BTreeMap<String, NsStats>,
}

impl Snapshot {
    pub fn new(namespaces: Vec<(String, NsStats)>, quota: u64) -> Snapshot {
        let mut total = NsStats {
            max_bytes: Some(quota),
            ..NsStats::default()
        };
        for (_, s) in &namespaces {
            total.accumulate(s);
        }
        Snapshot {
            format: 1,
            total,
            namespaces: namespaces.into_iter().collect(),
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("stats serialize");
        s.push('\n');
        s
    }

    /// Prometheus text exposition format, one family per figure.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        type Field = fn(&NsStats) -> u64;
        let families: [(&str, &str, &str, Field); 7] = [
            (
                "cachefs_hits_total",
                "counter",
                "Reads that found a live entry.",
                |s| s.hits,
            ),
            (
                "cachefs_misses_total",
                "counter",
                "Lookups that found no live entry.",
                |s| s.misses,
            ),
            (
                "cachefs_publishes_total",
                "counter",
                "Entries published.",
                |s| s.publishes,
            ),
            (
                "cachefs_evictions_total",
                "counter",
                "Entries evicted to meet a quota.",
                |s| s.evictions,
            ),
            (
                "cachefs_expirations_total",
                "counter",
                "Expired entries removed.",
                |s| s.expirations,
            ),
            ("cachefs_entries", "gauge", "Live entries.", |s| s.entries),
            (
                "cachefs_stored_bytes",
                "gauge",
                "Bytes occupied on the backing volume.",
                |s| s.bytes,
            ),
        ];
        for (name, kind, help, field) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (ns, s) in &self.namespaces {
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{}\"}} {}",
                    escape_label(ns),
                    field(s)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP cachefs_quota_bytes The mount's byte quota.\n# TYPE cachefs_quota_bytes gauge\ncachefs_quota_bytes {}",
            self.total.max_bytes.unwrap_or(0)
        );
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
