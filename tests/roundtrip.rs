//! Acceptance 1: round trip of 0 B, 1 B, 10 KB, 1 MB and 20 MB entries; a miss is ENOENT.
//! Also the namespace basics (mkdir/rmdir, unknown namespace) and the read-only
//! control directory.

mod common;

use common::*;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::Command;
use std::time::Duration;

const CFG: &str = r#"
[cache]
max_bytes = "256MiB"
default_ttl = "2h"

[namespace.rt]
"#;

#[test]
fn roundtrip_sizes() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let mut rng = Rng::from_time("roundtrip_sizes");
    let sizes = [0usize, 1, 10_000, 1_000_000, 20_000_000];
    let mut written = Vec::new();
    for &n in &sizes {
        let data = rng.bytes(n);
        let p = m.path("rt", &format!("size-{n}"));
        write_file(&p, &data).unwrap_or_else(|e| panic!("write {n} bytes: {e}"));
        // Read-your-writes in this process, right after close.
        let back = fs::read(&p).unwrap_or_else(|e| panic!("read {n} bytes back: {e}"));
        assert_eq!(back.len(), n, "size-{n}: read back {} bytes", back.len());
        assert!(back == data, "size-{n}: content differs");
        let md = fs::metadata(&p).unwrap();
        assert_eq!(md.len(), n as u64, "size-{n}: st_size");
        assert!(md.is_file());
        assert_eq!(
            getxattr_str(&p, "user.cachefs.sha256").unwrap(),
            sha256_hex(&data),
            "size-{n}: user.cachefs.sha256"
        );
        written.push((n, p, data));
    }
    // Another process reads every entry (sha256sum), byte-identical.
    for (n, p, data) in &written {
        let out = Command::new("sha256sum").arg(p).output().unwrap();
        assert!(
            out.status.success(),
            "sha256sum size-{n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sum = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            sum.split_whitespace().next().unwrap(),
            sha256_hex(data),
            "size-{n} via sha256sum"
        );
    }
    // Random-offset reads of the large entries match (pread through FUSE).
    for (n, p, data) in written.iter().filter(|(n, _, _)| *n >= 1_000_000) {
        let f = File::open(p).unwrap();
        for _ in 0..50 {
            let off = rng.range(0, *n);
            let len = rng.range(1, 300_000).min(n - off);
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off as u64)
                .unwrap_or_else(|e| panic!("pread size-{n} at {off}+{len}: {e}"));
            assert!(
                buf == data[off..off + len],
                "size-{n}: pread at {off}+{len} differs"
            );
        }
        // Reading past EOF gives 0 bytes.
        let mut buf = [0u8; 16];
        assert_eq!(
            f.read_at(&mut buf, *n as u64 + 10).unwrap(),
            0,
            "size-{n}: read past EOF"
        );
    }
    let mut names = list_str(&m.ns("rt"));
    names.sort();
    let mut want: Vec<String> = sizes.iter().map(|n| format!("size-{n}")).collect();
    want.sort();
    assert_eq!(names, want, "readdir of the namespace");
    assert_eq!(
        m.ns_stat("rt", "entries"),
        5,
        "stats.json entries: {}",
        m.stats()
    );
    assert!(
        m.ns_stat("rt", "publishes") >= 5,
        "stats.json publishes: {}",
        m.stats()
    );
    assert!(
        m.ns_stat("rt", "bytes") >= 21_011_001,
        "stats.json bytes: {}",
        m.stats()
    );
}

#[test]
fn miss_is_enoent() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("rt", "never-written");
    assert_errno(File::open(&p), libc::ENOENT, "open of a missing key");
    assert_errno(fs::metadata(&p), libc::ENOENT, "stat of a missing key");
    assert_errno(
        File::open(m.path("rt", "other-missing")),
        libc::ENOENT,
        "open of another missing key",
    );
    assert!(
        m.ns_stat("rt", "misses") >= 1,
        "a miss is counted: {}",
        m.stats()
    );
    // A namespace that does not exist: reading and writing are ENOENT.
    assert_errno(
        File::open(m.path("nope", "k")),
        libc::ENOENT,
        "open in a missing namespace",
    );
    assert_errno(
        write_file(&m.path("nope", "k"), b"x"),
        libc::ENOENT,
        "write into a missing namespace",
    );
    // A hit is counted too, and the entry appears only after the write.
    write_file(&p, b"now it exists").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"now it exists");
    assert!(
        m.ns_stat("rt", "hits") >= 1,
        "a hit is counted: {}",
        m.stats()
    );
    // After unlink it is a miss again.
    fs::remove_file(&p).unwrap();
    assert_errno(File::open(&p), libc::ENOENT, "open after unlink");
    assert_errno(fs::remove_file(&p), libc::ENOENT, "unlink of a missing key");
    assert_eq!(
        m.ns_stat("rt", "entries"),
        0,
        "entries after unlink: {}",
        m.stats()
    );
}

