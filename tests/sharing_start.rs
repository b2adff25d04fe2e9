//! PRODUCT.md section 6, "a mount serves at once after a start, clean or
//! after a crash": also when the daemon that died left much behind (its
//! trash: a purge or evictions under way; its staging: writes in flight;
//! an offline command's files). The next daemon serves first and removes
//! them behind (`store/leftovers.rs`); a stop before it is done leaves the
//! rest, found again by the next start.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CFG: &str = "[namespace.ns]\n";
/// Files in the dead daemon's trash: a purge in flight.
const TRASHED: usize = 2_000;

/// A daemon killed with -9 after a publish, whose session dirs are then
/// filled as a purge and writes in flight would leave them, with an
/// offline command's file beside. Returns the mount (dead) and the dead
/// session's token.
fn killed_with_leftovers() -> (Mount, String) {
    let mut a = Mount::new(CFG);
    write_file(&a.path("ns", "k"), b"hello").unwrap();
    a.kill9();
    let token = fs::read_dir(a.backing.join("staging"))
        .unwrap()
        .flatten()
        .find_map(|e| {
            let n = e.file_name().into_string().ok()?;
            n.strip_suffix(".lock").map(str::to_owned)
        })
        .expect("the killed daemon's session file");
    let trash = a.backing.join("trash").join(&token);
    for i in 0..TRASHED {
        fs::write(trash.join(format!("old{i}")), b"old version").unwrap();
    }
    fs::write(
        a.backing.join("staging").join(&token).join("w"),
        b"in flight",
    )
    .unwrap();
    fs::write(a.backing.join("trash").join("offline-left"), b"x").unwrap();
    (a, token)
}

fn leftovers(backing: &Path, token: &str) -> Vec<PathBuf> {
    [
        backing.join("trash").join(token),
        backing.join("staging").join(token),
        backing.join("staging").join(format!("{token}.lock")),
        backing.join("trash").join("offline-left"),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect()
}

/// A daemon on `backing` held back by `control`'s lines (`hold STAGE`).
fn held_mount(backing: &Path, control: &Path, holds: &str) -> Mount {
    fs::write(control, holds).unwrap();
    Mount::start(MountOpts {
        config: Some(CFG.to_owned()),
        backing: Some(backing.to_path_buf()),
        env: vec![(
            "CACHEFS_FAULTS".into(),
            control.to_string_lossy().into_owned(),
        )],
        ..Default::default()
    })
}

// A release build has no hold (debug-only, as faults are).
#[cfg(debug_assertions)]
#[test]
fn what_a_killed_daemon_left_is_removed_behind_the_first_hit() {
    if skip_without_fuse() {
        return;
    }
    let (a, token) = killed_with_leftovers();
    let control = a.dir.path().join("control");
    let b = held_mount(&a.backing, &control, "hold rebuild\n");
    // Served before anything was removed: the start did not wait for it.
    assert_eq!(read_file(&b.path("ns", "k")).unwrap(), b"hello");
    assert_eq!(leftovers(&a.backing, &token).len(), 4);
    assert_eq!(
        fs::read_dir(a.backing.join("trash").join(&token))
            .unwrap()
            .count(),
        TRASHED
    );
    fs::remove_file(&control).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || leftovers(&a.backing, &token)
            .is_empty()),
        "left: {:?}",
        leftovers(&a.backing, &token)
    );
    assert_eq!(b.stats()["index"]["rebuilding"], false);
    assert_eq!(b.total_stat("entries"), 1);
    assert_eq!(read_file(&b.path("ns", "k")).unwrap(), b"hello");
}

#[cfg(debug_assertions)]
#[test]
fn a_stop_before_the_leftovers_are_removed_leaves_them_to_the_next_start() {
    if skip_without_fuse() {
        return;
    }
    let (a, token) = killed_with_leftovers();
    let control = a.dir.path().join("control");
    let mut b = held_mount(&a.backing, &control, "hold leftovers\n");
    assert!(wait_until(
        Duration::from_secs(60),
        || b.stats()["index"]["rebuilding"] == false
    ));
    assert_eq!(read_file(&b.path("ns", "k")).unwrap(), b"hello");
    // The stop does not wait for them, and the session file stays, so
    // the dead session is found again.
    assert!(b.stop().success());
    assert_eq!(leftovers(&a.backing, &token).len(), 4);
    let c = Mount::with_backing(CFG, &a.backing);
    assert!(
        wait_until(Duration::from_secs(60), || leftovers(&a.backing, &token)
            .is_empty()),
        "left: {:?}",
        leftovers(&a.backing, &token)
    );
    assert_eq!(read_file(&c.path("ns", "k")).unwrap(), b"hello");
}

/// Directories made with mkdir are markers in the backing dir, which the
/// rebuild loads (at 10^5 directories that took 1.4 s before the first
/// hit when it ran before the mount). Until then a lookup finds a
/// directory by its marker, and what changes meanwhile stands.
#[cfg(debug_assertions)]
#[test]
fn directories_are_served_before_their_markers_are_loaded() {
    if skip_without_fuse() {
        return;
    }
    let mut a = Mount::new(CFG);
    fs::create_dir_all(a.ns("ns").join("a/b")).unwrap();
    fs::create_dir_all(a.ns("ns").join("gone")).unwrap();
    fs::create_dir_all(a.ns("ns").join("moved/in")).unwrap();
    write_file(&a.ns("ns").join("a/b/k"), b"deep").unwrap();
    a.kill9();
    let control = a.dir.path().join("control");
    let b = held_mount(&a.backing, &control, "hold rebuild\n");
    assert_eq!(b.stats()["index"]["rebuilding"], true);
    assert_eq!(read_file(&b.ns("ns").join("a/b/k")).unwrap(), b"deep");
    fs::create_dir(b.ns("ns").join("a/b/c")).unwrap();
    write_file(&b.ns("ns").join("a/b/c/k2"), b"new").unwrap();
    fs::remove_dir(b.ns("ns").join("gone")).unwrap();
    fs::rename(b.ns("ns").join("moved"), b.ns("ns").join("there")).unwrap();
    assert_errno(
        fs::metadata(b.ns("ns").join("nothing")),
        libc::ENOENT,
        "no marker, no entry: a miss",
    );
    fs::remove_file(&control).unwrap();
    assert!(wait_until(
        Duration::from_secs(60),
        || b.stats()["index"]["rebuilding"] == false
    ));
    // What changed while the markers were not loaded stands.
    assert_eq!(list_str(&b.ns("ns")), vec!["a", "there"]);
    assert_eq!(list_str(&b.ns("ns").join("a/b")), vec!["c", "k"]);
    assert_eq!(list_str(&b.ns("ns").join("there")), vec!["in"]);
    assert_errno(
        fs::metadata(b.ns("ns").join("gone")),
        libc::ENOENT,
        "rmdir'd",
    );
    assert_eq!(read_file(&b.ns("ns").join("a/b/c/k2")).unwrap(), b"new");
}
