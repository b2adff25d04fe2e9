//! Metadata changes in place (`trailer.rs`): no content copied (the
//! backing file's inode stays), each step's failure or a crash after it
//! leaves the entry under exactly one name with its bytes, and a fresh
//! recovery agrees with the index, accounting included.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::backing::{BackingIo, FaultOp};
use super::*;
use crate::config::Config;

const T0: i64 = 1_800_000_000 * 1_000_000_000;
const OWNER: Owner = Owner {
    uid: 0,
    gid: 0,
    mode: 0o644,
};

fn open(root: &Path, io: &BackingIo) -> Store {
    let clock = Arc::new(ManualClock::new(T0));
    Store::open_with(
        root,
        Config::parse("[namespace.a]\n").unwrap(),
        clock,
        io.clone(),
    )
    .unwrap()
}

fn ns() -> Namespace {
    Namespace::parse(b"a").unwrap()
}

fn key(k: &str) -> Key {
    Key::parse(k.as_bytes(), KeyFormat::Any).unwrap()
}

fn write(s: &Store, k: &str, data: &[u8]) {
    let mut st = s
        .begin_write(&ns(), &key(k), WriteFrom::Empty, OWNER)
        .unwrap();
    s.write_staged(&mut st, 0, data).unwrap();
    s.publish(st).unwrap();
}

fn read(s: &Store, k: &str) -> Option<Vec<u8>> {
    let h = s.open_read(&ns(), &key(k)).ok()?;
    Some(h.read_at(0, 1 << 26).unwrap())
}

fn ino(s: &Store, k: &str) -> u64 {
    std::fs::metadata(s.layout.entry_path(&ns(), &key(k)))
        .unwrap()
        .ino()
}

fn set_xattr(name: &str, value: &str) -> MetaUpdate {
    MetaUpdate {
        xattr: Some(XattrChange::Set {
            name: name.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            mode: SetMode::Any,
        }),
        ..MetaUpdate::default()
    }
}

/// (key, size, stored bytes) of every entry the index holds, and the
/// usage it accounts.
fn index_of(s: &Store) -> (Vec<(Vec<u8>, u64, u64)>, u64) {
    let idx = s.lock();
    let mut v: Vec<_> = idx
        .namespaces()
        .flat_map(|(_, st)| {
            st.iter_lru()
                .map(|(k, m)| (k.to_vec(), m.logical_size, m.stored_bytes))
        })
        .collect();
    v.sort();
    (v, idx.total_bytes())
}

#[test]
fn metadata_changes_of_a_large_entry_copy_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, &io);
    let big: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    write(&s, "big", &big);
    let before = ino(&s, "big");
    let version = s.open_read(&ns(), &key("big")).unwrap().version();
    let updates = [
        MetaUpdate {
            mode: Some(0o600),
            ..MetaUpdate::default()
        },
        MetaUpdate {
            mtime: Some(T0 + 5),
            atime: Some(T0 + 6),
            ..MetaUpdate::default()
        },
        MetaUpdate {
            ttl_secs: Some(Some(99)),
            ..MetaUpdate::default()
        },
        set_xattr("user.etag", "\"v1\""),
    ];
    // Any write of content would fail: none may happen but the trailer's.
    for u in updates {
        let info = s.update(&ns(), &key("big"), u).unwrap();
        assert_eq!(info.version, version, "a metadata change keeps the version");
        assert_eq!(ino(&s, "big"), before, "the backing file was not copied");
    }
    let info = s.rename(&ns(), &key("big"), &key("moved"), false).unwrap();
    assert_eq!(ino(&s, "moved"), before, "a rename moved the file, no copy");
    assert_eq!((info.mode & 0o777, info.mtime), (0o600, T0 + 5));
    assert_eq!(info.ttl.as_secs(), 99);
    assert!(read(&s, "big").is_none());
    assert_eq!(read(&s, "moved").unwrap(), big);
    let x = s.xattrs(&ns(), &key("moved")).unwrap();
    assert_eq!(x, vec![(b"user.etag".to_vec(), b"\"v1\"".to_vec())]);
    s.check_invariants();
    // The same after a crash (no snapshot: a scan of the trailers).
    let usage = index_of(&s);
    drop(s);
    let s = open(&root, &io);
    assert_eq!(index_of(&s), usage);
    assert_eq!(read(&s, "moved").unwrap(), big);
    assert_eq!(s.xattrs(&ns(), &key("moved")).unwrap(), x);
    let info = match s.entry_info(&ns(), &key("moved")) {
        Lookup::Hit(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (info.mode & 0o777, info.mtime, info.atime),
        (0o600, T0 + 5, T0 + 6)
    );
}

