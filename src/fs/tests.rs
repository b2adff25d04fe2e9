//! The filesystem core without a mount: each request family called as the
//! adapter calls it, on a store in a temp dir, with answers that wait
//! collected from a channel and the kernel's cache recorded.

use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use super::inodes::{CONTROL_DIR, ROOT, STATS_JSON};
use super::types::*;
use super::writer::{Stage, Writer, WriterOpen};
use super::{CacheFs, ENTRY_CACHE_MAX, XATTR_PURGE, XATTR_PURGED};
use crate::config::Config;
use crate::store::{Key, ManualClock, Namespace, Owner, Store};

const T0: i64 = 1_800_000_000 * 1_000_000_000;

/// A Replier that hands the answer to the test.
struct Chan<T>(Sender<Result<T, Errno>>);

impl<T: Send + 'static> Replier<T> for Chan<T> {
    fn reply(self, r: Result<T, Errno>) {
        let _ = self.0.send(r);
    }
}

/// Calls a handler that answers through a Replier and waits for it.
fn answer<T: Send + 'static>(call: impl FnOnce(Chan<T>)) -> Result<T, Errno> {
    let (tx, rx) = channel();
    call(Chan(tx));
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the handler answers")
}

/// The kernel's cache: which names it was told to forget. A name in
/// `held` is forgotten only once it leaves it (a drop that waits for its
/// directory's lock, which another process holds).
#[derive(Default, Clone)]
struct Kernel(Arc<Mutex<Vec<(u64, OsString)>>>, Held);

type Held = Arc<(Mutex<Vec<OsString>>, Condvar)>;

impl KernelCache for Kernel {
    fn forget_entry(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        let (held, cv) = &*self.1;
        let mut h = held.lock().unwrap();
        while h.iter().any(|n| n == name) {
            h = cv.wait(h).unwrap();
        }
        self.0.lock().unwrap().push((parent, name.to_owned()));
        Ok(())
    }
}

impl Kernel {
    fn hold(&self, name: &str) {
        self.1.0.lock().unwrap().push(name.into());
    }

    fn release_all(&self) {
        self.1.0.lock().unwrap().clear();
        self.1.1.notify_all();
    }

    fn forgot(&self, parent: u64, name: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(p, n)| *p == parent && n == name)
    }
}

struct Fx {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Arc<Store>,
    fs: CacheFs,
    kernel: Kernel,
}

const ME: Ctx = Ctx {
    uid: 0,
    gid: 0,
    pid: 100,
};
const OTHER: Ctx = Ctx {
    uid: 0,
    gid: 0,
    pid: 200,
};

