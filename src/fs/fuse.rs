//! The adapter between the kernel's FUSE protocol (fuser) and the
//! filesystem core: each handler decodes its request, makes one call to
//! `CacheFs`, and maps the answer to a reply. Nothing here decides
//! anything; with `fuse_replies.rs` (deferred replies), the only files
//! of `fs` that name a fuser type.

use std::ffi::OsStr;
use std::io;
use std::time::SystemTime;

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::CacheFs;
use super::dirs::RenameMode;
use super::types::{Attr, Ctx, Entry, Errno, FileKind, Opened, Replier, SetAttr, TimeSet};

pub(super) fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e as i32)
}

fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Directory => FileType::Directory,
        FileKind::RegularFile => FileType::RegularFile,
    }
}

pub(super) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: a.blksize,
        flags: 0,
    }
}

pub(super) fn fopen_flags(o: &Opened) -> FopenFlags {
    let mut f = FopenFlags::empty();
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if o.noflush {
        f |= FopenFlags::FOPEN_NOFLUSH;
    }
    f
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(st) => TimeSet::At(before_epoch_fixed(st)),
    }
}

/// fuser 0.18 reads a time before the epoch, (secs < 0, nsecs), as
/// `EPOCH - (-secs s + nsecs ns)`, while the kernel means `secs s + nsecs
/// ns` (nsecs always counts forward): (-1, 5e8) is -0.5 s, not -1.5 s.
fn before_epoch_fixed(st: SystemTime) -> SystemTime {
    match SystemTime::UNIX_EPOCH.duration_since(st) {
        Ok(back) if back.subsec_nanos() != 0 => {
            SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(back.as_secs())
                + std::time::Duration::from_nanos(u64::from(back.subsec_nanos()))
        }
        _ => st,
    }
}

fn reply_entry(reply: ReplyEntry, r: Result<Entry, Errno>) {
    match r {
        // fuser takes the attributes' lifetime first.
        Ok(e) => reply.entry_with_ttls(
            &e.attr_ttl,
            &e.entry_ttl,
            &file_attr(&e.attr),
            Generation(0),
        ),
        Err(e) => reply.error(errno(e)),
    }
}

pub(super) fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for CacheFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
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
        // Listings with attributes: `ls -l` and `du` after a start send no
        // LOOKUP per entry. Not READDIRPLUS_AUTO: it asks for them in a
        // listing's first chunk only unless names were looked at between
        // chunks, and `du` reads the whole listing before its first stat,
        // so all but 150 of its names were looked up one by one.
        if config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS)
            .is_err()
        {
            log::info!("kernel lacks READDIRPLUS; listings are plain");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, CacheFs::lookup(self, &ctx(req), parent.0, name))
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        CacheFs::forget(self, ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.reply(CacheFs::getattr(self, &ctx(req), ino.0, fh.map(|f| f.0)))
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            mtime: mtime.map(time_set),
            atime: atime.map(time_set),
        };
        CacheFs::setattr(self, &ctx(req), ino.0, set, fh.map(|f| f.0), reply)
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            CacheFs::mknod(self, &ctx(req), parent.0, name, mode, umask),
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = CacheFs::mkdir(self, &ctx(req), parent.0, name, mode, umask);
        reply_entry(reply, r)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, CacheFs::rmdir(self, parent.0, name))
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, CacheFs::symlink(self))
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, CacheFs::link(self))
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, CacheFs::unlink(self, parent.0, name))
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            RenameMode::Unsupported
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else {
            RenameMode::Replace
        };
        let r = CacheFs::rename(self, &ctx(req), parent.0, name, newparent.0, newname, mode);
        reply_empty(reply, r)
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        CacheFs::open(self, &ctx(req), ino.0, flags.0, reply)
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
        match CacheFs::create(self, &ctx(req), parent.0, name, mode, umask, flags) {
            Ok(c) => reply.created(
                &c.entry.entry_ttl,
                &file_attr(&c.entry.attr),
                Generation(0),
                FileHandle(c.opened.fh),
                fopen_flags(&c.opened),
            ),
            Err(e) => reply.error(errno(e)),
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
        CacheFs::read(self, fh.0, offset, size, reply)
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
        match CacheFs::write(self, fh.0, offset, data, lock_owner.map(|o| o.0)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
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
        CacheFs::flush(self, &ctx(req), fh.0, lock_owner.0, reply)
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        CacheFs::fsync(self, fh.0, reply)
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
        CacheFs::release(self, fh.0);
        reply.ok()
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match CacheFs::opendir(self, ino.0) {
            // Every listing may be kept by the kernel; KEEP_CACHE says
            // whether the copy it has may serve this one (`dircache.rs`).
            Ok(o) => reply.opened(
                FileHandle(o.fh),
                fopen_flags(&o) | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(errno(e)),
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
        let r = CacheFs::readdir(self, fh.0, offset, |ino, next, kind, name| {
            reply.add(INodeNo(ino), next, file_type(kind), name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = CacheFs::readdirplus(self, ino.0, fh.0, offset, |name, next, e| {
            let ttl = e.entry_ttl.min(e.attr_ttl);
            reply.add(
                INodeNo(e.attr.ino),
                next,
                name,
                &ttl,
                &file_attr(&e.attr),
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        // Answered first: freeing a big listing's memory may take a while.
        reply.ok();
        CacheFs::releasedir(self, fh.0);
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let s = CacheFs::statfs(self, ino.0);
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        )
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            CacheFs::setxattr(self, &ctx(req), ino.0, name, value, flags),
        )
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        CacheFs::getxattr(self, &ctx(req), ino.0, name, size, reply)
    }

    /// No ioctls: ENOTTY at once, as a regular file answers. Python's
    /// `open()` asks (isatty) on every open, so this is on its hot path.
    /// No answer makes the kernel stop asking: it sends every ioctl on a
    /// FUSE file that the VFS does not answer itself, and turns ENOSYS
    /// (fuser's default) into ENOTTY per call without remembering it
    /// (fs/fuse/ioctl.c), so the request's round trip is the whole cost.
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
        reply.error(fuser::Errno::ENOTTY);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply.reply(CacheFs::listxattr(self, ino.0, size))
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, CacheFs::removexattr(self, ino.0, name))
    }
}