#[test]
fn namespaces_mkdir_rmdir() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    // Configured namespace exists from the start; control dir is there too.
    let top = list_str(&m.mnt);
    assert!(
        top.contains(&"rt".to_string()),
        "configured namespace listed at the root: {top:?}"
    );
    assert!(fs::metadata(m.ns("rt")).unwrap().is_dir());
    // mkdir creates a namespace on the default policy.
    fs::create_dir(m.ns("made")).unwrap();
    assert!(fs::metadata(m.ns("made")).unwrap().is_dir());
    assert_errno(
        fs::create_dir(m.ns("made")),
        libc::EEXIST,
        "mkdir of an existing namespace",
    );
    let p = m.path("made", "k1");
    write_file(&p, b"hello").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"hello");
    assert!(list_str(&m.mnt).contains(&"made".to_string()));
    // rmdir of a non-empty namespace: ENOTEMPTY; of an empty one: removed.
    assert_errno(
        fs::remove_dir(m.ns("made")),
        libc::ENOTEMPTY,
        "rmdir of a non-empty namespace",
    );
    assert_eq!(
        fs::read(&p).unwrap(),
        b"hello",
        "entry survives the refused rmdir"
    );
    fs::remove_file(&p).unwrap();
    fs::remove_dir(m.ns("made")).unwrap();
    assert_errno(
        fs::metadata(m.ns("made")),
        libc::ENOENT,
        "stat of a removed namespace",
    );
    assert_errno(
        write_file(&p, b"x"),
        libc::ENOENT,
        "write into a removed namespace",
    );
    // Inside a namespace, mkdir makes a directory (keys are paths, issue
    // 15; tests/dirs.rs covers them).
    fs::create_dir(m.ns("rt").join("sub")).unwrap();
    assert!(fs::metadata(m.ns("rt").join("sub")).unwrap().is_dir());
}

#[test]
fn control_dir_is_read_only() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let s = m.stats();
    assert_eq!(s["format"], 2, "stats.json format: {s}");
    for f in [
        "hits",
        "misses",
        "publishes",
        "evictions",
        "expirations",
        "entries",
        "bytes",
    ] {
        assert!(s["total"][f].is_u64(), "stats.json total.{f} missing: {s}");
        assert!(
            s["namespaces"]["rt"][f].is_u64(),
            "stats.json namespaces.rt.{f} missing: {s}"
        );
    }
    let ctl = m.mnt.join(".cachefs");
    let names = list_str(&ctl);
    for f in ["stats.json", "metrics.prom", "config.toml"] {
        assert!(
            names.contains(&f.to_string()),
            ".cachefs lists {f}: {names:?}"
        );
        assert!(fs::read(ctl.join(f)).is_ok(), ".cachefs/{f} readable");
    }
    let before = fs::read(ctl.join("config.toml")).unwrap();
    assert!(
        write_file(&ctl.join("stats.json"), b"{}").is_err(),
        "writing stats.json must fail"
    );
    assert!(
        write_file(&ctl.join("new-file"), b"x").is_err(),
        "creating a file in .cachefs must fail"
    );
    assert!(
        fs::remove_file(ctl.join("config.toml")).is_err(),
        "unlink in .cachefs must fail"
    );
    assert_eq!(fs::read(ctl.join("config.toml")).unwrap(), before);
    assert!(fs::remove_dir(&ctl).is_err(), "rmdir .cachefs must fail");
    // stats.json stays valid JSON and is refreshed on each read (no stale page cache).
    write_file(&m.path("rt", "k"), b"abc").unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || m.ns_stat("rt", "publishes") >= 1),
        "stats.json reflects a publish: {}",
        m.stats()
    );
    let md = fs::metadata(m.path("rt", "k")).unwrap();
    assert_eq!(md.size(), 3);
}
