//! The adapter between the kernel's FUSE protocol (fuser) and the
//! filesystem core: each handler decodes its request, makes one call to
//! `CacheFs`, and maps the answer to a reply. Nothing here decides
//! anything but where a request runs: on the one request thread, or on a
//! worker when it may wait (`dispatch.rs` says which, and why no request
//! on this thread waits for one queued behind it). With
//! `fuse_replies.rs`, the only files of `fs` that name a fuser type.

use std::ffi::OsStr;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use super::CacheFs;
use super::dirs::RenameMode;
use super::fuse_replies::{
    create_reply, ctx, errno, file_attr, file_type, fopen_flags, reply_empty, reply_entry, time_set,
};
use super::types::{Replier, SetAttr};
use super::workers;

/// The filesystem as fuser runs it: the core, shared with the workers
/// that answer the requests which may wait. The session runs one request
/// thread (`mount.rs`), which calls these handlers.
pub struct FuseFs {
    fs: Arc<CacheFs>,
}

impl FuseFs {
    pub fn new(fs: CacheFs) -> FuseFs {
        FuseFs { fs: Arc::new(fs) }
    }

    /// The core, for a request answered on this thread.
    fn here(&self) -> &CacheFs {
        workers::mark_request_thread();
        &self.fs
    }

    /// Answers a request that may wait on a worker.
    fn off(&self, job: impl FnOnce(&CacheFs) + Send + 'static) {
        let fs = Arc::clone(&self.fs);
        self.fs.workers.submit(move || job(&fs));
    }

    /// `off`, for a request others may wait for (a writer's RELEASE).
    fn off_urgent(&self, job: impl FnOnce(&CacheFs) + Send + 'static) {
        let fs = Arc::clone(&self.fs);
        self.fs.workers.submit_urgent(move || job(&fs));
    }
}

impl Filesystem for FuseFs {
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
        let (fs, ctx) = (self.here(), ctx(req));
        if fs.lookup_waits(parent.0, name) {
            let name = name.to_owned();
            self.off(move |fs| reply_entry(reply, fs.lookup(&ctx, parent.0, &name)));
        } else {
            reply_entry(reply, fs.lookup(&ctx, parent.0, name))
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.here().forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let (fs, ctx, fh) = (self.here(), ctx(req), fh.map(|f| f.0));
        if fs.getattr_waits(ino.0, fh) {
            self.off(move |fs| reply.reply(fs.getattr(&ctx, ino.0, fh)));
        } else {
            reply.reply(fs.getattr(&ctx, ino.0, fh))
        }
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
        let (ctx, fh) = (ctx(req), fh.map(|f| f.0));
        self.off(move |fs| fs.setattr(&ctx, ino.0, set, fh, reply));
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
        let (ctx, name) = (ctx(req), name.to_owned());
        self.off(move |fs| {
            reply_entry(reply, fs.mknod(&ctx, parent.0, &name, mode, umask));
        });
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
        let (ctx, name) = (ctx(req), name.to_owned());
        self.off(move |fs| {
            reply_entry(reply, fs.mkdir(&ctx, parent.0, &name, mode, umask));
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.off(move |fs| reply_empty(reply, fs.rmdir(parent.0, &name)));
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.here().symlink())
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.here().link())
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.off(move |fs| reply_empty(reply, fs.unlink(parent.0, &name)));
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
        let (fs, ctx) = (self.here(), ctx(req));
        if !fs.rename_waits(parent.0, name) {
            let r = fs
                .pace
                .timed(|| fs.rename(&ctx, parent.0, name, newparent.0, newname, mode));
            return reply_empty(reply, r);
        }
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.off(move |fs| {
            let r = fs.rename(&ctx, parent.0, &name, newparent.0, &newname, mode);
            reply_empty(reply, r)
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.here().open_hit(ino.0, flags.0) {
            Some(opened) => reply.reply(Ok(opened)),
            None => {
                let ctx = ctx(req);
                self.off(move |fs| fs.open(&ctx, ino.0, flags.0, reply));
            }
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
        let (fs, ctx) = (self.here(), ctx(req));
        if !fs.create_waits(parent.0, flags) {
            let r = fs
                .pace
                .timed(|| fs.create(&ctx, parent.0, name, mode, umask, flags));
            return create_reply(reply, r);
        }
        let name = name.to_owned();
        self.off(move |fs| {
            create_reply(reply, fs.create(&ctx, parent.0, &name, mode, umask, flags));
        });
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
        // A read that would wait for the disk goes to a worker by itself
        // (`opens.rs`).
        self.here().read(fh.0, offset, size, reply)
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
        let write = move |fs: &CacheFs, data: &[u8], reply: ReplyWrite| match fs.write(
            fh.0,
            offset,
            data,
            lock_owner.map(|o| o.0),
        ) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        };
        let fs = self.here();
        if !fs.writer_waits(fh.0) {
            return fs.pace.timed(|| write(fs, data, reply));
        }
        let data = data.to_vec();
        self.off(move |fs| write(fs, &data, reply));
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let (fs, ctx) = (self.here(), ctx(req));
        if !fs.writer_waits(fh.0) {
            // A reader's FLUSH (rare: readers open with noflush) is not
            // timed: the pace is the disk's under writers.
            match fs.is_writer(fh.0) {
                true => fs.pace.timed(|| fs.flush(&ctx, fh.0, lock_owner.0, reply)),
                false => fs.flush(&ctx, fh.0, lock_owner.0, reply),
            }
        } else {
            self.off(move |fs| fs.flush(&ctx, fh.0, lock_owner.0, reply));
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.off(move |fs| fs.fsync(fh.0, reply));
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
        let fs = self.here();
        if fs.writer_waits(fh.0) {
            self.off_urgent(move |fs| {
                fs.release(fh.0);
                reply.ok()
            });
        } else if fs.is_writer(fh.0) {
            fs.pace.timed(|| fs.release(fh.0));
            reply.ok()
        } else {
            fs.release(fh.0);
            reply.ok()
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.here().opendir(ino.0) {
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
        let r = self.here().readdir(fh.0, offset, |ino, next, kind, name| {
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
        let r = self
            .here()
            .readdirplus(ino.0, fh.0, offset, |name, next, e| {
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
        self.here().releasedir(fh.0);
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        // A statfs of the backing volume (a network one may be slow).
        self.off(move |fs| {
            let s = fs.statfs(ino.0);
            reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            )
        });
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
        let (ctx, name, value) = (ctx(req), name.to_owned(), value.to_vec());
        self.off(move |fs| {
            reply_empty(reply, fs.setxattr(&ctx, ino.0, &name, &value, flags));
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (ctx, name) = (ctx(req), name.to_owned());
        self.off(move |fs| fs.getxattr(&ctx, ino.0, &name, size, reply));
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
        self.off(move |fs| reply.reply(fs.listxattr(ino.0, size)));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.off(move |fs| reply_empty(reply, fs.removexattr(ino.0, &name)));
    }
}
