//! Two stores on one backing dir and in-place metadata changes (entry
//! format 3, `trailer.rs`): what one changes by appending a trailer to
//! the same inode, or renames in two steps, the other reads as that
//! change, never as damage.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::backing::{BackingIo, FaultOp};
use super::pair_tests::{T0, key, put_in};
use super::*;
use crate::config::Config;

fn ns() -> Namespace {
    Namespace::parse(b"a").unwrap()
}

fn open(root: &std::path::Path, io: &BackingIo) -> Store {
    let clock = Arc::new(ManualClock::new(T0));
    let config = Config::parse("[namespace.a]\n").unwrap();
    Store::open_with(root, config, clock, io.clone()).unwrap()
}

fn put(s: &Store, k: &str, data: &[u8]) {
    put_in(s, &ns(), k, data)
}

fn lookup(s: &Store, k: &str) -> Lookup {
    let id = s.namespace_id(&ns()).unwrap();
    s.lookup_name(id, b"", k.as_bytes(), 1).unwrap().lookup
}

fn read(s: &Store, k: &str) -> Vec<u8> {
    let h = s.open_read(&ns(), &key(k)).unwrap();
    h.read_at(0, 1 << 20).unwrap()
}

fn ino(s: &Store, k: &str) -> u64 {
    std::fs::metadata(s.layout.entry_path(&ns(), &key(k)))
        .unwrap()
        .ino()
}

#[test]
fn another_stores_chmod_xattr_and_rename_in_place_are_read_as_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let (a, b) = (open(&root, &io), open(&root, &io));
    let content = vec![7u8; 20_000];
    put(&a, "k", &content);
    let Lookup::Hit(seen) = lookup(&b, "k") else {
        panic!("published by A, not found by B");
    };
    assert_eq!(read(&b, "k"), content);
    let before = ino(&a, "k");

    let update = MetaUpdate {
        mode: Some(0o600),
        xattr: Some(XattrChange::Set {
            name: b"user.etag".to_vec(),
            value: b"v1".to_vec(),
            mode: SetMode::Any,
        }),
        ..MetaUpdate::default()
    };
    a.update(&ns(), &key("k"), update).unwrap();
    assert_eq!(ino(&a, "k"), before, "the change was made in place");
    let Lookup::Hit(now) = lookup(&b, "k") else {
        panic!("changed in place by A, lost by B");
    };
    assert_eq!(now.mode & 0o777, 0o600, "B reads A's new trailer");
    assert_eq!(now.logical_size, seen.logical_size);
    let x = b.xattrs(&ns(), &key("k")).unwrap();
    assert_eq!(x, vec![(b"user.etag".to_vec(), b"v1".to_vec())]);
    assert_eq!(read(&b, "k"), content);

    a.rename(&ns(), &key("k"), &key("moved"), false).unwrap();
    assert_eq!(ino(&a, "moved"), before, "renamed without a copy");
    assert!(matches!(lookup(&b, "k"), Lookup::Miss));
    let Lookup::Hit(moved) = lookup(&b, "moved") else {
        panic!("renamed by A, not found by B");
    };
    assert_eq!(moved.mode & 0o777, 0o600);
    assert_eq!(read(&b, "moved"), content);
    assert_eq!(b.stats().corrupt_entries, 0, "nothing quarantined");
    assert_eq!(b.usage().entries, 1);
    b.check_invariants();
}

#[test]
fn a_rename_cut_between_its_steps_is_the_old_keys_entry_to_another_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let (a, b) = (open(&root, &io), open(&root, &io));
    put(&a, "from", b"move me");
    // The trailer naming "to" (renamed_from "from") is appended, the
    // rename(2) fails: the file stays at "from"'s path.
    io.inject(FaultOp::Rename, libc::EIO, None);
    assert!(a.rename(&ns(), &key("from"), &key("to"), false).is_err());
    io.lift();
    let Lookup::Hit(info) = lookup(&b, "from") else {
        panic!("a rename that did not happen lost its entry for B");
    };
    assert_eq!(info.logical_size, 7);
    assert_eq!(read(&b, "from"), b"move me");
    assert!(matches!(lookup(&b, "to"), Lookup::Miss));
    assert_eq!(
        b.stats().corrupt_entries,
        0,
        "not taken for a misplaced file"
    );
    assert!(
        a.layout.entry_path(&ns(), &key("from")).exists(),
        "never quarantined"
    );
}

#[test]
fn lookups_and_opens_racing_another_stores_appends_never_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let (a, b) = (open(&root, &io), open(&root, &io));
    put(&a, "k", b"content");
    let done = AtomicBool::new(false);
    let (a, b, done) = (&a, &b, &done);
    std::thread::scope(|s| {
        s.spawn(move || {
            // Past 64 KiB of dead trailers a change copies (compaction):
            // both kinds of change race B's reads.
            for i in 0..400u32 {
                let update = MetaUpdate {
                    mtime: Some(T0 + i64::from(i)),
                    mode: Some(0o600 + i % 2 * 0o44),
                    ..MetaUpdate::default()
                };
                a.update(&ns(), &key("k"), update).expect("change");
            }
            done.store(true, Ordering::Relaxed);
        });
        s.spawn(move || {
            while !done.load(Ordering::Relaxed) {
                match lookup(b, "k") {
                    Lookup::Hit(_) => {}
                    other => panic!("a live key looked up as {other:?}"),
                }
                if let Ok(h) = b.open_read(&ns(), &key("k")) {
                    assert_eq!(h.read_at(0, 100).unwrap(), b"content");
                }
            }
        });
    });
    assert_eq!(b.stats().corrupt_entries, 0, "nothing live was quarantined");
    assert_eq!(
        std::fs::read_dir(root.join("quarantine")).unwrap().count(),
        0
    );
    let Lookup::Hit(last) = lookup(b, "k") else {
        panic!("lost");
    };
    assert_eq!(last.mtime, T0 + 399);
}
