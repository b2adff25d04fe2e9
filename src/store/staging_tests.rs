//! Staging files: unnamed (O_TMPFILE) where the backing filesystem has
//! it, named where it refuses (the fault seam plays such a filesystem);
//! both publish new keys and replacements whole, leave nothing in
//! staging, and several writers at once publish every key.

use std::path::Path;
use std::sync::Arc;

use super::backing::{BackingIo, FaultOp};
use super::*;
use crate::config::Config;

const OWNER: Owner = Owner {
    uid: 0,
    gid: 0,
    mode: 0o644,
};

fn open(root: &Path, io: &BackingIo) -> Store {
    let clock = Arc::new(ManualClock::new(1_800_000_000 * 1_000_000_000));
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

fn write(s: &Store, k: &str, data: &[u8]) -> Result<EntryInfo, StoreError> {
    let mut st = s.begin_write(&ns(), &key(k), WriteFrom::Empty, OWNER)?;
    s.write_staged(&mut st, 0, data)?;
    s.publish(st)
}

fn read(s: &Store, k: &str) -> Vec<u8> {
    let h = s.open_read(&ns(), &key(k)).unwrap();
    h.read_at(0, 1 << 20).unwrap()
}

/// Names in the staging dirs, session lock files aside.
fn staged_names(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root.join("staging")).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(
                std::fs::read_dir(e.path())
                    .unwrap()
                    .flatten()
                    .map(|f| f.path()),
            );
        } else if e.path().extension().is_none_or(|x| x != "lock") {
            out.push(e.path());
        }
    }
    out
}

fn new_then_replace(s: &Store, root: &Path) {
    write(s, "k", b"first").unwrap();
    assert_eq!(read(s, "k"), b"first");
    write(s, "k", b"second, longer").unwrap();
    assert_eq!(read(s, "k"), b"second, longer");
    // A write in progress, then dropped: nothing of it anywhere.
    let mut st = s
        .begin_write(&ns(), &key("gone"), WriteFrom::Empty, OWNER)
        .unwrap();
    s.write_staged(&mut st, 0, b"never published").unwrap();
    drop(st);
    assert!(matches!(s.entry_info(&ns(), &key("gone")), Lookup::Miss));
    assert_eq!(staged_names(root), Vec::<std::path::PathBuf>::new());
}

#[test]
fn unnamed_staging_files_publish_and_leave_no_name_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, &io);
    let mut st = s
        .begin_write(&ns(), &key("k"), WriteFrom::Empty, OWNER)
        .unwrap();
    // The filesystem of a test's temp dir has O_TMPFILE (ext4, tmpfs,
    // xfs, btrfs): the file being written has no name.
    assert!(st.path.is_none(), "staging file is named: {:?}", st.path);
    assert_eq!(staged_names(&root), Vec::<std::path::PathBuf>::new());
    s.write_staged(&mut st, 0, b"x").unwrap();
    s.publish(st).unwrap();
    new_then_replace(&s, &root);
    assert!(s.layout.unnamed.load(std::sync::atomic::Ordering::Relaxed));
}

#[test]
fn a_filesystem_without_o_tmpfile_gets_named_staging_files() {
    for errno in [libc::EOPNOTSUPP, libc::EISDIR, libc::EINVAL] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let io = BackingIo::default();
        let s = open(&root, &io);
        io.inject(FaultOp::Tmpfile, errno, None);
        let st = s
            .begin_write(&ns(), &key("k"), WriteFrom::Empty, OWNER)
            .unwrap();
        let path = st.path.clone().expect("a named staging file");
        assert!(path.exists());
        drop(st);
        assert!(!path.exists(), "a dropped write left {path:?}");
        new_then_replace(&s, &root);
        assert!(!s.layout.unnamed.load(std::sync::atomic::Ordering::Relaxed));
        // Told once: no O_TMPFILE is tried again.
        io.lift();
        let st = s
            .begin_write(&ns(), &key("k"), WriteFrom::Empty, OWNER)
            .unwrap();
        assert!(st.path.is_some());
    }
}

#[test]
fn another_failure_of_o_tmpfile_is_the_writer_s_error_not_a_switch() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, &io);
    io.inject(FaultOp::Tmpfile, libc::EIO, Some(1));
    let r = s.begin_write(&ns(), &key("k"), WriteFrom::Empty, OWNER);
    assert!(matches!(r, Err(StoreError::Io(ref e)) if e.raw_os_error() == Some(libc::EIO)));
    assert!(s.layout.unnamed.load(std::sync::atomic::Ordering::Relaxed));
    write(&s, "k", b"ok").unwrap();
    assert_eq!(read(&s, "k"), b"ok");
}

#[test]
fn a_name_the_index_does_not_know_is_replaced_by_a_new_key_s_publish() {
    // Another daemon's publish, not yet in this one's index: the link
    // finds the name taken, and the publish replaces it as a rename does.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, &io);
    let dest = s.layout.entry_path(&ns(), &key("k"));
    s.layout.ensure_shard(&dest).unwrap();
    std::fs::write(&dest, b"someone else's bytes").unwrap();
    write(&s, "k", b"mine").unwrap();
    assert_eq!(read(&s, "k"), b"mine");
    assert_eq!(staged_names(&root), Vec::<std::path::PathBuf>::new());
}

