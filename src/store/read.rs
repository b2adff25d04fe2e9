//! Reads: the read handle, and the open paths (hot, cold, of an exact
//! version, of a version replaced moments ago).
//!
//! Invariants: a version's content is checked against its trailer before
//! it is first served; a file under a key that is not the one the index
//! knows is taken in only if valid, else quarantined; a handle reads its
//! version for good, whatever happens to the entry afterwards.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::backing::{BackingIo, FaultOp};
use super::index::EntryMeta;
use super::lookup::same_file;
use super::probe::Probed;
use super::{Store, StoreError, entry, recover};
use crate::metrics::{self, NsMetrics};
use crate::names::{Key, Namespace};

/// An open published version. Reads keep working after the entry is
/// replaced, expired or removed (the file stays open).
pub struct ReadHandle {
    /// Shared with the other readers of the version (reads are `pread`).
    file: Arc<File>,
    len: u64,
    version: u64,
    /// Its namespace's metrics: reads record bytes and latency lock-free.
    metrics: Arc<NsMetrics>,
    /// The seam (nothing at all in a release build).
    io: BackingIo,
}

impl ReadHandle {
    /// The handle of an open that found its entry: counts the hit.
    fn counted(
        io: &BackingIo,
        file: Arc<File>,
        meta: &EntryMeta,
        m: Arc<NsMetrics>,
        start: Instant,
    ) -> Self {
        metrics::add(&m.hits, 1);
        metrics::add(&m.read_bytes, meta.logical_size);
        m.open.since(start);
        ReadHandle {
            file,
            len: meta.logical_size,
            version: meta.version,
            metrics: m,
            io: io.clone(),
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
        self.io.check(FaultOp::Read)?;
        let n = self.readable(offset, size);
        if n == 0 {
            return Ok(Some(Vec::new()));
        }
        if NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
            return Ok(None);
        }
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

    /// How many of `size` bytes at `offset` lie within the content.
    fn readable(&self, offset: u64, size: usize) -> usize {
        self.len.checked_sub(offset).map_or(0, |left| {
            size.min(usize::try_from(left).unwrap_or(usize::MAX))
        })
    }

    fn read_at_inner(&self, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        let n = self.readable(offset, size);
        let mut buf = vec![0u8; n];
        let mut done = 0;
        while done < n {
            let got = self
                .io
                .read_at(&self.file, &mut buf[done..], offset + done as u64)?;
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

/// What `Store::open_version` found.
pub enum OpenVersion {
    /// That version, opened (and counted).
    Opened(ReadHandle),
    /// That version is no longer live nor kept (replaced, removed or
    /// expired since it was looked up).
    Gone,
}

/// The backing filesystem refused `RWF_NOWAIT`: every read goes to the
/// disk threads.
static NOWAIT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

impl Store {
    /// Moves a bad file aside and counts it.
    fn quarantine(&self, path: &std::path::Path, why: &str) {
        metrics::add(&self.metrics.corrupt, 1);
        recover::quarantine(&self.layout, path, why);
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
            // Its plain bytes are to be made again: a disk thread's work.
            if meta.compressed {
                return OpenHot::Verify;
            }
            return OpenHot::Cold;
        };
        let metrics = Arc::clone(&state.metrics);
        let Some(meta) = idx.promote(ns, key, now) else {
            return OpenHot::Cold;
        };
        drop(idx);
        OpenHot::Done(ReadHandle::counted(
            &self.layout.io,
            file,
            &meta,
            metrics,
            start,
        ))
    }

    /// Opens the live version of a key for reading; `NotFound` if it is
    /// gone, expired or corrupt. The handle says which version it holds.
    pub fn open_read(&self, ns: &Namespace, key: &Key) -> Result<ReadHandle, StoreError> {
        let start = Instant::now();
        if let OpenHot::Done(h) = self.open_shared(ns, key, None, start) {
            return Ok(h);
        }
        self.open_cold(ns, key, start)
    }

    /// The live version of a key, opened with system calls (and checked
    /// against its checksum on its first open since a start).
    fn open_cold(
        &self,
        ns: &Namespace,
        key: &Key,
        start: Instant,
    ) -> Result<ReadHandle, StoreError> {
        let path = self.layout.entry_path(ns, key);
        // A publish may rename a new file in between our reading the index
        // and opening the path: then the index already knows the new file,
        // and one more round opens it consistently.
        for _ in 0..4 {
            let meta = self.live_meta(ns, key)?;
            let file = match self.layout.io.open_nofollow(&path) {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    self.quarantine(&path, "a symlink");
                    self.forget_if_same(ns, key, &meta);
                    return Err(StoreError::NotFound);
                }
                // Gone, or another file: the index decides whether that
                // is this daemon's change since `meta` was read (then it
                // already knows) or another's (then it learns it).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.reconcile(ns, key, &meta)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // Fresh: through a view of another host's volume, a replaced
            // file's cached size is the old one's, and its trailer read
            // there is cut short or garbage (issue 13).
            let (ino, len) = self.layout.io.fstat_fresh(&file)?;
            if ino != meta.file_id || len != meta.file_size {
                self.reconcile(ns, key, &meta)?;
                continue;
            }
            // An `Err` here is the volume failing, not the file: nothing
            // is moved.
            let (file, compressed) = match self.readable_file(file, &meta)? {
                Ok(f) => f,
                // Read again as the backing dir has it now, never moved
                // aside: a valid trailer is no damage.
                Err(entry::CorruptEntry::Changed) => {
                    self.forget_if_same(ns, key, &meta);
                    self.adopt_from_backing(ns, key, self.clock.now())?;
                    continue;
                }
                // Its content, read through a trailer that read well:
                // damage. Exactly the file checked is moved: a newer one
                // may have taken the path since.
                Err(
                    why @ (entry::CorruptEntry::ContentChecksum
                    | entry::CorruptEntry::Decompress(_)
                    | entry::CorruptEntry::Compression(_)),
                ) => {
                    self.quarantine_probed(ns, key, ino, &why.to_string());
                    self.forget_if_same(ns, key, &meta);
                    return Err(StoreError::NotFound);
                }
                Err(why) => {
                    // Its trailer: bad only if a probe, which opens the
                    // path again, says so. Through a view of another
                    // host's volume the file may not be the size its
                    // attributes say.
                    self.forget_if_same(ns, key, &meta);
                    match self.data_dir.probe(&self.layout, ns, key)? {
                        Some(Probed::Valid(_)) => {
                            self.adopt_from_backing(ns, key, self.clock.now())?;
                            continue;
                        }
                        Some(Probed::Bad { ino, why: again }) => {
                            log::debug!("{ns}/{key:?} read bad ({why}), then {again}");
                            self.quarantine_probed(ns, key, ino, &again);
                        }
                        None => {}
                    }
                    return Err(StoreError::NotFound);
                }
            };
            let file = Arc::new(file);
            let mut idx = self.lock();
            if idx
                .promote(ns, key, self.clock.now())
                .is_some_and(|m| m.version == meta.version)
            {
                idx.mark_verified(ns, key, meta.version, compressed);
                idx.share_file(meta.version, &file);
            }
            let Some(m) = idx.namespace(ns).map(|s| Arc::clone(&s.metrics)) else {
                return Err(StoreError::NotFound);
            };
            drop(idx);
            return Ok(ReadHandle::counted(&self.layout.io, file, &meta, m, start));
        }
        Err(StoreError::Io(io::Error::other(
            "entry keeps changing under the reader",
        )))
    }

    /// Opens exactly version `version` of a key, after `open_hot` could
    /// not: the live version if it is that one, else a kept replaced one.
    pub fn open_version(
        &self,
        ns: &Namespace,
        key: &Key,
        version: u64,
    ) -> Result<OpenVersion, StoreError> {
        let kept = |count| {
            self.open_retired(ns, version, count)
                .map(|h| h.map_or(OpenVersion::Gone, OpenVersion::Opened))
        };
        match self.open_cold(ns, key, Instant::now()) {
            Ok(h) if h.version == version => Ok(OpenVersion::Opened(h)),
            // The live version is another one, and counted as a hit when
            // opened: the kept one is not counted twice.
            Ok(_) => kept(false),
            Err(StoreError::NotFound) => kept(true),
            Err(e) => Err(e),
        }
    }

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
        let file = self.layout.io.open_nofollow(&path)?;
        // The kept link must still be that version's file (a hard link
        // keeps the inode), whatever else may have taken its name.
        if file.metadata()?.ino() != meta.file_id {
            return Ok(None);
        }
        let Ok((file, _)) = self.readable_file(file, &meta)? else {
            return Err(StoreError::NotFound);
        };
        if count {
            metrics::add(&m.hits, 1);
            metrics::add(&m.read_bytes, meta.logical_size);
        }
        Ok(Some(ReadHandle {
            file: Arc::new(file),
            len: meta.logical_size,
            version,
            metrics: m,
            io: self.layout.io.clone(),
        }))
    }

    /// Forgets a key if the index still holds exactly `seen` (not a
    /// version published since, nor a same-version metadata republish).
    pub(super) fn forget_if_same(&self, ns: &Namespace, key: &Key, seen: &EntryMeta) {
        let mut idx = self.lock();
        if idx.peek(ns, key).is_some_and(|m| same_file(&m, seen)) {
            self.index_changed_locked();
            idx.remove(ns, key);
        }
    }
}

impl Store {
    /// The file a version's readers read, and whether it is stored
    /// compressed: the entry's own file (checked against its trailer on
    /// its first open), or a plain copy of a compressed one (checked as it
    /// is made). The inner `Err`: the file is damaged; the outer: the
    /// volume failed.
    fn readable_file(
        &self,
        file: File,
        meta: &EntryMeta,
    ) -> Result<Result<(File, bool), entry::CorruptEntry>, StoreError> {
        // The common case: no system call.
        if meta.verified && !meta.compressed {
            return Ok(Ok((file, false)));
        }
        let io = &self.layout.io;
        let checked = entry::read_header(io, &file, meta.file_size).and_then(|h| {
            if h.logical_size != meta.logical_size || h.mtime != meta.mtime {
                return Err(entry::CorruptEntry::Changed);
            }
            Ok(h)
        });
        let h = match checked {
            Ok(h) => h,
            Err(entry::CorruptEntry::Io(e)) => return Err(e.into()),
            Err(why) => return Ok(Err(why)),
        };
        if h.compression != entry::COMPRESSION_NONE {
            return Ok(self.unpack(&file, &h)?.map(|plain| (plain, true)));
        }
        if !meta.verified {
            match entry::verify_content(io, &file, &h) {
                Ok(()) => {}
                Err(entry::CorruptEntry::Io(e)) => return Err(e.into()),
                Err(why) => return Ok(Err(why)),
            }
        }
        Ok(Ok((file, false)))
    }
}
