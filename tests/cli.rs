//! Issue 3, the operator's commands: `stats`, `purge` (live and offline), `verify`,
//! `inspect`, `key`; their output, `--json` and exit codes.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CFG: &str = r#"
[cache]
max_bytes = "64MiB"

[namespace.a]
ttl = "1d"

[namespace.b]
ttl = "1d"
"#;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One `cachefs: error: ...` line on stderr.
#[track_caller]
fn assert_one_error_line(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(
        err.starts_with("cachefs: error: ") && err.contains(needle),
        "stderr names {needle:?}: {err}"
    );
}

/// Sets an entry's mtime (its age: what `--older-than` compares) through the mount.
fn age(p: &Path, secs_ago: u64) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - secs_ago;
    sh(&format!("touch -m -d @{t} {}", q(p)));
}

fn df_used(mnt: &Path) -> u64 {
    statfs_used(mnt)
}

#[test]
fn key_prints_the_sha256_clients_use() {
    let hello = sha256_hex(b"hello");
    assert_eq!(cachefs_ok(&["key", "hello"]).trim(), hello);
    assert_eq!(
        cachefs_ok(&["key", "hello", "--namespace", "enrichment"]).trim(),
        format!("enrichment/{hello}")
    );
    // stdin, byte for byte (a trailing newline is part of the text).
    let mut child = Command::new(BIN)
        .args(["key", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        sha256_hex(b"hello\n")
    );
    let bad = cachefs(&["key", "x", "--namespace", "a/b"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_one_error_line(&bad, "namespace");
}

#[test]
fn stats_shows_a_table_and_json_and_fails_cleanly() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    write_file(&m.path("a", "k"), b"value").unwrap();
    read_file(&m.path("a", "k")).unwrap();
    let _ = read_file(&m.path("a", "missing"));
    let table = cachefs_ok(&["stats", s(&m.mnt)]);
    let row = table
        .lines()
        .find(|l| l.starts_with("a "))
        .unwrap_or_else(|| panic!("no row for a:\n{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..5], &["a", "50.0%", "1", "1", "1"], "{table}");
    assert!(table.contains("TOTAL"), "{table}");
    assert!(
        table.contains("LOOKUP") && table.contains("PUBLISH"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&cachefs_ok(&["stats", s(&m.mnt), "--json"])).unwrap();
    assert_eq!(json["namespaces"]["a"]["hits"], 1);
    assert_eq!(json["namespaces"]["a"]["misses"], 1);
    // Not a mount: exit 1, one line.
    let out = cachefs(&["stats", s(&m.backing)]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_error_line(&out, "not a live cachefs mount");
}

#[test]
fn purge_older_than_removes_exactly_the_older_entries_live() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    for ns in ["a", "b"] {
        for k in ["old1", "old2", "new1", "new2"] {
            write_file(&m.path(ns, k), &[1; 5000]).unwrap();
        }
        age(&m.path(ns, "old1"), 7200);
        age(&m.path(ns, "old2"), 3700);
        age(&m.path(ns, "new1"), 3500);
    }
    let used = df_used(&m.mnt);
    let old_a: u64 = ["old1", "old2"]
        .iter()
        .map(|k| {
            getxattr_str(&m.path("a", k), "user.cachefs.stored_bytes")
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    // One namespace, the entries older than 1 h: exactly old1 and old2.
    let out: Value = serde_json::from_str(&cachefs_ok(&[
        "purge",
        s(&m.mnt),
        "--namespace",
        "a",
        "--older-than",
        "1h",
        "--json",
    ]))
    .unwrap();
    assert_eq!(out["entries"], 2, "{out}");
    assert_eq!(out["bytes"], old_a, "{out}");
    assert_eq!(out["mode"], "live");
    assert_eq!(list_str(&m.ns("a")), vec!["new1", "new2"]);
    assert_eq!(list_str(&m.ns("b")).len(), 4, "b untouched");
    // Counters and df at once.
    assert_eq!(m.ns_stat("a", "purged"), 2);
    assert_eq!(m.ns_stat("a", "purged_bytes"), old_a);
    assert_eq!(m.ns_stat("a", "entries"), 2);
    assert_eq!(df_used(&m.mnt), used - old_a, "df used after purge");
    // Every namespace; then --all.
    let text = cachefs_ok(&["purge", s(&m.mnt), "--older-than", "3600s"]);
    assert!(text.starts_with("purged 2 entries"), "{text}");
    assert_eq!(list_str(&m.ns("b")), vec!["new1", "new2"]);
    let text = cachefs_ok(&["purge", s(&m.mnt), "--all"]);
    assert!(text.starts_with("purged 4 entries"), "{text}");
    assert_eq!(m.total_stat("entries"), 0);
    assert_eq!(m.total_stat("purged"), 8);
    assert_eq!(df_used(&m.mnt), 0);
    // Usage errors: no selector, or two.
    for args in [
        vec!["purge", s(&m.mnt)],
        vec!["purge", s(&m.mnt), "--all", "--expired"],
    ] {
        assert_eq!(cachefs(&args).status.code(), Some(2), "{args:?}");
    }
    // A directory that is not a mount.
    let out = cachefs(&["purge", s(&m.backing), "--all"]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_error_line(&out, "not a cachefs mount");
}

#[test]
fn purge_expired_live_counts_them_as_purged() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new("[cache]\nsweep_interval = \"1h\"\n[namespace.t]\nttl = \"1s\"\n");
    write_file(&m.path("t", "x"), b"1").unwrap();
    let expires: u64 = getxattr_str(&m.path("t", "x"), "user.cachefs.expires")
        .unwrap()
        .parse()
        .unwrap();
    write_file(&m.path("t", "y"), b"2").unwrap();
    setxattr(&m.path("t", "y"), "user.cachefs.ttl", b"3600").unwrap();
    sleep_until_wall(UNIX_EPOCH + Duration::from_secs(expires + 1));
    let text = cachefs_ok(&["purge", s(&m.mnt), "--expired", "--namespace", "t"]);
    assert!(text.starts_with("purged 1 entries"), "{text}");
    assert_eq!(m.ns_stat("t", "purged"), 1);
    assert_eq!(list_str(&m.ns("t")), vec!["y"]);
}

#[test]
fn purge_offline_and_its_lock() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new(CFG);
    for k in ["old", "new"] {
        write_file(&m.path("a", k), &[2; 3000]).unwrap();
        write_file(&m.path("b", k), &[2; 3000]).unwrap();
    }
    age(&m.path("a", "old"), 7200);
    age(&m.path("b", "old"), 7200);
    // A live daemon holds the backing dir: offline purge refuses, touching nothing.
    let out = cachefs(&["purge", "--backing", s(&m.backing), "--all"]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_error_line(&out, "in use by a live cachefs daemon");
    let out = cachefs(&["verify", "--backing", s(&m.backing), "--quarantine"]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&out, "in use by a live cachefs daemon");
    assert_eq!(m.total_stat("entries"), 4);
    m.stop();

    let out: Value = serde_json::from_str(&cachefs_ok(&[
        "purge",
        "--backing",
        s(&m.backing),
        "--namespace",
        "a",
        "--older-than",
        "1h",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        (out["entries"].as_u64(), out["mode"].as_str()),
        (Some(1), Some("offline"))
    );
    let text = cachefs_ok(&["purge", "--backing", s(&m.backing), "--older-than", "1h"]);
    assert!(text.starts_with("purged 1 entries"), "{text}");
    // Offline --expired wants the daemon's config (its TTLs).
    let out = cachefs(&["purge", "--backing", s(&m.backing), "--expired"]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_error_line(&out, "--config");
    let cfg = m.config_path.clone().unwrap();
    let text = cachefs_ok(&[
        "purge",
        "--backing",
        s(&m.backing),
        "--expired",
        "--config",
        s(&cfg),
    ]);
    assert!(text.starts_with("purged 0 entries"), "TTL 1d: {text}");
    // A missing backing dir is an error, and is not created.
    let nowhere = m.dir.path().join("nowhere");
    let out = cachefs(&["purge", "--backing", s(&nowhere), "--all"]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_error_line(&out, "not a cachefs backing dir");
    assert!(!nowhere.exists());

    let m2 = Mount::with_backing(CFG, &m.backing);
    assert_eq!(list_str(&m2.ns("a")), vec!["new"]);
    assert_eq!(list_str(&m2.ns("b")), vec!["new"]);
    assert_eq!(m2.total_stat("entries"), 2);
    assert_eq!(m2.total_stat("bytes"), df_used(&m2.mnt));
}

#[test]
fn inspect_lists_entries_offline() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new(CFG);
    write_file(&m.path("a", "k1"), &[1; 10_000]).unwrap();
    write_file(&m.path("b", "k2"), b"x").unwrap();
    setxattr(&m.path("b", "k2"), "user.cachefs.ttl", b"0").unwrap();
    age(&m.path("a", "k1"), 600);
    let stored_k1: u64 = getxattr_str(&m.path("a", "k1"), "user.cachefs.stored_bytes")
        .unwrap()
        .parse()
        .unwrap();
    // Read-only: works beside the live daemon.
    let rows: Value = serde_json::from_str(&cachefs_ok(&[
        "inspect",
        "--backing",
        s(&m.backing),
        "--json",
        "--config",
        s(m.config_path.as_ref().unwrap()),
    ]))
    .unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (k1, k2) = (&rows[0], &rows[1]);
    assert_eq!(
        (k1["namespace"].as_str(), k1["key"].as_str()),
        (Some("a"), Some("k1"))
    );
    assert_eq!(k1["size"], 10_000);
    assert_eq!(k1["stored_bytes"], stored_k1);
    let age_s = k1["age_seconds"].as_f64().unwrap();
    assert!((600.0..660.0).contains(&age_s), "{k1}");
    let left = k1["expires_in_seconds"].as_f64().unwrap();
    assert!(
        (86_400.0 - 660.0..86_400.0 - 600.0 + 1.0).contains(&left),
        "{k1}"
    );
    assert_eq!(k2["key"], "k2");
    assert!(k2["expires_in_seconds"].is_null(), "ttl 0: never: {k2}");
    m.stop();
    let table = cachefs_ok(&["inspect", "--backing", s(&m.backing), "--namespace", "b"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("NAMESPACE"), "{table}");
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&cols[..3], &["b", "k2", "1"], "{table}");
    assert_eq!(cols.last(), Some(&"never"), "{table}");
}

#[test]
fn verify_finds_a_flipped_bit_and_a_truncation_and_quarantine_hides_them() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new(CFG);
    let mut rng = Rng::new(3);
    let big = rng.bytes(1 << 20);
    write_file(&m.path("a", "big"), &big).unwrap();
    write_file(&m.path("a", "cut"), &rng.bytes(50_000)).unwrap();
    write_file(&m.path("a", "good"), b"fine").unwrap();
    let out = cachefs(&["verify", "--backing", s(&m.backing)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "all good, even beside the live daemon"
    );
    m.stop();

    // One bit of the 1 MB entry's content, and a truncated entry.
    let big_path = m.backing_path("a", b"big");
    let mut bytes = fs::read(&big_path).unwrap();
    bytes[700_001] ^= 0x04;
    fs::write(&big_path, &bytes).unwrap();
    let cut_path = m.backing_path("a", b"cut");
    let len = fs::metadata(&cut_path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&cut_path)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();

    let out = cachefs(&["verify", "--backing", s(&m.backing)]);
    assert_eq!(out.status.code(), Some(1), "bad entries: exit 1");
    let text = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> = text.lines().filter(|l| l.starts_with("BAD ")).collect();
    assert_eq!(bad.len(), 2, "{text}");
    assert!(
        bad.iter()
            .any(|l| l.contains(s(&big_path)) && l.contains("(a/big)") && l.contains("checksum")),
        "{text}"
    );
    assert!(bad.iter().any(|l| l.contains(s(&cut_path))), "{text}");
    assert!(text.contains("checked 3 entries: 2 bad"), "{text}");
    let json: Value =
        serde_json::from_slice(&cachefs(&["verify", "--backing", s(&m.backing), "--json"]).stdout)
            .unwrap();
    assert_eq!(json["checked"], 3);
    assert_eq!(json["bad"].as_array().unwrap().len(), 2);
    assert!(big_path.exists() && cut_path.exists(), "nothing moved yet");

    let out = cachefs(&["verify", "--backing", s(&m.backing), "--quarantine"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!big_path.exists() && !cut_path.exists());
    assert_eq!(files_under(&m.backing.join("quarantine")).len(), 2);
    assert_eq!(
        cachefs(&["verify", "--backing", s(&m.backing)])
            .status
            .code(),
        Some(0),
        "clean after quarantine"
    );
    let nowhere = m.dir.path().join("nowhere");
    let out = cachefs(&["verify", "--backing", s(&nowhere)]);
    assert_eq!(out.status.code(), Some(2), "cannot run: exit 2");
    assert_one_error_line(&out, "not a cachefs backing dir");

    // The next mount neither serves nor lists nor counts them.
    let m2 = Mount::with_backing(CFG, &m.backing);
    assert_errno(
        read_file(&m2.path("a", "big")),
        libc::ENOENT,
        "quarantined big",
    );
    assert_errno(
        read_file(&m2.path("a", "cut")),
        libc::ENOENT,
        "quarantined cut",
    );
    assert_eq!(list_str(&m2.ns("a")), vec!["good"]);
    assert_eq!(m2.total_stat("entries"), 1);
    assert_eq!(read_file(&m2.path("a", "good")).unwrap(), b"fine");
}
