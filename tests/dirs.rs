//! Issue 15: keys that are paths. Directories inside a namespace made with
//! `mkdir -p`, nested writes and reads, `ls`, `du -s`, `rm -r` (a subtree
//! purge, counted), `rmdir` (empty only), renames of entries across
//! directories and of whole directories, limits (ENAMETOOLONG), and nested
//! entries and empty directories after a clean restart and after `kill -9`.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

const CFG: &str = r#"
[cache]
max_bytes = "256MiB"

[namespace.news]
ttl = "1h"

[namespace.h]
ttl = "1h"
key_format = "sha256"
"#;

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn nested_keys_are_written_read_and_listed_per_directory() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let ns = m.ns("news");
    assert!(sh(&format!("mkdir -p {}/espn/2026/05", ns.display())).0);
    write_file(&ns.join("espn/2026/05/123"), b"story 123").unwrap();
    write_file(&ns.join("espn/2026/05/124"), b"story 124").unwrap();
    write_file(&ns.join("espn/top"), b"top").unwrap();
    write_file(&ns.join("flat"), b"flat").unwrap();
    assert_eq!(
        read_file(&ns.join("espn/2026/05/123")).unwrap(),
        b"story 123"
    );
    assert_eq!(list_str(&ns.join("espn/2026/05")), ["123", "124"]);
    assert_eq!(list_str(&ns.join("espn")), ["2026", "top"]);
    assert_eq!(list_str(&ns), ["espn", "flat"]);
    assert!(fs::metadata(ns.join("espn/2026")).unwrap().is_dir());
    assert!(fs::metadata(ns.join("espn/top")).unwrap().is_file());
    // A file is no directory, and a directory no file.
    assert_errno(
        write_file(&ns.join("flat/x"), b"x"),
        libc::ENOTDIR,
        "a write under an entry",
    );
    assert_errno(
        write_file(&ns.join("espn/2026"), b"x"),
        libc::EISDIR,
        "a write onto a directory",
    );
    assert_errno(
        fs::create_dir(ns.join("espn/top")),
        libc::EEXIST,
        "mkdir over an entry",
    );
    assert_errno(
        write_file(&ns.join("nodir/x"), b"x"),
        libc::ENOENT,
        "a write into a missing directory",
    );
    // Limits: a component over 255 bytes, a path over 1024 bytes, too deep.
    let long = "a".repeat(256);
    assert_errno(
        fs::create_dir(ns.join(&long)),
        libc::ENAMETOOLONG,
        "a long component",
    );
    let mut deep = ns.clone();
    let mut made = 0;
    let err = loop {
        deep.push("d".repeat(200));
        match fs::create_dir(&deep) {
            Ok(()) => made += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "{err}");
    assert_eq!(made, 5, "1024 bytes hold five 200-byte components");
    // Key format: sha256 applies to the last component only.
    let h = m.ns("h");
    let key = sha256_hex(b"input");
    fs::create_dir_all(h.join("by-site/espn")).unwrap();
    write_file(&h.join("by-site/espn").join(&key), b"v").unwrap();
    assert_eq!(read_file(&h.join("by-site/espn").join(&key)).unwrap(), b"v");
    assert_errno(
        write_file(&h.join("by-site/espn/not-hex"), b"v"),
        libc::EINVAL,
        "a non-sha256 last component",
    );
}

