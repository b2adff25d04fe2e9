//! The store under injected faults (debug builds: see `backing.rs`), and
//! on a volume that fills: each file operation x ENOSPC, EDQUOT, EIO gives
//! the caller the contract's errno, leaves nothing half-written visible,
//! leaves an index that a fresh recovery of the same backing dir agrees
//! with, is counted, and the store serves again once the fault is lifted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::backing::{BackingIo, FaultOp};
use super::*;
use crate::config::Config;

const T0: i64 = 1_800_000_000 * 1_000_000_000;
const ERRNOS: [i32; 3] = [libc::ENOSPC, libc::EDQUOT, libc::EIO];
/// fsync durability, so the fsyncs are on the publish path too.
const CONFIG: &str = "[namespace.a]\ndurability = \"fsync\"\n";
const OWNER: Owner = Owner {
    uid: 0,
    gid: 0,
    mode: 0o644,
};

fn open(root: &Path, config: &str, io: &BackingIo) -> Result<Store, OpenError> {
    let clock = Arc::new(ManualClock::new(T0));
    Store::open_with(root, Config::parse(config).unwrap(), clock, io.clone())
}

fn ns() -> Namespace {
    Namespace::parse(b"a").unwrap()
}

fn key(k: &str) -> Key {
    Key::parse(k.as_bytes(), KeyFormat::Any).unwrap()
}

/// A user's write of new content: create, write, close.
fn write(s: &Store, k: &str, data: &[u8]) -> Result<EntryInfo, StoreError> {
    let mut st = s.begin_write(&ns(), &key(k), WriteFrom::Empty, OWNER)?;
    s.write_staged(&mut st, 0, data)?;
    s.publish(st)
}

/// An append: a copy of the live version, one more write, close.
fn append(s: &Store, k: &str, data: &[u8]) -> Result<EntryInfo, StoreError> {
    let mut st = s.begin_write(&ns(), &key(k), WriteFrom::Current, OWNER)?;
    s.append_staged(&mut st, data)?;
    s.publish(st)
}

fn read(s: &Store, k: &str) -> Result<Vec<u8>, StoreError> {
    let h = s.open_read(&ns(), &key(k))?;
    Ok(h.read_at(0, 1 << 24)?)
}

/// The errno a caller sees for `e` (the table of `fs/errno.rs`, for the
/// failures a fault can cause); 0 for any other failure.
fn errno_of(e: &StoreError) -> i32 {
    match e {
        StoreError::NoSpace => libc::ENOSPC,
        StoreError::Io(io) if super::backing::is_full(io) => libc::ENOSPC,
        StoreError::Io(_) => libc::EIO,
        _ => 0,
    }
}

/// What the live index holds: (key, logical size).
fn index_of(s: &Store) -> BTreeMap<Vec<u8>, u64> {
    let idx = s.lock();
    idx.namespaces()
        .flat_map(|(_, st)| st.iter_lru().map(|(k, m)| (k.to_vec(), m.logical_size)))
        .collect()
}

/// What a fresh recovery of the backing dir finds, with nothing to
/// quarantine.
fn disk_of(root: &Path) -> BTreeMap<Vec<u8>, u64> {
    let layout = Layout::open_existing(root).unwrap();
    let mut out = BTreeMap::new();
    let report = recover::scan(&layout, |f| {
        out.insert(f.header.key.clone(), f.header.logical_size);
    })
    .unwrap();
    assert_eq!(report.quarantined, 0, "a fault made a file look corrupt");
    out
}

/// Files left in staging dirs (lock files aside).
fn staged_files(root: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(root.join("staging")).unwrap().flatten() {
        if e.path().is_dir() {
            n += std::fs::read_dir(e.path()).unwrap().count();
        } else if e.path().extension().is_none_or(|x| x != "lock") {
            n += 1;
        }
    }
    n
}

fn quarantined(root: &Path) -> usize {
    std::fs::read_dir(root.join("quarantine")).unwrap().count()
}

