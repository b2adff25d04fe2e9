//! Issue 3, metrics: a known sequence of operations (hits, misses, an expired key,
//! writes past a quota and limits, a corrupted backing file) and the exact counter
//! values it must leave in `stats.json` and `metrics.prom`; `metrics.prom` parsed by a
//! real Prometheus text parser (python3's `prometheus_client`; under CI=true a missing
//! parser is a failure, never a skip); `df` of a namespace with its own quota.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

const CFG: &str = r#"
[cache]
max_bytes = "64MiB"
sweep_interval = "1h"

[namespace.o]

[namespace.t]
ttl = "1s"

[namespace.q]
max_bytes = "32KiB"
max_entry_bytes = 20000

[namespace.h]
key_format = "sha256"

[namespace.z]
max_entries = 0

[namespace.c]
"#;

fn stored(p: &Path) -> u64 {
    getxattr_str(p, "user.cachefs.stored_bytes")
        .unwrap()
        .parse()
        .unwrap()
}

/// What the sequence below must leave behind, with the stored sizes it saw.
struct Expected {
    t_stored: u64,
    q_evicted_stored: u64,
    q_stored: u64,
}

/// Runs the known sequence on a fresh mount.
fn known_sequence(m: &Mount) -> Expected {
    let mut rng = Rng::new(7);
    // o: 3 publishes of 10 000 bytes (the kernel's lookup before each create is
    // not a miss), 2 full reads of k1 (hits), 1 read of a missing key (a miss).
    for k in ["k1", "k2", "k3"] {
        write_file(&m.path("o", k), &rng.bytes(10_000)).unwrap();
    }
    for _ in 0..2 {
        assert_eq!(read_file(&m.path("o", "k1")).unwrap().len(), 10_000);
    }
    assert_errno(
        read_file(&m.path("o", "missing")),
        libc::ENOENT,
        "o/missing",
    );

    // t: one entry with a 1 s TTL, read after it expired: an expired miss.
    write_file(&m.path("t", "e"), b"short-lived").unwrap();
    let t_stored = stored(&m.path("t", "e"));
    let expires: u64 = getxattr_str(&m.path("t", "e"), "user.cachefs.expires")
        .unwrap()
        .parse()
        .unwrap();
    sleep_until_wall(SystemTime::UNIX_EPOCH + Duration::from_secs(expires + 1));
    assert_errno(read_file(&m.path("t", "e")), libc::ENOENT, "expired t/e");

    // q: quota 32 KiB. Three 12 000-byte entries: the third evicts the first (LRU).
    // Then a 25 000-byte write fails with EFBIG (over max_entry_bytes) at write().
    for k in ["q1", "q2"] {
        write_file(&m.path("q", k), &rng.bytes(12_000)).unwrap();
    }
    let q_evicted_stored = stored(&m.path("q", "q1"));
    write_file(&m.path("q", "q3"), &rng.bytes(12_000)).unwrap();
    assert_errno(read_file(&m.path("q", "q1")), libc::ENOENT, "evicted q1");
    assert_errno(
        write_file(&m.path("q", "big"), &rng.bytes(25_000)),
        libc::EFBIG,
        "write past max_entry_bytes",
    );
    let q_stored = stored(&m.path("q", "q2")) + stored(&m.path("q", "q3"));

    // h: sha256 keys only: another name is EINVAL at create.
    assert_errno(
        write_file(&m.path("h", "not-a-key"), b"x"),
        libc::EINVAL,
        "bad key in a sha256 namespace",
    );
    // z: max_entries = 0: no room can ever be made, ENOSPC at close.
    assert_errno(
        write_file(&m.path("z", "k"), b"x"),
        libc::ENOSPC,
        "namespace without room",
    );

    // c: an entry whose backing file is replaced by a copy with one content bit
    // flipped (a new inode, so the daemon re-validates it): found corrupt, never
    // served, quarantined.
    write_file(&m.path("c", "x"), &rng.bytes(5_000)).unwrap();
    let backing = m.backing_path("c", b"x");
    let mut bytes = fs::read(&backing).unwrap();
    bytes[1234] ^= 0x01;
    let tmp = backing.with_extension("tmp");
    fs::write(&tmp, &bytes).unwrap();
    fs::rename(&tmp, &backing).unwrap();
    assert_errno(read_file(&m.path("c", "x")), libc::ENOENT, "corrupt c/x");

    Expected {
        t_stored,
        q_evicted_stored,
        q_stored,
    }
}

