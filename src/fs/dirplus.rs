//! READDIRPLUS: a listing with each name's attributes, so `ls -l` and
//! `du` after a start send no LOOKUP per entry.
//!
//! Invariants: what an entry's line hands out is what LOOKUP would have
//! (the same attributes, cached no longer than the entry's remaining TTL,
//! not cached at all while the key is being written), and it is a lookup:
//! the kernel takes one reference on every inode a line names except `.`
//! and `..` (`fuse_direntplus_link`), which its FORGET gives back, so the
//! inode table counts it here. An entry gone or expired since OPENDIR is
//! left out of the reply.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use super::CacheFs;
use super::handles::Handle;
use super::inodes::{InodeKind, kind_of};
use super::types::{Entry, Errno, FileKind};
use crate::store::{Key, KeyFormat, Lookup, Namespace};

impl CacheFs {
    /// READDIRPLUS of directory `dir` from `offset`: `add(name, next
    /// offset, entry)` until it says the reply is full. Every entry given
    /// to `add` has been counted as a lookup.
    pub fn readdirplus(
        &self,
        dir: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&OsStr, u64, &Entry) -> bool,
    ) -> Result<(), Errno> {
        let h = self.handles.get(fh).ok_or(Errno::EBADF)?;
        let Handle::Dir(items) = &*h else {
            return Err(Errno::ENOTDIR);
        };
        let ns = match kind_of(dir) {
            Some(InodeKind::Namespace(id)) => self.store.namespace_by_id(id),
            _ => None,
        };
        for (i, item) in items.iter().enumerate().skip(offset as usize) {
            let name = item.name.as_os_str();
            let entry = match (&ns, item.kind) {
                (Some(ns), FileKind::RegularFile) => match self.listed_entry(ns, name) {
                    Some(e) => e,
                    None => continue,
                },
                _ => match self.listed_other(dir, item.ino, name) {
                    Some(e) => e,
                    None => continue,
                },
            };
            if add(name, i as u64 + 1, &entry) {
                // Not sent: the kernel takes no reference for it.
                self.forget_listed(&entry, name);
                break;
            }
        }
        Ok(())
    }

    /// An entry's line: its live version as LOOKUP would answer it (no
    /// miss counted: a listing is no read), remembered as a lookup.
    fn listed_entry(&self, ns: &Namespace, name: &OsStr) -> Option<Entry> {
        // The name came out of the index: it parses as it went in.
        let key = Key::parse(name.as_bytes(), KeyFormat::Any).ok()?;
        let Lookup::Hit(info) = self.store.entry_info(ns, &key) else {
            return None;
        };
        let attr = self.entry_attr(&info);
        self.inodes.remember(ns, &key, attr);
        // A key being written (here) is about to change version: not cached,
        // as in `lookup_key`.
        let busy = (self.handles.has_writers() && !self.handles.writers_of(ns, &key).is_empty())
            || self.redirects.targets(ns, &key);
        let ttl = if busy {
            Duration::ZERO
        } else {
            self.entry_ttl(&info)
        };
        Some(Entry::cached(attr, ttl))
    }

    /// The line of a directory or control file: as LOOKUP answers it.
    fn listed_other(&self, dir: u64, ino: u64, name: &OsStr) -> Option<Entry> {
        if name == "." || name == ".." {
            // The kernel takes no reference on these and reads no
            // attributes from them.
            return Some(Entry::cached(self.dir_attr(ino), Duration::ZERO));
        }
        let ctx = super::types::Ctx {
            uid: self.uid,
            gid: self.gid,
            pid: 0,
        };
        self.lookup(&ctx, dir, name).ok()
    }

    /// Gives back the reference of a line that did not fit in the reply.
    fn forget_listed(&self, entry: &Entry, name: &OsStr) {
        if name != "." && name != ".." {
            self.forget(entry.attr.ino, 1);
        }
    }
}
