//! The cache itself: namespaces, entries, TTL, quotas, atomic publish and
//! recovery, as a plain Rust API over a backing directory. Knows nothing of
//! FUSE.
//!
//! Invariants this module keeps:
//! 1. A published version's content never changes: new content is a new
//!    version (`EntryMeta::version`); metadata updates (touch, chmod, TTL,
//!    xattrs, rename) append a trailer in place (`trailer.rs`) or
//!    republish a copy, under the same version.
//! 2. Nothing is visible under a key until its content and trailer are
//!    complete and renamed into place from `staging/` (same filesystem).
//! 3. Accounting changes in the same critical section as the index, and
//!    after every publish usage <= every quota that applies.
//! 4. The backing dir is untrusted: files are validated before use, and
//!    content checksums checked before bytes are first served.
//!
//! Metrics: each namespace's counters and histograms live in its index
//! state behind an `Arc` (relaxed atomics, no lock to record); read
//! handles carry that `Arc`, so reads record without any lock. `stats()`
//! reads counters and gauges under the index lock: one consistent
//! snapshot, O(namespaces).
//!
//! Locking: one mutex, `index`, protects the index and its accounting. It
//! is a leaf lock (nothing else is taken under it). What runs under it is
//! memory work plus the publish `rename` and moving victims into `trash/`
//! (metadata operations); unlinking victims, copying, hashing and fsync run
//! outside it.
//!
//! Files: `mod.rs` the `Store`, its start (open, recovery) and stop, shared
//! helpers; `namespaces.rs` namespaces, config reload and limits;
//! `lookup.rs` lookups and listings; `read.rs` read handles and the open
//! paths; `write.rs` staging and publish, rename, metadata updates;
//! `remove.rs` removal, expiry sweep, trash; `stats.rs` counters and usage.

mod backing;
mod changes;
mod claim_file;
mod claims;
mod claims_across;
mod clock;
mod compress;
mod dir_attrs;
mod dirs;
mod entry;
mod entry_old;
mod error;
mod follow;
mod format;
mod index;
mod layout;
mod leftovers;
mod listing;
mod lookup;
mod misses;
mod namespaces;
mod ns_shared;
pub mod offline;
mod probe;
mod purge;
mod read;
mod reaper;
mod rebuild;
mod rebuild_state;
mod recover;
mod remove;
mod republish;
mod room;
mod sessions;
mod shards;
mod stage_pool;
mod staging;
mod stats;
mod sweeper;
mod trailer;
mod waits;
mod write;
mod xattrs;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use crate::names::{CONTROL_DIR, Key, KeyFormat, NAME_MAX, NameError, Namespace};
pub use backing::FaultOp;
pub use claims::Claim;
pub use clock::{Clock, ManualClock, SystemClock, UnixNanos, to_nanos, to_system_time};
pub use dirs::DirItem;
pub use entry::ENTRY_FORMAT;
pub use error::{OpenError, StoreError};
pub use index::EntryMeta;
pub use layout::{FORMAT_VERSION, Layout, LayoutError, LockMode};
pub use listing::{Listed, ListingStamp};
pub use lookup::{EntryInfo, Found, Lookup};
pub use purge::{PurgeFilter, PurgeReport, PurgeSelect};
pub use read::{OpenHot, OpenVersion, ReadHandle};
pub use staging::{Owner, StagingFile};
pub use stats::Usage;
pub use write::{MetaUpdate, NewWrite, WriteBy, WriteFrom};
pub use xattrs::{SetMode, XattrChange, Xattrs};

use crate::config::Config;
use crate::metrics::MountMetrics;
use index::{GlobalLimits, Index};