fn fx(config: &str) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = Arc::new(
        Store::open(
            &dir.path().join("b"),
            Config::parse(config).unwrap(),
            clock.clone(),
        )
        .unwrap(),
    );
    let fs = CacheFs::new(Arc::clone(&store));
    let kernel = Kernel::default();
    let _ = fs.kernel_slot().set(Box::new(kernel.clone()));
    Fx {
        _dir: dir,
        clock,
        store,
        fs,
        kernel,
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

impl Fx {
    fn ns_ino(&self, name: &str) -> u64 {
        self.fs.lookup(&ME, ROOT, os(name)).unwrap().attr.ino
    }

    /// create, write, close: the key's published inode.
    fn put(&self, ns: &str, key: &str, data: &[u8]) -> u64 {
        let c = self
            .fs
            .create(
                &ME,
                self.ns_ino(ns),
                os(key),
                0o644,
                0o022,
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
            )
            .unwrap();
        assert_eq!(
            self.fs.write(c.opened.fh, 0, data, Some(1)),
            Ok(data.len() as u32)
        );
        answer(|r| self.fs.flush(&ME, c.opened.fh, 1, r)).unwrap();
        self.fs.release(c.opened.fh);
        c.entry.attr.ino
    }

    /// lookup, open, read all, release.
    fn get(&self, ctx: &Ctx, ns: &str, key: &str) -> Result<Vec<u8>, Errno> {
        let e = self.fs.lookup(ctx, self.ns_ino(ns), os(key))?;
        let o = answer(|r| self.fs.open(ctx, e.attr.ino, libc::O_RDONLY, r))?;
        let data = answer(|r| self.fs.read(o.fh, 0, 1 << 20, r));
        self.fs.release(o.fh);
        data
    }
}

#[test]
fn lookups_answer_namespaces_keys_and_misses() {
    let f = fx("[namespace.a]\nttl = \"30s\"\n");
    assert_eq!(
        f.fs.lookup(&ME, ROOT, os(".cachefs")).unwrap().attr.ino,
        CONTROL_DIR
    );
    assert_eq!(f.fs.lookup(&ME, ROOT, os("nope")), Err(Errno::ENOENT));
    let long = "x".repeat(256);
    assert_eq!(f.fs.lookup(&ME, ROOT, os(&long)), Err(Errno::ENAMETOOLONG));
    let a = f.ns_ino("a");
    assert_eq!(f.fs.lookup(&ME, a, os(&long)), Err(Errno::ENAMETOOLONG));
    assert_eq!(f.fs.lookup(&ME, a, os("k")), Err(Errno::ENOENT));
    // The kernel's revalidation, then a fresh lookup: one miss.
    assert_eq!(f.fs.lookup(&ME, a, os("k")), Err(Errno::ENOENT));
    assert_eq!(f.store.stats().namespaces["a"].misses, 1);
    let ino = f.put("a", "k", b"hello");
    // A stale name read, then at once written: still one miss (the
    // create takes back only a miss its own lookup just counted).
    assert_eq!(f.store.stats().namespaces["a"].misses, 1);
    f.fs.lookup(&OTHER, a, os("j")).unwrap_err();
    assert_eq!(f.store.stats().namespaces["a"].misses, 2);
    f.fs.create(&OTHER, a, os("j"), 0o644, 0, libc::O_CREAT | libc::O_WRONLY)
        .unwrap();
    assert_eq!(f.store.stats().namespaces["a"].misses, 1);
    let e = f.fs.lookup(&ME, a, os("k")).unwrap();
    assert_eq!((e.attr.ino, e.attr.size), (ino, 5));
    // Cached until it expires, never past it.
    assert_eq!(e.entry_ttl, Duration::from_secs(30));
    f.clock.advance(Duration::from_secs(31));
    let third = Ctx { pid: 300, ..ME };
    assert_eq!(f.fs.lookup(&third, a, os("k")), Err(Errno::ENOENT));
    assert_eq!(f.store.stats().namespaces["a"].expired_misses, 1);
    assert_eq!(f.fs.lookup(&ME, ino, os("k")), Err(Errno::ENOTDIR));
}

#[test]
fn a_key_being_written_is_not_cached_and_exclusive_creates_are_refused() {
    let f = fx("[namespace.a]\n");
    let a = f.ns_ino("a");
    f.put("a", "k", b"v1");
    assert_eq!(
        f.fs.lookup(&ME, a, os("k")).unwrap().entry_ttl,
        ENTRY_CACHE_MAX
    );
    let excl = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
    assert_eq!(
        f.fs.create(&ME, a, os("k"), 0o644, 0, excl).err(),
        Some(Errno::EEXIST)
    );
    let c =
        f.fs.create(&ME, a, os("k"), 0o644, 0, libc::O_CREAT | libc::O_WRONLY)
            .unwrap();
    assert_eq!(
        f.fs.lookup(&OTHER, a, os("k")).unwrap().entry_ttl,
        Duration::ZERO
    );
    // A claimed key that is not yet published.
    let n = f.fs.create(&ME, a, os("new"), 0o644, 0, excl).unwrap();
    assert_eq!(f.fs.lookup(&OTHER, a, os("new")), Err(Errno::ENOENT));
    assert_eq!(
        f.fs.create(&OTHER, a, os("new"), 0o644, 0, excl).err(),
        Some(Errno::EEXIST)
    );
    // Its creator's close publishes it, empty: the claim is a value.
    answer(|r| f.fs.flush(&ME, n.opened.fh, 9, r)).unwrap();
    f.fs.release(n.opened.fh);
    assert_eq!(f.get(&OTHER, "a", "new"), Ok(Vec::new()));
    f.fs.release(c.opened.fh);
}

#[test]
fn a_writer_sees_its_staged_file_and_readers_keep_their_version() {
    let f = fx("[namespace.a]\n");
    let a = f.ns_ino("a");
    let v1 = f.put("a", "k", b"version one");
    let e = f.fs.lookup(&OTHER, a, os("k")).unwrap();
    let reader = answer(|r| f.fs.open(&OTHER, e.attr.ino, libc::O_RDONLY, r)).unwrap();
    assert!(reader.keep_cache && reader.noflush);
    // A writer on the published inode is sent to a new one.
    assert_eq!(
        answer(|r| f.fs.open(&ME, v1, libc::O_WRONLY | libc::O_TRUNC, r)),
        Err(Errno::ESTALE)
    );
    let e2 = f.fs.lookup(&ME, a, os("k")).unwrap();
    assert_ne!(e2.attr.ino, v1);
    assert_eq!((e2.attr.size, e2.entry_ttl), (0, Duration::ZERO));
    let w = answer(|r| {
        f.fs.open(&ME, e2.attr.ino, libc::O_WRONLY | libc::O_TRUNC, r)
    })
    .unwrap();
    assert!(w.direct_io);
    f.fs.write(w.fh, 0, b"two", Some(1)).unwrap();
    // fstat through the writer's handle shows what it staged.
    let st = f.fs.getattr(&ME, e2.attr.ino, Some(w.fh)).unwrap();
    assert_eq!(st.attr.size, 3);
    assert_eq!(answer(|r| f.fs.read(w.fh, 0, 10, r)), Ok(b"two".to_vec()));
    // Everyone else still reads the old version.
    assert_eq!(f.get(&OTHER, "a", "k"), Ok(b"version one".to_vec()));
    answer(|r| f.fs.flush(&ME, w.fh, 1, r)).unwrap();
    f.fs.release(w.fh);
    assert_eq!(f.get(&OTHER, "a", "k"), Ok(b"two".to_vec()));
    // The reader opened before the publish keeps reading what it opened.
    assert_eq!(
        answer(|r| f.fs.read(reader.fh, 0, 100, r)),
        Ok(b"version one".to_vec())
    );
    f.fs.release(reader.fh);
}

#[test]
fn a_failed_write_is_reported_by_every_close_and_leaves_nothing() {
    let f = fx("[namespace.a]\nmax_entry_bytes = \"8B\"\n");
    let a = f.ns_ino("a");
    let c =
        f.fs.create(&ME, a, os("k"), 0o644, 0, libc::O_CREAT | libc::O_WRONLY)
            .unwrap();
    // The shell's `>`: open, dup2, close of the first fd: no empty
    // version is published by the creator's close (others find nothing
    // while the dup holds it)...
    answer(|r| f.fs.flush(&ME, c.opened.fh, 5, r)).unwrap();
    assert_eq!(f.get(&OTHER, "a", "k"), Err(Errno::ENOENT));
    // ...then a write past the limit fails: nothing was published.
    assert_eq!(
        f.fs.write(c.opened.fh, 0, &[1; 9], Some(5)),
        Err(Errno::EFBIG)
    );
    assert_eq!(f.get(&OTHER, "a", "k"), Err(Errno::ENOENT));
    assert_eq!(f.fs.write(c.opened.fh, 0, b"x", Some(5)), Err(Errno::EFBIG));
    assert_eq!(
        answer(|r| f.fs.flush(&ME, c.opened.fh, 5, r)),
        Err(Errno::EFBIG)
    );
    assert_eq!(answer(|r| f.fs.fsync(c.opened.fh, r)), Err(Errno::EFBIG));
    f.fs.release(c.opened.fh);
    assert_eq!(f.store.stats().total.rejected_writes.efbig, 1);
    assert!(f.kernel.forgot(a, "k") || f.store.stats().namespaces["a"].entries == 0);
}

#[test]
fn setattr_changes_a_published_entry_or_the_staged_one() {
    let f = fx("[namespace.a]\n");
    let a = f.ns_ino("a");
    let v = f.put("a", "k", b"0123456789");
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    let r = answer(|r| f.fs.setattr(&ME, v, chmod, None, r)).unwrap();
    assert_eq!((r.attr.ino, r.attr.perm), (v, 0o600));
    // A truncate makes a new version: the old inode answers as it was,
    // and its name is dropped from the kernel before the answer.
    let cut = SetAttr {
        size: Some(4),
        ..SetAttr::default()
    };
    let r = answer(|r| f.fs.setattr(&ME, v, cut, None, r)).unwrap();
    assert_eq!((r.attr.ino, r.attr.size), (v, 10));
    assert!(f.kernel.forgot(a, "k"));
    assert_eq!(f.get(&ME, "a", "k"), Ok(b"0123".to_vec()));
    // On a file being written (by path, without a handle: `utime`), the
    // change goes with the staged content.
    let c =
        f.fs.create(&ME, a, os("w"), 0o644, 0, libc::O_CREAT | libc::O_WRONLY)
            .unwrap();
    let when = std::time::UNIX_EPOCH + Duration::new(4_000_000_000, 5);
    let touch = SetAttr {
        mtime: Some(TimeSet::At(when)),
        ..SetAttr::default()
    };
    answer(|r| f.fs.setattr(&ME, c.entry.attr.ino, touch, None, r)).unwrap();
    answer(|r| f.fs.flush(&ME, c.opened.fh, 1, r)).unwrap();
    f.fs.release(c.opened.fh);
    let e = f.fs.lookup(&ME, a, os("w")).unwrap();
    assert_eq!(e.attr.mtime, when);
}

#[test]
fn the_tree_mkdir_rename_unlink_and_listings() {
    let f = fx("[namespace.a]\n[namespace.b]\n");
    let a = f.ns_ino("a");
    // mkdir: the creator's namespace, the mode asked less the umask;
    // chmod/chown of it (the kernel has checked who may) are kept.
    let user = Ctx {
        uid: 1000,
        gid: 1001,
        pid: 300,
    };
    let made = f.fs.mkdir(&user, ROOT, os("c"), 0o777, 0o027).unwrap();
    assert_eq!(made.attr.ino, f.ns_ino("c"));
    assert_eq!(
        (made.attr.uid, made.attr.gid, made.attr.perm),
        (1000, 1001, 0o750)
    );
    let chmod = SetAttr {
        mode: Some(0o1770),
        gid: Some(7),
        ..SetAttr::default()
    };
    answer(|r| f.fs.setattr(&ME, made.attr.ino, chmod, None, r)).unwrap();
    let now = f.fs.getattr(&ME, made.attr.ino, None).unwrap().attr;
    assert_eq!((now.uid, now.gid, now.perm), (1000, 7, 0o1770));
    assert_eq!(f.fs.getattr(&ME, ROOT, None).unwrap().attr.perm, 0o1777);
    assert_eq!(
        f.fs.mkdir(&ME, ROOT, os("c"), 0o755, 0o022).err(),
        Some(Errno::EEXIST)
    );
    // Keys are paths (issue 15): a directory inside a namespace.
    let sub = f.fs.mkdir(&ME, a, os("sub"), 0o755, 0o022).unwrap();
    assert_eq!(sub.attr.kind, FileKind::Directory);
    assert_eq!(
        f.fs.mkdir(&ME, a, os("sub"), 0o755, 0o022).err(),
        Some(Errno::EEXIST)
    );
    f.fs.rmdir(a, os("sub")).unwrap();
    f.put("a", "x", b"x");
    f.put("a", "y", b"y");
    let b = f.ns_ino("b");
    use super::dirs::RenameMode;
    assert_eq!(
        f.fs.rename(&ME, a, os("x"), b, os("x"), RenameMode::Replace),
        Err(Errno::EXDEV)
    );
    assert_eq!(
        f.fs.rename(&ME, a, os("x"), a, os("y"), RenameMode::NoReplace),
        Err(Errno::EEXIST)
    );
    f.fs.rename(&ME, a, os("x"), a, os("z"), RenameMode::Replace)
        .unwrap();
    assert_eq!(f.get(&ME, "a", "z"), Ok(b"x".to_vec()));
    let d = f.fs.opendir(a).unwrap();
    let mut names = Vec::new();
    f.fs.readdir(d.fh, 0, |_, _, _, n| {
        names.push(n.to_string_lossy().into_owned());
        false
    })
    .unwrap();
    f.fs.releasedir(d.fh);
    names.sort();
    assert_eq!(names, [".", "..", "y", "z"]);
    // An unlink abandons a write in flight: its close publishes nothing.
    let c =
        f.fs.create(&ME, a, os("w"), 0o644, 0, libc::O_CREAT | libc::O_WRONLY)
            .unwrap();
    f.fs.write(c.opened.fh, 0, b"w", Some(1)).unwrap();
    f.fs.unlink(a, os("w")).unwrap();
    answer(|r| f.fs.flush(&ME, c.opened.fh, 1, r)).unwrap();
    f.fs.release(c.opened.fh);
    assert_eq!(f.get(&ME, "a", "w"), Err(Errno::ENOENT));
    assert_eq!(f.fs.rmdir(ROOT, os("a")), Err(Errno::ENOTEMPTY));
    f.fs.rmdir(ROOT, os("c")).unwrap();
    let s = f.fs.statfs(a);
    assert!(s.blocks > 0 && s.bfree <= s.blocks && s.namelen == 255);
}

#[test]
fn xattrs_and_control_files() {
    let f = fx("[namespace.a]\nttl = \"1h\"\n");
    let a = f.ns_ino("a");
    let v = f.put("a", "k", b"abc");
    let ttl = os("user.cachefs.ttl");
    assert_eq!(
        answer(|r| f.fs.getxattr(&ME, v, ttl, 0, r)),
        Ok(XattrReply::Size(4))
    );
    assert_eq!(
        answer(|r| f.fs.getxattr(&ME, v, ttl, 2, r)),
        Err(Errno::ERANGE)
    );
    f.fs.setxattr(&ME, v, ttl, b"60", 0).unwrap();
    assert_eq!(
        answer(|r| f.fs.getxattr(&ME, v, ttl, 64, r)),
        Ok(XattrReply::Data(b"60".to_vec()))
    );
    assert_eq!(f.fs.setxattr(&ME, v, ttl, b"soon", 0), Err(Errno::EINVAL));
    assert_eq!(
        f.fs.setxattr(&ME, v, os("user.cachefs.sha256"), b"0", 0),
        Err(Errno::EPERM)
    );
    let XattrReply::Data(names) = f.fs.listxattr(v, 1024).unwrap() else {
        panic!("names")
    };
    assert_eq!(names.iter().filter(|&&b| b == 0).count(), 4);
    // A purge through the namespace dir, read back by its caller.
    f.fs.setxattr(&ME, a, os(XATTR_PURGE), b"all", 0).unwrap();
    assert_eq!(
        answer(|r| f.fs.getxattr(&ME, a, os(XATTR_PURGED), 64, r)),
        Ok(XattrReply::Data(b"1 4096".to_vec()))
    );
    assert!(f.kernel.forgot(a, "k"));
    // Control files: read-only, rendered at open.
    assert_eq!(
        answer(|r| f.fs.open(&ME, STATS_JSON, libc::O_WRONLY, r)),
        Err(Errno::EACCES)
    );
    let o = answer(|r| f.fs.open(&ME, STATS_JSON, libc::O_RDONLY, r)).unwrap();
    let json = answer(|r| f.fs.read(o.fh, 0, 1 << 20, r)).unwrap();
    assert!(String::from_utf8(json).unwrap().contains("\"namespaces\""));
    f.fs.release(o.fh);
}

#[test]
fn evictions_drop_the_kernels_names() {
    let f = fx("[namespace.a]\nmax_bytes = \"16KiB\"\n");
    let a = f.ns_ino("a");
    f.put("a", "old", &[1; 6000]);
    f.put("a", "mid", &[2; 6000]);
    f.put("a", "new", &[3; 6000]);
    assert!(
        f.kernel.forgot(a, "old"),
        "{:?}",
        f.kernel.0.lock().unwrap()
    );
    assert_eq!(f.get(&ME, "a", "old"), Err(Errno::ENOENT));
}

#[test]
fn every_rewrite_drops_the_name_before_its_close_returns() {
    let f = fx("[namespace.a]\n");
    let a = f.ns_ino("a");
    let v1 = f.put("a", "k", b"one");
    // A reader's answer, cacheable for a minute: it may reach the kernel
    // only after the rewrite below is published.
    let e = f.fs.lookup(&OTHER, a, os("k")).unwrap();
    assert_eq!((e.attr.ino, e.entry_ttl), (v1, ENTRY_CACHE_MAX));
    // A writer redirected to a new inode, which the kernel then holds
    // (the name leads there already, as far as this writer's lookup knows).
    let trunc = libc::O_WRONLY | libc::O_TRUNC;
    assert_eq!(answer(|r| f.fs.open(&ME, v1, trunc, r)), Err(Errno::ESTALE));
    let v2 = f.fs.lookup(&ME, a, os("k")).unwrap().attr.ino;
    let w = answer(|r| f.fs.open(&ME, v2, trunc, r)).unwrap();
    f.fs.write(w.fh, 0, b"two", Some(1)).unwrap();
    f.kernel.0.lock().unwrap().clear();
    answer(|r| f.fs.flush(&ME, w.fh, 1, r)).unwrap();
    assert!(f.kernel.forgot(a, "k"), "dropped before close() returns");
    f.fs.release(w.fh);
    // A writer whose create the kernel holds, likewise.
    let c =
        f.fs.create(&ME, a, os("k"), 0o644, 0, libc::O_CREAT | trunc)
            .unwrap();
    f.fs.write(c.opened.fh, 0, b"three", Some(1)).unwrap();
    f.kernel.0.lock().unwrap().clear();
    answer(|r| f.fs.flush(&ME, c.opened.fh, 1, r)).unwrap();
    assert!(f.kernel.forgot(a, "k"), "dropped before close() returns");
    f.fs.release(c.opened.fh);
    assert_eq!(f.get(&OTHER, "a", "k"), Ok(b"three".to_vec()));
}

#[test]
fn a_close_waits_for_its_own_drops_only() {
    let f = Arc::new(fx("[namespace.a]\n[namespace.b]\n"));
    let a = f.ns_ino("a");
    f.put("b", "other", b"one");
    f.put("a", "k", b"one");
    // Another writer's rewrite, whose drop waits for a lock held elsewhere:
    // its close() waits.
    f.kernel.hold("other");
    let (tx, rx) = channel();
    let f2 = Arc::clone(&f);
    let other = std::thread::spawn(move || {
        f2.put("b", "other", b"two");
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a rewrite's close() waits for its drop"
    );
    // A new key replaces and evicts nothing: its close() does not queue
    // behind that drop.
    let (tx2, rx2) = channel();
    let f3 = Arc::clone(&f);
    let fresh = std::thread::spawn(move || {
        f3.put("a", "new", b"x");
        tx2.send(()).unwrap();
    });
    let quick = rx2.recv_timeout(Duration::from_secs(5));
    // A rewrite of this thread's own key still waits for its drop (queued
    // behind the held one).
    let c =
        f.fs.create(
            &ME,
            a,
            os("k"),
            0o644,
            0,
            libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
        )
        .unwrap();
    f.fs.write(c.opened.fh, 0, b"two", Some(1)).unwrap();
    let (tx3, rx3) = channel();
    f.fs.flush(&ME, c.opened.fh, 1, Chan(tx3));
    let early = rx3.recv_timeout(Duration::from_millis(300));
    f.kernel.release_all();
    other.join().unwrap();
    fresh.join().unwrap();
    assert!(
        quick.is_ok(),
        "a new key's close() waited for another's drop"
    );
    assert!(
        early.is_err(),
        "a rewrite's close() answered before its drop"
    );
    assert_eq!(rx3.recv_timeout(Duration::from_secs(10)), Ok(Ok(())));
    assert!(f.kernel.forgot(a, "k"));
    f.fs.release(c.opened.fh);
}

// ----- the writer's transitions against a model -----

const LIMIT: u64 = 64;

#[derive(Debug, Clone)]
enum Op {
    Write {
        off: u64,
        len: usize,
    },
    Truncate(u64),
    Chmod,
    Publish,
    /// The writer's close of a descriptor (FLUSH): publishes, unless the
    /// writer did nothing but open (then its RELEASE, `Publish`, does).
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..80u64, 0..24usize).prop_map(|(off, len)| Op::Write { off, len }),
        (0..80u64).prop_map(Op::Truncate),
        Just(Op::Chmod),
        Just(Op::Publish),
        Just(Op::Close),
    ]
}

