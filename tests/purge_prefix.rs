//! Issue 15: `cachefs purge --prefix NS/DIR`, live through a mount and
//! offline on a backing dir: what `rm -r` of the directory does (with
//! `--all`), without a walk through the mount. The prefix is a directory
//! boundary (`a/b` never takes `a/bc` or the entry `a/b0`); the directory
//! named by it goes too, as `rm -r` removes it, and stays gone after a
//! restart; other selectors take entries only and leave the directories.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Output;

const CFG: &str = r#"
[cache]
max_bytes = "64MiB"

[namespace.news]
ttl = "1d"

[namespace.other]
ttl = "1d"
"#;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[track_caller]
fn assert_one_error_line(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(
        err.starts_with("cachefs: error: ") && err.contains(needle),
        "stderr names {needle:?}: {err}"
    );
}

/// news: a/b/{1, c/2, empty/}, a/bc/3, a/b0, a/top, top; other: a/b/x.
fn populate(m: &Mount) {
    let ns = m.ns("news");
    for d in ["a/b/c", "a/b/empty", "a/bc"] {
        fs::create_dir_all(ns.join(d)).unwrap();
    }
    for (k, len) in [
        ("a/b/1", 1000),
        ("a/b/c/2", 2000),
        ("a/bc/3", 3),
        ("a/b0", 4),
        ("a/top", 5),
        ("top", 6),
    ] {
        write_file(&ns.join(k), &vec![7; len]).unwrap();
    }
    fs::create_dir_all(m.ns("other").join("a/b")).unwrap();
    write_file(&m.ns("other").join("a/b/x"), b"x").unwrap();
}

#[track_caller]
fn assert_kept_beside(m: &Mount) {
    let ns = m.ns("news");
    assert_eq!(read_file(&ns.join("a/bc/3")).unwrap(), [7; 3], "a/bc kept");
    assert_eq!(read_file(&ns.join("a/b0")).unwrap(), [7; 4], "a/b0 kept");
    assert_eq!(read_file(&ns.join("a/top")).unwrap(), [7; 5]);
    assert_eq!(read_file(&ns.join("top")).unwrap(), [7; 6]);
    assert_eq!(read_file(&m.ns("other").join("a/b/x")).unwrap(), b"x");
}

