//! The filesystem core: a request comes in as plain values, one store call
//! goes out, and the answer comes back as `Result<T, Errno>` (or through a
//! `Replier`, when it must wait). No fuser type is seen here: `fuse.rs`
//! alone translates the kernel's requests and replies, so everything below
//! it is unit-tested without a mount (`tests.rs`).
//!
//! Kernel cache rules (invariant 3 of the store, enforced here). A hot
//! read is one request (OPEN, which counts the hit and checks the TTL;
//! RELEASE follows after close() has returned):
//! - An entry's inode is one published version, and a version never
//!   changes, so readers open it with `keep_cache`: its pages stay in the
//!   kernel across opens, and `noflush` spares their close a FLUSH.
//! - Its dentry and attributes are cached until the entry expires, at most
//!   `ENTRY_CACHE_MAX`. Misses are not cached (each is a LOOKUP, counted).
//! - Whatever replaces or removes a key drops its dentry before the change
//!   is reported done: a writer's close() returns, a purge finishes, only
//!   once the kernel forgot the old version and what the publish evicted
//!   (`invalidate.rs`; a close() waits for its own drops, not for those
//!   other requests queued); the store tells of every replacement,
//!   eviction and expiry as it happens (`Store::set_change_listener`). An
//!   open that still reaches a version gone meanwhile gets ESTALE, and the
//!   kernel looks up again.
//! - No writer ever opens a published version's inode: O_TRUNC would set
//!   its size to 0 and writes past the end would grow it under its
//!   readers' page cache. Such an open gets ESTALE, and the kernel's
//!   retry (a fresh lookup from the same thread) is given a new inode,
//!   the one its content will be published as (`opens.rs`, redirects).
//!   Writers do direct I/O, so their bytes never enter a page cache.
//!
//! Metrics: the store counts what it decides (hits, misses, refusals);
//! this layer counts only backing I/O errors turned into EIO (`errno.rs`).
//!
//! Files: `types.rs` what handlers answer; `fuse.rs` the adapter (and
//! `fuse_replies.rs` its deferred replies);
//! `entries.rs` LOOKUP, GETATTR, SETATTR; `opens.rs` OPEN, READ, RELEASE;
//! `redirects.rs` writers sent to a new inode; `writes.rs` CREATE, WRITE, FLUSH, FSYNC; `writer.rs` a
//! writer's life; `exits.rs` closes by killed processes;
//! `mknod.rs` MKNOD; `dirs.rs` the tree, listings and STATFS (`dircache.rs`
//! whether the kernel's copy of a listing may serve); `xattrs.rs`;
//! `inodes.rs`, `handles.rs` the tables; `nstimes.rs` namespace times; `invalidate.rs`, `workers.rs` the
//! threads answers may wait on (`dispatch.rs`: which requests go there); `control.rs` the `.cachefs/` files.

mod control;
mod dircache;
mod dirinodes;
mod dirplus;
mod dirs;
mod dispatch;
mod entries;
mod errno;
mod exits;
pub mod fuse;
mod fuse_replies;
mod handles;
mod inodes;
mod invalidate;
mod mknod;
mod nstimes;
mod opens;
mod pace;
mod redirects;
mod subdirs;
pub mod types;
mod workers;
mod writer;
mod writes;
mod xattrs;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::store::{Change, Key, PurgeReport, Store, StoreError};
use handles::HandleTable;
use inodes::InodeTable;
pub use invalidate::KernelSlot;
use types::Errno;
pub use workers::set_request_readers;
pub use xattrs::{XATTR_PURGE, XATTR_PURGED};

/// How long the kernel may cache namespace dentries and directory attrs.
const DIR_TTL: Duration = Duration::from_secs(10);
use types::ENTRY_CACHE_MAX;

