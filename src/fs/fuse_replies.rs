//! Deferred replies (the core's `Replier`s, answered after a kernel
//! invalidation or from a disk thread) and the kernel cache handle, for
//! fuser's reply types: the other half of the adapter in `fuse.rs`.

use std::ffi::OsStr;
use std::io;

use fuser::{
    FileHandle, INodeNo, Notifier, ReplyAttr, ReplyData, ReplyEmpty, ReplyOpen, ReplyXattr,
};

use super::fuse::{errno, file_attr, fopen_flags, reply_empty};
use super::types::{AttrReply, Errno, KernelCache, Opened, Replier, XattrReply};

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

    fn fill_pages(&self, ino: u64, data: &[u8]) -> io::Result<()> {
        self.store(INodeNo(ino), 0, data)
    }

    fn forget_attrs(&self, ino: u64) -> io::Result<()> {
        // A negative offset: the attributes only, no page is touched.
        self.inval_inode(INodeNo(ino), -1, 0)
    }
}
