//! The first `ls -l` and `du` after a start (PRODUCT.md section 7, and
//! section 6's "a mount serves at once"): right after a clean stop (the
//! index reloaded from its snapshot) and right after `kill -9` (rebuilt by
//! a scan), the listing shows every entry with its size, mode, owner and
//! mtime, and `du` the same total as before the stop, never the part of
//! the index found so far. More entries than one batch of the rebuild
//! (2,048), keys in each form the index keeps (sha256 hex, short, long)
//! and a directory inside the namespace.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

const CFG: &str = "[namespace.a]\n\n[namespace.h]\nkey_format = \"sha256\"\n";

/// Entries of `h` (sha256 keys) and of `a` (other names).
const HEX_ENTRIES: usize = 2_100;
const NAMED_ENTRIES: usize = 120;

/// `ls -ln` of a directory: one line per regular file, sorted by name,
/// with mode, owner, size and mtime (seconds) as `ls` shows them.
fn ls_files(dir: &Path) -> Vec<String> {
    let out = sh(&format!("ls -ln --time-style=+%s {}", q(dir)));
    let mut lines: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // mode, links, uid, gid, size, mtime, name
            format!("{} {} {} {} {} {}", f[0], f[2], f[3], f[4], f[5], f[6])
        })
        .collect();
    lines.sort();
    lines
}

fn du_bytes(dir: &Path) -> u64 {
    sh(&format!("du -s --block-size=1 {}", q(dir)))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// What the first listings after a start must show: every directory's
/// files and `du` of each namespace and of the directory.
#[derive(Debug, PartialEq)]
struct Seen {
    h: Vec<String>,
    a: Vec<String>,
    a_d: Vec<String>,
    du_h: u64,
    du_a: u64,
    du_a_d: u64,
}

fn seen(m: &Mount) -> Seen {
    Seen {
        h: ls_files(&m.ns("h")),
        a: ls_files(&m.ns("a")),
        a_d: ls_files(&m.ns("a").join("d")),
        du_h: du_bytes(&m.ns("h")),
        du_a: du_bytes(&m.ns("a")),
        du_a_d: du_bytes(&m.ns("a").join("d")),
    }
}

fn fill(m: &Mount) {
    let mut rng = Rng::new(14);
    for i in 0..HEX_ENTRIES {
        let key = sha256_hex(format!("input {i}").as_bytes());
        let p = m.path("h", &key);
        write_file(&p, &vec![b'h'; rng.range(0, 9_000)]).unwrap();
        if i % 3 == 0 {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    fs::create_dir(m.ns("a").join("d")).unwrap();
    for i in 0..NAMED_ENTRIES {
        // Short names, names longer than a slot holds inline, and names
        // in the directory.
        let key = match i % 3 {
            0 => format!("k{i}"),
            1 => format!("{}-{i}", "long".repeat(12)),
            _ => format!("d/e{i}"),
        };
        let p = m.path("a", &key);
        write_file(&p, &vec![b'a'; rng.range(1, 70_000)]).unwrap();
        fs::set_permissions(
            &p,
            fs::Permissions::from_mode(0o640 - (i as u32 % 2) * 0o40),
        )
        .unwrap();
    }
}

#[test]
fn ls_l_and_du_right_after_a_clean_stop_and_after_kill9_show_the_whole_cache() {
    if skip_without_fuse() {
        return;
    }
    let backing = tempfile::tempdir().unwrap();
    let backing = backing.path().join("b");
    let mut m = Mount::with_backing(CFG, &backing);
    fill(&m);
    let before = seen(&m);
    assert_eq!(before.h.len(), HEX_ENTRIES);
    assert_eq!(before.a.len() + before.a_d.len(), NAMED_ENTRIES);
    assert!(before.du_h > 0 && before.du_a_d > 0 && before.du_a > before.du_a_d);
    assert!(m.stop().success());
    assert!(
        backing.join("index.snapshot").exists(),
        "a clean stop saves the index"
    );

    // Listed at once: the listing waits for the reload, so it is whole.
    let mut m = Mount::with_backing(CFG, &backing);
    let after_stop = seen(&m);
    assert_eq!(m.stats()["index"]["source"], "snapshot");
    assert_eq!(after_stop, before, "after a clean stop");
    assert_eq!(
        m.total_stat("entries"),
        (HEX_ENTRIES + NAMED_ENTRIES) as u64
    );

    m.kill9();
    assert!(
        !backing.join("index.snapshot").exists(),
        "the start took the snapshot"
    );
    let m = Mount::with_backing(CFG, &backing);
    let after_kill = seen(&m);
    assert_eq!(m.stats()["index"]["source"], "scan");
    assert_eq!(after_kill, before, "after kill -9");
}