/// What a writer must do: its view, what is published, its failure.
#[derive(Debug, Default)]
struct Model {
    /// The staged bytes, when something is staged.
    staged: Option<Vec<u8>>,
    changed: bool,
    published: Option<Vec<u8>>,
    published_empty: bool,
    failed: Option<Errno>,
    /// Nothing but the open was done through the writer.
    only_opened: bool,
}

impl Model {
    fn restage(&mut self) {
        if self.staged.is_none() {
            self.staged = Some(self.published.clone().unwrap_or_default());
            self.changed = false;
        }
    }

    fn fail(&mut self, e: Errno) -> Result<(), Errno> {
        self.failed = Some(e);
        self.staged = None;
        if self.published_empty {
            self.published = None;
            self.published_empty = false;
        }
        Err(e)
    }

    fn apply(&mut self, op: &Op) -> Result<(), Errno> {
        if matches!(op, Op::Write { .. } | Op::Truncate(_) | Op::Chmod) {
            self.only_opened = false;
        }
        if let Some(e) = self.failed {
            return Err(e);
        }
        match *op {
            Op::Close if self.only_opened => {}
            Op::Close => return self.apply(&Op::Publish),
            Op::Write { off, len } => {
                self.restage();
                if len == 0 {
                    return Ok(());
                }
                if off + len as u64 > LIMIT {
                    return self.fail(Errno::EFBIG);
                }
                let s = self.staged.as_mut().unwrap();
                let end = off as usize + len;
                if s.len() < end {
                    s.resize(end, 0);
                }
                for (i, b) in s[off as usize..end].iter_mut().enumerate() {
                    *b = (off as usize + i) as u8 | 0x80;
                }
                self.changed = true;
            }
            Op::Truncate(size) => {
                self.restage();
                if size > LIMIT {
                    return self.fail(Errno::EFBIG);
                }
                self.staged.as_mut().unwrap().resize(size as usize, 0);
                self.changed = true;
            }
            Op::Chmod => {
                self.restage();
                self.changed = true;
            }
            Op::Publish => {
                if let Some(s) = self.staged.take()
                    && self.changed
                {
                    self.published_empty = s.is_empty();
                    self.published = Some(s);
                }
            }
        }
        Ok(())
    }
}

