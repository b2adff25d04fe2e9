//! Directories inside a namespace, as the kernel sees them: their inode
//! numbers, attributes, MKDIR, RMDIR and the RENAME of a whole directory.
//! The store decides (store/dirs.rs); this file translates.
//!
//! Inode numbers: a directory gets a number from `DIR_BASE` up the first
//! time it is handed out (a lookup, a listing, a mkdir) and keeps it while
//! it exists, so `ls -i`, `find` and `du` see one number per directory; a
//! rename moves the numbers of the directory and everything under it, as
//! the kernel keeps its inodes across a rename. The table holds one line
//! per directory handed out (directories are few beside entries).
//!
//! Attributes: a directory has no owner, mode or policy of its own; it
//! shows its namespace's owner, group, mode and times, so the permission
//! the kernel checks for a write inside it is the namespace's.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

use super::inodes::{self, DIR_BASE};
use super::types::{Attr, Entry, Errno};
use super::{CacheFs, DIR_TTL};
use crate::store::{Key, KeyFormat, StoreError};

#[derive(Default)]
struct Table {
    by_ino: HashMap<u64, (u32, Box<[u8]>)>,
    by_path: HashMap<(u32, Box<[u8]>), u64>,
    next: u64,
}

/// Directory inode numbers <-> (namespace id, path in it).
#[derive(Default)]
pub struct DirInodes {
    table: Mutex<Table>,
}

fn is_under(path: &[u8], dir: &[u8]) -> bool {
    path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

impl DirInodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        crate::sync::lock(&self.table)
    }

    /// The number of directory `path` of namespace `ns_id`, given now if
    /// it has none.
    pub fn ino_for(&self, ns_id: u32, path: &[u8]) -> u64 {
        let mut t = self.lock();
        if let Some(&ino) = t.by_path.get(&(ns_id, path.into())) {
            return ino;
        }
        let ino = DIR_BASE + t.next;
        t.next += 1;
        t.by_path.insert((ns_id, path.into()), ino);
        t.by_ino.insert(ino, (ns_id, path.into()));
        ino
    }

    /// The number already given to a directory, if any (a directory never
    /// handed out has no dentry in the kernel to drop).
    pub fn ino_of(&self, ns_id: u32, path: &[u8]) -> Option<u64> {
        self.lock().by_path.get(&(ns_id, path.into())).copied()
    }

    pub fn get(&self, ino: u64) -> Option<(u32, Vec<u8>)> {
        self.lock()
            .by_ino
            .get(&ino)
            .map(|(id, p)| (*id, p.to_vec()))
    }

    /// Forgets `dir` and every directory under it (removed).
    pub fn remove_under(&self, ns_id: u32, dir: &[u8]) {
        let mut t = self.lock();
        let gone: Vec<u64> = t
            .by_ino
            .iter()
            .filter(|(_, (id, p))| *id == ns_id && is_under(p, dir))
            .map(|(&ino, _)| ino)
            .collect();
        for ino in gone {
            if let Some(k) = t.by_ino.remove(&ino) {
                t.by_path.remove(&k);
            }
        }
    }

    /// Follows a directory's rename: it and its subdirectories keep their
    /// numbers under the new path.
    pub fn rename(&self, ns_id: u32, from: &[u8], to: &[u8]) {
        let mut t = self.lock();
        let moved: Vec<(u64, Box<[u8]>)> = t
            .by_ino
            .iter()
            .filter(|(_, (id, p))| *id == ns_id && is_under(p, from))
            .map(|(&ino, (_, p))| (ino, p.clone()))
            .collect();
        for (ino, old) in moved {
            t.by_path.remove(&(ns_id, old.clone()));
            let new: Box<[u8]> = [to, &old[from.len()..]].concat().into();
            t.by_path.insert((ns_id, new.clone()), ino);
            t.by_ino.insert(ino, (ns_id, new));
        }
    }
}

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
