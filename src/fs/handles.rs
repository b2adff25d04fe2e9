//! Open file handles: readers of a published version, writers (see
//! `writer.rs`), rendered control files, and directory listings; plus the
//! registry of open writers by key (for abandoning the writes of an
//! unlinked key, and for changes by path to a file being written).
//!
//! A write handle being released (out of `map`, its RELEASE publishing)
//! is still counted in `releasing` by its inode: a request on that inode
//! after close() (a chmod, utime, xattr, stat by path) waits for it
//! (`wait_released`) and then acts on what it published, never on a
//! moment when the key has neither a writer nor an entry.
//!
//! Lock order: `map`, `writers`, `writer_inos`, `releasing` and `settled` are leaves,
//! never held while a `Writer` mutex is taken; a `Writer` mutex may be
//! held across a store call (its own publish).

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use super::types::FileKind;
use super::writer::Writer;
use crate::store::{Key, Namespace, ReadHandle};

pub struct DirEntryItem {
    pub ino: u64,
    pub kind: FileKind,
    pub name: OsString,
    /// An entry's slot in the index when listed (READDIRPLUS reads it
    /// there, see `store/listing.rs`); `None` for anything else.
    pub slot: Option<u32>,
}

/// An open listing: taken at OPENDIR, or, when the kernel kept its copy,
/// at the first READDIR (if any comes: `fs/dircache.rs`).
pub struct DirListing {
    /// The directory's inode.
    pub dir: u64,
    pub items: std::sync::OnceLock<Vec<DirEntryItem>>,
}

impl DirListing {
    pub fn len(&self) -> usize {
        self.items.get().map_or(0, Vec::len)
    }
}

pub enum Handle {
    Read(ReadHandle),
    Write(Box<Mutex<Writer>>),
    /// A read-only open, by the writer's own process, of a file being
    /// written: reads what that writer (the inner handle) has staged.
    Pending(Arc<Handle>),
    Control(Vec<u8>),
    Dir(DirListing),
}

impl Handle {
    /// A writer's handle (its FLUSH and RELEASE publish), told without
    /// its lock.
    pub fn is_writer(&self) -> bool {
        matches!(self, Handle::Write(_))
    }

    pub fn writer(&self) -> Option<MutexGuard<'_, Writer>> {
        match self {
            Handle::Write(m) => Some(crate::sync::lock(m)),
            _ => None,
        }
    }
}

#[derive(Default)]
pub struct HandleTable {
    next: AtomicU64,
    map: RwLock<HashMap<u64, Arc<Handle>>>,
    /// In-flight writers by key: file handle numbers.
    writers: Mutex<HashMap<(Namespace, Key), Vec<u64>>>,
    /// How many handles are open, readable without the map's lock (a
    /// stopping daemon reports what keeps its mount busy).
    open: Arc<AtomicUsize>,
    /// Kernel inodes of open write handles, with their counts. Apart from
    /// `writers` so a reader's open never waits on a writer's state lock.
    writer_inos: Mutex<HashMap<u64, usize>>,
    /// Kernel inodes of write handles being released, with their counts.
    releasing: Mutex<HashMap<u64, usize>>,
    /// Bumped whenever a writer is released, or one whose publish waits
    /// for its RELEASE writes again; lookups waiting for them wait on
    /// `settle`.
    settled: Mutex<Settled>,
    settle: Condvar,
}

/// The writers' settling, and who waits for it.
#[derive(Default)]
struct Settled {
    generation: u64,
    /// Threads in `wait_settled`'s wait: a `settle_writers` with none
    /// makes no system call (a condvar's notify is a futex wake whether or
    /// not anyone waits, and every publish's release settles).
    waiters: usize,
}

impl HandleTable {
    pub fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let key = match &h {
            Handle::Write(m) => {
                let s = crate::sync::lock(m);
                Some((s.ns.clone(), s.key.clone(), s.ino))
            }
            _ => None,
        };
        crate::sync::write(&self.map).insert(fh, Arc::new(h));
        self.open.fetch_add(1, Ordering::Relaxed);
        if let Some((ns, key, ino)) = key {
            self.writers_lock().entry((ns, key)).or_default().push(fh);
            *crate::sync::lock(&self.writer_inos).entry(ino).or_default() += 1;
        }
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Arc<Handle>> {
        crate::sync::read(&self.map).get(&fh).cloned()
    }

