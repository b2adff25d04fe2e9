//! `metrics.prom`: a `Snapshot` in the Prometheus text exposition format
//! (0.0.4), written from one table of metric families.
//!
//! Adding a metric is adding a row to `FAMILIES`; the loop that writes
//! them knows no metric by name.
//!
//! Invariants:
//! 1. Names: `cachefs_` prefix, `_total` on counters, `_bytes`/`_seconds`
//!    units.
//! 2. What sums over namespaces is exported per namespace only, under a
//!    `namespace` label: PromQL's `sum()` gives the total, and an
//!    unlabelled total beside it would be counted twice by that `sum()`.
//!    Mount-wide figures have no label.
//! 3. Every family writes its `# HELP` and `# TYPE` lines, then its samples,
//!    even with no namespace; families come in table order and namespaces
//!    in name order, so the text depends on the snapshot alone. The tests
//!    hold it byte for byte to the text from before the table.
//! 4. Label values are escaped: namespace names are not trusted to be
//!    label-safe.

use std::fmt::{self, Display, Write as _};

use super::{FINITE_BUCKETS, NsStats, Op, Rejected, Snapshot, bucket_bound_seconds};

/// One metric family: its header, and where its samples come from.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: Samples,
}

enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Where a family's samples come from, which decides their labels.
enum Samples {
    /// One per namespace.
    PerNs(fn(&NsStats) -> u64),
    /// One per namespace that has the figure.
    PerNsIfAny(fn(&NsStats) -> Option<u64>),
    /// One per namespace and rejection reason.
    Rejections,
    /// One for the mount, unlabelled.
    Mount(fn(&Snapshot) -> Value),
    /// One, value 1, whose labels carry the versions.
    BuildInfo,
    /// Per namespace: cumulative buckets, sum and count.
    Latency(Op),
}

/// A mount-wide sample's value.
enum Value {
    Count(u64),
    /// Written to the millisecond, the precision the snapshot keeps.
    Seconds(f64),
}

/// Each rejection counter with its `reason` label.
fn by_reason(r: &Rejected) -> [(&'static str, u64); 3] {
    [
        ("efbig", r.efbig),
        ("enospc", r.enospc),
        ("einval", r.einval),
    ]
}

const FAMILIES: &[Family] = &[
    counter(
        "cachefs_hits_total",
        "Opens for reading that found a live entry.",
        |s| s.hits,
    ),
    counter(
        "cachefs_misses_total",
        "Lookups that found no live entry (expired included; not the lookup before a create).",
        |s| s.misses,
    ),
    counter(
        "cachefs_expired_misses_total",
        "Misses that found an expired entry.",
        |s| s.expired_misses,
    ),
    counter("cachefs_publishes_total", "Entries published.", |s| {
        s.publishes
    }),
    counter(
        "cachefs_published_bytes_total",
        "Logical bytes published.",
        |s| s.published_bytes,
    ),
    counter(
        "cachefs_read_bytes_total",
        "Size of the entries opened for reading.",
        |s| s.read_bytes,
    ),
    counter(
        "cachefs_evictions_total",
        "Entries evicted to meet a quota.",
        |s| s.evictions,
    ),
    counter(
        "cachefs_evicted_bytes_total",
        "Stored bytes evicted to meet a quota.",
        |s| s.evicted_bytes,
    ),
    counter(
        "cachefs_expirations_total",
        "Expired entries reclaimed.",
        |s| s.expirations,
    ),
    counter(
        "cachefs_expired_bytes_total",
        "Stored bytes of expired entries reclaimed.",
        |s| s.expired_bytes,
    ),
    counter(
        "cachefs_purged_entries_total",
        "Entries removed by purge.",
        |s| s.purged,
    ),
    counter(
        "cachefs_purged_bytes_total",
        "Stored bytes removed by purge.",
        |s| s.purged_bytes,
    ),
    Family {
        name: "cachefs_rejected_writes_total",
        kind: Kind::Counter,
        help: "Writes refused, by errno: efbig (over a limit), enospc (no room), einval (bad key).",
        samples: Samples::Rejections,
    },
    gauge("cachefs_entries", "Live entries.", |s| s.entries),
    gauge(
        "cachefs_logical_bytes",
        "Logical size of the live entries.",
        |s| s.logical_bytes,
    ),
    gauge(
        "cachefs_stored_bytes",
        "Bytes the live entries occupy on the backing volume.",
        |s| s.bytes,
    ),
    Family {
        name: "cachefs_quota_bytes",
        kind: Kind::Gauge,
        help: "Byte quota of namespaces that have their own.",
        samples: Samples::PerNsIfAny(|s| s.max_bytes),
    },
    mount(
        "cachefs_mount_quota_bytes",
        Kind::Gauge,
        "The mount's byte quota (the size df shows).",
        |s| Value::Count(s.total.max_bytes.unwrap_or(0)),
    ),
    mount(
        "cachefs_corrupt_entries_total",
        Kind::Counter,
        "Damaged or foreign backing files found and quarantined.",
        |s| Value::Count(s.corrupt_entries),
    ),
    mount(
        "cachefs_backing_io_errors_total",
        Kind::Counter,
        "Backing-volume failures reported as EIO.",
        |s| Value::Count(s.backing_io_errors),
    ),
    mount(
        "cachefs_backing_full_total",
        Kind::Counter,
        "Backing writes that found the volume full (room made by eviction, or ENOSPC).",
        |s| Value::Count(s.backing_full),
    ),
    mount(
        "cachefs_killed_writes_total",
        Kind::Counter,
        "Writes abandoned unpublished because their writer was killed by a signal.",
        |s| Value::Count(s.killed_writes),
    ),
    mount(
        "cachefs_start_time_seconds",
        Kind::Gauge,
        "Unix time the daemon started.",
        |s| Value::Seconds(s.started_unix),
    ),
    mount(
        "cachefs_uptime_seconds",
        Kind::Gauge,
        "Seconds since the daemon started.",
        |s| Value::Seconds(s.uptime_seconds),
    ),
    Family {
        name: "cachefs_build_info",
        kind: Kind::Gauge,
        help: "Version and format versions, as labels (value 1).",
        samples: Samples::BuildInfo,
    },
    latency(
        "cachefs_lookup_duration_seconds",
        "Latency of lookup operations.",
        Op::Lookup,
    ),
    latency(
        "cachefs_open_duration_seconds",
        "Latency of open operations.",
        Op::Open,
    ),
    latency(
        "cachefs_read_duration_seconds",
        "Latency of read operations.",
        Op::Read,
    ),
    latency(
        "cachefs_publish_duration_seconds",
        "Latency of publish operations.",
        Op::Publish,
    ),
];

impl Snapshot {
    /// The Prometheus text exposition of this snapshot (`metrics.prom`).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        for f in FAMILIES {
            // A String takes every write: the fmt::Result is always Ok.
            let _ = f.write(self, &mut out);
        }
        out
    }
}

