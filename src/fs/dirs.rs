//! The tree: the root (namespaces and `.cachefs/`), namespace MKDIR and
//! RMDIR, UNLINK and RENAME of keys, listings (OPENDIR, READDIR,
//! RELEASEDIR) and STATFS.
//!
//! Invariants: keys are paths inside a namespace (a directory inode
//! stands for the path of its names, see `subdirs.rs`), and never move
//! across namespaces; namespace mkdir/rmdir are serialised (`ns_ops`);
//! unlinking a key abandons its in-flight writes; a listing is taken at
//! OPENDIR; statfs counts no expired entry, and inside a namespace with its
//! own quota reports that quota.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::OnceLock;
use std::time::Instant;

use super::errno::name_errno;
use super::handles::{DirEntryItem, DirListing, Handle};
use super::inodes::{self, BLOCK_SIZE, InodeKind, kind_of};
use super::types::{Ctx, Entry, Errno, FileKind, Opened, StatFs};
use super::{CacheFs, DIR_TTL, control};
use crate::access::{MODE_BITS, NsAccess};
use crate::store::{
    DirItem, Key, KeyFormat, ListingStamp, Lookup, NAME_MAX, Namespace, StoreError,
};

/// How RENAME may treat its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameMode {
    /// Replace the target, if any.
    Replace,
    /// RENAME_NOREPLACE: a live or claimed target is EEXIST.
    NoReplace,
    /// RENAME_EXCHANGE, RENAME_WHITEOUT: not for cache entries.
    Unsupported,
}

impl CacheFs {
    /// The namespace a dir or entry inode belongs to.
    fn namespace_of_any(&self, ino: u64) -> Option<Namespace> {
        match kind_of(ino)? {
            InodeKind::Namespace(id) => self.store.namespace_by_id(id),
            InodeKind::Entry => self.inodes.get(ino).map(|(ns, _, _)| ns),
            InodeKind::SubDir => self
                .subdirs
                .get(ino)
                .and_then(|(id, _)| self.store.namespace_by_id(id)),
            _ => None,
        }
    }

    /// The listing of directory `ino` now, with its stamp (for the root
    /// and `.cachefs/`, its fingerprint: see `dircache.rs`).
    pub(super) fn list_dir(&self, ino: u64) -> Result<(Vec<DirEntryItem>, ListingStamp), Errno> {
        let dot = |ino: u64, name: &str| DirEntryItem {
            ino,
            kind: FileKind::Directory,
            name: name.into(),
        };
        let mut items = vec![dot(ino, "."), dot(inodes::ROOT, "..")];
        let mut stamp = None;
        match kind_of(ino) {
            Some(InodeKind::Root) => {
                items.push(dot(inodes::CONTROL_DIR, ".cachefs"));
                for (ns, id) in self.store.namespaces_on_disk() {
                    items.push(DirEntryItem {
                        ino: inodes::namespace_ino(id),
                        kind: FileKind::Directory,
                        name: OsStr::from_bytes(ns.as_bytes()).to_owned(),
                    });
                }
            }
            Some(InodeKind::ControlDir) => {
                for (fino, name) in control::FILES {
                    items.push(DirEntryItem {
                        ino: fino,
                        kind: FileKind::RegularFile,
                        name: name.into(),
                    });
                }
            }
            Some(InodeKind::Namespace(_)) | Some(InodeKind::SubDir) => {
                let (id, dir) = self.dir_of(ino).ok_or(Errno::ENOENT)?;
                let ns = self.store.namespace_by_id(id).ok_or(Errno::ENOENT)?;
                let (names, s) = self
                    .store
                    .list_dir_stamped(&ns, &dir)
                    .map_err(|e| self.fail(&e))?;
                stamp = Some(s);
                items.reserve(names.len());
                for item in names {
                    items.push(match item {
                        DirItem::File { name, version } => DirEntryItem {
                            ino: version,
                            kind: FileKind::RegularFile,
                            name: OsString::from_vec(name),
                        },
                        DirItem::Dir { name } => {
                            let path = [&dir[..], b"/", &name].concat();
                            let path = if dir.is_empty() { &name[..] } else { &path[..] };
                            DirEntryItem {
                                ino: self.subdirs.ino_for(id, path),
                                kind: FileKind::Directory,
                                name: OsString::from_vec(name),
                            }
                        }
                    });
                }
            }
            _ => return Err(Errno::ENOTDIR),
        }
        let stamp = stamp.unwrap_or_else(|| ListingStamp {
            generation: self.dir_cache.fingerprint(&items),
            until: None,
        });
        Ok((items, stamp))
    }

