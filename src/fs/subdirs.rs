//! Directories inside a namespace, as the kernel sees them: their inode
//! numbers, attributes, MKDIR, RMDIR and the RENAME of a whole directory.
//! The store decides (store/dirs.rs); this file translates.
//!
//! Inode numbers (`dirinodes.rs`): a directory gets a number from `DIR_BASE` up the first
//! time it is handed out (a lookup, a listing, a mkdir) and keeps it while
//! it exists, so `ls -i`, `find` and `du` see one number per directory; a
//! rename moves the numbers of the directory and everything under it, as
//! the kernel keeps its inodes across a rename. The table holds one line
//! per directory handed out (directories are few beside entries).
//!
//! Attributes: a directory has no policy of its own, but its own owner,
//! group and mode (its creator's, the mode asked less the umask; chmod and
//! chown change them; kept in the backing dir, store/dir_attrs.rs), so a
//! mode the kernel shows is a mode it enforces (`default_permissions`), as
//! in a local directory. Its times move as a local directory's (a name
//! made or removed in it, chmod, utimensat) and are kept in memory, as a
//! namespace's are (nstimes.rs). Its link count is 2 plus its
//! subdirectories.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::inodes::{self, BLOCK_SIZE};
use super::types::{Attr, AttrReply, Ctx, Entry, Errno, FileKind, SetAttr, TimeSet};
use super::{CacheFs, DIR_TTL};
use crate::access::{MODE_BITS, NsAccess};
use crate::store::{Key, KeyFormat, StoreError, to_system_time};

impl CacheFs {
    /// The directory (namespace id, path in it; `[]` for the namespace
    /// itself) that a namespace or subdirectory inode stands for.
    pub(super) fn dir_of(&self, ino: u64) -> Option<(u32, Vec<u8>)> {
        match inodes::kind_of(ino)? {
            inodes::InodeKind::Namespace(id) => Some((id, Vec::new())),
            inodes::InodeKind::SubDir => self.subdirs.get(ino),
            _ => None,
        }
    }

    /// Asks the kernel to drop `key`'s name from its directory (if the
    /// kernel was ever told of that directory).
    pub(super) fn drop_name(&self, ns_id: u32, key: &Key) {
        let parent = match key.dir() {
            b"" => Some(inodes::namespace_ino(ns_id)),
            dir => self.subdirs.ino_of(ns_id, dir),
        };
        if let Some(parent) = parent {
            self.invalidate
                .entry(parent, OsStr::from_bytes(key.name()).to_owned());
        }
    }

    /// A subdirectory's attributes: its own owner, mode and times.
    pub(super) fn subdir_attr(&self, ns_id: u32, path: &[u8], ino: u64) -> Option<Attr> {
        let (access, nlink) = self.store.dir_access(ns_id, path)?;
        Some(self.ns_dir_attr(ns_id, path, ino, access, nlink))
    }

    /// A directory's attributes from its access and link count (a
    /// namespace is the directory at path "" of its own).
    pub(super) fn ns_dir_attr(
        &self,
        ns_id: u32,
        path: &[u8],
        ino: u64,
        access: NsAccess,
        nlink: u32,
    ) -> Attr {
        let (atime, mtime, ctime) = self.ns_times.get_in(ns_id, path);
        Attr {
            ino,
            size: 0,
            blocks: 0,
            atime,
            mtime,
            ctime,
            kind: FileKind::Directory,
            perm: (access.mode & MODE_BITS) as u16,
            nlink,
            uid: access.uid,
            gid: access.gid,
            blksize: BLOCK_SIZE,
        }
    }

    /// The entry of an existing subdirectory, handed to the kernel.
    pub(super) fn subdir_entry(&self, ns_id: u32, path: &[u8]) -> Result<Entry, Errno> {
        let ino = self.subdirs.ino_for(ns_id, path);
        let attr = self.subdir_attr(ns_id, path, ino).ok_or(Errno::ENOENT)?;
        Ok(Entry::cached(attr, DIR_TTL))
    }

    /// GETATTR of a subdirectory: gone once the store no longer has it.
    pub(super) fn subdir_getattr(&self, ino: u64) -> Result<Attr, Errno> {
        let (ns_id, path) = self.subdirs.get(ino).ok_or(Errno::ENOENT)?;
        self.subdir_attr(ns_id, &path, ino).ok_or(Errno::ENOENT)
    }

    /// SETATTR of a subdirectory: chmod, chown (who may is the kernel's
    /// check) and utimensat; a truncate is EISDIR.
    pub(super) fn subdir_setattr(&self, ino: u64, set: &SetAttr) -> Result<AttrReply, Errno> {
        if set.size.is_some() {
            return Err(Errno::EISDIR);
        }
        let (ns_id, path) = self.subdirs.get(ino).ok_or(Errno::ENOENT)?;
        if set.mode.is_some() || set.uid.is_some() || set.gid.is_some() {
            self.store
                .set_dir_access(ns_id, &path, set.uid, set.gid, set.mode)
                .map_err(|e| self.fail(&e))?;
            self.ns_times.attrs_changed_in(ns_id, &path);
        }
        self.set_dir_times(ns_id, &path, set);
        let attr = self.subdir_getattr(ino)?;
        Ok(AttrReply { attr, ttl: DIR_TTL })
    }

