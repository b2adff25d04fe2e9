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
//! Attributes: a directory has no owner, mode or policy of its own; it
//! shows its namespace's owner, group, mode and times, so the permission
//! the kernel checks for a write inside it is the namespace's.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::inodes;
use super::types::{Attr, Entry, Errno};
use super::{CacheFs, DIR_TTL};
use crate::store::{Key, KeyFormat, StoreError};

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

    /// A subdirectory's attributes: its namespace's owner, mode and times.
    pub(super) fn subdir_attr(&self, ns_id: u32, ino: u64) -> Option<Attr> {
        let access = self.store.namespace_access(ns_id)?;
        Some(Attr {
            ino,
            ..self.namespace_attr(ns_id, access)
        })
    }

    /// The entry of an existing subdirectory, handed to the kernel.
    pub(super) fn subdir_entry(&self, ns_id: u32, path: &[u8]) -> Result<Entry, Errno> {
        let ino = self.subdirs.ino_for(ns_id, path);
        let attr = self.subdir_attr(ns_id, ino).ok_or(Errno::ENOENT)?;
        Ok(Entry::cached(attr, DIR_TTL))
    }

    /// GETATTR of a subdirectory: gone once the store no longer has it.
    pub(super) fn subdir_getattr(&self, ino: u64) -> Result<Attr, Errno> {
        let (ns_id, path) = self.subdirs.get(ino).ok_or(Errno::ENOENT)?;
        if !self.store.is_dir(ns_id, &path) {
            return Err(Errno::ENOENT);
        }
        self.subdir_attr(ns_id, ino).ok_or(Errno::ENOENT)
    }

    /// MKDIR inside a namespace (`parent` is the namespace or one of its
    /// directories). The mode asked is not kept: see the file's doc.
    pub(super) fn mkdir_in(&self, parent: u64, name: &OsStr) -> Result<Entry, Errno> {
        let (ns_id, dir) = self.dir_of(parent).ok_or(Errno::ENOENT)?;
        let ns = self.store.namespace_by_id(ns_id).ok_or(Errno::ENOENT)?;
        let path = Key::join(&dir, name.as_bytes(), KeyFormat::Any)
            .map_err(|e| super::errno::name_errno(&StoreError::InvalidName(e), Errno::EINVAL))?;
        self.store.make_dir(&ns, &path).map_err(|e| self.fail(&e))?;
        self.ns_times.names_changed(ns_id);
        self.subdir_entry(ns_id, path.as_bytes())
    }

    /// RMDIR inside a namespace: empty directories only.
    pub(super) fn rmdir_in(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let (ns_id, dir) = self.dir_of(parent).ok_or(Errno::ENOENT)?;
        let ns = self.store.namespace_by_id(ns_id).ok_or(Errno::ENOENT)?;
        let path = Key::join(&dir, name.as_bytes(), KeyFormat::Any)
            .map_err(|e| super::errno::name_errno(&StoreError::InvalidName(e), Errno::ENOENT))?;
        self.store
            .remove_dir(&ns, &path)
            .map_err(|e| self.fail(&e))?;
        self.subdirs.remove_under(ns_id, path.as_bytes());
        self.ns_times.names_changed(ns_id);
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
        self.store
            .rename_dir(&ns, from, to)
            .map_err(|e| self.fail(&e))?;
        self.inodes.rename_under(&ns, from, to);
        self.subdirs.rename(ns_id, from.as_bytes(), to.as_bytes());
        self.ns_times.names_changed(ns_id);
        Ok(())
    }
}
