//! The FUSE layer: a translation. A request comes in, a store call goes out,
//! the reply maps the result (errno mapping lives in `errno.rs` alone).
//!
//! Kernel cache rules (invariant 3 of the store, enforced here). A hot
//! read is one request (OPEN, which counts the hit and checks the TTL;
//! RELEASE follows after close() has returned):
//! - An entry's inode is one published version, and a version never
//!   changes, so readers open it with FOPEN_KEEP_CACHE: its pages stay in
//!   the kernel across opens. FOPEN_NOFLUSH spares their close a FLUSH.
//! - Its dentry and attributes are cached until the entry expires, at most
//!   `ENTRY_CACHE_MAX`. Misses are not cached (each is a LOOKUP, counted).
//! - Whatever replaces or removes a key drops its dentry before the change
//!   is reported done: a writer's close() returns, a purge finishes, only
//!   once the kernel forgot the old version (`invalidate.rs`); evictions
//!   and expiries drop theirs as they happen. An open that still reaches a
//!   version gone meanwhile gets ESTALE, and the kernel looks up again.
//! - No writer ever opens a published version's inode: O_TRUNC would set
//!   its size to 0 and writes past the end would grow it under its
//!   readers' page cache. Such an open gets ESTALE, and the kernel's
//!   retry (a fresh lookup from the same thread) is given a new inode,
//!   the one its content will be published as (`Redirect`). Writers do
//!   direct I/O, so their bytes never enter a page cache either.
//!
//! Metrics: the store counts what it does; this layer counts only what it
//! alone sees: writes refused (by the errno decided here), backing I/O
//! errors turned into EIO, and which lookups are reads that missed
//! (`misses.rs`). Purges requested through the `user.cachefs.purge` xattr
//! are one store call each.

mod control;
mod disk;
mod errno;
mod handles;
mod inodes;
mod invalidate;
mod misses;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fuser::Errno;
use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::metrics::Rejection;
use crate::store::{
    EntryInfo, Key, Lookup, MetaUpdate, NAME_MAX, Namespace, OpenHot, Owner, PurgeFilter,
    PurgeReport, PurgeSelect, ReadHandle, StagingFile, Store, StoreError, WriteFrom, to_nanos,
    to_system_time,
};
use errno::errno;
use handles::{ANY_OWNER, DirEntryItem, Handle, HandleTable, WriteState};
use inodes::{BLOCK_SIZE as BLOCK, EntryAttr, InodeKind, InodeTable, kind_of};

/// How long the kernel may cache namespace dentries and directory attrs.
const DIR_TTL: Duration = Duration::from_secs(10);
/// The longest the kernel may cache an entry's dentry and attributes
/// (never past the entry's expiry). What this mount changes it
/// invalidates at once; the bound is for what it cannot see.
const ENTRY_CACHE_MAX: Duration = Duration::from_secs(60);

const XATTR_TTL: &str = "user.cachefs.ttl";
const XATTR_EXPIRES: &str = "user.cachefs.expires";
const XATTR_SHA256: &str = "user.cachefs.sha256";
const XATTR_STORED: &str = "user.cachefs.stored_bytes";
/// Set on the mount root or a namespace dir: purges (value: `all`,
/// `expired`, `older-than=SECONDS`). The daemon does the work, so its
/// counters and `df` change at once.
pub const XATTR_PURGE: &str = "user.cachefs.purge";
/// Read back on the same dir by the same process: "ENTRIES BYTES" of its
/// last purge there.
pub const XATTR_PURGED: &str = "user.cachefs.purged";

pub struct CacheFs {
    store: Arc<Store>,
    inodes: InodeTable,
    handles: Arc<HandleTable>,
    uid: u32,
    gid: u32,
    started: SystemTime,
    /// Serialises namespace mkdir/rmdir against each other.
    ns_ops: Mutex<()>,
    /// Which lookup misses are reads that missed (see `misses.rs`).
    misses: misses::MissLedger,
    /// Each purging process's last result per dir inode.
    purges: Mutex<HashMap<(u32, u64), PurgeReport>>,
    notifier: invalidate::NotifierSlot,
    invalidate: Arc<invalidate::Invalidator>,
    /// Writers sent off a published version's inode (see `open`), by key
    /// and the writing thread (several may be opening one key at once).
    redirects: Mutex<HashMap<(Namespace, Key, u32), Redirect>>,
    /// Where reads that must wait for the disk go (see `disk.rs`).
    disk: disk::DiskReaders,
}

/// A writer whose open of a published version was refused with ESTALE:
/// the kernel looks the name up again for it, and gets `version`, the
/// inode its staged content will be published as.
struct Redirect {
    version: u64,
    /// The size the redirected inode starts with (0 for O_TRUNC).
    size: u64,
    perm: u16,
    until: Instant,
}

/// A redirected writer's lookup and open follow within microseconds; a
/// redirect older than this belongs to a writer that gave up.
const REDIRECT_LIFE: Duration = Duration::from_secs(5);