    /// mkdir of a namespace: its creator's, with the mode asked less the
    /// umask (the kernel has already applied it, as FUSE_DONT_MASK is not
    /// asked for; applying it again changes nothing).
    pub fn mkdir(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<Entry, Errno> {
        if parent != inodes::ROOT {
            return self.mkdir_in(ctx, parent, name, mode & !umask);
        }
        let access = NsAccess {
            uid: ctx.uid,
            gid: ctx.gid,
            mode: mode & !umask & MODE_BITS,
        };
        let _g = crate::sync::lock(&self.ns_ops);
        let (_, id) = self
            .store
            .create_namespace(name.as_bytes(), access)
            .map_err(|e| self.fail(&e))?;
        self.ns_times.names_changed(id);
        Ok(Entry::cached(self.namespace_attr(id, access), DIR_TTL))
    }

    /// The group of an entry `ctx` creates in directory `dir` of namespace
    /// `ns_id`: the creator's, or the directory's when it is setgid, as in
    /// a local directory (so a team's `2770` namespace keeps its entries
    /// the team's).
    pub(super) fn new_entry_gid(&self, ctx: &Ctx, ns_id: u32, dir: &[u8]) -> u32 {
        match self.store.dir_access(ns_id, dir) {
            Some((a, _)) if a.mode & libc::S_ISGID != 0 => a.gid,
            _ => ctx.gid,
        }
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        if parent != inodes::ROOT {
            return match kind_of(parent) {
                Some(InodeKind::Namespace(_)) | Some(InodeKind::SubDir) => {
                    self.rmdir_in(parent, name)
                }
                _ => Err(Errno::ENOTDIR),
            };
        }
        if name.as_bytes() == crate::store::CONTROL_DIR {
            return Err(Errno::EBUSY);
        }
        let ns = Namespace::parse(name.as_bytes()).map_err(|_| Errno::ENOENT)?;
        let _g = crate::sync::lock(&self.ns_ops);
        // A key being written is in it (`: > ns/k; rmdir ns`: k's close
        // returned, its RELEASE publishes), as for a directory in it.
        if self.handles.writes_under(&ns, b"") {
            return Err(Errno::ENOTEMPTY);
        }
        self.store.remove_namespace(&ns).map_err(|e| self.fail(&e))
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let Some((ns_id, dir)) = self.dir_of(parent) else {
            return Err(if parent == inodes::CONTROL_DIR {
                Errno::EPERM
            } else {
                Errno::ENOENT
            });
        };
        let (ns, key) = self
            .store
            .resolve_in(ns_id, &dir, name.as_bytes(), false)
            .map_err(|e| name_errno(&e, Errno::ENOENT))?;
        // In-flight writes of the key are abandoned with it.
        let writers = self.handles.writers_of(&ns, &key);
        for h in &writers {
            if let Some(mut w) = h.writer() {
                w.abandon();
            }
        }
        if !writers.is_empty() {
            // Lookups waiting for an unwritten writer's RELEASE: it will
            // publish nothing now.
            self.handles.settle_writers();
        }
        let live = match self.store.entry_info(&ns, &key) {
            Lookup::Hit(info) => Some(info.version),
            _ => None,
        };
        match self.store.remove(&ns, &key) {
            Ok(()) => {}
            Err(StoreError::NotFound) if !writers.is_empty() => {}
            Err(e) => return Err(self.fail(&e)),
        }
        // The kernel forgets the attributes of the inode its name led to,
        // which is not the removed version's when a redirected writer
        // holds the name: that version's readers' fstat must show it
        // unlinked (nlink 0), and their reads, served from pages the
        // publish handed over, no longer ask the daemon anything.
        if let Some(v) = live
            && let Some(kernel) = self.kernel.get()
            && let Err(e) = kernel.forget_attrs(v)
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            log::debug!("{ns}/{key:?}: attributes of {v} not dropped: {e}");
        }
        self.ns_times.names_changed_in(ns_id, key.dir());
        Ok(())
    }

