//! `cachefs stats`: the figures of a live mount, read from its
//! `.cachefs/stats.json` (one fresh snapshot taken by the daemon), as a
//! table or, with `--json`, as that document verbatim.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{cachefs_mounts, human_bytes, human_duration};

pub fn run(mountpoint: Option<&Path>, json: bool) -> Result<ExitCode> {
    let mounts: Vec<PathBuf> = match mountpoint {
        Some(m) => vec![m.to_path_buf()],
        None => {
            let found = cachefs_mounts()?;
            match found.len() {
                0 => bail!("no cachefs mount found in /proc/self/mounts; name a MOUNTPOINT"),
                1 => found,
                _ if json => bail!(
                    "several cachefs mounts ({}); name one MOUNTPOINT for --json",
                    found
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => found,
            }
        }
    };
    if let [one] = mounts.as_slice() {
        return show(one, json, false).map(|()| ExitCode::SUCCESS);
    }
    // Several mounts found: one that cannot answer (a dead daemon) is
    // reported on its own line and the others are still shown.
    let mut failed = false;
    for (i, mnt) in mounts.iter().enumerate() {
        if let Err(e) = show(mnt, json, i > 0) {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return Err(e);
            }
            eprintln!("cachefs: error: {e:#}");
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints one mount's figures.
fn show(mnt: &Path, json: bool, blank_line_first: bool) -> Result<()> {
    let path = mnt.join(".cachefs/stats.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a live cachefs mount (cannot read {})",
            mnt.display(),
            path.display()
        )
    })?;
    if json {
        out!("{text}")?;
        return Ok(());
    }
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if blank_line_first {
        outln!()?;
    }
    out!("{}", render(mnt, &doc))?;
    Ok(())
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn ratio(s: &Value) -> String {
    s["hit_ratio"]
        .as_f64()
        .map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
}

fn quota(s: &Value) -> String {
    match s["max_bytes"].as_u64() {
        Some(q) => {
            let pct = u(&s["bytes"]) as f64 * 100.0 / q.max(1) as f64;
            format!("{} ({pct:.0}%)", human_bytes(q))
        }
        None => "-".into(),
    }
}

fn latency(s: &Value, op: &str) -> String {
    let l = &s["latency"][op];
    let f = |k: &str| l[k].as_f64().map_or("-".into(), format_us);
    format!("{}/{}/{}", f("p50_us"), f("p95_us"), f("p99_us"))
}

/// Microseconds, compact: "12µs", "3.4ms", "1.2s".
fn format_us(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}µs")
    } else if v < 1000.0 {
        format!("{v:.0}µs")
    } else if v < 1_000_000.0 {
        format!("{:.1}ms", v / 1000.0)
    } else {
        format!("{:.1}s", v / 1e6)
    }
}

fn rejected(s: &Value) -> u64 {
    let r = &s["rejected_writes"];
    u(&r["efbig"]) + u(&r["enospc"]) + u(&r["einval"])
}

/// The whole table for one mount.
pub fn render(mnt: &Path, doc: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let uptime = Duration::from_secs_f64(doc["uptime_seconds"].as_f64().unwrap_or(0.0));
    let _ = writeln!(
        out,
        "cachefs {} on {}: up {}, backing format {}; {} corrupt entries found, {} backing I/O errors",
        doc["version"].as_str().unwrap_or("?"),
        mnt.display(),
        human_duration(uptime),
        u(&doc["backing_format"]),
        u(&doc["corrupt_entries"]),
        u(&doc["backing_io_errors"]),
    );
    let index = &doc["index"];
    if index["rebuilding"].as_bool() == Some(true) {
        let _ = writeln!(
            out,
            "index: rebuilding from the {}: {} entries ({}) found so far; entries and bytes below count only what is indexed yet",
            index["source"].as_str().unwrap_or("?"),
            u(&index["found_entries"]),
            human_bytes(u(&index["found_bytes"])),
        );
    } else if index["complete"].as_bool() == Some(false) {
        let _ = writeln!(
            out,
            "index: INCOMPLETE (the rebuild failed; see the daemon's log): listings and quotas know only what is indexed"
        );
    }
    let mut rows: Vec<(String, &Value)> = doc["namespaces"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default();
    rows.push(("TOTAL".into(), &doc["total"]));
    let _ = writeln!(
        out,
        "\n{:<16} {:>7} {:>10} {:>10} {:>9} {:>11} {:>6} {:>17} {:>9} {:>9} {:>9} {:>9}",
        "NAMESPACE",
        "HIT%",
        "HITS",
        "MISSES",
        "ENTRIES",
        "STORED",
        "RATIO",
        "QUOTA",
        "EVICTED",
        "EXPIRED",
        "PURGED",
        "REJECTED"
    );
    for (name, s) in &rows {
        let _ = writeln!(
            out,
            "{:<16} {:>7} {:>10} {:>10} {:>9} {:>11} {:>6} {:>17} {:>9} {:>9} {:>9} {:>9}",
            name,
            ratio(s),
            u(&s["hits"]),
            u(&s["misses"]),
            u(&s["entries"]),
            human_bytes(u(&s["bytes"])),
            s["compression_ratio"]
                .as_f64()
                .map_or("-".into(), |r| format!("{r:.2}")),
            quota(s),
            u(&s["evictions"]),
            u(&s["expirations"]),
            u(&s["purged"]),
            rejected(s),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:>22} {:>22} {:>22} {:>22}",
        "LATENCY p50/p95/p99", "LOOKUP", "OPEN", "READ", "PUBLISH"
    );
    for (name, s) in &rows {
        let _ = writeln!(
            out,
            "{:<16} {:>22} {:>22} {:>22} {:>22}",
            name,
            latency(s, "lookup"),
            latency(s, "open"),
            latency(s, "read"),
            latency(s, "publish"),
        );
    }
    out
}
