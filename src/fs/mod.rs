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
mod dirs;
mod disk;
mod entries;
mod errno;
mod handles;
mod inodes;
mod invalidate;
mod misses;
mod opens;
mod writes;
mod xattrs;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::Errno;
use fuser::{
    FileHandle, Filesystem, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::metrics::Rejection;
use crate::store::{Key, NAME_MAX, Namespace, PurgeReport, Store, StoreError};
use errno::errno;
use handles::HandleTable;
use inodes::{BLOCK_SIZE as BLOCK, InodeKind, InodeTable, kind_of};
use opens::Redirect;
pub use xattrs::{XATTR_PURGE, XATTR_PURGED};

/// How long the kernel may cache namespace dentries and directory attrs.
const DIR_TTL: Duration = Duration::from_secs(10);
/// The longest the kernel may cache an entry's dentry and attributes
/// (never past the entry's expiry). What this mount changes it
/// invalidates at once; the bound is for what it cannot see.
const ENTRY_CACHE_MAX: Duration = Duration::from_secs(60);

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

    /// Drops the kernel's dentry of a key (async; see `invalidate.rs`).
    fn forget_dentry(&self, ns: &Namespace, key: &Key) {
        if let Some(id) = self.store.namespace_id(ns) {
            self.invalidate.entry(
                inodes::namespace_ino(id),
                OsStr::from_bytes(key.as_bytes()).to_owned(),
            );
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

    /// A live count of the handles open on this mount (files being read
    /// or written, directories being listed).
    pub fn open_handles(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.handles.open_count()
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
}

/// The errno of a failure; a backing I/O error is counted as one.
fn counted_errno(store: &Store, e: &StoreError) -> Errno {
    let en = errno(e);
    if en == Errno::EIO {
        store.record_io_error();
    }
    en
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
        self.do_lookup(req, parent, name, reply)
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.do_getattr(ino, fh, reply)
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
        self.do_setattr(_req, ino, mode, uid, gid, size, mtime, fh, reply)
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
        self.do_mkdir(parent, name, reply)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.do_rmdir(parent, name, reply)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.do_unlink(parent, name, reply)
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
        self.do_rename(parent, name, newparent, newname, flags, reply)
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.do_open(req, ino, flags, reply)
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
        self.do_create(req, parent, name, mode, umask, flags, reply)
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
        self.do_read(fh, offset, size, reply)
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
        self.do_write(fh, offset, data, lock_owner, reply)
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.do_flush(req, fh, lock_owner, reply)
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.do_fsync(fh, reply)
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
        self.do_release(fh, reply)
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.do_opendir(ino, reply)
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.do_readdir(fh, offset, reply)
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.do_releasedir(fh, reply)
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.do_statfs(ino, reply)
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
        self.do_setxattr(req, ino, name, value, reply)
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.do_getxattr(req, ino, name, size, reply)
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
        self.do_listxattr(ino, size, reply)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.do_removexattr(ino, name, reply)
    }
}