    pub fn rename(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        mode: RenameMode,
    ) -> Result<(), Errno> {
        let (Some((ns_id, dir)), Some((new_id, new_dir))) =
            (self.dir_of(parent), self.dir_of(newparent))
        else {
            // Namespaces themselves and the control dir do not move.
            return Err(Errno::EPERM);
        };
        if ns_id != new_id {
            return Err(self.fail(&StoreError::CrossNamespace));
        }
        if mode == RenameMode::Unsupported {
            return Err(Errno::EINVAL);
        }
        if let Ok(from) = Key::join(&dir, name.as_bytes(), KeyFormat::Any)
            && self.store.is_dir(ns_id, from.as_bytes())
        {
            let to = Key::join(&new_dir, newname.as_bytes(), KeyFormat::Any)
                .map_err(|e| name_errno(&StoreError::InvalidName(e), Errno::EINVAL))?;
            if from == to {
                return Ok(());
            }
            if mode == RenameMode::NoReplace && self.store.is_dir(ns_id, to.as_bytes()) {
                return Err(Errno::EEXIST);
            }
            return self.rename_dir(ns_id, &from, &to);
        }
        let (ns, from) = self
            .store
            .resolve_in(ns_id, &dir, name.as_bytes(), false)
            .map_err(|e| name_errno(&e, Errno::ENOENT))?;
        let (_, to) = self
            .store
            .resolve_in(ns_id, &new_dir, newname.as_bytes(), true)
            .map_err(|e| name_errno(&e, Errno::EINVAL))?;
        let noreplace = mode == RenameMode::NoReplace;
        let own = self.own_writers(ctx, &ns, &from);
        if from == to {
            // A rename onto itself changes nothing; with NOREPLACE the
            // target exists (it is the source) if the source does.
            return match self.store.entry_info(&ns, &from) {
                Lookup::Hit(_) if noreplace => Err(Errno::EEXIST),
                _ => Ok(()),
            };
        }
        // The inodes the kernel now holds under the new name.
        let mut moved = Vec::with_capacity(1 + own.len());
        match self.store.rename(&ns, &from, &to, noreplace) {
            Ok(info) => moved.push(info.version),
            // Only its writer's thread sees the name: it moves alone.
            Err(StoreError::NotFound) if !own.is_empty() => {
                if noreplace && matches!(self.store.entry_info(&ns, &to), Lookup::Hit(_)) {
                    return Err(Errno::EEXIST);
                }
            }
            Err(e) => return Err(self.fail(&e)),
        }
        // The kernel looked the target up first: not a read that missed.
        self.store.renamed_onto(ctx.pid, &ns, &to);
        // Writers of the target publish over a name the kernel now holds
        // for the renamed version.
        if self.handles.has_writers() {
            for h in self.handles.writers_of(&ns, &to) {
                if let Some(mut w) = h.writer() {
                    w.renamed_over();
                }
            }
        }
        // The writer's own rename moves what it is writing: its close
        // publishes under the new name.
        for fh in own {
            if let Some(h) = self.handles.get(fh)
                && let Some(mut w) = h.writer()
            {
                moved.push(w.ino);
                w.retarget(to.clone());
                drop(w);
                self.handles.rekey(fh, &ns, &from, &to);
            }
        }
        self.inodes.rename(&moved, &ns, &from, &to);
        self.ns_times.names_changed_in(ns_id, from.dir());
        self.ns_times.names_changed_in(ns_id, to.dir());
        Ok(())
    }

    /// The handles through which `ctx`'s thread is writing `key`, with
    /// content staged (the pending version it sees under the name).
    fn own_writers(&self, ctx: &Ctx, ns: &Namespace, key: &Key) -> Vec<u64> {
        if !self.handles.has_writers() {
            return Vec::new();
        }
        let mut own = self.handles.writer_fhs(ns, key);
        own.retain(|&fh| {
            self.handles.get(fh).is_some_and(|h| {
                h.writer().is_some_and(|w| {
                    !w.is_abandoned() && w.staged().is_some() && w.is_opener(ctx.pid)
                })
            })
        });
        own
    }