#[track_caller]
fn assert_fields(s: &Value, ns: &str, want: &[(&str, u64)]) {
    for (field, v) in want {
        let got = field
            .split('.')
            .fold(&s["namespaces"][ns], |acc, part| &acc[part]);
        assert_eq!(
            got.as_u64(),
            Some(*v),
            "stats.json namespaces.{ns}.{field}\n{s:#}"
        );
    }
}

#[test]
fn stats_json_counts_a_known_sequence_exactly() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let e = known_sequence(&m);
    // Expired entries are reclaimed by df (and the sweeper): t's entry now.
    sh(&format!("df {} >/dev/null", q(&m.mnt)));
    let s = m.stats();
    assert_eq!(s["format"], 2, "{s:#}");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["backing_format"], 3);
    assert_eq!(s["entry_format"], 3);
    assert!(s["uptime_seconds"].as_f64().unwrap() >= 1.0, "{s:#}");
    assert_fields(
        &s,
        "o",
        &[
            ("hits", 2),
            ("misses", 1),
            ("expired_misses", 0),
            ("publishes", 3),
            ("published_bytes", 30_000),
            ("read_bytes", 20_000),
            ("entries", 3),
            ("logical_bytes", 30_000),
            ("evictions", 0),
            ("latency.open.count", 2),
        ],
    );
    assert_eq!(
        s["namespaces"]["o"]["hit_ratio"].as_f64(),
        Some(0.6667),
        "{s:#}"
    );
    assert_fields(
        &s,
        "t",
        &[
            ("hits", 0),
            ("misses", 1),
            ("expired_misses", 1),
            ("publishes", 1),
            ("expirations", 1),
            ("expired_bytes", e.t_stored),
            ("entries", 0),
            ("bytes", 0),
        ],
    );
    assert_fields(
        &s,
        "q",
        &[
            ("misses", 1), // the read of evicted q1
            ("publishes", 3),
            ("published_bytes", 36_000),
            ("evictions", 1),
            ("evicted_bytes", e.q_evicted_stored),
            ("rejected_writes.efbig", 1),
            ("rejected_writes.enospc", 0),
            ("entries", 2),
            ("logical_bytes", 24_000),
            ("bytes", e.q_stored),
            ("max_bytes", 32 * 1024),
        ],
    );
    assert_fields(
        &s,
        "h",
        &[
            ("rejected_writes.einval", 1),
            ("publishes", 0),
            ("misses", 0),
        ],
    );
    assert_fields(
        &s,
        "z",
        &[
            ("rejected_writes.enospc", 1),
            ("publishes", 0),
            ("entries", 0),
        ],
    );
    // The read of the corrupt entry found nothing to serve: a miss.
    assert_fields(
        &s,
        "c",
        &[("publishes", 1), ("hits", 0), ("misses", 1), ("entries", 0)],
    );
    assert_eq!(s["corrupt_entries"], 1, "{s:#}");
    assert_eq!(s["backing_io_errors"], 0, "{s:#}");
    assert_eq!(
        files_under(&m.backing.join("quarantine")).len(),
        1,
        "the corrupt file is quarantined"
    );
    // The total is the sum of the namespaces, from the same snapshot.
    let t = &s["total"];
    for (field, v) in [
        ("hits", 2),
        ("misses", 4),
        ("expired_misses", 1),
        ("publishes", 8),
        ("evictions", 1),
        ("expirations", 1),
        ("entries", 5),
        ("logical_bytes", 54_000),
    ] {
        assert_eq!(t[field].as_u64(), Some(v), "total.{field}\n{s:#}");
    }
    for (reason, v) in [("efbig", 1), ("enospc", 1), ("einval", 1)] {
        assert_eq!(t["rejected_writes"][reason], v, "total {reason}");
    }
    assert_eq!(t["max_bytes"], 64 << 20);
    assert_eq!(t["bytes"].as_u64(), Some(statfs_used(&m.mnt)), "df used");
    // Latency percentiles exist where there were operations, ordered.
    let l = &t["latency"]["publish"];
    assert!(l["count"].as_u64().unwrap() >= 8, "{l}");
    let (p50, p95, p99) = (
        l["p50_us"].as_f64().unwrap(),
        l["p95_us"].as_f64().unwrap(),
        l["p99_us"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{l}");
    assert!(
        s["namespaces"]["h"]["latency"]["open"]["p50_us"].is_null(),
        "no opens in h: null percentile"
    );
}

/// A Python interpreter with `prometheus_client`, if any.
fn prometheus_python() -> Option<String> {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import prometheus_client.parser"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py.to_string());
        }
    }
    None
}

