//! Daemons on one backing dir are safe together and share exclusive
//! creates (PRODUCT.md sections 4 and 6): an `O_CREAT|O_EXCL` of a key
//! being written through another mount is EEXIST; a killed writer's claim
//! goes with its last close, a killed daemon's when the next daemon meets
//! it; and a daemon whose view of the backing dir does not carry `flock`
//! (bindfs, standing in for another host on a network volume) leaves the
//! first daemon's writes in progress alone.
//!
//! Writers are python3 children that say `ready` once their file is open,
//! then block reading stdin.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CFG: &str = "[namespace.k]\n";
const WAIT: Duration = Duration::from_secs(10);

/// O_EXCL create, one byte written, then waits for stdin.
const CLAIM: &str = r#"
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b"a")
print("ready", flush=True)
sys.stdin.read()
os.write(fd, b"b")
os.close(fd)
"#;

fn claimer(path: &Path) -> Child {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(CLAIM)
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the claimer has its file open");
    child
}

fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A read-write bindfs view of `backing` (no flock through it, no
/// inotify events for changes made beside it): another host's view.
struct View {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl View {
    fn of(backing: &Path) -> View {
        let dir = tempfile::Builder::new()
            .prefix("cachefs-view-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("view");
        std::fs::create_dir(&path).unwrap();
        let st = Command::new("bindfs")
            .arg("--no-allow-other")
            .arg(backing)
            .arg(&path)
            .status()
            .expect("bindfs runs (apt-get install bindfs)");
        assert!(st.success(), "bindfs mounted");
        View { path, _dir: dir }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        if is_mounted(&self.path) {
            lazy_unmount(&self.path);
        }
    }
}

fn second_daemon(backing: &Path) -> Mount {
    Mount::with_backing(CFG, backing)
}

fn excl(path: &Path) -> Option<i32> {
    errno(&create_excl(path))
}

#[test]
fn an_exclusive_create_in_flight_on_one_mount_is_eexist_on_the_other() {
    if skip_without_fuse() {
        return;
    }
    let a = Mount::new(CFG);
    let b = second_daemon(&a.backing);
    let mut writer = claimer(&a.path("k", "key"));
    assert_eq!(excl(&b.path("k", "key")), Some(libc::EEXIST));
    // Other keys are not held.
    close_file(create_excl(&b.path("k", "other")).unwrap()).unwrap();
    // The writer is killed: its claim goes with its last close.
    kill9(&mut writer);
    assert!(
        wait_until(WAIT, || excl(&b.path("k", "key")).is_none()),
        "B may claim the key once A's writer is dead"
    );
}

#[test]
fn a_killed_daemons_claim_is_gone_for_the_others() {
    if skip_without_fuse() {
        return;
    }
    let mut a = Mount::new(CFG);
    let b = second_daemon(&a.backing);
    let mut writer = claimer(&a.path("k", "key"));
    assert_eq!(excl(&b.path("k", "key")), Some(libc::EEXIST));
    a.kill9();
    // Its process is gone: B takes its claim for dead when it meets it.
    close_file(create_excl(&b.path("k", "key")).expect("the dead daemon's claim is gone")).unwrap();
    kill9(&mut writer);
}

#[test]
fn a_daemon_on_a_view_without_flock_leaves_the_first_ones_writes_alone() {
    if skip_without_fuse() {
        return;
    }
    let a = Mount::new(CFG);
    // A writer in progress on A, then another daemon starts on a view of
    // the same backing dir whose locks are all free.
    let mut f = std::fs::File::create(a.path("k", "slow")).unwrap();
    use std::io::Write;
    f.write_all(b"first half, ").unwrap();
    let view = View::of(&a.backing);
    let b = second_daemon(&view.path);
    f.write_all(b"second half").unwrap();
    close_file(f).expect("A's write survives B's start");
    assert_eq!(
        read_file(&a.path("k", "slow")).unwrap(),
        b"first half, second half"
    );
    write_file(&a.path("k", "after"), b"still writing").expect("A keeps writing");
    // And claims cross the view (by file, not by lock).
    let mut writer = claimer(&a.path("k", "key"));
    assert_eq!(excl(&b.path("k", "key")), Some(libc::EEXIST));
    kill9(&mut writer);
    assert!(wait_until(WAIT, || excl(&b.path("k", "key")).is_none()));
    drop(b);
    drop(view);
    assert_eq!(read_file(&a.path("k", "after")).unwrap(), b"still writing");
}
