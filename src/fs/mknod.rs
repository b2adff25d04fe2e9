//! MKNOD: `mknod(2)` of a regular file makes an empty entry at once, as on
//! a local disk; any other file type is EPERM.
//!
//! Why EPERM for fifos, device nodes and sockets: a namespace holds cache
//! entries only, and those are not entries (no content to publish, expire
//! or evict). EPERM is what SYMLINK and LINK answer here too, and what
//! POSIX gives for a file type the filesystem does not allow; ENOSYS (the
//! answer before) told `mkfifo` users that the call was missing.
//!
//! Symlinks stay EPERM rather than becoming entries: an entry is content
//! with a checksum, a TTL and a size that quotas count, and a link has
//! none of these; its target could lead readers out of the cache. Tools
//! that make them in a cache dir carry on without: ccache's lock files are
//! symlinks, and ccache takes EPERM, and only EPERM, for "this filesystem
//! has no symlinks" and goes on unlocked (any other errno, ENOSYS
//! included, fails its lock); what it writes is written whole by a rename,
//! so racing ccaches can at worst lose a stats increment. Answered here,
//! not by fuser's default, which logs a warning per call: ccache tries
//! once per stats file it updates, a daemon log line or more per compile.
//!
//! Invariant: the new entry is published whole before the reply, like a
//! writer's close(): `mknod` is an exclusive create (EEXIST while the key
//! is live or being written anywhere), and the name is not cached by the
//! kernel, so the next lookup asks the store.

use std::ffi::OsStr;
use std::time::Duration;

use super::CacheFs;
use super::types::{Ctx, Entry, Errno};
use crate::store::{NewWrite, WriteBy, WriteFrom};

impl CacheFs {
    /// SYMLINK: not an entry (see the module docs).
    pub fn symlink(&self) -> Result<Entry, Errno> {
        Err(Errno::EPERM)
    }

    /// LINK: a version has one name, its key; a hard link would be a
    /// second key sharing the first's content, TTL and eviction.
    pub fn link(&self) -> Result<Entry, Errno> {
        Err(Errno::EPERM)
    }

    pub fn mknod(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<Entry, Errno> {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EPERM);
        }
        // Made, and answered, as CREATE makes a name.
        let (ns_id, ns, key, owner) = self.new_name(ctx, parent, name, mode, umask)?;
        let write = NewWrite {
            from: WriteFrom::Empty,
            owner,
            version: None,
            exclusive: true,
            // The kernel looked the name up first: its miss is taken back.
            by: WriteBy::Open(ctx.pid),
        };
        let staging = self
            .store
            .start_write(&ns, &key, write)
            .map_err(|e| self.fail(&e))?;
        let info = self.store.publish(staging).map_err(|e| self.fail(&e))?;
        let attr = self.entry_attr(&info);
        self.inodes.remember(&ns, &key, attr);
        self.ns_times.names_changed_in(ns_id, key.dir());
        Ok(Entry::cached(attr, Duration::ZERO))
    }
}
