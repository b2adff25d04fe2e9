//! Tests of the hot-path recording, the snapshot and both renderings.
//!
//! The reference texts in `testdata/` were rendered by the renderer as it
//! stood before `metrics.prom` became table-driven; they change only with a
//! deliberate change of the exposed format, never as a side effect.

use std::time::Duration;

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
    add(&mount.backing_full, 3);
    add(&mount.killed_writes, 4);
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
        include_str!("testdata/snapshot.prom"),
        "metrics.prom",
    );
    assert_same_text(
        &snap.to_json(),
        include_str!("testdata/snapshot.json"),
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
    assert!(prom.contains("cachefs_rejected_writes_total{namespace=\"a\",reason=\"efbig\"} 1\n"));
    assert!(
        prom.contains("cachefs_lookup_duration_seconds_bucket{namespace=\"a\",le=\"+Inf\"} 1\n")
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

/// The table's rows are written by hand; these are the rules a new row
/// must follow (the reference text only covers the rows there are).
#[test]
fn families_follow_the_naming_rules() {
    let prom = representative().to_prometheus();
    let families: Vec<(&str, &str)> = prom
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_once(' ').unwrap())
        .collect();
    let mut names: Vec<&str> = families.iter().map(|&(n, _)| n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), families.len(), "a family is declared twice");
    for &(name, kind) in &families {
        assert!(name.starts_with("cachefs_"), "{name}");
        assert_eq!(kind == "counter", name.ends_with("_total"), "{name} {kind}");
    }
    let histograms: Vec<&str> = families
        .iter()
        .filter(|&&(_, kind)| kind == "histogram")
        .map(|&(n, _)| n)
        .collect();
    let expected: Vec<String> = OPS
        .iter()
        .map(|(_, op)| format!("cachefs_{op}_duration_seconds"))
        .collect();
    assert_eq!(histograms, expected, "one histogram per op, in OPS order");
}