    /// OPENDIR: `keep_cache` says whether the kernel may list the
    /// directory from the copy it kept (see `dircache.rs`). A kept listing is
    /// known by the directory's generation alone; any other is taken now.
    pub fn opendir(&self, ino: u64) -> Result<Opened, Errno> {
        let now = Instant::now();
        let t = self.store.now();
        let generation = self
            .dir_of(ino)
            .and_then(|(id, path)| self.store.dir_generation(id, &path));
        let fh = self.handles.insert(Handle::Dir(DirListing {
            dir: ino,
            items: OnceLock::new(),
        }));
        let mut keep_cache = generation.is_some_and(|g| self.dir_cache.keep(ino, fh, g, t, now));
        if keep_cache {
            if cfg!(debug_assertions)
                && let Some(g) = generation
            {
                self.check_kept(ino, g);
            }
        } else {
            let (items, stamp) = match self.list_dir(ino) {
                Ok(l) => l,
                Err(e) => {
                    self.handles.remove(fh);
                    return Err(e);
                }
            };
            let fingerprint = if cfg!(debug_assertions) {
                self.dir_cache.fingerprint(&items)
            } else {
                0
            };
            if let Some(h) = self.handles.get(fh)
                && let Handle::Dir(l) = &*h
            {
                let _ = l.items.set(items);
            }
            keep_cache = self.dir_cache.opened(ino, fh, stamp, fingerprint, t, now);
        }
        log::debug!("opendir {ino:#x}: kept {keep_cache}");
        Ok(Opened {
            fh,
            direct_io: false,
            keep_cache,
            noflush: false,
        })
    }

    /// The lines of an open listing: a kept OPENDIR's are taken at its
    /// first READDIR.
    pub(super) fn listing_items<'a>(
        &self,
        fh: u64,
        l: &'a DirListing,
    ) -> Result<&'a [DirEntryItem], Errno> {
        if let Some(items) = l.items.get() {
            return Ok(items);
        }
        let (items, stamp) = self.list_dir(l.dir)?;
        if l.items.set(items).is_ok() {
            self.dir_cache.relisted(fh, stamp);
        }
        Ok(l.items.get().map_or(&[], Vec::as_slice))
    }

    /// Debug builds: the listing of a kept OPENDIR is the one the copy
    /// was refilled with (the generation missed no change).
    fn check_kept(&self, ino: u64, generation: u64) {
        // Unless the directory changed since, or an entry expired.
        if let (Ok((items, stamp)), Some((fp, until))) =
            (self.list_dir(ino), self.dir_cache.refilled_with(ino))
            && stamp.generation == generation
            && stamp.until == until
        {
            assert_eq!(
                self.dir_cache.fingerprint(&items),
                fp,
                "directory {ino:#x} kept a listing that changed under the same generation"
            );
        }
    }

    /// READDIR from `offset`: `add(ino, next offset, kind, name)` until it
    /// says the reply is full.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, FileKind, &OsStr) -> bool,
    ) -> Result<(), Errno> {
        let h = self.handles.get(fh).ok_or(Errno::EBADF)?;
        let Handle::Dir(listing) = &*h else {
            return Err(Errno::ENOTDIR);
        };
        let items = self.listing_items(fh, listing)?;
        for (i, item) in items.iter().enumerate().skip(offset as usize) {
            if add(item.ino, i as u64 + 1, item.kind, &item.name) {
                break;
            }
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) {
        self.dir_cache.released(fh);
        let big = matches!(
            self.handles.remove(fh).as_deref(),
            Some(Handle::Dir(listing)) if listing.len() > 10_000
        );
        if big {
            crate::store::release_freed_memory();
        }
    }

    pub fn statfs(&self, ino: u64) -> StatFs {
        // Expired entries are not counted: reclaim them before answering.
        self.store.sweep_expired();
        let mut u = self.store.usage();
        let mut free_bytes = u.quota_bytes.saturating_sub(u.used_bytes);
        // Inside a namespace with its own quota (the kernel passes the
        // inode of the path given to statfs): that quota is the size, and
        // the room is what both it and the mount still have.
        if let Some(nu) = self
            .namespace_of_any(ino)
            .and_then(|ns| self.store.namespace_usage(&ns))
        {
            free_bytes = free_bytes.min(nu.quota_bytes.saturating_sub(nu.used_bytes));
            u = nu;
        }
        let bs = u64::from(BLOCK_SIZE);
        let files = u.max_entries.unwrap_or(u.entries + (1 << 32));
        StatFs {
            blocks: u.quota_bytes / bs,
            bfree: free_bytes / bs,
            bavail: free_bytes / bs,
            files,
            ffree: files.saturating_sub(u.entries),
            bsize: BLOCK_SIZE,
            namelen: NAME_MAX as u32,
            frsize: BLOCK_SIZE,
        }
    }
}