/// What the store tells its listener (see `Store::set_change_listener`).
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// The store removed a key on its own (eviction, expiry, purge), or a
    /// writer withdrew the version it had published.
    Removed { ns_id: u32, key: &'a Key },
    /// A publish replaced the key's version with `version`.
    Replaced {
        ns_id: u32,
        key: &'a Key,
        version: u64,
    },
    /// Another daemon removed a namespace (its marker is gone).
    NamespaceRemoved { ns_id: u32, ns: &'a Namespace },
}

/// See `Store::set_change_listener`.
pub type ChangeListener = Box<dyn Fn(Change<'_>) + Send + Sync>;

pub struct Store {
    layout: Layout,
    clock: Arc<dyn Clock>,
    /// See the module docs: leaf lock, metadata work only.
    index: Mutex<Index>,
    config: Mutex<Config>,
    next_version: AtomicU64,
    /// Versions replaced in the last few seconds, kept readable (hard links
    /// in trash/) for readers whose lookup raced the publish. Taken after
    /// `index` when both are held.
    retired: Mutex<HashMap<u64, Retired>>,
    /// An index snapshot describing the current index is on disk. Set and
    /// cleared under the index lock; see `index_changed_locked`.
    snapshot_saved: AtomicBool,
    /// Told of every key whose version the store removes on its own or
    /// replaces, so the filesystem can drop the kernel's dentry.
    on_change: OnceLock<ChangeListener>,
    /// Keys being written (see `claims.rs`); taken after `index`.
    claims: Arc<claims::Claims>,
    /// Which lookup misses are reads that missed (see `misses.rs`).
    misses: misses::MissLedger,
    /// Expires entries in the background once started (`start_sweeper`).
    sweeper: sweeper::SweeperSlot,
    /// Mount-wide figures (per-namespace ones live in the index).
    metrics: MountMetrics,
    /// Unlinks what publishes and removals moved into trash/.
    reaper: reaper::Reaper,
    /// The backing volume, not the quota, bounds the cache: evicted files
    /// are unlinked before the reply (`dispose`).
    volume_bound: AtomicBool,
    /// The index rebuilt behind a serving daemon (see `rebuild.rs`).
    rebuild: rebuild_state::Rebuild,
    /// `data/`, held open for lookups at backing paths (`probe.rs`).
    data_dir: probe::DataDir,
    /// This daemon's changes, for the other daemons (`changes.rs`).
    changes: changes::ChangeLog,
    /// The others' changes, followed (`follow.rs`).
    follower: changes::Follower,
    /// Unnamed staging files made ahead (`stage_pool.rs`), once started.
    stage_pool: stage_pool::StagePool,
    /// The backing dir's lock, held shared while this store is open.
    _lock: File,
}

/// A replaced version: its metadata, its kept file, when it was replaced.
type Retired = (EntryMeta, PathBuf, UnixNanos);
const RETIRED_GRACE_NANOS: i64 = 5_000_000_000;

/// Versions double as inode numbers; leave the low range to the fs.
pub const FIRST_VERSION: u64 = 1 << 32;

impl Store {
    /// Opens a backing dir (created if missing), recovers its index, and
    /// applies `config`.
    pub fn open(
        root: &std::path::Path,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, OpenError> {
        Store::open_with(root, config, clock, backing::BackingIo::from_env())
    }

    /// Opens a backing dir to serve at once: the index is rebuilt behind,
    /// on a thread of the store's, while lookups it cannot answer yet go
    /// to the keys' backing paths (see `rebuild.rs`).
    pub fn open_serving(
        root: &std::path::Path,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Store>, OpenError> {
        let store = Arc::new(Store::open_unrecovered(
            root,
            config,
            clock,
            backing::BackingIo::from_env(),
        )?);
        store.rebuild_behind();
        Ok(store)
    }

    /// `open` through a given seam (tests inject faults into it).
    fn open_with(
        root: &std::path::Path,
        config: Config,
        clock: Arc<dyn Clock>,
        io: backing::BackingIo,
    ) -> Result<Store, OpenError> {
        let store = Store::open_unrecovered(root, config, clock, io)?;
        store.rebuild_now().map_err(|source| OpenError::Io {
            path: root.display().to_string(),
            source,
        })?;
        Ok(store)
    }

    /// Opens a backing dir with an empty index (namespaces loaded, limits
    /// applied): the caller rebuilds it.
    fn open_unrecovered(
        root: &std::path::Path,
        config: Config,
        clock: Arc<dyn Clock>,
        io: backing::BackingIo,
    ) -> Result<Store, OpenError> {
        let mut layout = Layout::open(root)?;
        layout.io = io;
        // What dead daemons and offline commands left is only listed here
        // and removed behind the first requests (`leftovers.rs`).
        let (lock, leftovers) = match layout.lock(LockMode::Exclusive) {
            Ok(alone) => {
                // Files directly in staging/ and trash/ are an offline
                // command's (they run alone): orphans, when we are alone.
                // Sessions' files are not: a lock taken through a view
                // that does not carry flock says "alone" beside live
                // daemons, and their sessions are judged on their own.
                let sessions = layout.dead_sessions();
                layout.downgrade(&alone)?;
                (
                    alone,
                    rebuild_state::Leftovers {
                        sessions,
                        offline: true,
                    },
                )
            }
            Err(LayoutError::LockedLive { .. }) => {
                let lock = shared_lock_soon(&layout)?;
                // Other daemons live here: only the sessions of dead ones
                // are orphans.
                let sessions = layout.dead_sessions();
                (
                    lock,
                    rebuild_state::Leftovers {
                        sessions,
                        offline: false,
                    },
                )
            }
            Err(e) => return Err(e.into()),
        };
        layout.begin_session()?;
        let limits = GlobalLimits {
            max_bytes: u64::MAX,
            max_entries: config.cache.max_entries,
            default_ttl: config.cache.default_ttl,
            compression: config.cache.compression,
        };
        let reaper = reaper::Reaper::start(layout.io.clone());
        let data_dir = probe::DataDir::open(&layout);
        let store = Store {
            layout,
            clock,
            index: Mutex::new(Index::new(limits)),
            config: Mutex::new(config.clone()),
            next_version: AtomicU64::new(FIRST_VERSION),
            retired: Mutex::new(HashMap::new()),
            snapshot_saved: AtomicBool::new(false),
            on_change: OnceLock::new(),
            claims: Arc::default(),
            misses: misses::MissLedger::default(),
            sweeper: sweeper::SweeperSlot::default(),
            metrics: MountMetrics::default(),
            reaper,
            volume_bound: AtomicBool::new(false),
            rebuild: rebuild_state::Rebuild::default(),
            data_dir,
            changes: changes::ChangeLog::default(),
            follower: changes::Follower::default(),
            stage_pool: stage_pool::StagePool::default(),
            _lock: lock,
        };
        store
            .load_namespaces(&config)
            .map_err(|source| OpenError::Io {
                path: root.display().to_string(),
                source,
            })?;
        // The directory markers are loaded by the rebuild (`dirs.rs`).
        let claims = store.reap_dead_claims();
        if claims > 0 {
            log::info!("removed {claims} claims of daemons that died");
        }
        store.apply_limits(&config);
        *crate::sync::lock(&store.rebuild.leftovers) = leftovers;
        Ok(store)
    }

    /// Installs the one listener told of keys whose version the store
    /// removes by itself or replaces. It is called with the index lock
    /// held: it must only queue, or take leaf locks of its own.
    pub fn set_change_listener(&self, f: ChangeListener) {
        let _ = self.on_change.set(f);
    }

    /// Tells the listener, if any (index lock held).
    fn tell(&self, change: Change<'_>) {
        if let Some(f) = self.on_change.get() {
            f(change);
        }
    }

    fn retired_lock(&self) -> MutexGuard<'_, HashMap<u64, Retired>> {
        crate::sync::lock(&self.retired)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic under the lock leaves plain data; keep serving.
        crate::sync::lock(&self.index)
    }

    /// The index is about to differ from a snapshot saved earlier (a
    /// publish or removal after a stop began, or during a forced stop):
    /// delete the snapshot so the next start scans instead of loading an
    /// index that misses an entry whose close() succeeded. Call with the
    /// index lock held; `save_snapshot` holds it from collecting to rename.
    fn index_changed_locked(&self) {
        if self.snapshot_saved.load(Ordering::Relaxed)
            && self.snapshot_saved.swap(false, Ordering::Relaxed)
            && let Err(e) = self.layout.io.remove_file(&self.layout.snapshot_path())
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("cannot remove the stale index snapshot: {e}");
        }
    }

    fn new_version(&self) -> u64 {
        self.next_version.fetch_add(1, Ordering::Relaxed)
    }

    pub fn now(&self) -> UnixNanos {
        self.clock.now()
    }

    pub fn backing_dir(&self) -> &std::path::Path {
        self.layout.root()
    }

    /// Ends this daemon's session: whatever is still staged (writes that
    /// will never close) or kept in its trash goes. The store must not be
    /// written through afterwards.
    pub fn end_session(&self) {
        self.stop_rebuild();
        self.follower.stop();
        self.changes.stop();
        self.sweeper.stop();
        self.stage_pool.stop();
        self.reaper.finish();
        self.layout.end_session();
    }

    /// Saves the index for a fast next start. The lock is held until the
    /// snapshot is in place, so no change can slip in between collecting
    /// and renaming; any change after it deletes the snapshot again. An
    /// index still being rebuilt is not saved (`Ok(None)`): it would miss
    /// entries, and the next start scans instead.
    pub fn save_snapshot(&self) -> io::Result<Option<usize>> {
        self.stop_rebuild();
        if !self.rebuilt() {
            return Ok(None);
        }
        // A stop leaves no trash behind: the next start may not be alone
        // in this backing dir, and then it could not clean it.
        self.reaper.finish();
        let idx = self.lock();
        let entries: Vec<recover::SnapshotEntry> = idx
            .namespaces()
            .flat_map(|(ns, s)| {
                s.iter_lru()
                    .map(move |(k, m)| recover::SnapshotEntry::new(ns, &k, &m))
            })
            .collect();
        recover::save_snapshot(&self.layout, &entries)?;
        self.snapshot_saved.store(true, Ordering::Relaxed);
        Ok(Some(entries.len()))
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        self.lock().debug_check();
    }
}

fn meta_from_header(
    h: &entry::EntryHeader,
    version: u64,
    file_id: u64,
    file_size: u64,
    stored_bytes: u64,
    verified: bool,
) -> EntryMeta {
    EntryMeta {
        version,
        file_id,
        file_size,
        mtime: h.mtime,
        ctime: h.ctime,
        atime: h.atime,
        ttl_secs: h.ttl_secs,
        logical_size: h.logical_size,
        stored_bytes,
        mode: h.mode,
        uid: h.uid,
        gid: h.gid,
        verified,
        compressed: h.compression != entry::COMPRESSION_NONE,
        last_access: h.mtime,
    }
}

/// The shared lock, for a daemon that found other daemons live. One of
/// them may hold the lock exclusive for a moment (a start, cleaning up):
/// wait a little before concluding an offline command holds it.
fn shared_lock_soon(layout: &Layout) -> Result<File, LayoutError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match layout.lock(LockMode::Shared) {
            Err(LayoutError::LockedOffline { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.end_session();
    }
}

#[cfg(test)]
mod claims_tests;
#[cfg(test)]
mod compress_tests;
#[cfg(all(test, debug_assertions))]
mod faults_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod listing_tests;
#[cfg(test)]
mod pair_tests;
#[cfg(test)]
mod quota_across_tests;
#[cfg(test)]
mod sharing_dirs_tests;
#[cfg(test)]
mod sharing_meta_tests;
#[cfg(all(test, debug_assertions))]
mod sharing_order_tests;
#[cfg(test)]
mod sharing_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(all(test, debug_assertions))]
mod staging_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trailer_tests;
#[cfg(test)]
mod tree_prop_tests;

/// Gives memory freed after a burst of allocations (loading the index, a
/// listing of a big namespace) back to the system, so the daemon's RSS
/// tracks what it holds rather than its peak.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it takes no
    // pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
