//! The tree: the root (namespaces and `.cachefs/`), namespace MKDIR and
//! RMDIR, UNLINK and RENAME of keys, listings (OPENDIR, READDIR,
//! RELEASEDIR) and STATFS.
//!
//! Invariants: keys are flat names inside a namespace, and never move
//! across namespaces; namespace mkdir/rmdir are serialised (`ns_ops`);
//! unlinking a key abandons its in-flight writes; a listing is taken at
//! OPENDIR; statfs counts no expired entry, and inside a namespace with its
//! own quota reports that quota.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::Errno;
use fuser::{
    FileHandle, FileType, FopenFlags, Generation, INodeNo, RenameFlags, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs,
};

use super::handles::{DirEntryItem, Handle};
use super::inodes::{InodeKind, kind_of};
use super::{BLOCK, CacheFs, DIR_TTL, control, inodes};
use crate::store::{Lookup, NAME_MAX, Namespace, StoreError};

impl CacheFs {
    /// The namespace a dir or entry inode belongs to.
    fn namespace_of_any(&self, ino: u64) -> Option<Namespace> {
        match kind_of(ino)? {
            InodeKind::Namespace(_) => self.namespace_of(ino),
            InodeKind::Entry => self.inodes.get(ino).map(|(ns, _, _)| ns),
            _ => None,
        }
    }

    fn list_dir(&self, ino: u64) -> Result<Vec<DirEntryItem>, Errno> {
        let dot = |ino: u64, name: &str| DirEntryItem {
            ino,
            kind: FileType::Directory,
            name: name.into(),
        };
        let mut items = vec![dot(ino, "."), dot(inodes::ROOT, "..")];
        match kind_of(ino) {
            Some(InodeKind::Root) => {
                items.push(dot(inodes::CONTROL_DIR, ".cachefs"));
                for (ns, id) in self.store.namespaces() {
                    items.push(DirEntryItem {
                        ino: inodes::namespace_ino(id),
                        kind: FileType::Directory,
                        name: OsStr::from_bytes(ns.as_bytes()).to_owned(),
                    });
                }
            }
            Some(InodeKind::ControlDir) => {
                for (fino, name) in control::FILES {
                    items.push(DirEntryItem {
                        ino: fino,
                        kind: FileType::RegularFile,
                        name: name.into(),
                    });
                }
            }
            Some(InodeKind::Namespace(_)) => {
                let ns = self.namespace_of(ino).ok_or(Errno::ENOENT)?;
                let keys = self.store.list(&ns).map_err(|e| self.fail(&e))?;
                items.reserve(keys.len());
                for (key, version) in keys {
                    items.push(DirEntryItem {
                        ino: version,
                        kind: FileType::RegularFile,
                        name: OsStr::from_bytes(key.as_bytes()).to_owned(),
                    });
                }
            }
            _ => return Err(Errno::ENOTDIR),
        }
        Ok(items)
    }

