//! PRODUCT.md section 6, several daemons on one backing dir: keys are
//! paths, and a directory made through one mount (by `mkdir`, or `mkdir
//! -p` before a write under it) is found through the other as soon as
//! the call that made it returned, so an entry published under it is read
//! there right after its close().

#[path = "common/bindview.rs"]
mod bindview;
mod common;

use bindview::{BindView, MountPair};
use common::*;
use std::fs;
use std::process::Command;

fn sh(script: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Two daemons on one backing dir: `b` beside `a`, or through a bindfs
/// view (a network volume's other host). Polls once a minute: only what
/// a lookup itself looks at can be found in time.
fn pair(polled: bool) -> MountPair {
    MountPair::new("[cache]\npoll_interval = \"60s\"\n", polled)
}

fn nested_keys_are_read_through_the_other_mount_after_close(polled: bool) {
    let p = pair(polled);
    fs::create_dir(p.a.ns("ns")).unwrap();
    // B knows the namespace before the first directory is made in it.
    assert!(fs::metadata(p.b.ns("ns")).unwrap().is_dir());
    for i in 0..50 {
        let (ok, out) = sh(&format!(
            "mkdir -p {d} && echo v{i} > {d}/k",
            d = p.a.ns("ns").join(format!("d{i}/e")).display()
        ));
        assert!(ok, "write {i} on A: {out}");
        // Right after A's close() returned.
        let (ok, out) = sh(&format!(
            "cat {}",
            p.b.ns("ns").join(format!("d{i}/e/k")).display()
        ));
        assert!(ok, "cat {i} on B: {out}");
        assert_eq!(out, format!("v{i}\n"));
    }
}

#[test]
fn nested_keys_written_through_one_mount_are_read_through_the_other_at_once() {
    if skip_without_fuse() {
        return;
    }
    nested_keys_are_read_through_the_other_mount_after_close(false);
}

#[test]
fn nested_keys_are_read_through_a_view_with_no_notifications_at_once() {
    if skip_without_fuse() {
        return;
    }
    nested_keys_are_read_through_the_other_mount_after_close(true);
}

fn empty_directories_are_found_through_the_other_mount(polled: bool) {
    let p = pair(polled);
    fs::create_dir(p.a.ns("ns")).unwrap();
    assert_errno(fs::metadata(p.b.ns("ns").join("d")), libc::ENOENT, "before");
    fs::create_dir(p.a.ns("ns").join("d")).unwrap();
    // Right after A's mkdir returned: a directory through B, usable.
    assert!(fs::metadata(p.b.ns("ns").join("d")).unwrap().is_dir());
    let (ok, out) = sh(&format!("stat {}", p.b.ns("ns").join("d").display()));
    assert!(ok, "stat on B: {out}");
    assert_errno(
        fs::create_dir(p.b.ns("ns").join("d")),
        libc::EEXIST,
        "mkdir of it on B",
    );
    write_file(&p.b.ns("ns").join("d/k"), b"from B").unwrap();
    assert_eq!(read_file(&p.a.ns("ns").join("d/k")).unwrap(), b"from B");
    // A name that is nothing through either mount is still ENOENT.
    assert_errno(
        fs::metadata(p.b.ns("ns").join("none")),
        libc::ENOENT,
        "no such name",
    );
}

#[test]
fn an_empty_directory_made_through_one_mount_is_found_through_the_other() {
    if skip_without_fuse() {
        return;
    }
    empty_directories_are_found_through_the_other_mount(false);
}

#[test]
fn an_empty_directory_is_found_through_a_view_with_no_notifications() {
    if skip_without_fuse() {
        return;
    }
    empty_directories_are_found_through_the_other_mount(true);
}

/// How soon a directory change made through A shows in B's listings:
/// the contract's bound (100 ms notified, the 1 s poll on a view) with a
/// margin for a loaded test machine. The local pair polls once a minute,
/// so only a notification can meet its deadline.
fn deadline(polled: bool) -> std::time::Duration {
    let margin = std::time::Duration::from_millis(900);
    margin
        + if polled {
            std::time::Duration::from_secs(1)
        } else {
            std::time::Duration::from_millis(100)
        }
}

fn directory_changes_reach_the_other_mounts_listings(polled: bool) {
    let cfg = "[cache]\npoll_interval = \"60s\"\n";
    let a = Mount::new(cfg);
    // Declared before `b`, so dropped after it: b unmounts first.
    let view = polled.then(|| BindView::of(&a.backing));
    let b = match &view {
        // Its own polls are the contract's default (1 s).
        Some(v) => Mount::with_backing("", v.dir.path()),
        None => Mount::with_backing(cfg, &a.backing),
    };
    let limit = deadline(polled);
    let ns_a = a.ns("ns");
    fs::create_dir(&ns_a).unwrap();
    let listed = |dir: &std::path::Path| {
        let (ok, out) = sh(&format!("ls {}", dir.display()));
        assert!(ok, "ls {}: {out}", dir.display());
        out.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    let ns_b = b.ns("ns");
    assert!(listed(&ns_b).is_empty());

    // Made on A: listed by B (no lookup of it on B first).
    fs::create_dir(ns_a.join("made")).unwrap();
    fs::create_dir_all(ns_a.join("tree/sub")).unwrap();
    assert!(
        wait_until(limit, || listed(&ns_b) == ["made", "tree"]),
        "mkdir on A, ls B/ns: {:?}",
        listed(&ns_b)
    );
    assert_eq!(listed(&ns_b.join("tree")), ["sub"]);

    // Removed on A, after B's kernel looked it up: gone from B.
    assert!(fs::metadata(ns_b.join("made")).unwrap().is_dir());
    fs::remove_dir(ns_a.join("made")).unwrap();
    assert!(
        wait_until(limit, || errno(&fs::metadata(ns_b.join("made")))
            == Some(libc::ENOENT)),
        "rmdir on A, B still shows the directory"
    );
    assert_eq!(listed(&ns_b), ["tree"]);

    // Renamed on A, with an entry in it: B lists the new name only and
    // reads the entry there.
    write_file(&ns_a.join("tree/sub/k"), b"v").unwrap();
    assert_eq!(read_file(&ns_b.join("tree/sub/k")).unwrap(), b"v");
    fs::rename(ns_a.join("tree"), ns_a.join("moved")).unwrap();
    assert!(
        wait_until(limit, || listed(&ns_b) == ["moved"]),
        "rename on A, ls B/ns: {:?}",
        listed(&ns_b)
    );
    assert_errno(fs::metadata(ns_b.join("tree")), libc::ENOENT, "old name");
    assert_eq!(read_file(&ns_b.join("moved/sub/k")).unwrap(), b"v");
}

#[test]
fn directories_made_removed_renamed_reach_the_other_mounts_listings() {
    if skip_without_fuse() {
        return;
    }
    directory_changes_reach_the_other_mounts_listings(false);
}

#[test]
fn directory_changes_reach_listings_through_a_view_with_no_notifications() {
    if skip_without_fuse() {
        return;
    }
    directory_changes_reach_the_other_mounts_listings(true);
}