#[test]
fn purge_prefix_live_is_rm_r_of_the_directory() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new(CFG);
    populate(&m);
    let ns = m.ns("news");
    // The kernel holds the directory's name and attributes (10 s) before.
    assert!(fs::metadata(ns.join("a/b/c")).unwrap().is_dir());
    let used = m.total_stat("bytes");

    let out: Value = serde_json::from_str(&cachefs_ok(&[
        "purge",
        s(&m.mnt),
        "--prefix",
        "news/a/b",
        "--all",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        (out["entries"].as_u64(), out["mode"].as_str()),
        (Some(2), Some("live")),
        "a/b/1 and a/b/c/2 only: {out}"
    );
    let freed = out["bytes"].as_u64().unwrap();
    assert!(freed >= 3000, "stored bytes of both: {freed}");
    // Gone at once, the directory itself and what was under it, even
    // where the kernel had them cached.
    for gone in ["a/b", "a/b/c", "a/b/1", "a/b/c/2", "a/b/empty"] {
        assert_errno(fs::metadata(ns.join(gone)), libc::ENOENT, gone);
    }
    assert_eq!(list_str(&ns.join("a")), ["b0", "bc", "top"]);
    assert_kept_beside(&m);
    assert_eq!(m.ns_stat("news", "purged"), 2);
    assert_eq!(m.ns_stat("news", "purged_bytes"), freed);
    assert_eq!(m.ns_stat("news", "entries"), 4);
    assert_eq!(m.total_stat("bytes"), used - freed);
    // The name can be a directory (or an entry) again at once.
    fs::create_dir(ns.join("a/b")).unwrap();
    write_file(&ns.join("a/b/new"), b"n").unwrap();
    assert_eq!(list_str(&ns.join("a/b")), ["new"]);

    // A trailing slash means the same; nothing under it is 0, not an error.
    let text = cachefs_ok(&["purge", s(&m.mnt), "--prefix", "news/a/b/", "--all"]);
    assert!(text.starts_with("purged 1 entries"), "{text}");
    let text = cachefs_ok(&["purge", s(&m.mnt), "--prefix", "news/no/such", "--all"]);
    assert!(text.starts_with("purged 0 entries"), "{text}");
    // A prefix that names an entry is a directory prefix all the same:
    // nothing is under `a/b0/`, and the entry stays.
    let text = cachefs_ok(&["purge", s(&m.mnt), "--prefix", "news/a/b0", "--all"]);
    assert!(text.starts_with("purged 0 entries"), "{text}");
    assert!(ns.join("a/b0").is_file());

    // Another selector takes entries only: the directories stay.
    fs::create_dir_all(ns.join("a/bc/deep")).unwrap();
    write_file(&ns.join("a/bc/deep/4"), b"4").unwrap();
    let text = cachefs_ok(&[
        "purge",
        s(&m.mnt),
        "--prefix",
        "news/a/bc",
        "--older-than",
        "0s",
    ]);
    assert!(text.starts_with("purged 2 entries"), "{text}");
    assert!(ns.join("a/bc/deep").is_dir(), "made by mkdir: kept");
    assert_eq!(list_str(&ns.join("a/bc")), ["deep"]);

    // The directory removed stays removed after a restart (its marker went).
    m.stop();
    let m2 = Mount::with_backing(CFG, &m.backing);
    let ns = m2.ns("news");
    assert_eq!(list_str(&ns.join("a")), ["b0", "bc", "top"]);
    assert!(ns.join("a/bc/deep").is_dir());
    assert_eq!(read_file(&m2.ns("other").join("a/b/x")).unwrap(), b"x");
}

#[test]
fn purge_prefix_errors_are_one_line() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    populate(&m);
    let long = format!("news/{}", "a".repeat(256));
    let out = cachefs(&["purge", s(&m.mnt), "--prefix", &long, "--all"]);
    assert_one_error_line(&out, 1, "bad prefix");
    let out = cachefs(&["purge", s(&m.mnt), "--prefix", "news/a/../b", "--all"]);
    assert_one_error_line(&out, 1, "bad prefix");
    let out = cachefs(&["purge", s(&m.mnt), "--prefix", "nope/a", "--all"]);
    assert_one_error_line(&out, 1, "No such file or directory");
    // --prefix names its namespace: --namespace beside it is a usage error.
    let out = cachefs(&[
        "purge",
        s(&m.mnt),
        "--prefix",
        "news/a",
        "--namespace",
        "news",
        "--all",
    ]);
    assert_eq!(out.status.code(), Some(2));
    // Nothing was purged by any of them.
    assert_eq!(m.total_stat("purged"), 0);
    assert_eq!(m.ns_stat("news", "entries"), 6);
}

#[test]
fn purge_prefix_offline_removes_entries_and_markers() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new(CFG);
    populate(&m);
    m.stop();
    // Only entries older than a day: none here, and the directories stay.
    let text = cachefs_ok(&[
        "purge",
        "--backing",
        s(&m.backing),
        "--prefix",
        "news/a/b",
        "--older-than",
        "1d",
    ]);
    assert!(text.starts_with("purged 0 entries"), "{text}");
    let out: Value = serde_json::from_str(&cachefs_ok(&[
        "purge",
        "--backing",
        s(&m.backing),
        "--prefix",
        "news/a/b",
        "--all",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        (out["entries"].as_u64(), out["mode"].as_str()),
        (Some(2), Some("offline")),
        "{out}"
    );
    let m2 = Mount::with_backing(CFG, &m.backing);
    let ns = m2.ns("news");
    assert_errno(fs::metadata(ns.join("a/b")), libc::ENOENT, "a/b");
    assert_eq!(list_str(&ns.join("a")), ["b0", "bc", "top"]);
    assert_kept_beside(&m2);
    assert_eq!(m2.ns_stat("news", "entries"), 4);
}