#[test]
fn du_rm_r_rmdir_and_renames_work_on_directories() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let ns = m.ns("news");
    fs::create_dir_all(ns.join("a/b/c")).unwrap();
    fs::create_dir_all(ns.join("other")).unwrap();
    let body = vec![7u8; 64 * 1024];
    for i in 0..10 {
        write_file(&ns.join(format!("a/b/c/{i}")), &body).unwrap();
        write_file(&ns.join(format!("a/{i}")), &body).unwrap();
    }
    write_file(&ns.join("other/x"), &body).unwrap();
    // du -s sums what is under a directory.
    let du_kib = |p: &str| -> u64 {
        let (ok, out) = sh(&format!("du -sk {}", ns.join(p).display()));
        assert!(ok, "{out}");
        out.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (c, a) = (du_kib("a/b/c"), du_kib("a"));
    assert!((640..700).contains(&c), "du -s a/b/c: {c} KiB");
    assert!((1280..1400).contains(&a), "du -s a: {a} KiB");
    // rmdir: empty only.
    assert_errno(
        fs::remove_dir(ns.join("a/b")),
        libc::ENOTEMPTY,
        "rmdir of a full dir",
    );
    fs::create_dir(ns.join("a/empty")).unwrap();
    fs::remove_dir(ns.join("a/empty")).unwrap();
    assert!(!ns.join("a/empty").exists());
    // Rename of an entry across directories, and onto another entry.
    fs::rename(ns.join("a/b/c/0"), ns.join("other/moved")).unwrap();
    assert_eq!(read_file(&ns.join("other/moved")).unwrap(), body);
    assert!(!ns.join("a/b/c/0").exists());
    fs::rename(ns.join("other/moved"), ns.join("other/x")).unwrap();
    assert_eq!(list_str(&ns.join("other")), ["x"]);
    // Rename of a whole directory: everything under it moves.
    fs::rename(ns.join("a/b"), ns.join("other/b2")).unwrap();
    assert!(!ns.join("a/b").exists());
    assert_eq!(list_str(&ns.join("other/b2/c")).len(), 9);
    assert_eq!(read_file(&ns.join("other/b2/c/5")).unwrap(), body);
    assert_errno(
        fs::rename(ns.join("other"), ns.join("other/b2/c/inside")),
        libc::EINVAL,
        "a directory into itself",
    );
    // rm -r removes every entry under it, counted as purged.
    let purged = m.ns_stat("news", "purged");
    let entries = m.ns_stat("news", "entries");
    let (ok, out) = sh(&format!("rm -r {}", ns.join("other").display()));
    assert!(ok, "{out}");
    assert!(!ns.join("other").exists());
    assert_eq!(m.ns_stat("news", "purged") - purged, 10);
    assert_eq!(m.ns_stat("news", "entries"), entries - 10);
    assert_eq!(list_str(&ns).len(), 1, "only a/ is left");
    // A namespace with directories is not empty.
    assert_errno(
        fs::remove_dir(&ns),
        libc::ENOTEMPTY,
        "rmdir of the namespace",
    );
}

#[test]
fn nested_entries_and_empty_dirs_survive_a_restart_and_kill9() {
    if skip_without_fuse() {
        return;
    }
    let backing = tempfile::tempdir().unwrap();
    let b = backing.path().join("b");
    {
        let mut m = Mount::with_backing(CFG, &b);
        let ns = m.ns("news");
        fs::create_dir_all(ns.join("x/y/empty")).unwrap();
        write_file(&ns.join("x/y/k"), b"clean").unwrap();
        m.stop();
    }
    {
        let mut m = Mount::with_backing(CFG, &b);
        let ns = m.ns("news");
        assert_eq!(read_file(&ns.join("x/y/k")).unwrap(), b"clean");
        assert!(fs::metadata(ns.join("x/y/empty")).unwrap().is_dir());
        fs::create_dir(ns.join("x/z")).unwrap();
        write_file(&ns.join("x/z/k2"), b"crash").unwrap();
        fs::remove_dir(ns.join("x/y/empty")).unwrap();
        m.kill9();
    }
    let m = Mount::with_backing(CFG, &b);
    let ns = m.ns("news");
    assert_eq!(read_file(&ns.join("x/y/k")).unwrap(), b"clean");
    assert_eq!(read_file(&ns.join("x/z/k2")).unwrap(), b"crash");
    assert_eq!(list_str(&ns.join("x/y")), ["k"]);
    assert_eq!(list_str(&ns.join("x")), ["y", "z"]);
    // Directory inode numbers are stable while the directory exists.
    let ino = fs::metadata(ns.join("x/z")).unwrap().ino();
    assert_eq!(fs::metadata(ns.join("x/z")).unwrap().ino(), ino);
}