/// Parses metrics.prom with prometheus_client; returns "name{k=v,...}" -> value,
/// and "TYPE name" -> type.
fn parse_with_prometheus_client(py: &str, text: &str) -> HashMap<String, f64> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out["TYPE " + fam.name] = {"counter": 1, "gauge": 2, "histogram": 3}.get(fam.type, 0)
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("metrics.prom");
    fs::write(&input, text).unwrap();
    let out = Command::new(py)
        .args(["-c", SCRIPT])
        .stdin(fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused metrics.prom:\n{}\n--- metrics.prom ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn metrics_prom_parses_and_agrees_with_stats_json() {
    if skip_without_fuse() {
        return;
    }
    let Some(py) = prometheus_python() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "no python3 with prometheus_client (apt-get install python3-prometheus-client) and CI=true: refusing to skip"
            );
        }
        eprintln!("SKIP: no python3 with prometheus_client; set CI=true to make this a failure");
        return;
    };
    let m = Mount::new(CFG);
    let e = known_sequence(&m);
    sh(&format!("df {} >/dev/null", q(&m.mnt)));
    let prom = fs::read_to_string(m.mnt.join(".cachefs/metrics.prom")).unwrap();
    let v = parse_with_prometheus_client(&py, &prom);
    let get = |k: &str| -> f64 {
        *v.get(k)
            .unwrap_or_else(|| panic!("{k} missing from metrics.prom:\n{prom}"))
    };
    // prometheus_client strips `_total` from counter family names, not samples.
    for (family, kind) in [
        ("cachefs_hits", 1.0),
        ("cachefs_rejected_writes", 1.0),
        ("cachefs_entries", 2.0),
        ("cachefs_stored_bytes", 2.0),
        ("cachefs_lookup_duration_seconds", 3.0),
        ("cachefs_publish_duration_seconds", 3.0),
    ] {
        assert_eq!(get(&format!("TYPE {family}")), kind, "type of {family}");
    }
    for (sample, want) in [
        ("cachefs_hits_total{namespace=o}", 2.0),
        ("cachefs_misses_total{namespace=o}", 1.0),
        ("cachefs_misses_total{namespace=t}", 1.0),
        ("cachefs_expired_misses_total{namespace=t}", 1.0),
        ("cachefs_publishes_total{namespace=o}", 3.0),
        ("cachefs_published_bytes_total{namespace=o}", 30_000.0),
        ("cachefs_read_bytes_total{namespace=o}", 20_000.0),
        ("cachefs_evictions_total{namespace=q}", 1.0),
        (
            "cachefs_evicted_bytes_total{namespace=q}",
            e.q_evicted_stored as f64,
        ),
        ("cachefs_expirations_total{namespace=t}", 1.0),
        (
            "cachefs_expired_bytes_total{namespace=t}",
            e.t_stored as f64,
        ),
        (
            "cachefs_rejected_writes_total{namespace=q,reason=efbig}",
            1.0,
        ),
        (
            "cachefs_rejected_writes_total{namespace=h,reason=einval}",
            1.0,
        ),
        (
            "cachefs_rejected_writes_total{namespace=z,reason=enospc}",
            1.0,
        ),
        ("cachefs_entries{namespace=o}", 3.0),
        ("cachefs_logical_bytes{namespace=q}", 24_000.0),
        ("cachefs_stored_bytes{namespace=q}", e.q_stored as f64),
        ("cachefs_quota_bytes{namespace=q}", 32_768.0),
        ("cachefs_mount_quota_bytes{}", (64u64 << 20) as f64),
        ("cachefs_corrupt_entries_total{}", 1.0),
        ("cachefs_backing_io_errors_total{}", 0.0),
        (
            &format!(
                "cachefs_build_info{{backing_format=3,entry_format=3,version={}}}",
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        ),
        ("cachefs_open_duration_seconds_count{namespace=o}", 2.0),
        (
            "cachefs_open_duration_seconds_bucket{le=+Inf,namespace=o}",
            2.0,
        ),
    ] {
        assert_eq!(get(sample), want, "{sample}\n{prom}");
    }
    assert!(get("cachefs_uptime_seconds{}") > 0.0);
    // Histogram buckets are cumulative and end at the count.
    let mut buckets: Vec<(f64, f64)> = v
        .iter()
        .filter_map(|(k, val)| {
            let rest = k.strip_prefix("cachefs_publish_duration_seconds_bucket{le=")?;
            let le = rest.strip_suffix(",namespace=o}")?;
            Some((le.parse::<f64>().unwrap_or(f64::INFINITY), *val))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert!(buckets.len() > 20, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(
        buckets.last().unwrap().1,
        get("cachefs_publish_duration_seconds_count{namespace=o}")
    );
    // Every counter and gauge agrees with stats.json taken right after.
    let s = m.stats();
    for ns in ["o", "t", "q", "h", "z", "c"] {
        for (metric, field) in [
            ("cachefs_hits_total", "hits"),
            ("cachefs_misses_total", "misses"),
            ("cachefs_publishes_total", "publishes"),
            ("cachefs_entries", "entries"),
            ("cachefs_stored_bytes", "bytes"),
        ] {
            assert_eq!(
                get(&format!("{metric}{{namespace={ns}}}")),
                s["namespaces"][ns][field].as_u64().unwrap() as f64,
                "{metric} vs stats.json {ns}.{field}"
            );
        }
    }
}

#[test]
fn each_read_of_the_control_files_is_a_fresh_snapshot() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    write_file(&m.path("o", "a"), b"1").unwrap();
    assert_eq!(m.ns_stat("o", "entries"), 1);
    let prom = || fs::read_to_string(m.mnt.join(".cachefs/metrics.prom")).unwrap();
    assert!(prom().contains("cachefs_entries{namespace=\"o\"} 1\n"));
    write_file(&m.path("o", "b"), b"2").unwrap();
    assert_eq!(m.ns_stat("o", "entries"), 2);
    assert!(prom().contains("cachefs_entries{namespace=\"o\"} 2\n"));
    // stat's size matches what a read returns (a tool that trusts st_size, like
    // node_exporter's textfile collector or `cp`, gets the whole file).
    let p = m.mnt.join(".cachefs/stats.json");
    let text = fs::read(&p).unwrap();
    serde_json::from_slice::<Value>(&text).unwrap();
    let copy = m.dir.path().join("copy.json");
    sh(&format!("cp {} {}", q(&p), q(&copy)));
    serde_json::from_slice::<Value>(&fs::read(&copy).unwrap()).expect("cp of stats.json is whole");
}

#[test]
fn df_of_a_namespace_with_its_own_quota_shows_that_quota() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    write_file(&m.path("q", "a"), &[7; 12_000]).unwrap();
    write_file(&m.path("o", "a"), &[7; 12_000]).unwrap();
    let df = |p: &Path| -> (u64, u64, u64) {
        let out = sh(&format!("df -B1 --output=size,used,avail {}", q(p)));
        let v: Vec<u64> = out
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1], v[2])
    };
    let q_used = m.ns_stat("q", "bytes");
    // The kernel passes the inode of the path to FUSE's statfs, so a namespace
    // with its own quota (and any entry in it) answers with that quota.
    assert_eq!(
        df(&m.ns("q")),
        (32 * 1024, q_used, 32 * 1024 - q_used),
        "df of q"
    );
    assert_eq!(df(&m.path("q", "a")).0, 32 * 1024, "df of an entry in q");
    let total = m.total_stat("bytes");
    assert_eq!(
        df(&m.ns("o")),
        (64 << 20, total, (64 << 20) - total),
        "df of a namespace without its own quota is the mount's"
    );
    assert_eq!(df(&m.mnt).0, 64 << 20, "df of the mount");
}