impl CacheFs {
    pub fn new(store: Arc<Store>) -> CacheFs {
        let notifier = invalidate::NotifierSlot::default();
        let invalidate = Arc::new(invalidate::Invalidator::new(Arc::clone(&notifier)));
        let inv = Arc::clone(&invalidate);
        store.set_removal_listener(Box::new(move |ns_id, key| {
            inv.entry(
                inodes::namespace_ino(ns_id),
                OsStr::from_bytes(key.as_bytes()).to_owned(),
            )
        }));
        CacheFs {
            notifier,
            invalidate,
            redirects: Mutex::new(HashMap::new()),
            disk: disk::DiskReaders::new(),
            store,
            inodes: InodeTable::default(),
            handles: Arc::default(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            started: SystemTime::now(),
            ns_ops: Mutex::new(()),
            misses: misses::MissLedger::default(),
            purges: Mutex::new(HashMap::new()),
        }
    }

    /// Where the session's notifier must be put once the session exists:
    /// until then no kernel cache is invalidated.
    pub fn notifier_slot(&self) -> invalidate::NotifierSlot {
        Arc::clone(&self.notifier)
    }

    /// How long the kernel may keep an entry's dentry and attributes:
    /// never past its expiry, and at most `ENTRY_CACHE_MAX`.
    fn entry_ttl(&self, info: &EntryInfo) -> Duration {
        match info.expires {
            None => ENTRY_CACHE_MAX,
            Some(at) => {
                let left = at.saturating_sub(self.store.now());
                Duration::from_nanos(left.max(0) as u64).min(ENTRY_CACHE_MAX)
            }
        }
    }

    /// Drops the kernel's dentry of a key (async; see `invalidate.rs`).
    fn forget_dentry(&self, ns: &Namespace, key: &Key) {
        if let Some(id) = self.store.namespace_id(ns) {
            self.invalidate.entry(
                inodes::namespace_ino(id),
                OsStr::from_bytes(key.as_bytes()).to_owned(),
            );
        }
    }

    /// The inode a redirected writer's lookup gets, if `pid` is one.
    fn redirected(&self, pid: u32, ns: &Namespace, key: &Key) -> Option<FileAttr> {
        let redirects = self.redirects.lock().unwrap_or_else(|p| p.into_inner());
        let r = redirects
            .get(&(ns.clone(), key.clone(), pid))
            .filter(|r| r.until > Instant::now())?;
        Some(
            EntryAttr {
                ino: r.version,
                size: r.size,
                blocks: r.size.div_ceil(512),
                mtime: SystemTime::now(),
                perm: u32::from(r.perm),
                uid: self.uid,
                gid: self.gid,
            }
            .to_attr(),
        )
    }

    /// A writer has the key open, or is on its way (redirected).
    fn is_being_written(&self, ns: &Namespace, key: &Key) -> bool {
        self.handles.is_being_written(ns, key)
            || self
                .redirects
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .any(|(n, k, _)| n == ns && k == key)
    }

    /// Takes the redirect of thread `pid` to inode `ino`, if any.
    fn take_redirect(&self, pid: u32, ns: &Namespace, key: &Key, ino: u64) -> Option<Redirect> {
        let mut redirects = self.redirects.lock().unwrap_or_else(|p| p.into_inner());
        let k = (ns.clone(), key.clone(), pid);
        if redirects.get(&k).is_some_and(|r| r.version == ino) {
            redirects.remove(&k)
        } else {
            None
        }
    }

    /// Maps a store failure to its errno, counting backing I/O errors.
    fn fail(&self, e: &StoreError) -> Errno {
        counted_errno(&self.store, e)
    }

    /// Counts a refused write by the errno its writer sees.
    fn rejected(&self, ns: &Namespace, en: Errno) -> Errno {
        let why = match en {
            Errno::EFBIG => Some(Rejection::TooBig),
            Errno::ENOSPC => Some(Rejection::NoSpace),
            Errno::EINVAL => Some(Rejection::Invalid),
            _ => None,
        };
        if let Some(why) = why {
            self.store.record_rejection(ns, why);
        }
        en
    }

    /// Takes back what the miss ledger says the store over-counted.
    fn take_back(&self, ns: &Namespace, t: misses::TakeBack) {
        if let misses::TakeBack::Miss { expired } = t {
            self.store.uncount_miss(ns, expired);
        }
    }

    /// The namespace a dir or entry inode belongs to.
    fn namespace_of_any(&self, ino: u64) -> Option<Namespace> {
        match kind_of(ino)? {
            InodeKind::Namespace(_) => self.namespace_of(ino),
            InodeKind::Entry => self.inodes.get(ino).map(|(ns, _, _)| ns),
            _ => None,
        }
    }

    /// A live count of the handles open on this mount (files being read
    /// or written, directories being listed).
    pub fn open_handles(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.handles.open_count()
    }

    fn dir_attr(&self, ino: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: FileType::Directory,
            perm: if ino == inodes::CONTROL_DIR {
                0o555
            } else {
                0o755
            },
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        }
    }

    fn control_attr(&self, ino: u64) -> FileAttr {
        let size = control::render(&self.store, ino).len() as u64;
        FileAttr {
            size,
            blocks: size.div_ceil(512),
            kind: FileType::RegularFile,
            perm: 0o444,
            nlink: 1,
            mtime: SystemTime::now(),
            ..self.dir_attr(ino)
        }
    }

    fn entry_attr(&self, info: &EntryInfo) -> FileAttr {
        EntryAttr {
            ino: info.version,
            size: info.logical_size,
            blocks: info.stored_bytes.div_ceil(512),
            mtime: to_system_time(info.mtime),
            perm: info.mode,
            uid: info.uid,
            gid: info.gid,
        }
        .to_attr()
    }

    fn staging_attr(&self, st: &StagingFile) -> FileAttr {
        let (uid, gid) = st.owner();
        EntryAttr {
            ino: st.version(),
            size: st.len(),
            blocks: st.len().div_ceil(512),
            mtime: SystemTime::now(),
            perm: st.mode(),
            uid,
            gid,
        }
        .to_attr()
    }

