//! Exclusive creates across daemons on one backing dir (`claims.rs`):
//! two stores opened on one directory stand for two daemons.

use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::Config;

const CONFIG: &str = "[namespace.a]\n";
const OWNER: Owner = Owner {
    uid: 0,
    gid: 0,
    mode: 0o644,
};

fn open(root: &std::path::Path) -> Store {
    let clock = Arc::new(ManualClock::new(1_800_000_000 * 1_000_000_000));
    Store::open(root, Config::parse(CONFIG).unwrap(), clock).unwrap()
}

fn ns() -> Namespace {
    Namespace::parse(b"a").unwrap()
}

fn key(k: &str) -> Key {
    Key::parse(k.as_bytes(), KeyFormat::Any).unwrap()
}

fn create_excl(s: &Store, k: &str) -> Result<StagingFile, StoreError> {
    let w = NewWrite {
        from: WriteFrom::Empty,
        owner: OWNER,
        version: None,
        exclusive: true,
        by: WriteBy::Open(std::process::id()),
    };
    s.start_write(&ns(), &key(k), w)
}

fn claim_files(root: &std::path::Path) -> usize {
    fs::read_dir(root.join("claims")).unwrap().count()
}

#[test]
fn an_exclusive_create_in_flight_on_one_daemon_is_exists_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let (a, b) = (open(&root), open(&root));
    let mut writing = create_excl(&a, "k").unwrap();
    assert_eq!(claim_files(&root), 1);
    assert!(matches!(create_excl(&b, "k"), Err(StoreError::Exists)));
    // Another key is free, and the refusal left the claim in place.
    drop(create_excl(&b, "other").unwrap());
    assert!(matches!(create_excl(&b, "k"), Err(StoreError::Exists)));
    writing.write_at(0, b"v").unwrap();
    a.publish(writing).unwrap();
    assert_eq!(claim_files(&root), 0, "a publish ends the claim");
}

#[test]
fn a_dropped_write_frees_the_key_for_every_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let (a, b) = (open(&root), open(&root));
    let writing = create_excl(&a, "k").unwrap();
    drop(writing); // a killed writer's last close
    assert_eq!(claim_files(&root), 0);
    let again = create_excl(&b, "k").unwrap();
    assert!(matches!(create_excl(&a, "k"), Err(StoreError::Exists)));
    drop(again);
}

/// A session file recording a process that has exited: a daemon killed
/// with `kill -9` leaves exactly this (and its claims) behind.
pub(super) fn dead_session(root: &std::path::Path, token: &str) {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let pidns = fs::read_link("/proc/self/ns/pid").unwrap();
    let line = format!(
        "cachefs session 1 boot={} pidns={} pid={pid} start=1\n",
        boot.trim(),
        pidns.display()
    );
    fs::write(root.join("staging").join(format!("{token}.lock")), line).unwrap();
}

#[test]
fn a_dead_daemons_claim_is_reaped_when_met_and_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let b = open(&root);
    let claim = Layout::entry_hash(&ns(), &key("k"));
    dead_session(&root, "999-00000000000000aa");
    fs::write(root.join("claims").join(&claim), "999-00000000000000aa\n").unwrap();
    let writing = create_excl(&b, "k").expect("a dead session's claim is no claim");
    drop(writing);

    // Left by a dead daemon, removed by the next daemon to start.
    dead_session(&root, "999-00000000000000bb");
    fs::write(root.join("claims").join(&claim), "999-00000000000000bb\n").unwrap();
    drop(open(&root));
    assert_eq!(claim_files(&root), 0);
    drop(b);
}

#[test]
fn a_live_or_unknown_claim_holds_and_garbage_goes_once_stale() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let b = open(&root);
    let claim = root
        .join("claims")
        .join(Layout::entry_hash(&ns(), &key("k")));
    // A session on another host, beating: its claim holds.
    let other = "cachefs session 1 boot=elsewhere pidns=x pid=1 start=1\n";
    fs::write(root.join("staging/7-00000000000000cc.lock"), other).unwrap();
    fs::write(&claim, "7-00000000000000cc\n").unwrap();
    assert!(matches!(create_excl(&b, "k"), Err(StoreError::Exists)));
    // A claim whose token is being written (empty), or is not a token:
    // held until it is older than a heartbeat could leave it.
    for junk in ["", "../../etc/passwd\n"] {
        fs::write(&claim, junk).unwrap();
        assert!(matches!(create_excl(&b, "k"), Err(StoreError::Exists)));
        let old = SystemTime::now() - sessions::STALE - Duration::from_secs(1);
        fs::File::options()
            .write(true)
            .open(&claim)
            .unwrap()
            .set_modified(old)
            .unwrap();
        drop(create_excl(&b, "k").unwrap());
    }
}