#[test]
fn many_changes_compact_by_a_copy_and_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let io = BackingIo::default();
    let s = open(&dir.path().join("b"), &io);
    write(&s, "k", b"content");
    let mut copies = 0;
    let mut last = ino(&s, "k");
    for i in 0..1000 {
        s.update(&ns(), &key("k"), set_xattr("user.n", &i.to_string()))
            .unwrap();
        let now = ino(&s, "k");
        copies += usize::from(now != last);
        last = now;
        let len = std::fs::metadata(s.layout.entry_path(&ns(), &key("k")))
            .unwrap()
            .len();
        assert!(
            len <= trailer::COMPACT_AT + 8192,
            "dead bytes are bounded: {len}"
        );
    }
    assert!(
        (1..30).contains(&copies),
        "compacted now and then: {copies}"
    );
    assert_eq!(read(&s, "k").unwrap(), b"content");
    s.check_invariants();
}

/// Each step of an in-place rename fails (the fault seam), or the daemon
/// dies right after it: the entry is under one name, whole, and a fresh
/// recovery finds it there with the index's accounting.
#[test]
fn a_rename_failing_or_crashing_at_each_step_loses_nothing() {
    for (op, crash) in [
        (None, true),
        (Some(FaultOp::Open), false),
        (Some(FaultOp::Write), false),
        (Some(FaultOp::Rename), false),
        (Some(FaultOp::Rename), true),
    ] {
        let case = format!("{op:?} crash={crash}");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let io = BackingIo::default();
        let s = open(&root, &io);
        write(&s, "from", b"move me");
        write(&s, "to", b"old target");
        if let Some(op) = op {
            io.inject(op, libc::EIO, None);
        }
        let r = s.rename(&ns(), &key("from"), &key("to"), false);
        io.lift();
        let (from, to) = (read(&s, "from"), read(&s, "to"));
        match &r {
            Ok(_) => assert_eq!(
                (from.as_deref(), to.as_deref()),
                (None, Some(&b"move me"[..]))
            ),
            Err(_) => assert_eq!(
                (from.as_deref(), to.as_deref()),
                (Some(&b"move me"[..]), Some(&b"old target"[..])),
                "{case}"
            ),
        }
        s.check_invariants();
        let usage = index_of(&s);
        if crash {
            drop(s);
        } else {
            s.save_snapshot().unwrap();
            drop(s);
            std::fs::remove_file(root.join("index.snapshot")).unwrap();
        }
        let s = open(&root, &io);
        assert_eq!(index_of(&s), usage, "{case}: recovery agrees");
        assert_eq!((read(&s, "from"), read(&s, "to")), (from, to), "{case}");
        assert_eq!(
            std::fs::read_dir(root.join("quarantine")).unwrap().count(),
            0
        );
    }
}

/// The state a crash between the two steps leaves (trailer naming the new
/// key, file still at the old key's path) is the old key's entry, for a
/// scan and for an offline inspection alike.
#[test]
fn a_rename_cut_between_its_steps_is_the_old_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, &io);
    write(&s, "from", b"move me");
    io.inject(FaultOp::Rename, libc::EIO, None);
    assert!(s.rename(&ns(), &key("from"), &key("to"), true).is_err());
    io.lift();
    let path = s.layout.entry_path(&ns(), &key("from"));
    let found = recover::inspect(&io, &path).unwrap();
    assert_eq!(found.header.key, b"from");
    drop(s);
    let s = open(&root, &io);
    assert_eq!(read(&s, "from").unwrap(), b"move me");
    assert!(read(&s, "to").is_none());
    // And it renames for real now.
    s.rename(&ns(), &key("from"), &key("to"), true).unwrap();
    assert_eq!(read(&s, "to").unwrap(), b"move me");
    drop(s);
    let s = open(&root, &io);
    assert_eq!(
        (read(&s, "from"), read(&s, "to").unwrap()),
        (None, b"move me".to_vec())
    );
}

#[test]
fn noreplace_and_claims_are_decided_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let io = BackingIo::default();
    let s = open(&dir.path().join("b"), &io);
    write(&s, "a", b"A");
    write(&s, "b", b"B");
    assert!(matches!(
        s.rename(&ns(), &key("a"), &key("b"), true),
        Err(StoreError::Exists)
    ));
    let mut claim = s
        .start_write(&ns(), &key("c"), NewWrite::by(7, WriteFrom::Empty, OWNER))
        .unwrap();
    assert!(matches!(
        s.rename(&ns(), &key("a"), &key("c"), true),
        Err(StoreError::Exists)
    ));
    s.write_staged(&mut claim, 0, b"C").unwrap();
    drop(claim);
    s.rename(&ns(), &key("a"), &key("b"), false).unwrap();
    assert_eq!(read(&s, "b").unwrap(), b"A");
    s.check_invariants();
    assert_eq!(s.stats().total.entries, 1);
}