pub struct CacheFs {
    store: Arc<Store>,
    inodes: Arc<InodeTable>,
    handles: Arc<HandleTable>,
    uid: u32,
    gid: u32,
    started: SystemTime,
    /// Serialises namespace mkdir/rmdir against each other.
    ns_ops: Mutex<()>,
    /// Each purging process's last result per dir inode.
    purges: Mutex<HashMap<(u32, u64), PurgeReport>>,
    kernel: KernelSlot,
    invalidate: Arc<invalidate::Invalidator>,
    /// Namespace directories' mtime and ctime (see `nstimes.rs`).
    ns_times: Arc<nstimes::NsTimes>,
    /// Directories inside namespaces: their inode numbers (`subdirs.rs`).
    subdirs: Arc<dirinodes::DirInodes>,
    /// Whether the kernel may list a directory from its copy (`dircache.rs`).
    dir_cache: dircache::DirCache,
    /// Writers sent off a published version's inode (see `opens.rs`).
    redirects: redirects::Redirects,
    /// Where requests that may wait go (see `dispatch.rs`).
    workers: workers::Workers,
    /// Whether writers' requests have been slow of late (`dispatch.rs`).
    pace: pace::DiskPace,
    /// Whether a closing thread is being killed by a signal (see
    /// `exits.rs`; tests put their own verdict here).
    killed_by_signal: Box<dyn Fn(u32) -> bool + Send + Sync>,
}

impl CacheFs {
    pub fn new(store: Arc<Store>) -> CacheFs {
        let kernel = KernelSlot::default();
        let invalidate = Arc::new(invalidate::Invalidator::new(Arc::clone(&kernel)));
        let inodes = Arc::new(InodeTable::default());
        let inv = Arc::clone(&invalidate);
        let started = SystemTime::now();
        let ns_times = Arc::new(nstimes::NsTimes::new(started));
        let times = Arc::clone(&ns_times);
        let subdirs = Arc::new(dirinodes::DirInodes::default());
        let dirs = Arc::clone(&subdirs);
        // The dir a key's name is in, as the kernel knows it: a directory
        // never handed out holds no dentry to drop.
        let parent_ino = move |ns_id: u32, key: &Key| match key.dir() {
            b"" => Some(inodes::namespace_ino(ns_id)),
            dir => dirs.ino_of(ns_id, dir),
        };
        store.set_change_listener(Box::new(move |change| match change {
            // Every replacement drops the name, even when the name should
            // already lead to the new version (a writer's own inode from
            // its create or redirect, looked up uncached while written): a
            // LOOKUP answered just before the publish may still be on its
            // way into the kernel with the old version and a lifetime (a
            // reader's lookup between a redirect's take and the writer's
            // claim, or one that waited on the index lock). Sent after the
            // publish, the drop catches it whatever its timing: a first
            // lookup holds the directory's lock, which the kernel's
            // invalidation waits for, and a revalidated dentry it unhashes
            // stays unhashed whatever the late reply says.
            Change::Removed { ns_id, key } => {
                // Unlink, expiry, eviction, purge: a name left its dir.
                times.names_changed_in(ns_id, key.dir());
                if let Some(parent) = parent_ino(ns_id, key) {
                    inv.entry(parent, name(key))
                }
            }
            Change::Replaced { ns_id, key, .. } => {
                if let Some(parent) = parent_ino(ns_id, key) {
                    inv.entry(parent, name(key))
                }
            }
            // By another daemon: the name leaves the root.
            Change::NamespaceRemoved { ns, .. } => {
                inv.entry(inodes::ROOT, OsStr::from_bytes(ns.as_bytes()).to_owned())
            }
        }));
        CacheFs {
            kernel,
            invalidate,
            redirects: redirects::Redirects::default(),
            subdirs,
            dir_cache: dircache::DirCache::default(),
            workers: workers::Workers::default(),
            pace: pace::DiskPace::default(),
            killed_by_signal: Box::new(exits::killed_by_signal),
            store,
            inodes,
            handles: Arc::default(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            started,
            ns_times,
            ns_ops: Mutex::new(()),
            purges: Mutex::new(HashMap::new()),
        }
    }

    /// Where the kernel's cache must be put once the session exists:
    /// until then no kernel cache is invalidated.
    pub fn kernel_slot(&self) -> KernelSlot {
        Arc::clone(&self.kernel)
    }

    /// At most `n` requests that wait are served at once (`mount
    /// --threads`; see `workers.rs`).
    pub fn set_max_workers(&self, n: usize) {
        self.workers.set_max(n);
    }

    /// A live count of the handles open on this mount (files being read
    /// or written, directories being listed).
    pub fn open_handles(&self) -> Arc<AtomicUsize> {
        self.handles.open_count()
    }

    /// The kernel forgets `n` lookups of inode `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    fn fail(&self, e: &StoreError) -> Errno {
        errno::counted_errno(&self.store, e)
    }
}

/// A key's name in its directory.
fn name(key: &Key) -> std::ffi::OsString {
    OsStr::from_bytes(key.name()).to_owned()
}