#[test]
fn every_op_and_errno_on_the_write_path() {
    for op in FaultOp::ALL {
        for errno in ERRNOS {
            let case = format!("{} {errno}", op.name());
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("b");
            let io = BackingIo::default();
            let s = open(&root, CONFIG, &io).unwrap();
            write(&s, "k", b"old").unwrap();
            write(&s, "other", b"x").unwrap();
            write(&s, "t", b"truncate me").unwrap();
            write(&s, "gone", b"remove me").unwrap();
            write(&s, "from", b"move me").unwrap();

            io.inject(op, errno, None);
            let rewrite = write(&s, "k", b"new content");
            let appended = append(&s, "other", b"+");
            let created = write(&s, "fresh", b"fresh");
            let truncate = MetaUpdate {
                truncate: Some(3),
                ..MetaUpdate::default()
            };
            let truncated = s.update(&ns(), &key("t"), truncate).map(|_| ());
            let removed = s.remove(&ns(), &key("gone"));
            let renamed = s.rename(&ns(), &key("from"), &key("to"), false);
            io.lift();

            let stats = s.stats();
            let evicted = stats.total.evictions;
            let outcomes = [
                (
                    "k",
                    rewrite.as_ref().map(|_| ()),
                    Some(&b"old"[..]),
                    Some(&b"new content"[..]),
                ),
                (
                    "other",
                    appended.as_ref().map(|_| ()),
                    Some(b"x"),
                    Some(b"x+"),
                ),
                ("fresh", created.as_ref().map(|_| ()), None, Some(b"fresh")),
                (
                    "t",
                    truncated.as_ref().map(|_| ()),
                    Some(b"truncate me"),
                    Some(b"tru"),
                ),
                (
                    "gone",
                    removed.as_ref().map(|_| ()),
                    Some(b"remove me"),
                    None,
                ),
                ("from", renamed.as_ref().map(|_| ()), Some(b"move me"), None),
                ("to", renamed.as_ref().map(|_| ()), None, Some(b"move me")),
            ];
            for (k, r, old, new) in outcomes {
                let now = read(&s, k).ok();
                match r {
                    // A later write's full volume may have evicted it.
                    Ok(()) => assert!(
                        now.as_deref() == new
                            || (now.is_none() && evicted > 0)
                            // An earlier write's full volume evicted the
                            // base before the append began: it appended
                            // to nothing (a new key's publish is a link,
                            // which a rename fault does not stop).
                            || (k == "other" && now.as_deref() == Some(b"+") && evicted > 0),
                        "{case}: {k} left {now:?}"
                    ),
                    // Evicted by an earlier write's full volume (counted).
                    Err(StoreError::NotFound) if evicted > 0 && now.is_none() => {}
                    Err(e) => {
                        let want = if errno == libc::EIO {
                            libc::EIO
                        } else {
                            libc::ENOSPC
                        };
                        assert_eq!(errno_of(e), want, "{case}: {k}: {e:?}");
                        // An fsync of the directory fails after the
                        // rename: the new version is whole, and the
                        // writer is told it may not be durable.
                        let whole = now.as_deref() == old
                            || (op == FaultOp::Fsync && now.as_deref() == new)
                            // Evicted to make room (counted).
                            || (now.is_none() && evicted > 0);
                        assert!(whole, "{case}: {k} left {now:?}");
                    }
                }
            }
            // Refused writes: a rename republishes, an unlink writes nothing.
            let refused = |r: Result<(), &StoreError>| r.is_err_and(|e| errno_of(e) != 0);
            let failed = [
                refused(rewrite.as_ref().map(|_| ())),
                refused(appended.as_ref().map(|_| ())),
                refused(created.as_ref().map(|_| ())),
                refused(truncated.as_ref().map(|_| ())),
                refused(renamed.as_ref().map(|_| ())),
            ]
            .into_iter()
            .filter(|&e| e)
            .count() as u64;
            if errno != libc::EIO {
                assert_eq!(stats.total.rejected_writes.enospc, failed, "{case}");
            } else {
                assert_eq!(stats.total.rejected_writes.enospc, 0, "{case}");
            }
            if matches!(rewrite, Err(StoreError::NoSpace)) {
                assert!(stats.backing_full > 0, "{case}: not counted");
            }
            assert_eq!(staged_files(&root), 0, "{case}: staging left behind");
            assert_eq!(index_of(&s), disk_of(&root), "{case}: index and disk");
            s.check_invariants();

            // Lifted: the store serves as before.
            write(&s, "k", b"after").unwrap();
            assert_eq!(read(&s, "k").unwrap(), b"after", "{case}");
            append(&s, "k", b"!").unwrap();
            assert_eq!(read(&s, "k").unwrap(), b"after!", "{case}");
            assert_eq!(index_of(&s), disk_of(&root), "{case}: after");
            assert_eq!(quarantined(&root), 0, "{case}");
        }
    }
}