    /// Takes a handle out of the table. A writer stays registered by key
    /// (as being released: listed, not found) until `forget_writer`, once
    /// its last publish is done.
    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        // Counted as being released before it leaves the map, so that a
        // request on its inode finds it one way or the other.
        let ino = self.get(fh)?.writer().map(|w| w.ino);
        if let Some(ino) = ino {
            *crate::sync::lock(&self.releasing).entry(ino).or_default() += 1;
        }
        let Some(h) = crate::sync::write(&self.map).remove(&fh) else {
            if let Some(ino) = ino {
                self.released(ino);
            }
            return None;
        };
        self.open.fetch_sub(1, Ordering::Relaxed);
        Some(h)
    }

    fn released(&self, ino: u64) {
        let mut releasing = crate::sync::lock(&self.releasing);
        if let Some(n) = releasing.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                releasing.remove(&ino);
            }
        }
    }

    /// Waits (until `deadline` at most) while a write handle on inode
    /// `ino` is being released: its RELEASE publishes what the kernel
    /// already reported closed. Says whether it waited.
    pub fn wait_released(&self, ino: u64, deadline: Instant) -> bool {
        let releasing = || crate::sync::lock(&self.releasing).contains_key(&ino);
        if !releasing() {
            return false;
        }
        self.wait_settled(deadline, releasing);
        true
    }

    /// A removed write handle's last publish is done: it is no longer
    /// writing its key, and lookups waiting for it are woken.
    pub fn forget_writer(&self, fh: u64, w: &Writer) {
        let mut inos = crate::sync::lock(&self.writer_inos);
        if let Some(n) = inos.get_mut(&w.ino) {
            *n -= 1;
            if *n == 0 {
                inos.remove(&w.ino);
            }
        }
        drop(inos);
        self.released(w.ino);
        let mut writers = self.writers_lock();
        let k = (w.ns.clone(), w.key.clone());
        if let Some(v) = writers.get_mut(&k) {
            v.retain(|&x| x != fh);
            if v.is_empty() {
                writers.remove(&k);
            }
        }
        drop(writers);
        self.settle_writers();
    }

    /// Wakes the lookups waiting for a deferred writer (see `writer.rs`).
    pub fn settle_writers(&self) {
        let mut s = crate::sync::lock(&self.settled);
        s.generation += 1;
        // Decided under the lock a waiter registers under: none is missed.
        if s.waiters > 0 {
            self.settle.notify_all();
        }
    }

    /// Waits until `pending()` is false (asked again after each
    /// `settle_writers`) or `deadline` passes; says whether it still is.
    pub fn wait_settled(&self, deadline: Instant, mut pending: impl FnMut() -> bool) -> bool {
        loop {
            let seen = crate::sync::lock(&self.settled).generation;
            if !pending() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            if super::workers::wait_here_is_a_bug() {
                // `dispatch.rs` hands every request that can get here to
                // a worker: the request thread waiting stops the mount.
                log::error!("bug: a wait for a writer on the request thread");
            }
            let mut g = crate::sync::lock(&self.settled);
            if g.generation == seen {
                g.waiters += 1;
                let (mut g, _) = self
                    .settle
                    .wait_timeout(g, deadline - now)
                    .unwrap_or_else(|e| e.into_inner());
                g.waiters -= 1;
            }
        }
    }

    /// Whether any file is being written through this mount: lookups
    /// skip the writers' registry while none is.
    pub fn has_writers(&self) -> bool {
        !self.writers_lock().is_empty()
    }

    /// Whether a key under directory `dir` of `ns` ("": anywhere in it) is
    /// being written (or was closed unwritten and awaits its RELEASE, which
    /// publishes it): a directory holding one is not empty.
    pub fn writes_under(&self, ns: &Namespace, dir: &[u8]) -> bool {
        self.writers_lock().keys().any(|(n, k)| {
            let k = k.as_bytes();
            n == ns && (dir.is_empty() || k.starts_with(dir) && k.get(dir.len()) == Some(&b'/'))
        })
    }

    /// A write handle now writes `to` (its writer renamed the file).
    pub fn rekey(&self, fh: u64, ns: &Namespace, from: &Key, to: &Key) {
        let mut writers = self.writers_lock();
        let k = (ns.clone(), from.clone());
        if let Some(v) = writers.get_mut(&k) {
            v.retain(|&x| x != fh);
            if v.is_empty() {
                writers.remove(&k);
            }
        }
        writers
            .entry((ns.clone(), to.clone()))
            .or_default()
            .push(fh);
    }

    /// The handle numbers of everyone writing `key` right now, those being
    /// released included (`get` no longer finds them).
    /// Whether a handle writes (or is being released from writing) `key`.
    pub fn writes_key(&self, ns: &Namespace, key: &Key) -> bool {
        self.writers_lock().contains_key(&(ns.clone(), key.clone()))
    }

    pub fn writer_fhs(&self, ns: &Namespace, key: &Key) -> Vec<u64> {
        self.writers_lock()
            .get(&(ns.clone(), key.clone()))
            .cloned()
            .unwrap_or_default()
    }

    pub fn open_count(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.open)
    }

    fn writers_lock(&self) -> MutexGuard<'_, HashMap<(Namespace, Key), Vec<u64>>> {
        crate::sync::lock(&self.writers)
    }

    /// Handles of everyone writing `key` right now (not those being
    /// released).
    pub fn writers_of(&self, ns: &Namespace, key: &Key) -> Vec<Arc<Handle>> {
        let fhs = self
            .writers_lock()
            .get(&(ns.clone(), key.clone()))
            .cloned()
            .unwrap_or_default();
        fhs.into_iter().filter_map(|fh| self.get(fh)).collect()
    }

    /// Whether a write handle has inode `ino` in the kernel (it published
    /// that version and may write again through it).
    pub fn writes_on_inode(&self, ino: u64) -> bool {
        crate::sync::lock(&self.writer_inos).contains_key(&ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    /// A waiter is woken by the settle that makes its condition false,
    /// long before its deadline (a settle with no one waiting makes no
    /// wake-up, so the count of waiters must be right for this one).
    #[test]
    fn a_settle_wakes_a_waiting_lookup_and_none_is_needed_without_one() {
        let t = Arc::new(HandleTable::default());
        t.settle_writers(); // no waiter: nothing to wake
        let done = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (t, done) = (Arc::clone(&t), Arc::clone(&done));
            std::thread::spawn(move || {
                let start = Instant::now();
                let still = t.wait_settled(start + Duration::from_secs(30), || {
                    !done.load(Ordering::SeqCst)
                });
                (still, start.elapsed())
            })
        };
        // Settles until the waiter is seen waiting, then one that frees it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::sync::lock(&t.settled).waiters == 0 {
            assert!(Instant::now() < deadline, "the waiter never waited");
            std::thread::yield_now();
        }
        done.store(true, Ordering::SeqCst);
        t.settle_writers();
        let (still, took) = waiter.join().unwrap();
        assert!(!still);
        assert!(
            took < Duration::from_secs(10),
            "woken only by its deadline: {took:?}"
        );
        assert_eq!(crate::sync::lock(&t.settled).waiters, 0);
    }
}
