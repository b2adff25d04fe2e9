//! The core's values in fuser's types (attributes, open flags, times,
//! errnos), deferred replies (the core's `Replier`s, answered after a
//! kernel invalidation or from a worker) and the kernel cache handle: the
//! other half of the adapter in `fuse.rs`.

use std::ffi::OsStr;
use std::io;
use std::time::SystemTime;

use fuser::{
    FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, Notifier, ReplyAttr,
    ReplyCreate, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request, TimeOrNow,
};

use super::types::{
    Attr, AttrReply, Created, Ctx, Entry, Errno, FileKind, KernelCache, Opened, Replier, TimeSet,
    XattrReply,
};

pub(super) fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e as i32)
}

pub(super) fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

pub(super) fn file_type(k: FileKind) -> FileType {
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

pub(super) fn time_set(t: TimeOrNow) -> TimeSet {
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

pub(super) fn reply_entry(reply: ReplyEntry, r: Result<Entry, Errno>) {
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

impl Replier<Opened> for ReplyOpen {
    fn reply(self, r: Result<Opened, Errno>) {
        match r {
            Ok(o) => self.opened(FileHandle(o.fh), fopen_flags(&o)),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Replier<Vec<u8>> for ReplyData {
    fn reply(self, r: Result<Vec<u8>, Errno>) {
        match r {
            Ok(bytes) => self.data(&bytes),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Replier<AttrReply> for ReplyAttr {
    fn reply(self, r: Result<AttrReply, Errno>) {
        match r {
            Ok(a) => self.attr(&a.ttl, &file_attr(&a.attr)),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Replier<()> for ReplyEmpty {
    fn reply(self, r: Result<(), Errno>) {
        reply_empty(self, r)
    }
}

impl Replier<XattrReply> for ReplyXattr {
    fn reply(self, r: Result<XattrReply, Errno>) {
        match r {
            Ok(XattrReply::Size(n)) => self.size(n),
            Ok(XattrReply::Data(v)) => self.data(&v),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl KernelCache for Notifier {
    fn forget_entry(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        self.inval_entry(INodeNo(parent), name)
    }

    fn forget_attrs(&self, ino: u64) -> io::Result<()> {
        // A negative offset: the attributes only, no page is touched.
        self.inval_inode(INodeNo(ino), -1, 0)
    }
}

pub(super) fn create_reply(reply: ReplyCreate, r: Result<Created, Errno>) {
    match r {
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