#[test]
fn writers_at_once_each_publish_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, &io);
    std::thread::scope(|t| {
        for w in 0..8 {
            let s = &s;
            t.spawn(move || {
                for i in 0..50 {
                    let body = format!("writer {w} entry {i}");
                    write(s, &format!("w{w}-{i}"), body.as_bytes()).unwrap();
                    // Every fifth also rewrites a key all writers share.
                    if i % 5 == 0 {
                        write(s, "shared", body.as_bytes()).unwrap();
                    }
                }
            });
        }
    });
    for w in 0..8 {
        for i in 0..50 {
            assert_eq!(
                read(&s, &format!("w{w}-{i}")),
                format!("writer {w} entry {i}").as_bytes()
            );
        }
    }
    // Whole, one writer's: never a mix of two.
    let shared = String::from_utf8(read(&s, "shared")).unwrap();
    let whole = (0..8).any(|w| (0..50).any(|i| shared == format!("writer {w} entry {i}")));
    assert!(whole, "{shared:?}");
    assert_eq!(staged_names(&root), Vec::<std::path::PathBuf>::new());
}

/// Polls `cond` until it holds or 10 s pass.
fn soon(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    cond()
}

#[test]
fn a_started_stager_hands_writers_unnamed_files_made_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, &io);
    s.start_stager();
    // Full, so the thread rests: what is taken now is not made up for.
    assert!(
        soon(|| s.stage_pool.ready() == stage_pool::TARGET),
        "no files made ahead"
    );
    // From now on no create can succeed: a write still begins, with a
    // file the stager made before.
    io.inject(FaultOp::Tmpfile, libc::EIO, None);
    let before = s.stage_pool.ready();
    let mut st = s
        .begin_write(&ns(), &key("k"), WriteFrom::Empty, OWNER)
        .unwrap();
    assert_eq!(s.stage_pool.ready(), before - 1);
    assert!(st.path.is_none(), "a pooled file is unnamed: {:?}", st.path);
    s.write_staged(&mut st, 0, b"made ahead").unwrap();
    s.publish(st).unwrap();
    assert_eq!(read(&s, "k"), b"made ahead");
    io.lift();
    // Many writes in a row: the refills keep up, every key publishes whole.
    for i in 0..100 {
        write(&s, &format!("n{i}"), format!("value {i}").as_bytes()).unwrap();
    }
    for i in 0..100 {
        assert_eq!(read(&s, &format!("n{i}")), format!("value {i}").as_bytes());
    }
    assert_eq!(staged_names(&root), Vec::<std::path::PathBuf>::new());
    s.end_session();
    assert_eq!(
        s.stage_pool.ready(),
        0,
        "the stop closes what was made ahead"
    );
}

#[test]
fn a_stager_that_cannot_make_files_leaves_the_error_to_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, &io);
    io.inject(FaultOp::Tmpfile, libc::EIO, None);
    s.start_stager();
    // Its refusal is not a switch to named files, and the writer's own
    // create reports it.
    let r = s.begin_write(&ns(), &key("k"), WriteFrom::Empty, OWNER);
    assert!(matches!(r, Err(StoreError::Io(ref e)) if e.raw_os_error() == Some(libc::EIO)));
    assert_eq!(s.stage_pool.ready(), 0);
    assert!(s.layout.unnamed.load(std::sync::atomic::Ordering::Relaxed));
    io.lift();
    write(&s, "k", b"room again").unwrap();
    assert_eq!(read(&s, "k"), b"room again");
    // The stager fills again once its pause is over and a writer asks.
    assert!(soon(|| {
        let _ = write(&s, "again", b"x");
        s.stage_pool.ready() > 0
    }));
    s.end_session();
}

#[test]
fn a_stager_on_a_filesystem_without_o_tmpfile_makes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, &io);
    io.inject(FaultOp::Tmpfile, libc::EOPNOTSUPP, None);
    s.start_stager();
    let st = s
        .begin_write(&ns(), &key("k"), WriteFrom::Empty, OWNER)
        .unwrap();
    assert!(st.path.is_some(), "named where O_TMPFILE is refused");
    drop(st);
    io.lift();
    new_then_replace(&s, &root);
    assert_eq!(s.stage_pool.ready(), 0);
    s.end_session();
}

#[test]
fn a_new_key_s_shard_is_made_while_its_writer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let io = BackingIo::default();
    let s = open(&root, &io);
    s.start_stager();
    let dest = s.layout.entry_path(&ns(), &key("fresh"));
    let shard = dest.parent().unwrap().to_path_buf();
    assert!(!shard.exists());
    // A user's write (the store's own copies write known keys).
    let w = NewWrite::by(std::process::id(), WriteFrom::Empty, OWNER);
    let mut st = s.start_write(&ns(), &key("fresh"), w).unwrap();
    assert!(
        soon(|| shard.is_dir()),
        "{shard:?} not made before the publish"
    );
    // Known as made: the publish makes no `stat` of it.
    assert!(
        soon(|| s.layout.shard_known(&dest)),
        "{shard:?} made but not known"
    );
    // Nothing else in it yet: the entry appears at its publish only.
    assert_eq!(std::fs::read_dir(&shard).unwrap().count(), 0);
    s.write_staged(&mut st, 0, b"in a shard made ahead")
        .unwrap();
    s.publish(st).unwrap();
    assert_eq!(read(&s, "fresh"), b"in a shard made ahead");
    assert!(dest.is_file());
    s.end_session();
}
