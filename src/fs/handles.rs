//! Open file handles: readers of a published version, writers' staging
//! files, rendered control files, and directory listings; plus the
//! registry of in-flight writers by key (for O_EXCL, for abandoning the
//! writes of an unlinked key, and for a TTL set on a file being written).
//!
//! Lock order: `writers` before any `WriteState` mutex; neither is held
//! across a store call that publishes.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use fuser::{Errno, FileType};

use crate::store::{Key, Namespace, ReadHandle, StagingFile};

/// Stands for "whoever" when a write arrives without a lock owner.
pub const ANY_OWNER: u64 = u64::MAX;

pub struct WriteState {
    pub ns: Namespace,
    pub key: Key,
    /// `None` once published (or failed); a later write starts a new copy.
    pub staging: Option<StagingFile>,
    pub append: bool,
    /// The failure `close()` must report; sticky.
    pub failed: Option<Errno>,
    /// Written (or truncated) since the last publish.
    pub dirty: bool,
    /// Lock owners (one per process file table) that wrote through this
    /// handle. Only their `close()` publishes: a forked child closing its
    /// inherited copy at exec, or a shell closing the fd it just dup2'ed,
    /// must not publish a half-written or still-empty file. Release
    /// publishes whatever is still pending.
    pub writer_owners: Vec<u64>,
    /// The thread that opened it: an unwritten exclusive create is
    /// published by its creator's close, not by a forked child's.
    pub creator_pid: u32,
    /// The version an unwritten close published (a shell's open, dup2,
    /// close before writing); withdrawn if a later write fails.
    pub published_empty: Option<u64>,
    /// Unlinked while being written: publish nothing.
    pub cancelled: bool,
    /// The inode the kernel holds for this handle.
    pub ino: u64,
}

impl WriteState {
    /// Whether a flush from `lock_owner` (thread `pid`) is the writer's
    /// own `close()`.
    pub fn is_closed_by_writer(&self, lock_owner: u64, pid: u32) -> bool {
        if self.failed.is_some() {
            return true;
        }
        if !self.dirty {
            return false;
        }
        if self.writer_owners.is_empty() {
            return pid == self.creator_pid;
        }
        self.writer_owners
            .iter()
            .any(|&o| o == lock_owner || o == ANY_OWNER)
    }
}

pub struct DirEntryItem {
    pub ino: u64,
    pub kind: FileType,
    pub name: OsString,
}

pub enum Handle {
    Read(ReadHandle),
    Write(Box<Mutex<WriteState>>),
    Control(Vec<u8>),
    Dir(Vec<DirEntryItem>),
}

impl Handle {
    pub fn write_state(&self) -> Option<MutexGuard<'_, WriteState>> {
        match self {
            Handle::Write(m) => Some(m.lock().unwrap_or_else(|p| p.into_inner())),
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
}

impl HandleTable {
    pub fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let key = match &h {
            Handle::Write(m) => {
                let s = m.lock().unwrap_or_else(|p| p.into_inner());
                Some((s.ns.clone(), s.key.clone(), s.ino))
            }
            _ => None,
        };
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(h));
        self.open.fetch_add(1, Ordering::Relaxed);
        if let Some((ns, key, ino)) = key {
            self.writers_lock().entry((ns, key)).or_default().push(fh);
            *self
                .writer_inos
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(ino)
                .or_default() += 1;
        }
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Arc<Handle>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        let h = self
            .map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh)?;
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(s) = h.write_state() {
            let mut inos = self.writer_inos.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = inos.get_mut(&s.ino) {
                *n -= 1;
                if *n == 0 {
                    inos.remove(&s.ino);
                }
            }
            drop(inos);
            let mut writers = self.writers_lock();
            let k = (s.ns.clone(), s.key.clone());
            if let Some(v) = writers.get_mut(&k) {
                v.retain(|&x| x != fh);
                if v.is_empty() {
                    writers.remove(&k);
                }
            }
        }
        Some(h)
    }

    pub fn open_count(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.open)
    }

    fn writers_lock(&self) -> MutexGuard<'_, HashMap<(Namespace, Key), Vec<u64>>> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles of everyone writing `key` right now.
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
        self.writer_inos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&ino)
    }

    /// Someone has content of `key` staged: written or claimed, not yet
    /// published. A handle whose close published it is not (its RELEASE
    /// arrives later, after close() has returned).
    pub fn is_being_written(&self, ns: &Namespace, key: &Key) -> bool {
        self.writers_of(ns, key)
            .iter()
            .any(|h| h.write_state().is_some_and(|s| s.staging.is_some()))
    }
}