fn published(store: &Store, ns: &Namespace, key: &Key) -> Option<Vec<u8>> {
    let h = store.open_read(ns, key).ok()?;
    Some(h.read_at(0, 1 << 20).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_writer_follows_its_model(ops in prop::collection::vec(op(), 1..24)) {
        let f = fx(&format!("[namespace.a]\nmax_entry_bytes = \"{LIMIT}B\"\n"));
        let (ns, key) = f.store.resolve(f.store.namespace_id(&Namespace::parse(b"a").unwrap()).unwrap(), b"k", true).unwrap();
        let how = WriterOpen {
            flags: libc::O_CREAT | libc::O_WRONLY,
            owner: Owner { uid: 1, gid: 1, mode: 0o644 },
            version: None,
            pid: 1,
        };
        let mut w = Writer::open(&f.store, ns.clone(), key.clone(), how).unwrap();
        // The create is a change in itself.
        let mut m = Model { staged: Some(Vec::new()), changed: true, only_opened: true, ..Model::default() };
        for op in &ops {
            let want = m.apply(op);
            let got = match *op {
                Op::Write { off, len } => {
                    let data: Vec<u8> = (0..len).map(|i| (off as usize + i) as u8 | 0x80).collect();
                    w.write(&f.store, off, &data, Some(1)).map(|_| ())
                }
                Op::Truncate(size) => {
                    let c = SetAttr { size: Some(size), ..SetAttr::default() };
                    w.change(&f.store, &c).map(|_| ())
                }
                Op::Chmod => {
                    let c = SetAttr { mode: Some(0o600), ..SetAttr::default() };
                    w.change(&f.store, &c).map(|_| ())
                }
                Op::Publish => w.publish(&f.store).map(|_| ()),
                Op::Close => {
                    if w.defer_unwritten() {
                        Ok(())
                    } else {
                        w.publish(&f.store).map(|_| ())
                    }
                }
            };
            prop_assert_eq!(got, want, "{:?}", op);
            match (w.stage(), &m.staged) {
                (Stage::Staged(st), Some(s)) => prop_assert_eq!(st.len(), s.len() as u64),
                (Stage::Staged(_), None) => prop_assert!(false, "staged, model not"),
                (_, Some(_)) => prop_assert!(false, "model staged, writer not"),
                _ => {}
            }
            prop_assert_eq!(published(&f.store, &ns, &key), m.published.clone(), "after {:?}", op);
        }
    }
}

#[test]
fn an_unwritten_close_publishes_at_release_and_its_opener_sees_the_pending_file() {
    let f = fx("[namespace.a]\n");
    let a = f.ns_ino("a");
    f.put("a", "k", b"old");
    // `echo x > k`: the shell opens (O_TRUNC), dup2s, closes the first fd,
    // then writes through the dup and closes it.
    let e = f.fs.lookup(&ME, a, os("k")).unwrap();
    let flags = libc::O_WRONLY | libc::O_TRUNC;
    assert_eq!(
        answer(|r| f.fs.open(&ME, e.attr.ino, flags, r)),
        Err(Errno::ESTALE)
    );
    let e = f.fs.lookup(&ME, a, os("k")).unwrap();
    let w = answer(|r| f.fs.open(&ME, e.attr.ino, flags, r)).unwrap();
    answer(|r| f.fs.flush(&ME, w.fh, 7, r)).unwrap();
    // Nothing published: others still read the old version (after a
    // bounded wait for a RELEASE that does not come), while the opener's
    // own lookup finds the pending, empty file.
    assert_eq!(f.get(&OTHER, "a", "k"), Ok(b"old".to_vec()));
    let mine = f.fs.lookup(&ME, a, os("k")).unwrap();
    assert_eq!((mine.attr.ino, mine.attr.size), (e.attr.ino, 0));
    f.fs.write(w.fh, 0, b"x\n", Some(7)).unwrap();
    answer(|r| f.fs.flush(&ME, w.fh, 7, r)).unwrap();
    assert_eq!(f.get(&OTHER, "a", "k"), Ok(b"x\n".to_vec()));
    f.fs.release(w.fh);
    assert_eq!(f.get(&OTHER, "a", "k"), Ok(b"x\n".to_vec()));

    // `: > k`: closed unwritten, then released: published empty.
    let e = f.fs.lookup(&ME, a, os("k")).unwrap();
    assert_eq!(
        answer(|r| f.fs.open(&ME, e.attr.ino, flags, r)),
        Err(Errno::ESTALE)
    );
    let e = f.fs.lookup(&ME, a, os("k")).unwrap();
    let w = answer(|r| f.fs.open(&ME, e.attr.ino, flags, r)).unwrap();
    answer(|r| f.fs.flush(&ME, w.fh, 7, r)).unwrap();
    f.fs.release(w.fh);
    assert_eq!(f.get(&OTHER, "a", "k"), Ok(Vec::new()));
}

#[test]
fn a_close_by_a_killed_process_publishes_nothing() {
    const KILLED: Ctx = Ctx { pid: 666, ..ME };
    let mut f = fx("[namespace.a]\n");
    f.fs.killed_by_signal = Box::new(|pid| pid == KILLED.pid);
    let a = f.ns_ino("a");
    let excl = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
    // A partial write whose writer is killed: nothing at its close, and
    // its RELEASE drops it.
    f.put("a", "old", b"old");
    let o = f.fs.lookup(&KILLED, a, os("old")).unwrap().attr.ino;
    let w = answer(|r| f.fs.open(&KILLED, o, libc::O_WRONLY | libc::O_TRUNC, r));
    let w = match w {
        Ok(w) => w,
        // Redirected to a new inode: the kernel looks up again.
        Err(Errno::ESTALE) => {
            let o = f.fs.lookup(&KILLED, a, os("old")).unwrap().attr.ino;
            answer(|r| f.fs.open(&KILLED, o, libc::O_WRONLY | libc::O_TRUNC, r)).unwrap()
        }
        Err(e) => panic!("open for write: {e:?}"),
    };
    f.fs.write(w.fh, 0, b"par", Some(6)).unwrap();
    answer(|r| f.fs.flush(&KILLED, w.fh, 6, r)).unwrap();
    assert_eq!(f.get(&OTHER, "a", "old"), Ok(b"old".to_vec()));
    f.fs.release(w.fh);
    assert_eq!(f.get(&OTHER, "a", "old"), Ok(b"old".to_vec()));
    assert_eq!(f.store.stats().killed_writes, 1);
    // A killed claimer: no entry, and the key can be claimed at once.
    let c = f.fs.create(&KILLED, a, os("c"), 0o644, 0, excl).unwrap();
    assert_eq!(
        f.fs.create(&OTHER, a, os("c"), 0o644, 0, excl).err(),
        Some(Errno::EEXIST)
    );
    answer(|r| f.fs.flush(&KILLED, c.opened.fh, 6, r)).unwrap();
    f.fs.release(c.opened.fh);
    assert_eq!(f.get(&OTHER, "a", "c"), Err(Errno::ENOENT));
    let c = f.fs.create(&OTHER, a, os("c"), 0o644, 0, excl).unwrap();
    f.fs.write(c.opened.fh, 0, b"mine", Some(2)).unwrap();
    answer(|r| f.fs.flush(&OTHER, c.opened.fh, 2, r)).unwrap();
    f.fs.release(c.opened.fh);
    assert_eq!(f.get(&ME, "a", "c"), Ok(b"mine".to_vec()));
    assert_eq!(f.store.stats().killed_writes, 2);
    // Shared with a forked child: only the opener's own threads are asked
    // (asking another process can deadlock with its exec), so a child's
    // close, killed or not, is an ordinary close and publishes.
    let c = f.fs.create(&ME, a, os("s"), 0o644, 0, excl).unwrap();
    f.fs.write(c.opened.fh, 0, b"head,", Some(1)).unwrap();
    f.fs.write(c.opened.fh, 5, b"child", Some(6)).unwrap();
    answer(|r| f.fs.flush(&KILLED, c.opened.fh, 6, r)).unwrap();
    assert_eq!(f.get(&OTHER, "a", "s"), Ok(b"head,child".to_vec()));
    answer(|r| f.fs.flush(&ME, c.opened.fh, 1, r)).unwrap();
    assert_eq!(f.get(&OTHER, "a", "s"), Ok(b"head,child".to_vec()));
    f.fs.release(c.opened.fh);
    assert_eq!(f.store.stats().killed_writes, 2);
    // A writer that closed (unwritten: its publish waits for RELEASE)
    // loses nothing when a child sharing the file is killed.
    let c = f.fs.create(&ME, a, os("e"), 0o644, 0, excl).unwrap();
    answer(|r| f.fs.flush(&ME, c.opened.fh, 1, r)).unwrap();
    answer(|r| f.fs.flush(&KILLED, c.opened.fh, 6, r)).unwrap();
    f.fs.release(c.opened.fh);
    assert_eq!(f.get(&OTHER, "a", "e"), Ok(Vec::new()));
    assert_eq!(f.store.stats().killed_writes, 2);
}