    /// utimensat of a directory (a namespace's too): kept with its times.
    pub(super) fn set_dir_times(&self, ns_id: u32, path: &[u8], set: &SetAttr) {
        if set.atime.is_none() && set.mtime.is_none() {
            return;
        }
        let now = self.store.now();
        let at = |t: Option<TimeSet>| t.map(|t| to_system_time(t.at(now)));
        self.ns_times
            .set_in(ns_id, path, at(set.atime), at(set.mtime));
    }

    /// MKDIR inside a namespace (`parent` is the namespace or one of its
    /// directories): owned by its creator (the group is the parent's when
    /// the parent is setgid, which the new directory then is too, as in a
    /// local directory), with the mode asked less the umask.
    pub(super) fn mkdir_in(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Result<Entry, Errno> {
        let (ns_id, dir) = self.dir_of(parent).ok_or(Errno::ENOENT)?;
        let ns = self.store.namespace_by_id(ns_id).ok_or(Errno::ENOENT)?;
        let path = Key::join(&dir, name.as_bytes(), KeyFormat::Any)
            .map_err(|e| super::errno::name_errno(&StoreError::InvalidName(e), Errno::EINVAL))?;
        let (parent_access, _) = self.store.dir_access(ns_id, &dir).ok_or(Errno::ENOENT)?;
        let mut access = NsAccess {
            uid: ctx.uid,
            gid: ctx.gid,
            mode: mode & MODE_BITS,
        };
        if parent_access.mode & libc::S_ISGID != 0 {
            access.gid = parent_access.gid;
            access.mode |= libc::S_ISGID;
        }
        self.store
            .make_dir_as(&ns, &path, access)
            .map_err(|e| self.fail(&e))?;
        self.ns_times.forget_in(ns_id, path.as_bytes());
        self.ns_times.names_changed_in(ns_id, path.as_bytes());
        self.ns_times.names_changed_in(ns_id, &dir);
        self.subdir_entry(ns_id, path.as_bytes())
    }

    /// RMDIR inside a namespace: empty directories only.
    pub(super) fn rmdir_in(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let (ns_id, dir) = self.dir_of(parent).ok_or(Errno::ENOENT)?;
        let ns = self.store.namespace_by_id(ns_id).ok_or(Errno::ENOENT)?;
        let path = Key::join(&dir, name.as_bytes(), KeyFormat::Any)
            .map_err(|e| super::errno::name_errno(&StoreError::InvalidName(e), Errno::ENOENT))?;
        // A name being written is in the directory, as on a local disk
        // (`: > d/k; rmdir d`: k's close returned, its RELEASE publishes).
        if self.handles.writes_under(&ns, path.as_bytes()) {
            return Err(Errno::ENOTEMPTY);
        }
        self.store
            .remove_dir(&ns, &path)
            .map_err(|e| self.fail(&e))?;
        self.subdirs.remove_under(ns_id, path.as_bytes());
        self.ns_times.forget_in(ns_id, path.as_bytes());
        self.ns_times.names_changed_in(ns_id, &dir);
        Ok(())
    }

    /// After a purge under `prefix` that removed its directories: the
    /// kernel forgets the directory's name (and so what it held), and the
    /// inode table its numbers, unless a publish meanwhile kept it.
    pub(super) fn dirs_purged(&self, ns_id: u32, prefix: &Key) {
        if self.store.is_dir(ns_id, prefix.as_bytes()) {
            return;
        }
        self.drop_name(ns_id, prefix);
        self.subdirs.remove_under(ns_id, prefix.as_bytes());
        self.ns_times.names_changed(ns_id);
    }

    /// RENAME of a whole directory within its namespace (O(entries): see
    /// `Store::rename_dir`). The kernel keeps the inodes it holds, under
    /// their new names.
    pub(super) fn rename_dir(&self, ns_id: u32, from: &Key, to: &Key) -> Result<(), Errno> {
        let ns = self.store.namespace_by_id(ns_id).ok_or(Errno::ENOENT)?;
        // A target holding a name being written is not empty (see `rmdir_in`).
        if self.handles.writes_under(&ns, to.as_bytes()) {
            return Err(Errno::ENOTEMPTY);
        }
        self.store
            .rename_dir(&ns, from, to)
            .map_err(|e| self.fail(&e))?;
        self.inodes.rename_under(&ns, from, to);
        self.subdirs.rename(ns_id, from.as_bytes(), to.as_bytes());
        self.ns_times
            .rename_in(ns_id, from.as_bytes(), to.as_bytes());
        self.ns_times.names_changed_in(ns_id, from.dir());
        self.ns_times.names_changed_in(ns_id, to.dir());
        Ok(())
    }
}