#[test]
fn a_read_that_fails_is_eio_and_moves_nothing() {
    for op in [FaultOp::Open, FaultOp::Read] {
        for errno in ERRNOS {
            let case = format!("{} {errno}", op.name());
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("b");
            let io = BackingIo::default();
            let s = open(&root, CONFIG, &io).unwrap();
            write(&s, "k", b"content").unwrap();
            drop(s);
            // A start after a crash: the first open checks the content.
            let s = open(&root, CONFIG, &io).unwrap();
            io.inject(op, errno, None);
            let e = read(&s, "k").unwrap_err();
            assert!(
                matches!(&e, StoreError::Io(io) if io.raw_os_error() == Some(errno)),
                "{case}: {e:?}"
            );
            io.lift();
            assert_eq!(quarantined(&root), 0, "{case}: a good entry quarantined");
            assert_eq!(s.stats().corrupt_entries, 0, "{case}");
            assert_eq!(read(&s, "k").unwrap(), b"content", "{case}");
            // Now hot (checked, shared): a read that fails still fails
            // with the volume's errno.
            let h = s.open_read(&ns(), &key("k")).unwrap();
            io.inject(FaultOp::Read, errno, Some(1));
            let e = h.read_at(0, 100).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(errno), "{case}");
            assert_eq!(h.read_at(0, 100).unwrap(), b"content", "{case}");
        }
    }
}

#[test]
fn a_backing_dir_that_cannot_be_listed_is_not_opened_on_a_partial_index() {
    for errno in ERRNOS {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let io = BackingIo::default();
        let s = open(&root, CONFIG, &io).unwrap();
        for i in 0..5 {
            write(&s, &format!("k{i}"), b"v").unwrap();
        }
        drop(s);
        io.inject(FaultOp::ReadDir, errno, None);
        let e = open(&root, CONFIG, &io).err().expect("opened blind");
        assert!(matches!(e, OpenError::Io { .. }), "{errno}: {e}");
        io.lift();
        let s = open(&root, CONFIG, &io).unwrap();
        assert_eq!(index_of(&s).len(), 5, "{errno}");
        assert_eq!(quarantined(&root), 0);
    }
}

#[test]
fn a_full_volume_makes_room_by_eviction_and_retries() {
    for errno in [libc::ENOSPC, libc::EDQUOT] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let io = BackingIo::default();
        let s = open(&root, "", &io).unwrap();
        s.create_namespace(b"a", crate::access::NsAccess::of_daemon())
            .unwrap();
        for i in 0..4 {
            write(&s, &format!("k{i}"), &vec![i as u8; 600 << 10]).unwrap();
        }
        // The volume is found full once: the write goes through after the
        // least recently used entries made room.
        io.inject(FaultOp::Write, errno, Some(1));
        let big = vec![9u8; 1 << 20];
        write(&s, "big", &big).unwrap();
        assert_eq!(read(&s, "big").unwrap(), big);
        let stats = s.stats();
        assert_eq!(stats.backing_full, 1, "{errno}");
        assert!(stats.total.evictions >= 2, "{errno}: freed at least 1 MiB");
        assert_eq!(stats.total.rejected_writes.enospc, 0);
        assert!(
            read(&s, "k0").is_err(),
            "the least recently used went first"
        );
        assert_eq!(read(&s, "k3").unwrap(), vec![3u8; 600 << 10]);
        assert_eq!(index_of(&s), disk_of(&root));
        s.check_invariants();
    }
}

#[test]
fn a_volume_others_filled_refuses_without_evicting_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, "", &io).unwrap();
    s.create_namespace(b"a", crate::access::NsAccess::of_daemon())
        .unwrap();
    write(&s, "small1", b"one").unwrap();
    write(&s, "small2", b"two").unwrap();
    // Full for good (another process's file took the volume): the cache
    // holds far less than the write needs, so nothing is evicted.
    io.inject(FaultOp::Write, libc::ENOSPC, None);
    let e = write(&s, "big", &vec![1u8; 1 << 20]).unwrap_err();
    assert!(matches!(e, StoreError::NoSpace), "{e:?}");
    io.lift();
    let stats = s.stats();
    assert_eq!(stats.backing_full, 1);
    assert_eq!(stats.total.rejected_writes.enospc, 1);
    assert_eq!(stats.total.evictions, 0);
    assert_eq!(read(&s, "small1").unwrap(), b"one");
    assert_eq!(read(&s, "small2").unwrap(), b"two");
    assert_eq!(staged_files(&root), 0);
    // Room is back: so are writes.
    write(&s, "big", &vec![1u8; 1 << 20]).unwrap();
    assert_eq!(index_of(&s), disk_of(&root));
}

