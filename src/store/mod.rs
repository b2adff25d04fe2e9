//! The cache itself: namespaces, entries, TTL, quotas, atomic publish and
//! recovery, as a plain Rust API over a backing directory. Knows nothing of
//! FUSE.
//!
//! Invariants this module keeps:
//! 1. A published version never changes: new content is a new version
//!    (`EntryMeta::version`); metadata updates (touch, chmod, TTL) republish
//!    a copy under the same version.
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

mod clock;
mod entry;
mod index;
mod layout;
mod names;
pub mod offline;
mod purge;
mod reaper;
mod recover;
mod staging;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use clock::{Clock, ManualClock, SystemClock, UnixNanos, to_nanos, to_system_time};
pub use entry::ENTRY_FORMAT;
pub use index::EntryMeta;
pub use layout::{FORMAT_VERSION, Layout, LayoutError, LockMode};
pub use names::{CONTROL_DIR, Key, NAME_MAX, NameError, Namespace};
pub use purge::{PurgeFilter, PurgeReport, PurgeSelect};
pub use staging::{Owner, StagingFile};

use crate::config::{Config, Durability, KeyFormat, NamespacePolicy};
use crate::metrics::{
    self, Formats, Gauges, MountMetrics, NsMetrics, NsStats, Op, Rejection, Snapshot,
};
use index::{GlobalLimits, Index, RemoveReason, Removed};

/// Every way a store operation can fail; `fs` maps each to one errno.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such entry or namespace")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("entry is larger than its limit")]
    TooBig,
    #[error("no room can be made")]
    NoSpace,
    #[error("namespace is not empty")]
    NotEmpty,
    #[error("namespace is named in the config")]
    Busy,
    #[error("new namespaces are not allowed")]
    NotPermitted,
    #[error("rename across namespaces")]
    CrossNamespace,
    #[error("invalid name: {0}")]
    InvalidName(#[from] NameError),
    #[error("invalid value")]
    InvalidValue,
    #[error("backing I/O: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("backing dir {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// The outcome of looking a key up.
#[derive(Debug, Clone)]
pub enum Lookup {
    Hit(EntryInfo),
    Miss,
    Expired,
}

/// What callers need to know of a live entry.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    pub version: u64,
    pub logical_size: u64,
    pub stored_bytes: u64,
    pub mtime: UnixNanos,
    /// `None`: never expires.
    pub expires: Option<UnixNanos>,
    pub ttl: Duration,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Space and entry usage against the mount's limits.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub quota_bytes: u64,
    pub used_bytes: u64,
    pub entries: u64,
    pub max_entries: Option<u64>,
}

/// An open published version. Reads keep working after the entry is
/// replaced, expired or removed (the file stays open).
pub struct ReadHandle {
    /// Shared with the other readers of the version (reads are `pread`).
    file: Arc<File>,
    len: u64,
    version: u64,
    /// Its namespace's metrics: reads record bytes and latency lock-free.
    metrics: Arc<NsMetrics>,
}

impl ReadHandle {
    /// The handle of an open that found its entry: counts the hit.
    fn counted(file: Arc<File>, meta: &EntryMeta, m: Arc<NsMetrics>, start: Instant) -> Self {
        metrics::add(&m.hits, 1);
        metrics::add(&m.read_bytes, meta.logical_size);
        m.open.since(start);
        ReadHandle {
            file,
            len: meta.logical_size,
            version: meta.version,
            metrics: m,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The version this handle reads, for good.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Reads up to `size` bytes at `offset`, never past the content.
    /// (`read_bytes` is counted at open: most reads are served by the
    /// kernel's page cache and never reach the store.)
    pub fn read_at(&self, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        let start = Instant::now();
        let r = self.read_at_inner(offset, size);
        self.metrics.read.since(start);
        r
    }

    /// Like `read_at`, but only from the page cache: `None` when the read
    /// would wait for the disk, or the filesystem cannot tell (the caller
    /// then reads where waiting costs no one else).
    pub fn read_cached(&self, offset: u64, size: usize) -> io::Result<Option<Vec<u8>>> {
        use std::os::fd::AsRawFd;
        let start = Instant::now();
        if offset >= self.len {
            return Ok(Some(Vec::new()));
        }
        if NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let n = size.min((self.len - offset) as usize);
        let mut buf = vec![0u8; n];
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: n,
        };
        // SAFETY: one iovec over `buf`, which is `n` bytes long and lives
        // across the call; the descriptor is ours and open.
        let got = unsafe {
            libc::preadv2(
                self.file.as_raw_fd(),
                &iov,
                1,
                offset as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(None),
                // The filesystem (or kernel) cannot tell without waiting,
                // so any read of it may wait: never ask again.
                Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {
                    NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
                    Ok(None)
                }
                _ => Err(e),
            };
        }
        if (got as usize) < n {
            // Part of it is cached: the rest may need the disk.
            return Ok(None);
        }
        self.metrics.read.since(start);
        Ok(Some(buf))
    }

    fn read_at_inner(&self, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        if offset >= self.len {
            return Ok(Vec::new());
        }
        let n = size.min((self.len - offset) as usize);
        let mut buf = vec![0u8; n];
        let mut done = 0;
        while done < n {
            let got = self.file.read_at(&mut buf[done..], offset + done as u64)?;
            if got == 0 {
                break;
            }
            done += got;
        }
        buf.truncate(done);
        Ok(buf)
    }
}

/// What `Store::open_hot` could do.
pub enum OpenHot {
    /// Opened (and counted).
    Done(ReadHandle),
    /// Needs system calls: `open_version` (a few microseconds).
    Cold,
    /// `open_version` must first read the whole content to check it (the
    /// version's first open since a start from disk).
    Verify,
}

/// The backing filesystem refused `RWF_NOWAIT`: every read goes to the
/// disk threads.
static NOWAIT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Where a new write starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFrom {
    /// Empty content (create, O_TRUNC).
    Empty,
    /// A copy of the live version, if any (in-place writes, append).
    Current,
}

/// Metadata changes applied by republishing a copy under the same version.
#[derive(Debug, Clone, Default)]
pub struct MetaUpdate {
    pub mtime: Option<UnixNanos>,
    /// `Some(None)` clears the per-entry TTL.
    pub ttl_secs: Option<Option<u64>>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub truncate: Option<u64>,
}

/// See `Store::set_removal_listener`: (namespace id, key).
pub type RemovalListener = Box<dyn Fn(u32, &Key) + Send + Sync>;

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
    /// Told of every entry the store removes on its own (eviction,
    /// expiry, purge), so the FUSE layer can drop the kernel's dentry.
    on_removed: OnceLock<RemovalListener>,
    /// Mount-wide figures (per-namespace ones live in the index).
    metrics: MountMetrics,
    /// Unlinks what publishes and removals moved into trash/.
    reaper: reaper::Reaper,
    /// The backing volume, not the quota, bounds the cache: evicted files
    /// are unlinked before the reply (`dispose`).
    volume_bound: AtomicBool,
    /// The backing dir's lock, held shared while this store is open.
    _lock: File,
}

