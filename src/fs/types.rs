//! What the filesystem core answers, as plain Rust: no fuser type appears
//! here or anywhere in `fs` but `fuse.rs`, which translates these to and
//! from the kernel's protocol.
//!
//! Contracts: a handler either returns `Result<T, Errno>` at once or, when
//! its answer must wait (for the kernel to drop a stale name, or for the
//! disk), takes a `Replier` and MUST call it exactly once, from any thread.

use std::ffi::OsStr;
use std::io;
use std::time::{Duration, SystemTime};

pub use nix::errno::Errno;

use crate::store::{UnixNanos, to_nanos};

/// The longest the kernel may cache an entry's dentry and attributes
/// (never past the entry's expiry). What this mount changes it
/// invalidates at once; the bound is for what it cannot see.
pub const ENTRY_CACHE_MAX: Duration = Duration::from_secs(60);

/// Who asks: the caller's credentials and thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    RegularFile,
}

/// An inode's attributes as the kernel is told them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: FileKind,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub blksize: u32,
}

/// A name's inode, with how long the kernel may keep the name and the
/// attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub entry_ttl: Duration,
    pub attr_ttl: Duration,
}

impl Entry {
    /// The name and attributes are cached for `ttl` alike.
    pub fn cached(attr: Attr, ttl: Duration) -> Entry {
        Entry {
            attr,
            entry_ttl: ttl,
            attr_ttl: ttl,
        }
    }
}

/// Attributes with how long the kernel may keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrReply {
    pub attr: Attr,
    pub ttl: Duration,
}

/// An open file or directory handle, and how the kernel may cache it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Bypass the page cache (writers, control files, readers of an inode
    /// whose size a writer may still move).
    pub direct_io: bool,
    /// The inode's pages stay across opens (a published version).
    pub keep_cache: bool,
    /// No FLUSH at close (nothing to publish).
    pub noflush: bool,
}

/// A file made and opened by CREATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    pub entry: Entry,
    pub opened: Opened,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// An xattr answer: its size (the caller asked with a size of 0) or its
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

impl XattrReply {
    /// The answer to a request for `value` in a buffer of `size` bytes.
    pub fn fit(value: Vec<u8>, size: u32) -> Result<XattrReply, Errno> {
        if size == 0 {
            Ok(XattrReply::Size(value.len() as u32))
        } else if value.len() > size as usize {
            Err(Errno::ERANGE)
        } else {
            Ok(XattrReply::Data(value))
        }
    }
}

/// Where a deferred answer goes. MUST be called exactly once.
pub trait Replier<T>: Send + 'static {
    fn reply(self, result: Result<T, Errno>);
}

/// The kernel's caches, as far as the core needs to drop from them.
pub trait KernelCache: Send + Sync {
    /// Forgets the dentry `name` in directory `parent`. `ENOENT` means
    /// the kernel held no such name.
    fn forget_entry(&self, parent: u64, name: &OsStr) -> io::Result<()>;

    /// Drops the kernel's copy of inode `ino`'s attributes (not its
    /// pages): its next `fstat` asks. Takes no lock a request holds, so a
    /// request handler may call it. `ENOENT`: the kernel holds no such
    /// inode.
    fn forget_attrs(&self, _ino: u64) -> io::Result<()> {
        Ok(())
    }
}

/// A time a SETATTR sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(SystemTime),
}

impl TimeSet {
    /// The instant meant, given the store's `now`.
    pub fn at(self, now: UnixNanos) -> UnixNanos {
        match self {
            TimeSet::Now => now,
            TimeSet::At(t) => to_nanos(t),
        }
    }
}

/// What a SETATTR changes (`None`: left as is).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<TimeSet>,
    pub atime: Option<TimeSet>,
}

impl SetAttr {
    pub fn is_empty(&self) -> bool {
        *self == SetAttr::default()
    }
}
