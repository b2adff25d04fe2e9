//! A new key's file linked into place before the publish takes the index
//! lock (`link_ahead.rs`): only while the store is the truth (alone, its
//! index whole); what the commit does with it in each case; a refusal
//! after the link leaves nothing at the key's path.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::backing::{BackingIo, FaultOp};
use super::*;
use crate::config::Config;

const OWNER: Owner = Owner {
    uid: 0,
    gid: 0,
    mode: 0o644,
};

fn open(root: &Path, io: &BackingIo) -> Arc<Store> {
    let clock = Arc::new(ManualClock::new(1_800_000_000 * 1_000_000_000));
    let s = Store::open_with(
        root,
        Config::parse("[namespace.a]\n").unwrap(),
        clock,
        io.clone(),
    )
    .unwrap();
    Arc::new(s)
}

/// Takes the store for alone for an hour, as the follower's survey does
/// for half a second at a time (no follower runs here to end it).
fn alone(s: &Store) {
    s.follower
        .company
        .surveyed(Instant::now() + Duration::from_secs(3600), false);
    assert!(s.index_is_truth());
}

fn ns() -> Namespace {
    Namespace::parse(b"a").unwrap()
}

fn key(k: &str) -> Key {
    Key::parse(k.as_bytes(), KeyFormat::Any).unwrap()
}

fn write(s: &Store, k: &str, data: &[u8]) -> Result<EntryInfo, StoreError> {
    let mut st = s.begin_write(&ns(), &key(k), WriteFrom::Empty, OWNER)?;
    s.write_staged(&mut st, 0, data)?;
    s.publish(st)
}

fn read(s: &Store, k: &str) -> Vec<u8> {
    let h = s.open_read(&ns(), &key(k)).unwrap();
    h.read_at(0, 1 << 20).unwrap()
}

/// At the next link: 1 if the index lock was free then, 2 if it was held.
fn lock_at_next_link(s: &Arc<Store>, io: &BackingIo) -> Arc<AtomicU8> {
    let seen = Arc::new(AtomicU8::new(0));
    let (weak, out): (Weak<Store>, _) = (Arc::downgrade(s), Arc::clone(&seen));
    io.before_next(FaultOp::Link, move || {
        let s = weak.upgrade().expect("store alive");
        let free = s.index.try_lock().is_ok();
        out.store(if free { 1 } else { 2 }, Ordering::SeqCst);
    });
    seen
}

#[test]
fn a_lone_store_links_a_new_key_outside_the_index_lock_and_a_shared_one_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let io = BackingIo::default();
    let s = open(&dir.path().join("b"), &io);
    // Not (yet) known to be alone: the link is made under the lock.
    let seen = lock_at_next_link(&s, &io);
    write(&s, "shared", b"under the lock").unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    alone(&s);
    let seen = lock_at_next_link(&s, &io);
    write(&s, "fresh", b"linked ahead").unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1, "linked under the lock");
    assert_eq!(read(&s, "fresh"), b"linked ahead");
    assert_eq!(read(&s, "shared"), b"under the lock");
    assert_eq!(s.usage().entries, 2);
    // A replacement renames over the live version under the lock.
    write(&s, "fresh", b"replaced").unwrap();
    assert_eq!(read(&s, "fresh"), b"replaced");
    assert_eq!(s.usage().entries, 2);
    s.end_session();
}

#[test]
fn a_refusal_after_the_link_takes_the_file_back_out_of_place() {
    let dir = tempfile::tempdir().unwrap();
    let io = BackingIo::default();
    let s = open(&dir.path().join("b"), &io);
    alone(&s);
    // Begun while `d` is free, refused at its commit: `d` became an entry
    // meanwhile, so `d/x` cannot be under it.
    let mut st = s
        .begin_write(&ns(), &key("d/x"), WriteFrom::Empty, OWNER)
        .unwrap();
    s.write_staged(&mut st, 0, b"nested").unwrap();
    write(&s, "d", b"an entry").unwrap();
    let seen = lock_at_next_link(&s, &io);
    assert!(s.publish(st).is_err());
    assert_eq!(seen.load(Ordering::SeqCst), 1, "not linked ahead");
    let dest = s.layout.entry_path(&ns(), &key("d/x"));
    assert!(!dest.exists(), "{dest:?} left in place");
    assert!(matches!(s.lookup(&ns(), &key("d/x")), Lookup::Miss));
    assert_eq!(read(&s, "d"), b"an entry");
    assert_eq!(s.usage().entries, 1);
    s.end_session();
}

#[test]
fn a_publish_over_a_version_whose_file_went_replaces_it_in_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let io = BackingIo::default();
    let s = open(&dir.path().join("b"), &io);
    alone(&s);
    write(&s, "k", b"first").unwrap();
    let dest = s.layout.entry_path(&ns(), &key("k"));
    std::fs::remove_file(&dest).unwrap();
    write(&s, "k", b"second, at a free path").unwrap();
    assert_eq!(read(&s, "k"), b"second, at a free path");
    let u = s.usage();
    assert_eq!(u.entries, 1);
    assert_eq!(
        u.used_bytes,
        std::fs::metadata(&dest).unwrap().blocks() * 512
    );
    s.end_session();
}

#[test]
fn another_writer_s_publish_just_before_the_link_is_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, &io);
    alone(&s);
    let mut st = s
        .begin_write(&ns(), &key("k"), WriteFrom::Empty, OWNER)
        .unwrap();
    s.write_staged(&mut st, 0, b"closed last").unwrap();
    // The other writer publishes the same new key right before this
    // one's link, which then finds the name taken. On its own thread:
    // were the link made under the index lock, that publish would wait
    // for it (the test then fails, rather than hangs).
    let weak = Arc::downgrade(&s);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    io.before_next(FaultOp::Link, move || {
        let s = weak.upgrade().unwrap();
        let other = std::thread::spawn(move || write(&s, "k", b"closed first").map(|_| ()));
        let finished = (0..1000).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            other.is_finished()
        });
        done_tx
            .send(finished && other.join().unwrap().is_ok())
            .unwrap();
    });
    s.publish(st).unwrap();
    assert!(
        done_rx.recv().unwrap(),
        "the other publish waited or failed"
    );
    assert_eq!(read(&s, "k"), b"closed last");
    assert_eq!(s.usage().entries, 1);
    s.end_session();
}

#[test]
fn the_commit_keeps_a_file_linked_ahead_only_if_it_is_the_one_at_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let io = BackingIo::default();
    let s = open(&dir.path().join("b"), &io);
    write(&s, "k", b"at the path").unwrap();
    let dest = s.layout.entry_path(&ns(), &key("k"));
    let there = s.lock().peek(&ns(), &key("k")).unwrap();
    let mut other = there.clone();
    other.file_id = there.file_id + 1;
    // Nothing held, or the index held this very file: it goes in.
    assert!(s.settle_linked_ahead(None, &there, &dest));
    assert!(s.settle_linked_ahead(Some(&there), &there, &dest));
    // The index held another version: in only if this file is there.
    assert!(s.settle_linked_ahead(Some(&other), &there, &dest));
    assert!(!s.settle_linked_ahead(Some(&there), &other, &dest));
    s.end_session();
}