/// A replaced version: its metadata, its kept file, when it was replaced.
type Retired = (EntryMeta, PathBuf, UnixNanos);
const RETIRED_GRACE_NANOS: i64 = 5_000_000_000;

/// Versions double as inode numbers; leave the low range to the fs.
const FIRST_VERSION: u64 = 1 << 32;

impl Store {
    /// Opens a backing dir (created if missing), recovers its index, and
    /// applies `config`.
    pub fn open(
        root: &std::path::Path,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, OpenError> {
        let mut layout = Layout::open(root)?;
        let lock = match layout.lock(LockMode::Exclusive) {
            Ok(alone) => {
                // Files directly in staging/ and trash/ are an offline
                // command's (they run alone): orphans, when we are alone.
                let orphans = layout.reap_dead_sessions()
                    + layout::empty_dir(layout.staging_dir())
                    + layout::empty_dir(layout.trash_dir());
                if orphans > 0 {
                    log::info!("removed {orphans} orphaned staging/trash files");
                }
                layout.downgrade(&alone)?;
                alone
            }
            Err(LayoutError::LockedLive { .. }) => {
                let lock = shared_lock_soon(&layout)?;
                // Other daemons live here: only the sessions of dead ones
                // are orphans.
                let orphans = layout.reap_dead_sessions();
                if orphans > 0 {
                    log::info!("removed {orphans} files left by daemons that died");
                }
                lock
            }
            Err(e) => return Err(e.into()),
        };
        layout.begin_session()?;
        let limits = GlobalLimits {
            max_bytes: u64::MAX,
            max_entries: config.cache.max_entries,
            default_ttl: config.cache.default_ttl,
        };
        let store = Store {
            layout,
            clock,
            index: Mutex::new(Index::new(limits)),
            config: Mutex::new(config.clone()),
            next_version: AtomicU64::new(FIRST_VERSION),
            retired: Mutex::new(HashMap::new()),
            snapshot_saved: AtomicBool::new(false),
            on_removed: OnceLock::new(),
            metrics: MountMetrics::default(),
            reaper: reaper::Reaper::start(),
            volume_bound: AtomicBool::new(false),
            _lock: lock,
        };
        store
            .load_namespaces(&config)
            .map_err(|source| OpenError::Io {
                path: root.display().to_string(),
                source,
            })?;
        store.recover();
        release_freed_memory();
        store.apply_limits(&config);
        Ok(store)
    }

    /// Installs the one listener told of entries the store removes by
    /// itself. It is called with the index lock held: it must only queue.
    pub fn set_removal_listener(&self, f: RemovalListener) {
        let _ = self.on_removed.set(f);
    }

    fn retired_lock(&self) -> MutexGuard<'_, HashMap<u64, Retired>> {
        self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic under the lock leaves plain data; keep serving.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index is about to differ from a snapshot saved earlier (a
    /// publish or removal after a stop began, or during a forced stop):
    /// delete the snapshot so the next start scans instead of loading an
    /// index that misses an entry whose close() succeeded. Call with the
    /// index lock held; `save_snapshot` holds it from collecting to rename.
    fn index_changed_locked(&self) {
        if self.snapshot_saved.load(Ordering::Relaxed)
            && self.snapshot_saved.swap(false, Ordering::Relaxed)
            && let Err(e) = fs::remove_file(self.layout.snapshot_path())
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

    fn load_namespaces(&self, config: &Config) -> io::Result<()> {
        let mut idx = self.lock();
        for (name, policy) in &config.namespaces {
            let ns = Namespace::parse(name.as_bytes()).map_err(io::Error::other)?;
            idx.add_namespace(ns, policy.clone(), true);
        }
        for e in fs::read_dir(self.layout.namespaces_dir())?.flatten() {
            use std::os::unix::ffi::OsStrExt;
            match Namespace::parse(e.file_name().as_bytes()) {
                Ok(ns) if idx.namespace(&ns).is_none() => {
                    idx.add_namespace(ns, NamespacePolicy::default(), false)
                }
                Ok(_) => {}
                Err(_) => log::warn!("ignoring namespace marker {:?}", e.file_name()),
            }
        }
        Ok(())
    }

    fn recover(&self) {
        if let Some(entries) = recover::take_snapshot(&self.layout) {
            let mut sorted = entries;
            sorted.sort_by_key(|e| e.last_access);
            let mut idx = self.lock();
            let n = sorted.len();
            for e in sorted {
                let (Ok(ns), Ok(key)) = (
                    Namespace::parse(&e.namespace),
                    Key::parse(&e.key, KeyFormat::Any),
                ) else {
                    continue;
                };
                self.ensure_namespace_locked(&mut idx, &ns);
                idx.insert(&ns, key, e.meta(self.new_version()));
            }
            log::info!("loaded {n} entries from the index snapshot");
            return;
        }
        let mut found = Vec::new();
        let report = recover::scan(&self.layout, |f| found.push(f));
        // Oldest first, so the LRU order follows publish times.
        found.sort_by_key(|f| f.header.mtime);
        let mut idx = self.lock();
        for f in found {
            let (Ok(ns), Ok(key)) = (
                Namespace::parse(&f.header.namespace),
                Key::parse(&f.header.key, KeyFormat::Any),
            ) else {
                continue;
            };
            self.ensure_namespace_locked(&mut idx, &ns);
            let meta = meta_from_header(
                &f.header,
                self.new_version(),
                f.file_id,
                f.file_size,
                f.stored_bytes,
                false,
            );
            idx.insert(&ns, key, meta);
        }
        metrics::add(&self.metrics.corrupt, report.quarantined);
        log::info!(
            "scanned the backing dir: {} entries, {} quarantined",
            report.entries,
            report.quarantined
        );
    }

    /// A namespace found on disk but in neither the config nor the markers
    /// gets the default policy (its marker is recreated).
    fn ensure_namespace_locked(&self, idx: &mut Index, ns: &Namespace) {
        if idx.namespace(ns).is_none() {
            let _ = File::create(self.layout.namespace_marker(ns));
            idx.add_namespace(ns.clone(), NamespacePolicy::default(), false);
        }
    }

    /// Applies the whole-cache limits: the configured (or default) quota,
    /// never more than the backing volume can hold.
    fn apply_limits(&self, config: &Config) {
        let mut idx = self.lock();
        let used = idx.total_bytes();
        let room = volume_available(self.layout.root()).unwrap_or(u64::MAX);
        let wanted = config
            .cache
            .max_bytes
            .unwrap_or(crate::config::DEFAULT_MAX_BYTES);
        let cap = used.saturating_add(room);
        // The reaper frees evicted space a moment later; where the volume,
        // not the quota, is the limit, that space is needed at once.
        self.volume_bound.store(
            wanted > cap.saturating_sub(reaper::BACKLOG_BYTES),
            Ordering::Relaxed,
        );
        if wanted > cap {
            log::warn!(
                "quota {wanted} bytes exceeds what the backing volume can hold; using {cap}"
            );
        }
        idx.limits = GlobalLimits {
            max_bytes: wanted.min(cap),
            max_entries: config.cache.max_entries,
            default_ttl: config.cache.default_ttl,
        };
    }

    /// Reloads policies (SIGHUP): limits, TTLs, namespaces named in the
    /// config. Entries over a lowered quota are evicted at once; returns
    /// how many were.
    pub fn reload(&self, config: Config) -> usize {
        {
            let mut idx = self.lock();
            for (name, policy) in &config.namespaces {
                if let Ok(ns) = Namespace::parse(name.as_bytes()) {
                    idx.add_namespace(ns, policy.clone(), true);
                }
            }
            let names: Vec<Namespace> = idx.namespaces().map(|(n, _)| n.clone()).collect();
            for ns in names {
                let name = String::from_utf8_lossy(ns.as_bytes()).into_owned();
                if let Some(state) = idx.namespace_mut(&ns)
                    && state.from_config
                    && !config.namespaces.contains_key(&name)
                {
                    state.policy = NamespacePolicy::default();
                    state.from_config = false;
                    let _ = File::create(self.layout.namespace_marker(&ns));
                }
            }
        }
        self.apply_limits(&config);
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        let mut trash = Vec::new();
        let n = {
            let mut idx = self.lock();
            // After apply_limits: the default TTL is among what changed.
            idx.rebuild_expiry();
            let victims = idx.shrink_to_limits(self.clock.now());
            let n = victims.len();
            self.move_to_trash_locked(&idx, victims, &mut trash);
            n
        };
        unlink_all(&trash);
        n
    }

    pub fn config(&self) -> Config {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    // ----- namespaces -----

    pub fn namespaces(&self) -> Vec<(Namespace, u32)> {
        let idx = self.lock();
        let mut v: Vec<_> = idx.namespaces().map(|(n, s)| (n.clone(), s.id)).collect();
        v.sort();
        v
    }

    pub fn namespace_id(&self, ns: &Namespace) -> Option<u32> {
        self.lock().namespace(ns).map(|s| s.id)
    }

    pub fn namespace_by_id(&self, id: u32) -> Option<Namespace> {
        self.lock().namespace_by_id(id).cloned()
    }

    pub fn key_format(&self, ns: &Namespace) -> Option<KeyFormat> {
        self.lock().namespace(ns).map(|s| s.policy.key_format)
    }

    pub fn create_namespace(&self, name: &[u8]) -> Result<(Namespace, u32), StoreError> {
        let ns = Namespace::parse(name)?;
        let allow = self.config().cache.allow_new_namespaces;
        let mut idx = self.lock();
        if idx.namespace(&ns).is_some() {
            return Err(StoreError::Exists);
        }
        if !allow {
            return Err(StoreError::NotPermitted);
        }
        File::create(self.layout.namespace_marker(&ns))?;
        idx.add_namespace(ns.clone(), NamespacePolicy::default(), false);
        let id = idx.namespace(&ns).expect("just added").id;
        Ok((ns, id))
    }

    pub fn remove_namespace(&self, ns: &Namespace) -> Result<(), StoreError> {
        self.sweep_expired();
        let mut idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        if state.len() > 0 {
            return Err(StoreError::NotEmpty);
        }
        if state.from_config {
            return Err(StoreError::Busy);
        }
        match fs::remove_file(self.layout.namespace_marker(ns)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        idx.remove_namespace(ns);
        Ok(())
    }

    /// Parses a key for a namespace, under that namespace's key format.
    pub fn parse_key(&self, ns: &Namespace, name: &[u8]) -> Result<Key, StoreError> {
        let format = self.key_format(ns).ok_or(StoreError::NotFound)?;
        Ok(Key::parse(name, format)?)
    }

    // ----- reads -----

    fn info_locked(idx: &Index, ns: &Namespace, meta: &EntryMeta) -> EntryInfo {
        let policy = &idx.namespace(ns).expect("entry's namespace").policy;
        EntryInfo {
            version: meta.version,
            logical_size: meta.logical_size,
            stored_bytes: meta.stored_bytes,
            mtime: meta.mtime,
            expires: idx.expires_at(policy, meta),
            ttl: idx.effective_ttl(policy, meta),
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
        }
    }

    /// The content digest of a key's live version, read from its trailer
    /// (the index does not keep it).
    pub fn content_sha256(&self, ns: &Namespace, key: &Key) -> Result<[u8; 32], StoreError> {
        self.live_meta(ns, key)?;
        let file = open_nofollow(&self.layout.entry_path(ns, key))?;
        let len = file.metadata()?.len();
        entry::read_header(&file, len)
            .map(|h| h.content_sha256)
            .map_err(|_| StoreError::NotFound)
    }

    /// Looks a key up (a read's first step: misses are counted), without
    /// touching the disk or the key's recency.
    pub fn lookup(&self, ns: &Namespace, key: &Key) -> Lookup {
        self.lookup_inner(ns, key, true)
    }

    /// Like `lookup`, for metadata questions: counts nothing.
    pub fn entry_info(&self, ns: &Namespace, key: &Key) -> Lookup {
        self.lookup_inner(ns, key, false)
    }

    fn lookup_inner(&self, ns: &Namespace, key: &Key, count: bool) -> Lookup {
        let start = Instant::now();
        let now = self.clock.now();
        let idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return Lookup::Miss;
        };
        let outcome = match state.peek(key) {
            None => Lookup::Miss,
            Some(meta) => match idx.expires_at(&state.policy, &meta) {
                Some(at) if at <= now => Lookup::Expired,
                _ => Lookup::Hit(Self::info_locked(&idx, ns, &meta)),
            },
        };
        if count {
            let m = &state.metrics;
            match outcome {
                Lookup::Hit(_) => {}
                Lookup::Miss => metrics::add(&m.misses, 1),
                Lookup::Expired => {
                    metrics::add(&m.misses, 1);
                    metrics::add(&m.expired_misses, 1);
                }
            }
            m.lookup.since(start);
        }
        outcome
    }

    /// Takes back a miss counted by `lookup`: the kernel looks a key up
    /// before it creates it, and that lookup is part of the write, not a
    /// read that missed (see README, "Metrics").
    pub fn uncount_miss(&self, ns: &Namespace, expired: bool) {
        if let Some(m) = self.ns_metrics(ns) {
            metrics::sub(&m.misses, 1);
            if expired {
                metrics::sub(&m.expired_misses, 1);
            }
        }
    }

    /// Counts a write refused with EFBIG, ENOSPC or EINVAL.
    pub fn record_rejection(&self, ns: &Namespace, why: Rejection) {
        if let Some(m) = self.ns_metrics(ns) {
            m.reject(why);
        }
    }

    /// Counts a backing-volume failure reported to a caller as EIO.
    pub fn record_io_error(&self) {
        metrics::add(&self.metrics.io_errors, 1);
    }

    /// Records the latency of `op` in `ns` (for steps timed by the caller).
    pub fn record_latency(&self, ns: &Namespace, op: Op, d: Duration) {
        if let Some(m) = self.ns_metrics(ns) {
            m.histogram(op).record(d);
        }
    }

    fn ns_metrics(&self, ns: &Namespace) -> Option<Arc<NsMetrics>> {
        self.lock().namespace(ns).map(|s| Arc::clone(&s.metrics))
    }

    /// Moves a bad file aside and counts it.
    fn quarantine(&self, path: &std::path::Path, why: &str) {
        metrics::add(&self.metrics.corrupt, 1);
        recover::quarantine(&self.layout, path, why);
    }

    /// The live metadata of a key (not expired).
    fn live_meta(&self, ns: &Namespace, key: &Key) -> Result<EntryMeta, StoreError> {
        let now = self.clock.now();
        let idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        let meta = state.peek(key).ok_or(StoreError::NotFound)?;
        if idx
            .expires_at(&state.policy, &meta)
            .is_some_and(|at| at <= now)
        {
            return Err(StoreError::NotFound);
        }
        Ok(meta)
    }

    /// A hot open of exactly version `version`, if it can be one: the
    /// live version, checked, its file shared (one index lock, no system
    /// call). Otherwise says what the open must do (`open_version`).
    pub fn open_hot(&self, ns: &Namespace, key: &Key, version: u64) -> OpenHot {
        self.open_shared(ns, key, Some(version), Instant::now())
    }

    /// A hot open of the live version (of `version` only, if given).
    fn open_shared(
        &self,
        ns: &Namespace,
        key: &Key,
        version: Option<u64>,
        start: Instant,
    ) -> OpenHot {
        let now = self.clock.now();
        let mut idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return OpenHot::Cold;
        };
        let Some(meta) = state.peek(key) else {
            return OpenHot::Cold;
        };
        if version.is_some_and(|v| v != meta.version) {
            return OpenHot::Cold;
        }
        if !meta.verified {
            return OpenHot::Verify;
        }
        if idx
            .expires_at(&state.policy, &meta)
            .is_some_and(|at| at <= now)
        {
            return OpenHot::Cold;
        }
        let Some(file) = idx.shared_file(meta.version) else {
            return OpenHot::Cold;
        };
        let metrics = Arc::clone(&state.metrics);
        let Some(meta) = idx.promote(ns, key, now) else {
            return OpenHot::Cold;
        };
        drop(idx);
        OpenHot::Done(ReadHandle::counted(file, &meta, metrics, start))
    }

    /// Opens the live version of a key for reading; `NotFound` if it is
    /// gone, expired or corrupt. The handle says which version it holds.
    pub fn open_read(&self, ns: &Namespace, key: &Key) -> Result<ReadHandle, StoreError> {
        let start = Instant::now();
        if let OpenHot::Done(h) = self.open_shared(ns, key, None, start) {
            return Ok(h);
        }
        let path = self.layout.entry_path(ns, key);
        // A publish may rename a new file in between our reading the index
        // and opening the path: then the index already knows the new file,
        // and one more round opens it consistently.
        for _ in 0..4 {
            let meta = self.live_meta(ns, key)?;
            let file = match open_nofollow(&path) {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    self.quarantine(&path, "a symlink");
                    self.forget_if_version(ns, key, meta.version);
                    return Err(StoreError::NotFound);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    log::warn!("entry {ns}/{key:?} vanished from the backing dir");
                    self.forget_if_version(ns, key, meta.version);
                    return Err(StoreError::NotFound);
                }
                Err(e) => return Err(e.into()),
            };
            let md = file.metadata()?;
            if md.ino() != meta.file_id || md.len() != meta.file_size {
                if !self
                    .live_meta(ns, key)
                    .is_ok_and(|m| m.file_id == md.ino() && m.file_size == md.len())
                {
                    self.adopt_changed_file(ns, key, meta.version, &path)?;
                }
                continue;
            }
            if !meta.verified {
                if let Err(why) = verify_entry(&file, &meta) {
                    self.quarantine(&path, &why.to_string());
                    self.forget_if_version(ns, key, meta.version);
                    return Err(StoreError::NotFound);
                }
            }
            let file = Arc::new(file);
            let mut idx = self.lock();
            if idx
                .promote(ns, key, self.clock.now())
                .is_some_and(|m| m.version == meta.version)
            {
                idx.mark_verified(ns, key, meta.version);
                idx.share_file(meta.version, &file);
            }
            let Some(m) = idx.namespace(ns).map(|s| Arc::clone(&s.metrics)) else {
                return Err(StoreError::NotFound);
            };
            drop(idx);
            return Ok(ReadHandle::counted(file, &meta, m, start));
        }
        Err(StoreError::Io(io::Error::other(
            "entry keeps changing under the reader",
        )))
    }

    /// Opens exactly version `version` of a key: the live one, or one
    /// replaced moments ago (still kept). `NotFound` otherwise.
    pub fn open_version(
        &self,
        ns: &Namespace,
        key: &Key,
        version: u64,
    ) -> Result<ReadHandle, StoreError> {
        match self.open_read(ns, key) {
            Ok(h) if h.version == version => Ok(h),
            // Replaced (or removed) since the kernel looked it up.
            // (open_read counted this open's hit already.)
            Ok(h) => Ok(self.open_retired(ns, version, false)?.unwrap_or(h)),
            Err(StoreError::NotFound) => self
                .open_retired(ns, version, true)?
                .ok_or(StoreError::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Opens a replaced version still kept; `count`: this open's hit is
    /// not counted yet.
    fn open_retired(
        &self,
        ns: &Namespace,
        version: u64,
        count: bool,
    ) -> Result<Option<ReadHandle>, StoreError> {
        let Some((meta, path, _)) = self.retired_lock().get(&version).cloned() else {
            return Ok(None);
        };
        let Some(m) = self.ns_metrics(ns) else {
            return Ok(None);
        };
        let file = File::open(&path)?;
        // The kept link must still be that version's file (a hard link
        // keeps the inode), whatever else may have taken its name.
        if file.metadata()?.ino() != meta.file_id {
            return Ok(None);
        }
        if !meta.verified && verify_entry(&file, &meta).is_err() {
            return Err(StoreError::NotFound);
        }
        if count {
            metrics::add(&m.hits, 1);
            metrics::add(&m.read_bytes, meta.logical_size);
        }
        Ok(Some(ReadHandle {
            file: Arc::new(file),
            len: meta.logical_size,
            version,
            metrics: m,
        }))
    }

    /// The file under a key is not the one the index knows (another writer
    /// or a foreign hand replaced it): take it in if valid, else quarantine.
    fn adopt_changed_file(
        &self,
        ns: &Namespace,
        key: &Key,
        version: u64,
        path: &std::path::Path,
    ) -> Result<(), StoreError> {
        match recover::inspect(path) {
            Ok(found)
                if found.header.namespace == ns.as_bytes()
                    && found.header.key == key.as_bytes() =>
            {
                let meta = meta_from_header(
                    &found.header,
                    self.new_version(),
                    found.file_id,
                    found.file_size,
                    found.stored_bytes,
                    false,
                );
                let mut idx = self.lock();
                if idx.peek(ns, key).is_some_and(|m| m.version == version) {
                    self.index_changed_locked();
                    idx.insert(ns, key.clone(), meta);
                }
                Ok(())
            }
            Ok(_) => {
                self.quarantine(path, "names disagree with its path");
                self.forget_if_version(ns, key, version);
                Err(StoreError::NotFound)
            }
            Err(why) => {
                self.quarantine(path, &why);
                self.forget_if_version(ns, key, version);
                Err(StoreError::NotFound)
            }
        }
    }

    fn forget_if_version(&self, ns: &Namespace, key: &Key, version: u64) {
        let mut idx = self.lock();
        if idx.peek(ns, key).is_some_and(|m| m.version == version) {
            self.index_changed_locked();
            idx.remove(ns, key);
        }
    }

    /// Live keys of a namespace with their versions, least recent first.
    pub fn list(&self, ns: &Namespace) -> Result<Vec<(Key, u64)>, StoreError> {
        let now = self.clock.now();
        let idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        Ok(state
            .iter_lru()
            .filter(|(_, m)| idx.expires_at(&state.policy, m).is_none_or(|at| at > now))
            .map(|(k, m)| (Key::from_index(&k), m.version))
            .collect())
    }

    // ----- writes -----

    /// Starts a write of `key`. Its content is invisible until `publish`.
    pub fn begin_write(
        &self,
        ns: &Namespace,
        key: &Key,
        from: WriteFrom,
        owner: Owner,
    ) -> Result<StagingFile, StoreError> {
        self.begin_write_as(ns, key, from, owner, self.new_version())
    }

    /// A version number no other write will use: for a writer that must
    /// know the inode its content will be published as before it begins.
    pub fn reserve_version(&self) -> u64 {
        self.new_version()
    }

    /// `begin_write` of a version reserved with `reserve_version`.
    pub fn begin_write_as(
        &self,
        ns: &Namespace,
        key: &Key,
        from: WriteFrom,
        owner: Owner,
        version: u64,
    ) -> Result<StagingFile, StoreError> {
        let (limit, current) = {
            let idx = self.lock();
            let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
            let limit = [
                state.policy.max_entry_bytes,
                state.policy.max_bytes,
                Some(idx.limits.max_bytes),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(u64::MAX);
            let now = self.clock.now();
            let current = match from {
                WriteFrom::Empty => None,
                WriteFrom::Current => state
                    .peek(key)
                    .filter(|m| idx.expires_at(&state.policy, m).is_none_or(|at| at > now)),
            };
            (limit, current)
        };
        let path = self.layout.staging_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut staging =
            StagingFile::new(file, path, ns.clone(), key.clone(), version, limit, owner);
        if let Some(meta) = current {
            if meta.logical_size > limit {
                return Err(StoreError::TooBig);
            }
            let src = open_nofollow(&self.layout.entry_path(ns, key))?;
            let mut reader = io::Read::take(&src, meta.logical_size);
            let copied = io::copy(&mut reader, &mut &staging.file)?;
            if copied != meta.logical_size {
                return Err(StoreError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "entry shorter than its header says",
                )));
            }
            let header = entry::read_header(&src, meta.file_size).map_err(|e| {
                StoreError::Io(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
            })?;
            staging.set_copied(meta.logical_size, header.content_sha256);
            staging.mode = meta.mode;
            staging.uid = meta.uid;
            staging.gid = meta.gid;
            staging.ttl_secs = meta.ttl_secs;
        }
        Ok(staging)
    }

    /// Publishes a staged write atomically, replacing any earlier version
    /// and evicting to stay within quotas.
    pub fn publish(&self, staging: StagingFile) -> Result<EntryInfo, StoreError> {
        let start = Instant::now();
        let ns = staging.ns.clone();
        let r = self.publish_inner(staging, None);
        self.record_latency(&ns, Op::Publish, start.elapsed());
        r
    }

    fn publish_inner(
        &self,
        mut staging: StagingFile,
        also_remove: Option<(Key, u64)>,
    ) -> Result<EntryInfo, StoreError> {
        let sha256 = staging.content_sha256()?;
        let now = self.clock.now();
        let durability = {
            let idx = self.lock();
            idx.namespace(&staging.ns)
                .ok_or(StoreError::NotFound)?
                .policy
                .durability
        };
        let header = entry::EntryHeader {
            namespace: staging.ns.as_bytes().to_vec(),
            key: staging.key.as_bytes().to_vec(),
            mtime: staging.mtime.unwrap_or(now),
            ttl_secs: staging.ttl_secs,
            logical_size: staging.len,
            stored_content_size: staging.len,
            compression: 0,
            content_sha256: sha256,
            mode: staging.mode,
            uid: staging.uid,
            gid: staging.gid,
        };
        {
            use std::os::unix::fs::FileExt;
            if staging.overrun {
                staging.file.set_len(staging.len)?;
            }
            staging
                .file
                .write_all_at(&header.encode_trailer(), staging.len)?;
        }
        if durability == Durability::Fsync {
            staging.file.sync_all()?;
        }
        let md = staging.file.metadata()?;
        let meta = meta_from_header(
            &header,
            staging.version,
            md.ino(),
            md.len(),
            md.blocks() * 512,
            true,
        );
        let dest = self.layout.entry_path(&staging.ns, &staging.key);
        let mut made_shard = self.layout.ensure_shard(&dest)?;

        let (ns, key) = (staging.ns.clone(), staging.key.clone());
        let mut trash = Vec::new();
        let info = {
            let mut idx = self.lock();
            let state = idx.namespace(&ns).ok_or(StoreError::NotFound)?;
            let policy = state.policy.clone();
            if policy
                .max_entry_bytes
                .is_some_and(|m| meta.logical_size > m)
                || policy.max_bytes.is_some_and(|q| meta.stored_bytes > q)
                || meta.stored_bytes > idx.limits.max_bytes
            {
                return Err(StoreError::TooBig);
            }
            if policy.max_entries == Some(0) || idx.limits.max_entries == Some(0) {
                return Err(StoreError::NoSpace);
            }
            self.index_changed_locked();
            let old = idx.remove(&ns, &key);
            let Some(victims) = idx.make_room(&ns, meta.stored_bytes, now) else {
                if let Some(old) = old {
                    idx.insert(&ns, key.clone(), old);
                }
                return Err(StoreError::NoSpace);
            };
            // Keep the replaced version readable for a grace period: a
            // reader whose lookup saw it may open it a moment later.
            let retired = old
                .as_ref()
                .filter(|o| o.version != meta.version)
                .and_then(|o| {
                    let keep = self.layout.trash_path();
                    fs::hard_link(&dest, &keep).ok().map(|()| (o.clone(), keep))
                });
            let renamed = self.rename_into_place(&staging.path, &dest);
            if let Ok(made) = renamed {
                made_shard |= made;
            }
            if let Err(e) = renamed {
                if let Some((_, keep)) = retired {
                    trash.push(keep);
                }
                if let Some(old) = old {
                    idx.insert(&ns, key.clone(), old);
                }
                self.move_to_trash_locked(&idx, victims, &mut trash);
                drop(idx);
                self.dispose(trash);
                return Err(e.into());
            }
            staging.published = true;
            if let Some((old, keep)) = retired {
                self.retired_lock().insert(old.version, (old, keep, now));
            }
            if let Some((from, version)) = &also_remove
                && idx.peek(&ns, from).is_some_and(|m| m.version == *version)
            {
                idx.remove(&ns, from);
                let from_path = self.layout.entry_path(&ns, from);
                let to = self.layout.trash_path();
                if fs::rename(&from_path, &to).is_ok() {
                    trash.push(to);
                }
            }
            idx.insert(&ns, key.clone(), meta.clone());
            let m = &idx.namespace(&ns).expect("exists").metrics;
            metrics::add(&m.publishes, 1);
            metrics::add(&m.published_bytes, meta.logical_size);
            self.move_to_trash_locked(&idx, victims, &mut trash);
            Self::info_locked(&idx, &ns, &meta)
        };
        self.dispose(trash);
        if durability == Durability::Fsync
            && let Some(dir) = dest.parent()
        {
            File::open(dir)?.sync_all()?;
            // A shard made for this entry must be in its parents too.
            if made_shard {
                for up in dir.ancestors().skip(1).take(2) {
                    File::open(up)?.sync_all()?;
                }
            }
        }
        Ok(info)
    }

    /// Frees files moved into trash/: on the reaper's thread, or at once
    /// when the volume is what bounds the cache.
    fn dispose(&self, trash: Vec<PathBuf>) {
        if self.volume_bound.load(Ordering::Relaxed) {
            unlink_all(&trash);
        } else {
            self.reaper.reap(trash);
        }
    }

    /// Renames a staged file to its entry path. The shard directory is
    /// made again if it went away since it was last seen; says whether.
    fn rename_into_place(&self, from: &Path, dest: &Path) -> io::Result<bool> {
        match fs::rename(from, dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && from.exists() => {
                self.layout.shard_vanished(dest);
                let made = self.layout.ensure_shard(dest)?;
                fs::rename(from, dest).map(|()| made)
            }
            r => r.map(|()| false),
        }
    }

    /// Takes victims' files out of place (a rename each) and counts them.
    /// Their unlinking waits until the lock is released.
    fn move_to_trash_locked(&self, idx: &Index, victims: Vec<Removed>, trash: &mut Vec<PathBuf>) {
        if !victims.is_empty() {
            self.index_changed_locked();
        }
        let listener = self.on_removed.get();
        for v in victims {
            if let Some(state) = idx.namespace(&v.ns) {
                if let Some(tell) = listener {
                    tell(state.id, &v.key);
                }
                let m = &state.metrics;
                let (n, bytes) = match v.reason {
                    RemoveReason::Evicted => (&m.evictions, &m.evicted_bytes),
                    RemoveReason::Expired => (&m.expirations, &m.expired_bytes),
                    RemoveReason::Purged => (&m.purged, &m.purged_bytes),
                };
                metrics::add(n, 1);
                metrics::add(bytes, v.meta.stored_bytes);
            }
            let to = self.layout.trash_path();
            match fs::rename(self.layout.entry_path(&v.ns, &v.key), &to) {
                Ok(()) => trash.push(to),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!(
                    "cannot remove entry {}/{:?} ({} bytes): {e}",
                    v.ns,
                    v.key,
                    v.meta.stored_bytes
                ),
            }
        }
    }

    /// Removes a key only if it still holds `version` (a writer taking
    /// back the empty version its first close published).
    pub fn remove_version(&self, ns: &Namespace, key: &Key, version: u64) {
        let _ = self.remove_inner(ns, key, Some(version));
    }

    /// Removes a key (unlink).
    pub fn remove(&self, ns: &Namespace, key: &Key) -> Result<(), StoreError> {
        self.remove_inner(ns, key, None)
    }

    fn remove_inner(
        &self,
        ns: &Namespace,
        key: &Key,
        only_version: Option<u64>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut trash = Vec::new();
        {
            let mut idx = self.lock();
            let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
            let meta = state.peek(key).ok_or(StoreError::NotFound)?;
            if only_version.is_some_and(|v| v != meta.version) {
                return Err(StoreError::NotFound);
            }
            let expired = idx
                .expires_at(&state.policy, &meta)
                .is_some_and(|at| at <= now);
            self.index_changed_locked();
            let meta = idx.remove(ns, key).expect("peeked");
            let victim = Removed {
                ns: ns.clone(),
                key: key.clone(),
                meta,
                reason: RemoveReason::Expired,
            };
            if expired {
                self.move_to_trash_locked(&idx, vec![victim], &mut trash);
                drop(idx);
                self.dispose(trash);
                return Err(StoreError::NotFound);
            }
            let to = self.layout.trash_path();
            if fs::rename(self.layout.entry_path(ns, key), &to).is_ok() {
                trash.push(to);
            }
        }
        self.dispose(trash);
        Ok(())
    }

    /// Stages a verbatim copy of a key's live version (content, owner,
    /// mode, TTL), for changes that republish it.
    fn copy_of_live(
        &self,
        ns: &Namespace,
        key: &Key,
    ) -> Result<(EntryMeta, StagingFile), StoreError> {
        let meta = self.live_meta(ns, key)?;
        let owner = Owner {
            uid: meta.uid,
            gid: meta.gid,
            mode: meta.mode,
        };
        let staging = self.begin_write(ns, key, WriteFrom::Current, owner)?;
        // Expired or removed in between: nothing was copied.
        if staging.known_sha256.is_none() {
            return Err(StoreError::NotFound);
        }
        Ok((meta, staging))
    }

    /// Renames a live entry within its namespace, replacing the target.
    /// Content and metadata travel unchanged; the trailer names the new key.
    pub fn rename(&self, ns: &Namespace, from: &Key, to: &Key) -> Result<EntryInfo, StoreError> {
        let (meta, mut staging) = self.copy_of_live(ns, from)?;
        staging.retarget(to.clone());
        staging.mtime = Some(meta.mtime);
        staging.version = meta.version;
        self.publish_inner(staging, Some((from.clone(), meta.version)))
    }

    /// Applies metadata changes (touch, chmod, chown, TTL, truncate) by
    /// republishing a copy. Truncation makes a new version.
    pub fn update(
        &self,
        ns: &Namespace,
        key: &Key,
        update: MetaUpdate,
    ) -> Result<EntryInfo, StoreError> {
        let (meta, mut staging) = self.copy_of_live(ns, key)?;
        staging.mtime = Some(update.mtime.unwrap_or(meta.mtime));
        if let Some(ttl) = update.ttl_secs {
            staging.ttl_secs = ttl;
        }
        staging.mode = update.mode.unwrap_or(meta.mode);
        staging.uid = update.uid.unwrap_or(meta.uid);
        staging.gid = update.gid.unwrap_or(meta.gid);
        match update.truncate {
            Some(size) if size != meta.logical_size => staging.truncate(size)?,
            _ => staging.version = meta.version,
        }
        self.publish(staging)
    }

    // ----- housekeeping -----

    /// Removes expired entries and reclaims their space; returns how many.
    pub fn sweep_expired(&self) -> usize {
        let now = self.clock.now();
        let mut trash = Vec::new();
        self.retired_lock().retain(|_, (_, path, at)| {
            let keep = now - *at < RETIRED_GRACE_NANOS;
            if !keep {
                trash.push(path.clone());
            }
            keep
        });
        let n = {
            let mut idx = self.lock();
            let expired = idx.take_expired(now);
            let n = expired.len();
            self.move_to_trash_locked(&idx, expired, &mut trash);
            n
        };
        unlink_all(&trash);
        n
    }

    pub fn usage(&self) -> Usage {
        let idx = self.lock();
        Usage {
            quota_bytes: idx.limits.max_bytes,
            used_bytes: idx.total_bytes(),
            entries: idx.total_entries(),
            max_entries: idx.limits.max_entries,
        }
    }

    /// One consistent snapshot of every figure: gauges and counters are
    /// read under the index lock, so a publish or an eviction is either
    /// wholly in it or not at all. O(namespaces), never O(entries).
    pub fn stats(&self) -> Snapshot {
        let idx = self.lock();
        let per_ns = idx
            .namespaces()
            .map(|(ns, s)| {
                let gauges = Gauges {
                    entries: s.len(),
                    logical_bytes: s.logical_bytes(),
                    stored_bytes: s.bytes(),
                    max_bytes: s.policy.max_bytes,
                    max_entries: s.policy.max_entries,
                };
                (ns.to_string(), NsStats::new(&s.metrics, gauges))
            })
            .collect();
        let total = NsStats {
            max_bytes: Some(idx.limits.max_bytes),
            max_entries: idx.limits.max_entries,
            ..NsStats::default()
        };
        Snapshot::new(
            per_ns,
            &self.metrics,
            total,
            Formats {
                backing: FORMAT_VERSION,
                entry: ENTRY_FORMAT,
            },
        )
    }

    /// Space and entry usage of one namespace against its own limits, for
    /// a namespace that has a byte quota; `None` otherwise.
    pub fn namespace_usage(&self, ns: &Namespace) -> Option<Usage> {
        let idx = self.lock();
        let s = idx.namespace(ns)?;
        let quota = s.policy.max_bytes?;
        Some(Usage {
            quota_bytes: quota.min(idx.limits.max_bytes),
            used_bytes: s.bytes(),
            entries: s.len(),
            max_entries: s.policy.max_entries,
        })
    }

    /// Ends this daemon's session: whatever is still staged (writes that
    /// will never close) or kept in its trash goes. The store must not be
    /// written through afterwards.
    pub fn end_session(&self) {
        self.reaper.finish();
        self.layout.end_session();
    }

    /// Saves the index for a fast next start. The lock is held until the
    /// snapshot is in place, so no change can slip in between collecting
    /// and renaming; any change after it deletes the snapshot again.
    pub fn save_snapshot(&self) -> io::Result<usize> {
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
        Ok(entries.len())
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
        ttl_secs: h.ttl_secs,
        logical_size: h.logical_size,
        stored_bytes,
        mode: h.mode,
        uid: h.uid,
        gid: h.gid,
        verified,
        last_access: h.mtime,
    }
}

/// Checks a file's trailer and content against what the index expects.
fn verify_entry(file: &File, meta: &EntryMeta) -> Result<(), entry::CorruptEntry> {
    let h = entry::read_header(file, meta.file_size)?;
    if h.logical_size != meta.logical_size || h.mtime != meta.mtime {
        return Err(entry::CorruptEntry::ContentChecksum);
    }
    entry::verify_content(file, &h)
}

/// The backing dir is untrusted: never follow a symlink planted in it.
fn open_nofollow(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
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

fn unlink_all(paths: &[PathBuf]) {
    for p in paths {
        if let Err(e) = fs::remove_file(p) {
            log::warn!("cannot unlink {}: {e}", p.display());
        }
    }
}

/// Bytes the backing volume can still give to an unprivileged writer.
fn volume_available(path: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

impl Drop for Store {
    fn drop(&mut self) {
        self.end_session();
    }
}

#[cfg(test)]
mod tests;

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