    pub(super) fn do_mkdir(&self, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 != inodes::ROOT {
            // Keys are flat file names today.
            return reply.error(Errno::EPERM);
        }
        if name.len() > NAME_MAX {
            return reply.error(Errno::ENAMETOOLONG);
        }
        let _g = self.ns_ops.lock().unwrap_or_else(|p| p.into_inner());
        match self.store.create_namespace(name.as_bytes()) {
            Ok((_, id)) => reply.entry(
                &DIR_TTL,
                &self.dir_attr(inodes::namespace_ino(id)),
                Generation(0),
            ),
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    pub(super) fn do_rmdir(&self, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if parent.0 != inodes::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        if name.as_bytes() == crate::store::CONTROL_DIR {
            return reply.error(Errno::EBUSY);
        }
        let Ok(ns) = Namespace::parse(name.as_bytes()) else {
            return reply.error(Errno::ENOENT);
        };
        let _g = self.ns_ops.lock().unwrap_or_else(|p| p.into_inner());
        match self.store.remove_namespace(&ns) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    pub(super) fn do_unlink(&self, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(ns) = self.namespace_of(parent.0) else {
            return reply.error(if parent.0 == inodes::CONTROL_DIR {
                Errno::EPERM
            } else {
                Errno::ENOENT
            });
        };
        let key = match self.parse_key(&ns, name, Errno::ENOENT) {
            Ok(k) => k,
            Err(e) => return reply.error(e),
        };
        // In-flight writes of the key are abandoned with it.
        let writers = self.handles.writers_of(&ns, &key);
        for h in &writers {
            if let Some(mut s) = h.write_state() {
                s.cancelled = true;
                s.staging = None;
            }
        }
        match self.store.remove(&ns, &key) {
            Ok(()) => reply.ok(),
            Err(StoreError::NotFound) if !writers.is_empty() => reply.ok(),
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    pub(super) fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(ns), Some(new_ns)) =
            (self.namespace_of(parent.0), self.namespace_of(newparent.0))
        else {
            // Namespaces themselves and the control dir do not move.
            return reply.error(Errno::EPERM);
        };
        if ns != new_ns {
            return reply.error(self.fail(&StoreError::CrossNamespace));
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let from = match self.parse_key(&ns, name, Errno::ENOENT) {
            Ok(k) => k,
            Err(e) => return reply.error(e),
        };
        let to = match self.parse_key(&ns, newname, Errno::EINVAL) {
            Ok(k) => k,
            Err(e) => return reply.error(e),
        };
        if flags.contains(RenameFlags::RENAME_NOREPLACE)
            && matches!(self.store.entry_info(&ns, &to), Lookup::Hit(_))
        {
            return reply.error(Errno::EEXIST);
        }
        if from == to {
            return reply.ok();
        }
        match self.store.rename(&ns, &from, &to) {
            Ok(_) => {
                self.inodes.rename(&ns, &from, &to);
                reply.ok()
            }
            Err(e) => reply.error(self.fail(&e)),
        }
    }

    pub(super) fn do_opendir(&self, ino: INodeNo, reply: ReplyOpen) {
        match self.list_dir(ino.0) {
            Ok(items) => {
                let fh = self.handles.insert(Handle::Dir(items));
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn do_readdir(&self, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(h) = self.handles.get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let Handle::Dir(items) = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        for (i, item) in items.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(item.ino), i as u64 + 1, item.kind, &item.name) {
                break;
            }
        }
        reply.ok()
    }

    pub(super) fn do_releasedir(&self, fh: FileHandle, reply: ReplyEmpty) {
        let big = matches!(
            self.handles.remove(fh.0).as_deref(),
            Some(Handle::Dir(items)) if items.len() > 10_000
        );
        reply.ok();
        if big {
            crate::store::release_freed_memory();
        }
    }

    pub(super) fn do_statfs(&self, ino: INodeNo, reply: ReplyStatfs) {
        // Expired entries are not counted: reclaim them before answering.
        self.store.sweep_expired();
        let mut u = self.store.usage();
        let mut free_bytes = u.quota_bytes.saturating_sub(u.used_bytes);
        // Inside a namespace with its own quota (the kernel passes the
        // inode of the path given to statfs): that quota is the size, and
        // the room is what both it and the mount still have.
        if let Some(nu) = self
            .namespace_of_any(ino.0)
            .and_then(|ns| self.store.namespace_usage(&ns))
        {
            free_bytes = free_bytes.min(nu.quota_bytes.saturating_sub(nu.used_bytes));
            u = nu;
        }
        let bs = u64::from(BLOCK);
        let blocks = u.quota_bytes / bs;
        let free = free_bytes / bs;
        let files = u.max_entries.unwrap_or(u.entries + (1 << 32));
        let ffree = files.saturating_sub(u.entries);
        reply.statfs(
            blocks,
            free,
            free,
            files,
            ffree,
            BLOCK,
            NAME_MAX as u32,
            BLOCK,
        )
    }
}