    fn namespace_of(&self, ino: u64) -> Option<Namespace> {
        match kind_of(ino)? {
            InodeKind::Namespace(id) => self.store.namespace_by_id(id),
            _ => None,
        }
    }

    /// Parses a name inside a namespace; an over-long name is ENAMETOOLONG
    /// everywhere, other bad names as `bad`.
    fn parse_key(&self, ns: &Namespace, name: &OsStr, bad: Errno) -> Result<Key, Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        self.store
            .parse_key(ns, name.as_bytes())
            .map_err(|e| match e {
                StoreError::NotFound => Errno::ENOENT,
                _ => bad,
            })
    }

    /// Answers a flush or fsync. After a publish the answer waits until the
    /// kernel has dropped the key's old dentry: once close() returns,
    /// every open finds the new version.
    /// (Evictions this publish made queued theirs too: `is_busy`.)
    fn reply_when_visible(&self, result: Result<bool, Errno>, reply: ReplyEmpty) {
        match result {
            Ok(queued) if queued || self.invalidate.is_busy() => {
                self.invalidate.then(move || reply.ok())
            }
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Publishes what a write handle has staged. Errors are remembered so
    /// every later flush/close reports them too. Returns whether the key's
    /// dentry drop was queued: a reply promising the publish must then
    /// wait for it (`reply_when_visible`).
    fn publish_pending(&self, state: &mut WriteState) -> Result<bool, Errno> {
        if let Some(e) = state.failed {
            return Err(e);
        }
        let Some(staging) = state.staging.take() else {
            return Ok(false);
        };
        state.dirty = false;
        if state.cancelled || staging.is_unmodified_copy() {
            return Ok(false);
        }
        let empty = staging.is_empty();
        match self.store.publish(staging) {
            Ok(info) => {
                state.published_empty = empty.then_some(info.version);
                self.inodes.refresh(self.entry_attr(&info));
                // Usually the key's dentry already names this version: the
                // writer's own inode (from its create or its redirect) is
                // the version it publishes, and lookups during the write
                // were not cached. A handle writing again after a publish
                // stages a new version under its old inode: drop that.
                if info.version == state.ino {
                    return Ok(false);
                }
                self.forget_dentry(&state.ns, &state.key);
                Ok(true)
            }
            Err(e) => {
                let en = self.rejected(&state.ns, self.fail(&e));
                state.failed = Some(en);
                Err(en)
            }
        }
    }

    fn open_write(
        &self,
        req: &Request,
        ns: Namespace,
        key: Key,
        flags: i32,
        mode: Option<u32>,
        version: Option<u64>,
    ) -> Result<(u64, FileAttr), Errno> {
        let from = if flags & libc::O_TRUNC != 0 {
            WriteFrom::Empty
        } else {
            WriteFrom::Current
        };
        let owner = Owner {
            uid: req.uid(),
            gid: req.gid(),
            mode: mode.unwrap_or(0o644),
        };
        let staging = self
            .store
            .begin_write_as(
                &ns,
                &key,
                from,
                owner,
                version.unwrap_or_else(|| self.store.reserve_version()),
            )
            .map_err(|e| self.rejected(&ns, self.fail(&e)))?;
        let attr = self.staging_attr(&staging);
        let fh = self
            .handles
            .insert(Handle::Write(Box::new(Mutex::new(WriteState {
                ns,
                key,
                append: flags & libc::O_APPEND != 0,
                ino: staging.version(),
                staging: Some(staging),
                failed: None,
                // A create or an O_TRUNC open is a change in itself: its
                // creator's close publishes it even unwritten (read-your-
                // writes for `touch`, claims, `: > key`). A shell's `>`
                // therefore publishes an empty version at its first close
                // (open, dup2, close) before the command writes.
                dirty: flags & (libc::O_TRUNC | libc::O_CREAT) != 0,
                writer_owners: Vec::new(),
                creator_pid: req.pid(),
                published_empty: None,
                cancelled: false,
            }))));
        Ok((fh, attr))
    }

    /// The write handle whose staged content is inode `ino`, if any.
    fn writer_of_inode(&self, ino: u64) -> Option<Arc<Handle>> {
        let (ns, key, _) = self.inodes.get(ino)?;
        self.handles
            .writers_of(&ns, &key)
            .into_iter()
            .find(|h| h.write_state().is_some_and(|s| s.ino == ino))
    }

    fn xattr_value(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, Errno> {
        let (ns, key, _) = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
        let info = match self.store.entry_info(&ns, &key) {
            Lookup::Hit(info) => info,
            _ => return Err(Errno::ENODATA),
        };
        let text = match name.as_bytes() {
            n if n == XATTR_TTL.as_bytes() => info.ttl.as_secs().to_string(),
            n if n == XATTR_EXPIRES.as_bytes() => match info.expires {
                Some(at) => (at.div_euclid(1_000_000_000)).to_string(),
                None => "never".to_string(),
            },
            n if n == XATTR_SHA256.as_bytes() => {
                let digest = self
                    .store
                    .content_sha256(&ns, &key)
                    .map_err(|e| errno(&e))?;
                crate::store::Layout::hex_digest(&digest)
            }
            n if n == XATTR_STORED.as_bytes() => info.stored_bytes.to_string(),
            _ => return Err(Errno::ENODATA),
        };
        Ok(text.into_bytes())
    }

    /// A purge requested through `user.cachefs.purge` on the mount root
    /// (every namespace) or a namespace dir. Only root and the mount's
    /// owner may purge.
    fn purge(&self, req: &Request, ino: u64, value: &[u8]) -> Result<(), Errno> {
        let namespace = match kind_of(ino) {
            Some(InodeKind::Root) => None,
            Some(InodeKind::Namespace(_)) => Some(self.namespace_of(ino).ok_or(Errno::ENOENT)?),
            _ => return Err(Errno::ENOTSUP),
        };
        if req.uid() != 0 && req.uid() != self.uid {
            return Err(Errno::EPERM);
        }
        let select: PurgeSelect = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim_end_matches('\0').parse().ok())
            .ok_or(Errno::EINVAL)?;
        let report = self.store.purge(&PurgeFilter { namespace, select });
        let mut purges = self.purges.lock().unwrap_or_else(|p| p.into_inner());
        if purges.len() >= 1024 {
            purges.clear();
        }
        purges.insert((req.pid(), ino), report);
        Ok(())
    }

    fn list_dir(&self, ino: u64) -> Result<Vec<DirEntryItem>, Errno> {
        let dot = |ino: u64, name: &str| DirEntryItem {
            ino,
            kind: FileType::Directory,
            name: name.into(),
        };
        let mut items = vec![dot(ino, "."), dot(inodes::ROOT, "..")];
        match kind_of(ino) {
            Some(InodeKind::Root) => {
                items.push(dot(inodes::CONTROL_DIR, ".cachefs"));
                for (ns, id) in self.store.namespaces() {
                    items.push(DirEntryItem {
                        ino: inodes::namespace_ino(id),
                        kind: FileType::Directory,
                        name: OsStr::from_bytes(ns.as_bytes()).to_owned(),
                    });
                }
            }
            Some(InodeKind::ControlDir) => {
                for (fino, name) in control::FILES {
                    items.push(DirEntryItem {
                        ino: fino,
                        kind: FileType::RegularFile,
                        name: name.into(),
                    });
                }
            }
            Some(InodeKind::Namespace(_)) => {
                let ns = self.namespace_of(ino).ok_or(Errno::ENOENT)?;
                let keys = self.store.list(&ns).map_err(|e| self.fail(&e))?;
                items.reserve(keys.len());
                for (key, version) in keys {
                    items.push(DirEntryItem {
                        ino: version,
                        kind: FileType::RegularFile,
                        name: OsStr::from_bytes(key.as_bytes()).to_owned(),
                    });
                }
            }
            _ => return Err(Errno::ENOTDIR),
        }
        Ok(items)
    }
}

/// Opens version `ino` of a key for reading and answers the open.
fn open_and_reply(
    store: &Store,
    handles: &HandleTable,
    ns: &Namespace,
    key: &Key,
    ino: u64,
    reply: ReplyOpen,
) {
    match store.open_version(ns, key, ino) {
        // Replaced or removed since the kernel looked it up (or cached its
        // dentry), and no longer kept: the kernel retries an ESTALE open
        // with a fresh lookup.
        Ok(rh) if rh.version() != ino => reply.error(Errno::ESTALE),
        Ok(rh) => reply_opened(handles, rh, ino, reply),
        // Expired or removed behind a cached dentry: the retry's lookup
        // says so (and counts the miss).
        Err(StoreError::NotFound) => reply.error(Errno::ESTALE),
        Err(e) => reply.error(counted_errno(store, &e)),
    }
}

fn reply_opened(handles: &HandleTable, rh: ReadHandle, ino: u64, reply: ReplyOpen) {
    // A version is immutable: its pages may stay. Except while a handle
    // that published it is still open for writing: its writes (to a new
    // version) would move the inode's size.
    let cache = if handles.writes_on_inode(ino) {
        FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::FOPEN_KEEP_CACHE
    };
    let fh = handles.insert(Handle::Read(rh));
    reply.opened(FileHandle(fh), cache | FopenFlags::FOPEN_NOFLUSH)
}

/// The errno of a failure; a backing I/O error is counted as one.
fn counted_errno(store: &Store, e: &StoreError) -> Errno {
    let en = errno(e);
    if en == Errno::EIO {
        store.record_io_error();
    }
    en
}

fn time_of(t: TimeOrNow, now: i64) -> i64 {
    match t {
        TimeOrNow::Now => now,
        TimeOrNow::SpecificTime(st) => to_nanos(st),
    }
}

impl Filesystem for CacheFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC must reach `open` (a copy-on-write that starts empty),
        // not arrive as a separate truncate that would publish at once.
        if config
            .add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC)
            .is_err()
        {
            log::warn!("kernel lacks atomic O_TRUNC; truncating opens publish early");
        }
        let _ = config.set_max_write(1 << 20);
        // mmap of a file being written (writers use direct I/O; kernels
        // from 6.6). Readers use the page cache and mmap as usual.
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let gen0 = Generation(0);
        match kind_of(parent.0) {
            Some(InodeKind::Root) => {
                if name.as_bytes() == crate::store::CONTROL_DIR {
                    return reply.entry(&DIR_TTL, &self.dir_attr(inodes::CONTROL_DIR), gen0);
                }
                if name.len() > NAME_MAX {
                    return reply.error(Errno::ENAMETOOLONG);
                }
                match Namespace::parse(name.as_bytes())
                    .ok()
                    .and_then(|ns| self.store.namespace_id(&ns))
                {
                    Some(id) => {
                        reply.entry(&DIR_TTL, &self.dir_attr(inodes::namespace_ino(id)), gen0)
                    }
                    None => reply.error(Errno::ENOENT),
                }
            }
            Some(InodeKind::ControlDir) => match control::ino_of(name.as_bytes()) {
                Some(ino) => reply.entry_with_ttls(
                    &Duration::ZERO,
                    &Duration::from_secs(1),
                    &self.control_attr(ino),
                    gen0,
                ),
                None => reply.error(Errno::ENOENT),
            },
            Some(InodeKind::Namespace(_)) => {
                let Some(ns) = self.namespace_of(parent.0) else {
                    return reply.error(Errno::ENOENT);
                };
                let key = match self.parse_key(&ns, name, Errno::ENOENT) {
                    Ok(k) => k,
                    Err(e) => return reply.error(e),
                };
                // A writer sent here by `open` gets its own new inode.
                if let Some(attr) = self.redirected(req.pid(), &ns, &key) {
                    self.inodes.remember(&ns, &key, attr);
                    return reply.entry_with_ttls(&Duration::ZERO, &Duration::ZERO, &attr, gen0);
                }
                // A key being written is invisible to everyone, its writer
                // included, until it is published.
                match self.store.lookup(&ns, &key) {
                    Lookup::Hit(info) => {
                        let attr = self.entry_attr(&info);
                        self.inodes.remember(&ns, &key, attr);
                        // While the key is being written its version is
                        // about to change: not cached, so the publish need
                        // not wait to drop it (see `publish_pending`).
                        let ttl = if self.is_being_written(&ns, &key) {
                            Duration::ZERO
                        } else {
                            self.entry_ttl(&info)
                        };
                        reply.entry_with_ttls(&ttl, &ttl, &attr, gen0);
                    }
                    Lookup::Miss => {
                        let t = self
                            .misses
                            .missed(req.pid(), &ns, &key, false, Instant::now());
                        self.take_back(&ns, t);
                        reply.error(Errno::ENOENT)
                    }
                    Lookup::Expired => {
                        let t = self
                            .misses
                            .missed(req.pid(), &ns, &key, true, Instant::now());
                        self.take_back(&ns, t);
                        reply.error(Errno::ENOENT)
                    }
                }
            }
            _ => reply.error(Errno::ENOTDIR),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match kind_of(ino.0) {
            Some(InodeKind::Root) | Some(InodeKind::ControlDir) => {
                reply.attr(&DIR_TTL, &self.dir_attr(ino.0))
            }
            Some(InodeKind::ControlFile(i)) => reply.attr(&Duration::ZERO, &self.control_attr(i)),
            Some(InodeKind::Namespace(_)) => match self.namespace_of(ino.0) {
                Some(_) => reply.attr(&DIR_TTL, &self.dir_attr(ino.0)),
                None => reply.error(Errno::ENOENT),
            },
            Some(InodeKind::Entry) => {
                // A writer's own handle describes its staged content.
                if let Some(h) = fh.and_then(|fh| self.handles.get(fh.0))
                    && let Some(s) = h.write_state()
                    && s.ino == ino.0
                    && let Some(st) = &s.staging
                {
                    return reply.attr(&Duration::ZERO, &self.staging_attr(st));
                }
                let Some((ns, key, last)) = self.inodes.get(ino.0) else {
                    return reply.error(Errno::ENOENT);
                };
                match self.store.entry_info(&ns, &key) {
                    Lookup::Hit(info) if info.version == ino.0 => {
                        let attr = self.entry_attr(&info);
                        self.inodes.refresh(attr);
                        reply.attr(&self.entry_ttl(&info), &attr)
                    }
                    // An older version, still open somewhere: what it was.
                    _ => reply.attr(&Duration::ZERO, &last),
                }
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if kind_of(ino.0) != Some(InodeKind::Entry) {
            // Directories and control files: nothing to change; report as is.
            return self.getattr(_req, ino, fh, reply);
        }
        // Changes to a file being written (through its fd, or by path from
        // the writer: `fchmod`, `futimens` arrive without a handle) apply
        // to its staged content.
        let handle = fh
            .and_then(|fh| self.handles.get(fh.0))
            .filter(|h| matches!(**h, Handle::Write(_)))
            .or_else(|| self.writer_of_inode(ino.0));
        if let Some(h) = &handle
            && let Some(mut s) = h.write_state()
        {
            if s.staging.is_none() && s.failed.is_none() {
                match self.store.begin_write(
                    &s.ns,
                    &s.key,
                    WriteFrom::Current,
                    Owner {
                        uid: 0,
                        gid: 0,
                        mode: 0o644,
                    },
                ) {
                    Ok(st) => s.staging = Some(st),
                    Err(e) => return reply.error(self.fail(&e)),
                }
            }
            if let Some(st) = s.staging.as_mut() {
                if let Some(sz) = size
                    && let Err(e) = st.truncate(sz)
                {
                    let en = self.rejected(&s.ns, self.fail(&e));
                    s.failed = Some(en);
                    s.staging = None;
                    return reply.error(en);
                }
                if let Some(m) = mode {
                    st.set_mode(m);
                }
                st.set_owner(uid, gid);
                if let Some(t) = mtime {
                    st.set_mtime(time_of(t, self.store.now()));
                }
                let attr = self.staging_attr(st);
                // Metadata changes too: `touch` (open, futimens, close)
                // must be published by its own close, not later at release.
                s.dirty |= size.is_some()
                    || mtime.is_some()
                    || mode.is_some()
                    || uid.is_some()
                    || gid.is_some();
                return reply.attr(&Duration::ZERO, &attr);
            }
        }
        let Some((ns, key, _)) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let now = self.store.now();
        let update = MetaUpdate {
            mtime: mtime.map(|t| time_of(t, now)),
            ttl_secs: None,
            mode,
            uid,
            gid,
            truncate: size,
        };
        let nothing = update.mtime.is_none()
            && mode.is_none()
            && uid.is_none()
            && gid.is_none()
            && size.is_none();
        let result = if nothing {
            match self.store.entry_info(&ns, &key) {
                Lookup::Hit(info) => Ok(info),
                _ => Err(StoreError::NotFound),
            }
        } else {
            self.store.update(&ns, &key, update)
        };
        match result {
            Ok(info) if info.version == ino.0 => {
                // Same version (touch, chmod, chown): same content, new
                // attributes for the inode the kernel holds.
                let attr = self.entry_attr(&info);
                self.inodes.refresh(attr);
                reply.attr(&self.entry_ttl(&info), &attr)
            }
            Ok(_) => {
                // A truncate made a new version: the asked inode stays
                // the old version (its readers' pages stay right), and
                // the key's dentry goes before the caller learns it is done.
                let old = self.inodes.get(ino.0).map(|(_, _, a)| a);
                self.forget_dentry(&ns, &key);
                self.invalidate.then(move || match old {
                    Some(attr) => reply.attr(&Duration::ZERO, &attr),
                    None => reply.error(Errno::ENOENT),
                });
            }
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        if parent.0 != inodes::ROOT {
            // Keys are flat file names today.
            return reply.error(Errno::EPERM);
        }
        if name.len() > NAME_MAX {
            return reply.error(Errno::ENAMETOOLONG);
        }
        let _g = self.ns_ops.lock().unwrap_or_else(|p| p.into_inner());
        match self.store.create_namespace(name.as_bytes()) {
            Ok((_, id)) => reply.entry(
                &DIR_TTL,
                &self.dir_attr(inodes::namespace_ino(id)),
                Generation(0),
            ),
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if parent.0 != inodes::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        if name.as_bytes() == crate::store::CONTROL_DIR {
            return reply.error(Errno::EBUSY);
        }
        let Ok(ns) = Namespace::parse(name.as_bytes()) else {
            return reply.error(Errno::ENOENT);
        };
        let _g = self.ns_ops.lock().unwrap_or_else(|p| p.into_inner());
        match self.store.remove_namespace(&ns) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(ns) = self.namespace_of(parent.0) else {
            return reply.error(if parent.0 == inodes::CONTROL_DIR {
                Errno::EPERM
            } else {
                Errno::ENOENT
            });
        };
        let key = match self.parse_key(&ns, name, Errno::ENOENT) {
            Ok(k) => k,
            Err(e) => return reply.error(e),
        };
        // In-flight writes of the key are abandoned with it.
        let writers = self.handles.writers_of(&ns, &key);
        for h in &writers {
            if let Some(mut s) = h.write_state() {
                s.cancelled = true;
                s.staging = None;
            }
        }
        match self.store.remove(&ns, &key) {
            Ok(()) => reply.ok(),
            Err(StoreError::NotFound) if !writers.is_empty() => reply.ok(),
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(ns), Some(new_ns)) =
            (self.namespace_of(parent.0), self.namespace_of(newparent.0))
        else {
            // Namespaces themselves and the control dir do not move.
            return reply.error(Errno::EPERM);
        };
        if ns != new_ns {
            return reply.error(self.fail(&StoreError::CrossNamespace));
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let from = match self.parse_key(&ns, name, Errno::ENOENT) {
            Ok(k) => k,
            Err(e) => return reply.error(e),
        };
        let to = match self.parse_key(&ns, newname, Errno::EINVAL) {
            Ok(k) => k,
            Err(e) => return reply.error(e),
        };
        if flags.contains(RenameFlags::RENAME_NOREPLACE)
            && matches!(self.store.entry_info(&ns, &to), Lookup::Hit(_))
        {
            return reply.error(Errno::EEXIST);
        }
        if from == to {
            return reply.ok();
        }
        match self.store.rename(&ns, &from, &to) {
            Ok(_) => {
                self.inodes.rename(&ns, &from, &to);
                reply.ok()
            }
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match kind_of(ino.0) {
            Some(InodeKind::ControlFile(i)) => {
                if flags.acc_mode() != OpenAccMode::O_RDONLY {
                    return reply.error(Errno::EACCES);
                }
                let fh = self
                    .handles
                    .insert(Handle::Control(control::render(&self.store, i)));
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
            }
            Some(InodeKind::Entry) => {
                let Some((ns, key, last)) = self.inodes.get(ino.0) else {
                    return reply.error(Errno::ESTALE);
                };
                if flags.acc_mode() == OpenAccMode::O_RDONLY {
                    let hot = self.store.open_hot(&ns, &key, ino.0);
                    if let OpenHot::Done(rh) = hot {
                        return reply_opened(&self.handles, rh, ino.0, reply);
                    }
                    let store = Arc::clone(&self.store);
                    let handles = Arc::clone(&self.handles);
                    let open = move || open_and_reply(&store, &handles, &ns, &key, ino.0, reply);
                    // The first open after a start checks the whole content
                    // against its checksum: a disk read, off this thread.
                    if matches!(hot, OpenHot::Verify) {
                        self.disk.submit(open);
                    } else {
                        open();
                    }
                } else if let Some(r) = self.take_redirect(req.pid(), &ns, &key, ino.0) {
                    // The redirected writer, on the inode it was given.
                    match self.open_write(
                        req,
                        ns,
                        key,
                        flags.0,
                        Some(u32::from(r.perm)),
                        Some(r.version),
                    ) {
                        Ok((fh, _)) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                        Err(e) => reply.error(e),
                    }
                } else {
                    // A writer on a published version's inode: send it to
                    // a new one (see the module docs).
                    let size = match self.store.entry_info(&ns, &key) {
                        Lookup::Hit(info) if flags.0 & libc::O_TRUNC == 0 => info.logical_size,
                        _ => 0,
                    };
                    let redirect = Redirect {
                        version: self.store.reserve_version(),
                        size,
                        perm: last.perm,
                        until: Instant::now() + REDIRECT_LIFE,
                    };
                    let mut redirects = self.redirects.lock().unwrap_or_else(|p| p.into_inner());
                    // Redirects of writers that never came back go here,
                    // not on every lookup.
                    let now = Instant::now();
                    redirects.retain(|_, r| r.until > now);
                    redirects.insert((ns, key, req.pid()), redirect);
                    reply.error(Errno::ESTALE)
                }
            }
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(ns) = self.namespace_of(parent.0) else {
            return reply.error(if kind_of(parent.0).is_some() {
                Errno::EACCES
            } else {
                Errno::ENOENT
            });
        };
        let key = match self.parse_key(&ns, name, Errno::EINVAL) {
            Ok(k) => k,
            Err(e) => return reply.error(self.rejected(&ns, e)),
        };
        self.take_back(&ns, self.misses.created(req.pid(), &ns, &key));
        if flags & libc::O_EXCL != 0
            && (matches!(self.store.entry_info(&ns, &key), Lookup::Hit(_))
                || self.handles.is_being_written(&ns, &key))
        {
            return reply.error(Errno::EEXIST);
        }
        match self.open_write(
            req,
            ns.clone(),
            key.clone(),
            flags,
            Some(mode & !umask & 0o7777),
            None,
        ) {
            Ok((fh, attr)) => {
                self.inodes.remember(&ns, &key, attr);
                reply.created(
                    &Duration::ZERO,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(h) = self.handles.get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match &*h {
            Handle::Read(rh) => match rh.read_cached(offset, size as usize) {
                Ok(Some(buf)) => reply.data(&buf),
                Ok(None) => {
                    let store = Arc::clone(&self.store);
                    self.disk.submit(move || {
                        let Handle::Read(rh) = &*h else {
                            unreachable!("a read handle stays one")
                        };
                        match rh.read_at(offset, size as usize) {
                            Ok(buf) => reply.data(&buf),
                            Err(e) => reply.error(counted_errno(&store, &StoreError::Io(e))),
                        }
                    });
                }
                Err(e) => reply.error(self.fail(&StoreError::Io(e))),
            },
            Handle::Write(_) => {
                let s = h.write_state().expect("write handle");
                match &s.staging {
                    Some(st) => {
                        let mut buf = vec![0u8; size as usize];
                        match st.read_at(offset, &mut buf) {
                            Ok(n) => reply.data(&buf[..n]),
                            Err(e) => reply.error(self.fail(&StoreError::Io(e))),
                        }
                    }
                    None => reply.error(s.failed.unwrap_or(Errno::EBADF)),
                }
            }
            Handle::Control(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = (start + size as usize).min(bytes.len());
                reply.data(&bytes[start..end])
            }
            Handle::Dir(_) => reply.error(Errno::EISDIR),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(h) = self.handles.get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let Some(mut s) = h.write_state() else {
            return reply.error(Errno::EBADF);
        };
        if let Some(e) = s.failed {
            return reply.error(e);
        }
        if s.staging.is_none() {
            // Written again after a publish (fsync, or a dup'ed fd closed):
            // start a new copy-on-write of what was published.
            let owner = Owner {
                uid: 0,
                gid: 0,
                mode: 0o644,
            };
            match self
                .store
                .begin_write(&s.ns, &s.key, WriteFrom::Current, owner)
            {
                Ok(st) => s.staging = Some(st),
                Err(e) => return reply.error(self.rejected(&s.ns, self.fail(&e))),
            }
        }
        let owner = lock_owner.map_or(ANY_OWNER, |o| o.0);
        if !s.writer_owners.contains(&owner) {
            s.writer_owners.push(owner);
        }
        let append = s.append;
        let st = s.staging.as_mut().expect("just ensured");
        let result = if append {
            st.append(data).map(|_| ())
        } else {
            st.write_at(offset, data)
        };
        s.dirty = true;
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => {
                // Over its limit: the write fails now, close() fails too,
                // and the staged bytes go at once.
                let en = self.rejected(&s.ns, self.fail(&e));
                s.failed = Some(en);
                s.staging = None;
                if let Some(v) = s.published_empty.take() {
                    self.store.remove_version(&s.ns, &s.key, v);
                    self.forget_dentry(&s.ns, &s.key);
                }
                reply.error(en)
            }
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let Some(h) = self.handles.get(fh.0) else {
            return reply.ok();
        };
        let result = match h.write_state() {
            Some(mut s) if s.is_closed_by_writer(lock_owner.0, req.pid()) => {
                self.publish_pending(&mut s)
            }
            _ => Ok(false),
        };
        self.reply_when_visible(result, reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fsync publishes whatever is staged, written or not.
        let result = match self.handles.get(fh.0) {
            Some(h) => match h.write_state() {
                Some(mut s) => self.publish_pending(&mut s),
                None => Ok(false),
            },
            None => Ok(false),
        };
        self.reply_when_visible(result, reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(h) = self.handles.remove(fh.0)
            && let Some(mut s) = h.write_state()
            && let Err(e) = self.publish_pending(&mut s)
        {
            log::debug!("publish at release of {}/{:?} failed: {e:?}", s.ns, s.key);
        }
        reply.ok()
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.list_dir(ino.0) {
            Ok(items) => {
                let fh = self.handles.insert(Handle::Dir(items));
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(h) = self.handles.get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let Handle::Dir(items) = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        for (i, item) in items.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(item.ino), i as u64 + 1, item.kind, &item.name) {
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let big = matches!(
            self.handles.remove(fh.0).as_deref(),
            Some(Handle::Dir(items)) if items.len() > 10_000
        );
        reply.ok();
        if big {
            crate::store::release_freed_memory();
        }
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        // Expired entries are not counted: reclaim them before answering.
        self.store.sweep_expired();
        let mut u = self.store.usage();
        let mut free_bytes = u.quota_bytes.saturating_sub(u.used_bytes);
        // Inside a namespace with its own quota (the kernel passes the
        // inode of the path given to statfs): that quota is the size, and
        // the room is what both it and the mount still have.
        if let Some(nu) = self
            .namespace_of_any(ino.0)
            .and_then(|ns| self.store.namespace_usage(&ns))
        {
            free_bytes = free_bytes.min(nu.quota_bytes.saturating_sub(nu.used_bytes));
            u = nu;
        }
        let bs = u64::from(BLOCK);
        let blocks = u.quota_bytes / bs;
        let free = free_bytes / bs;
        let files = u.max_entries.unwrap_or(u.entries + (1 << 32));
        let ffree = files.saturating_sub(u.entries);
        reply.statfs(
            blocks,
            free,
            free,
            files,
            ffree,
            BLOCK,
            NAME_MAX as u32,
            BLOCK,
        )
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if name.as_bytes() == XATTR_PURGE.as_bytes() {
            // Answered at once, not after the purged keys' dentry drops:
            // setxattr holds this directory's lock, which they need. The
            // CLI's next call (getxattr of the result) waits for them.
            return match self.purge(req, ino.0, value) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            };
        }
        if kind_of(ino.0) != Some(InodeKind::Entry) {
            return reply.error(Errno::ENOTSUP);
        }
        match name.as_bytes() {
            n if n == XATTR_TTL.as_bytes() => {
                let Some(secs) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                else {
                    return reply.error(Errno::EINVAL);
                };
                let Some((ns, key, _)) = self.inodes.get(ino.0) else {
                    return reply.error(Errno::ENOENT);
                };
                // A file still being written takes the TTL with it.
                let mut staged = false;
                for h in self.handles.writers_of(&ns, &key) {
                    if let Some(mut s) = h.write_state()
                        && s.ino == ino.0
                        && let Some(st) = s.staging.as_mut()
                    {
                        st.set_ttl(Some(secs));
                        staged = true;
                    }
                }
                if staged {
                    return reply.ok();
                }
                let update = MetaUpdate {
                    ttl_secs: Some(Some(secs)),
                    ..MetaUpdate::default()
                };
                match self.store.update(&ns, &key, update) {
                    Ok(_) => reply.ok(),
                    Err(e) => reply.error(self.fail(&e)),
                }
            }
            n if [XATTR_EXPIRES, XATTR_SHA256, XATTR_STORED]
                .iter()
                .any(|x| x.as_bytes() == n) =>
            {
                reply.error(Errno::EPERM)
            }
            _ => reply.error(Errno::ENOTSUP),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = if name.as_bytes() == XATTR_PURGED.as_bytes() {
            self.purges
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(req.pid(), ino.0))
                .map(|r| format!("{} {}", r.entries, r.bytes).into_bytes())
                .ok_or(Errno::ENODATA)
        } else if kind_of(ino.0) != Some(InodeKind::Entry) {
            Err(Errno::ENODATA)
        } else {
            self.xattr_value(ino.0, name)
        };
        let answer = move || match value {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        };
        if name.as_bytes() == XATTR_PURGED.as_bytes() {
            // A purge's result is read once the kernel has forgotten the
            // purged keys (getxattr holds no directory lock; see setxattr).
            self.invalidate.then(answer);
        } else {
            answer();
        }
    }

    /// No ioctls: ENOTTY at once, as a regular file answers. Python's
    /// `open()` asks (isatty) on every open, so this is on its hot path.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut names = Vec::new();
        if kind_of(ino.0) == Some(InodeKind::Entry) {
            for n in [XATTR_TTL, XATTR_EXPIRES, XATTR_SHA256, XATTR_STORED] {
                names.extend_from_slice(n.as_bytes());
                names.push(0);
            }
        }
        if size == 0 {
            reply.size(names.len() as u32)
        } else if names.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&names)
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if name.as_bytes() != XATTR_TTL.as_bytes() {
            return reply.error(Errno::ENODATA);
        }
        let Some((ns, key, _)) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let update = MetaUpdate {
            ttl_secs: Some(None),
            ..MetaUpdate::default()
        };
        match self.store.update(&ns, &key, update) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(self.fail(&e)),
        }
    }
}