impl Family {
    fn write(&self, snap: &Snapshot, out: &mut String) -> fmt::Result {
        let name = self.name;
        writeln!(
            out,
            "# HELP {name} {}\n# TYPE {name} {}",
            self.help, self.kind
        )?;
        match &self.samples {
            Samples::PerNs(field) => {
                for (ns, s) in &snap.namespaces {
                    writeln!(out, "{name}{{namespace=\"{}\"}} {}", Label(ns), field(s))?;
                }
            }
            Samples::PerNsIfAny(field) => {
                for (ns, s) in &snap.namespaces {
                    if let Some(v) = field(s) {
                        writeln!(out, "{name}{{namespace=\"{}\"}} {v}", Label(ns))?;
                    }
                }
            }
            Samples::Rejections => {
                for (ns, s) in &snap.namespaces {
                    let ns = Label(ns);
                    for (reason, v) in by_reason(&s.rejected_writes) {
                        writeln!(out, "{name}{{namespace=\"{ns}\",reason=\"{reason}\"}} {v}")?;
                    }
                }
            }
            Samples::Mount(value) => writeln!(out, "{name} {}", value(snap))?,
            Samples::BuildInfo => writeln!(
                out,
                "{name}{{version=\"{}\",backing_format=\"{}\",entry_format=\"{}\"}} 1",
                Label(snap.version),
                snap.backing_format,
                snap.entry_format
            )?,
            Samples::Latency(op) => {
                for (ns, s) in &snap.namespaces {
                    let h = s.histogram(*op);
                    let ns = Label(ns);
                    let mut cum = 0;
                    for (b, n) in h.buckets.iter().enumerate() {
                        cum += n;
                        if b == FINITE_BUCKETS {
                            writeln!(out, "{name}_bucket{{namespace=\"{ns}\",le=\"+Inf\"}} {cum}")?;
                        } else {
                            let le = bucket_bound_seconds(b);
                            writeln!(out, "{name}_bucket{{namespace=\"{ns}\",le=\"{le}\"}} {cum}")?;
                        }
                    }
                    let sum = h.sum_nanos as f64 / 1e9;
                    writeln!(out, "{name}_sum{{namespace=\"{ns}\"}} {sum}")?;
                    // The last cumulative bucket is +Inf, which is the count.
                    writeln!(out, "{name}_count{{namespace=\"{ns}\"}} {cum}")?;
                }
            }
        }
        Ok(())
    }
}

// Row builders: a row names its family and its figure, not the plumbing.

const fn counter(name: &'static str, help: &'static str, field: fn(&NsStats) -> u64) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        help,
        samples: Samples::PerNs(field),
    }
}

const fn gauge(name: &'static str, help: &'static str, field: fn(&NsStats) -> u64) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        help,
        samples: Samples::PerNs(field),
    }
}

const fn mount(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&Snapshot) -> Value,
) -> Family {
    Family {
        name,
        kind,
        help,
        samples: Samples::Mount(value),
    }
}

const fn latency(name: &'static str, help: &'static str, op: Op) -> Family {
    Family {
        name,
        kind: Kind::Histogram,
        help,
        samples: Samples::Latency(op),
    }
}

impl Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        })
    }
}

impl Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Seconds(s) => write!(f, "{s:.3}"),
        }
    }
}

/// A label value, escaped as the exposition format requires.
struct Label<'a>(&'a str);

impl Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}