#[test]
fn writes_in_flight_hold_their_bytes_in_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, "[cache]\nmax_bytes = \"1MiB\"\n[namespace.a]\n", &io).unwrap();
    let chunk = vec![7u8; 300 << 10];
    let mut staged = Vec::new();
    for i in 0..3 {
        let mut st = s
            .begin_write(&ns(), &key(&format!("w{i}")), WriteFrom::Empty, OWNER)
            .unwrap();
        s.write_staged(&mut st, 0, &chunk).unwrap();
        staged.push(st);
    }
    // Three writers hold 900 KiB of the 1 MiB: a fourth cannot stage 300.
    let mut fourth = s
        .begin_write(&ns(), &key("w3"), WriteFrom::Empty, OWNER)
        .unwrap();
    let e = s.write_staged(&mut fourth, 0, &chunk).unwrap_err();
    assert!(matches!(e, StoreError::NoSpace), "{e:?}");
    assert_eq!(s.stats().total.rejected_writes.enospc, 1);
    // One gives up: its share is free again.
    drop(staged.pop());
    s.write_staged(&mut fourth, 0, &chunk).unwrap();
    // Published entries hold their share; a new writer's bytes evict them
    // (least recently used first) rather than fail.
    for st in staged.drain(..) {
        s.publish(st).unwrap();
    }
    s.publish(fourth).unwrap();
    let mut next = s
        .begin_write(&ns(), &key("w4"), WriteFrom::Empty, OWNER)
        .unwrap();
    s.write_staged(&mut next, 0, &chunk).unwrap();
    assert_eq!(s.stats().total.evictions, 1);
    assert!(read(&s, "w0").is_err());
    s.publish(next).unwrap();
    assert_eq!(
        s.lock().staged.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let u = s.usage();
    assert!(u.used_bytes <= u.quota_bytes, "{u:?}");
    assert_eq!(index_of(&s), disk_of(&root));
    s.check_invariants();
}

#[test]
fn a_rewrite_stages_against_the_version_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, "[cache]\nmax_bytes = \"1MiB\"\n[namespace.a]\n", &io).unwrap();
    let big = vec![1u8; 700 << 10];
    write(&s, "k", &big).unwrap();
    // Its copy and its old version cannot both fit the quota, but the
    // publish frees the old one: the rewrite neither fails nor evicts it
    // while readers still read it.
    let mut st = s
        .begin_write(&ns(), &key("k"), WriteFrom::Current, OWNER)
        .unwrap();
    s.append_staged(&mut st, b"tail").unwrap();
    assert_eq!(read(&s, "k").unwrap(), big);
    s.publish(st).unwrap();
    assert_eq!(read(&s, "k").unwrap().len(), big.len() + 4);
    assert_eq!(s.stats().total.evictions, 0);
}

#[test]
fn the_quota_keeps_headroom_below_what_the_volume_holds() {
    use super::room::effective_quota;
    const MIB: u64 = 1 << 20;
    assert_eq!(effective_quota(u64::MAX, 16 * MIB), 15 * MIB);
    assert_eq!(effective_quota(u64::MAX, 32 * MIB), 30 * MIB);
    assert_eq!(effective_quota(u64::MAX, 1 << 40), (1 << 40) - 256 * MIB);
    assert_eq!(effective_quota(100 * MIB, 1 << 40), 100 * MIB);
    assert_eq!(effective_quota(u64::MAX, MIB / 2), 0);
}

#[test]
fn a_publish_whose_rename_finds_the_volume_full_makes_room_and_retries() {
    // A new key's publish: an unnamed staging file linked into place, or
    // (a filesystem without O_TMPFILE) a named one renamed.
    let cases = [
        (FaultOp::Rename, true),
        (FaultOp::Create, true),
        (FaultOp::Mkdir, false),
        (FaultOp::Link, false),
        (FaultOp::Tmpfile, false),
    ];
    for (op, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let io = BackingIo::default();
        let s = open(&root, "", &io).unwrap();
        if named {
            io.inject(FaultOp::Tmpfile, libc::EOPNOTSUPP, Some(1));
        }
        s.create_namespace(b"a", crate::access::NsAccess::of_daemon())
            .unwrap();
        for i in 0..3 {
            write(&s, &format!("k{i}"), &vec![i as u8; 600 << 10]).unwrap();
        }
        io.inject(op, libc::ENOSPC, Some(1));
        write(&s, "new", b"fits once room is made").unwrap();
        let stats = s.stats();
        assert_eq!(stats.backing_full, 1, "{}", op.name());
        assert!(stats.total.evictions >= 1, "{}", op.name());
        assert_eq!(read(&s, "new").unwrap(), b"fits once room is made");
        assert_eq!(index_of(&s), disk_of(&root), "{}", op.name());
        s.check_invariants();
    }
}
