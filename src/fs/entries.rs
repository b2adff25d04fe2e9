//! Entries as the kernel sees them: LOOKUP, GETATTR and SETATTR, and the
//! attributes of every kind of inode, with how long the kernel may cache
//! them.
//!
//! The owners and modes reported here are the permission rules: the
//! kernel checks every access against them (the mount always has
//! `default_permissions`), so an attribute shown is an attribute that
//! holds, and a redirected writer's inode carries the replaced version's
//! owner and mode.
//!
//! Invariants: an entry's dentry and attributes are cached no longer than
//! its remaining TTL and at most `ENTRY_CACHE_MAX`; a key being written and
//! a redirected writer's new inode are not cached at all; a setattr that
//! makes a new version answers only once the key's old dentry is dropped.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant, SystemTime};

use super::errno::name_errno;
use super::inodes::{self, BLOCK_SIZE, EntryAttr, InodeKind, kind_of};
use super::types::{Attr, AttrReply, Ctx, Entry, Errno, FileKind, Replier, SetAttr};
use super::writer::{Stage, Writer};
use super::{CacheFs, DIR_TTL, ENTRY_CACHE_MAX, control};
use crate::access::NsAccess;
use crate::store::{
    EntryInfo, Key, Lookup, MetaUpdate, NAME_MAX, Namespace, StagingFile, StoreError,
    to_system_time,
};

/// How long after a writer closed unwritten anyone else's lookup waits
/// for its RELEASE (its empty publish; the kernel sends RELEASE as close()
/// returns): `: > key; cat key` reads what was written, while `echo x >
/// key`'s open-dup2-close-write never shows an empty version. A writer
/// still held past this is still being written (`slow > key`), and
/// lookups no longer wait for it.
const RELEASE_WAIT: Duration = Duration::from_millis(100);

impl CacheFs {
    /// How long the kernel may keep an entry's dentry and attributes:
    /// never past its expiry, and at most `ENTRY_CACHE_MAX`.
    pub(super) fn entry_ttl(&self, info: &EntryInfo) -> Duration {
        Self::entry_ttl_at(info, self.store.now())
    }

    /// `entry_ttl` as of `now` (a listing reads the clock once a chunk).
    pub(super) fn entry_ttl_at(info: &EntryInfo, now: crate::store::UnixNanos) -> Duration {
        match info.expires {
            None => ENTRY_CACHE_MAX,
            Some(at) => {
                let left = at.saturating_sub(now);
                Duration::from_nanos(left.max(0) as u64).min(ENTRY_CACHE_MAX)
            }
        }
    }

    /// The root and the control dir: the daemon's. The root is where
    /// namespaces are made: writable by everyone, sticky (only a
    /// namespace's owner removes it), while the config allows new
    /// namespaces; else only the daemon's user (and root) may write it.
    pub(super) fn dir_attr(&self, ino: u64) -> Attr {
        let perm = match ino {
            inodes::CONTROL_DIR => 0o555,
            inodes::ROOT if self.store.allows_new_namespaces() => 0o1777,
            _ => 0o755,
        };
        Attr {
            ino,
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            kind: FileKind::Directory,
            perm,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            blksize: BLOCK_SIZE,
        }
    }

    /// A namespace's directory: its owner, group and mode.
    pub(super) fn namespace_attr(&self, id: u32, access: NsAccess) -> Attr {
        let nlink = self.store.dir_access(id, b"").map_or(2, |(_, n)| n);
        self.ns_dir_attr(id, b"", inodes::namespace_ino(id), access, nlink)
    }

    fn control_attr(&self, ino: u64) -> Attr {
        let size = control::render(&self.store, ino).len() as u64;
        Attr {
            size,
            blocks: size.div_ceil(512),
            kind: FileKind::RegularFile,
            perm: 0o444,
            nlink: 1,
            mtime: SystemTime::now(),
            ..self.dir_attr(ino)
        }
    }

    pub(super) fn entry_attr(&self, info: &EntryInfo) -> Attr {
        let attr = EntryAttr {
            ino: info.version,
            size: info.logical_size,
            blocks: info.stored_bytes.div_ceil(512),
            mtime: to_system_time(info.mtime),
            perm: info.mode,
            uid: info.uid,
            gid: info.gid,
        }
        .to_attr();
        Attr {
            ctime: to_system_time(info.ctime),
            atime: to_system_time(info.atime),
            ..attr
        }
    }

    /// A file being written, as its writer sees it: the times it will be
    /// published with (fixed when its content or metadata last changed).
    pub(super) fn staging_attr(&self, st: &StagingFile, ino: u64) -> Attr {
        let (uid, gid) = st.owner();
        let now = self.store.now();
        let mtime = st.mtime().unwrap_or(now);
        let attr = EntryAttr {
            ino,
            size: st.len(),
            blocks: st.len().div_ceil(512),
            mtime: to_system_time(mtime),
            perm: st.mode(),
            uid,
            gid,
        }
        .to_attr();
        Attr {
            ctime: to_system_time(st.ctime().unwrap_or(now)),
            atime: to_system_time(st.atime().unwrap_or(mtime)),
            ..attr
        }
    }

    /// The attributes of inode `ino` as its writer sees it: asked through
    /// the writer's handle `fh`, or without one (`fstat` and path
    /// operations arrive without) by the thread that opened it, or by
    /// anyone while the inode was never published (no one else holds it).
    /// A reader of a version this writer published earlier sees that
    /// version, not what the writer did since.
    fn writers_attr(&self, ctx: &Ctx, ino: u64, fh: Option<u64>) -> Option<Attr> {
        let own = fh
            .and_then(|fh| self.handles.get(fh))
            .filter(|h| h.writer().is_some_and(|w| w.ino == ino));
        let by_fh = own.is_some();
        let h = own.or_else(|| self.writer_of_inode(ino))?;
        let w = h.writer()?;
        if !by_fh && w.last_published().is_some() && !w.is_opener(ctx.pid) {
            return None;
        }
        let mut attr = match w.stage() {
            Stage::Staged(st) => self.staging_attr(st, ino),
            // Published (an fsync, msync): what it published is its
            // content, whatever version number the store gave it, while
            // no one has replaced it since.
            Stage::Published if !w.is_abandoned() => match self.store.entry_info(&w.ns, &w.key) {
                Lookup::Hit(info) if Some(info.version) == w.last_published() => Attr {
                    ino,
                    ..self.entry_attr(&info)
                },
                _ => return None,
            },
            _ => return None,
        };
        if w.is_abandoned() {
            attr.nlink = 0;
        }
        Some(attr)
    }

    /// A lookup of a key being written. The thread that opened the writer
    /// finds what it staged (its `stat`, `utime`, `chmod`, `truncate` act
    /// on the pending version); anyone else waits up to `RELEASE_WAIT` for a
    /// writer that closed unwritten, then is answered by the store.
    fn writers_view(&self, ctx: &Ctx, ns_id: u32, dir: &[u8], name: &OsStr) -> Option<Entry> {
        // A name the store refuses is answered (and counted) by the store.
        let (ns, key) = self
            .store
            .resolve_in(ns_id, dir, name.as_bytes(), false)
            .ok()?;
        // Until when to wait for a RELEASE, if at all.
        let mut until: Option<Instant> = None;
        let mut wait_for = |since: Instant| {
            let t = since + RELEASE_WAIT;
            until = Some(until.map_or(t, |u| u.max(t)));
        };
        for fh in self.handles.writer_fhs(&ns, &key) {
            // Being released: its publish is a moment away.
            let Some(h) = self.handles.get(fh) else {
                wait_for(Instant::now());
                continue;
            };
            let Some(w) = h.writer() else { continue };
            if w.is_abandoned() {
                continue;
            }
            if w.is_opener(ctx.pid) {
                if let Some(st) = w.staged() {
                    let attr = self.staging_attr(st, w.ino);
                    drop(w);
                    self.inodes.remember(&ns, &key, attr);
                    return Some(Entry::cached(attr, Duration::ZERO));
                }
                // Published: the store's version is the writer's.
                continue;
            }
            if let Some(since) = w.deferred_since() {
                wait_for(since);
            }
        }
        if let Some(deadline) = until
            && deadline > Instant::now()
        {
            self.handles
                .wait_settled(deadline, || self.any_deferred(&ns, &key));
        }
        None
    }

    /// Whether a writer of `key` closed unwritten or is being released.
    fn any_deferred(&self, ns: &Namespace, key: &Key) -> bool {
        self.handles
            .writer_fhs(ns, key)
            .into_iter()
            .any(|fh| match self.handles.get(fh) {
                None => true,
                Some(h) => h.writer().is_some_and(|w| w.is_deferred()),
            })
    }

    pub fn lookup(&self, ctx: &Ctx, parent: u64, name: &OsStr) -> Result<Entry, Errno> {
        match kind_of(parent) {
            Some(InodeKind::Root) => {
                if name.as_bytes() == crate::store::CONTROL_DIR {
                    return Ok(Entry::cached(self.dir_attr(inodes::CONTROL_DIR), DIR_TTL));
                }
                if name.len() > NAME_MAX {
                    return Err(Errno::ENAMETOOLONG);
                }
                let id = Namespace::parse(name.as_bytes())
                    .ok()
                    .and_then(|ns| self.store.find_namespace(&ns))
                    .ok_or(Errno::ENOENT)?;
                let access = self.store.namespace_access(id).ok_or(Errno::ENOENT)?;
                Ok(Entry::cached(self.namespace_attr(id, access), DIR_TTL))
            }
            Some(InodeKind::ControlDir) => {
                let ino = control::ino_of(name.as_bytes()).ok_or(Errno::ENOENT)?;
                Ok(Entry {
                    attr: self.control_attr(ino),
                    entry_ttl: Duration::ZERO,
                    attr_ttl: Duration::from_secs(1),
                })
            }
            Some(InodeKind::Namespace(_)) | Some(InodeKind::SubDir) => {
                let (id, dir) = self.dir_of(parent).ok_or(Errno::ENOENT)?;
                self.lookup_key(ctx, id, &dir, name)
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn lookup_key(&self, ctx: &Ctx, ns_id: u32, dir: &[u8], name: &OsStr) -> Result<Entry, Errno> {
        // A writer sent here by `open` gets its own new inode.
        if self.redirects.has(ctx.pid) {
            let (ns, key) = self
                .store
                .resolve_in(ns_id, dir, name.as_bytes(), false)
                .map_err(|e| name_errno(&e, Errno::ENOENT))?;
            if let Some(attr) = self.redirects.attr_for(ctx.pid, &ns, &key) {
                self.inodes.remember(&ns, &key, attr);
                return Ok(Entry::cached(attr, Duration::ZERO));
            }
        }
        if self.handles.has_writers()
            && let Some(entry) = self.writers_view(ctx, ns_id, dir, name)
        {
            return Ok(entry);
        }
        let found = self
            .store
            .lookup_name(ns_id, dir, name.as_bytes(), ctx.pid)
            .map_err(|e| name_errno(&e, Errno::ENOENT))?;
        if found.dir {
            return self.subdir_entry(ns_id, found.key.as_bytes());
        }
        // A key being written is invisible to everyone but its writer's
        // thread until it is published.
        match found.lookup {
            Lookup::Hit(info) => {
                let attr = self.entry_attr(&info);
                self.inodes.remember(&found.ns, &found.key, attr);
                // While the key is being written its version is about to
                // change: not cached.
                let ttl = if found.being_written || self.redirects.targets(&found.ns, &found.key) {
                    Duration::ZERO
                } else {
                    self.entry_ttl(&info)
                };
                Ok(Entry::cached(attr, ttl))
            }
            Lookup::Miss | Lookup::Expired => Err(Errno::ENOENT),
        }
    }

    pub fn getattr(&self, ctx: &Ctx, ino: u64, fh: Option<u64>) -> Result<AttrReply, Errno> {
        let at = |attr, ttl| Ok(AttrReply { attr, ttl });
        match kind_of(ino) {
            Some(InodeKind::Root) | Some(InodeKind::ControlDir) => at(self.dir_attr(ino), DIR_TTL),
            Some(InodeKind::ControlFile(i)) => at(self.control_attr(i), Duration::ZERO),
            Some(InodeKind::Namespace(id)) => match self.store.namespace_access(id) {
                Some(access) => at(self.namespace_attr(id, access), DIR_TTL),
                None => Err(Errno::ENOENT),
            },
            Some(InodeKind::SubDir) => at(self.subdir_getattr(ino)?, DIR_TTL),
            Some(InodeKind::Entry) => {
                // A writer's inode describes its staged content.
                if let Some(attr) = self.writers_attr(ctx, ino, fh) {
                    return at(attr, Duration::ZERO);
                }
                let (ns, key, last) = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
                match self.store.entry_info(&ns, &key) {
                    Lookup::Hit(info) if info.version == ino => {
                        let attr = self.entry_attr(&info);
                        self.inodes.refresh(attr);
                        at(attr, self.entry_ttl(&info))
                    }
                    // An older version, still open somewhere: what it was,
                    // with no name left (replaced, unlinked or expired), as
                    // an unlinked file's fstat shows.
                    _ => at(Attr { nlink: 0, ..last }, Duration::ZERO),
                }
            }
            None => Err(Errno::ENOENT),
        }
    }

    pub fn setattr(
        &self,
        ctx: &Ctx,
        ino: u64,
        set: SetAttr,
        fh: Option<u64>,
        reply: impl Replier<AttrReply>,
    ) {
        if let Some(InodeKind::Namespace(id)) = kind_of(ino) {
            return reply.reply(self.set_namespace_attr(id, &set));
        }
        if let Some(InodeKind::SubDir) = kind_of(ino) {
            return reply.reply(self.subdir_setattr(ino, &set));
        }
        if kind_of(ino) != Some(InodeKind::Entry) {
            // The root and control files: nothing to change; report as is.
            return reply.reply(self.getattr(ctx, ino, fh));
        }
        let now = self.store.now();
        let mtime = set.mtime.map(|t| t.at(now));
        let atime = set.atime.map(|t| t.at(now));
        // Changes to a file being written (through its fd, or by path from
        // the writer: `fchmod`, `futimens` arrive without a handle) apply
        // to its staged content.
        let handle = fh
            .and_then(|fh| self.handles.get(fh))
            .filter(|h| h.writer().is_some())
            .or_else(|| self.writer_of_inode(ino));
        if let Some(h) = &handle
            && let Some(mut w) = h.writer()
            && !changes_in_place(&w, ino, &set)
        {
            let settled = w.is_deferred();
            let r = w.change(&self.store, &set).map(|st| AttrReply {
                attr: self.staging_attr(st, ino),
                ttl: Duration::ZERO,
            });
            drop(w);
            if settled {
                self.handles.settle_writers();
            }
            return reply.reply(r);
        }
        let Some((ns, key, _)) = self.inodes.get(ino) else {
            return reply.reply(Err(Errno::ENOENT));
        };
        let result = if set.is_empty() {
            match self.store.entry_info(&ns, &key) {
                Lookup::Hit(info) => Ok(info),
                _ => Err(StoreError::NotFound),
            }
        } else {
            let update = MetaUpdate {
                mtime,
                atime,
                ttl_secs: None,
                mode: set.mode,
                uid: set.uid,
                gid: set.gid,
                truncate: set.size,
                xattr: None,
            };
            self.store.update(&ns, &key, update)
        };
        match result {
            Ok(info) if info.version == ino => {
                // Same version (touch, chmod, chown): same content, new
                // attributes for the inode the kernel holds.
                let attr = self.entry_attr(&info);
                self.inodes.refresh(attr);
                reply.reply(Ok(AttrReply {
                    attr,
                    ttl: self.entry_ttl(&info),
                }))
            }
            Ok(_) => {
                // A truncate made a new version (the store told the
                // listener, which drops the key's dentry): the asked inode
                // stays the old version (its readers' pages stay right),
                // and the caller learns it is done once the name is gone.
                let old = self.inodes.get(ino).map(|(_, _, a)| a);
                self.invalidate.then(move || {
                    reply.reply(old.map_or(Err(Errno::ENOENT), |attr| {
                        Ok(AttrReply {
                            attr,
                            ttl: Duration::ZERO,
                        })
                    }))
                });
            }
            Err(e) => reply.reply(Err(self.fail(&e))),
        }
    }

    /// chmod/chown of a namespace dir (the kernel has checked that the
    /// caller may: owner or CAP_FOWNER for chmod, CAP_CHOWN for chown).
    /// Its times are set by what changes in it, not by utime (see
    /// `nstimes.rs`); a size is for files only.
    fn set_namespace_attr(&self, id: u32, set: &SetAttr) -> Result<AttrReply, Errno> {
        if set.size.is_some() {
            return Err(Errno::EISDIR);
        }
        let access = self
            .store
            .set_namespace_access(id, set.uid, set.gid, set.mode)
            .map_err(|e| self.fail(&e))?;
        if set.uid.is_some() || set.gid.is_some() || set.mode.is_some() {
            self.ns_times.attrs_changed(id);
        }
        self.set_dir_times(id, b"", set);
        Ok(AttrReply {
            attr: self.namespace_attr(id, access),
            ttl: DIR_TTL,
        })
    }
}

/// Whether a SETATTR through (or by path to) writer `w`'s inode `ino` is
/// made in place on the live version, as for any other file: `w` has
/// nothing staged because its close published this very inode, and the
/// change is to metadata only (a truncate stages new content). Staging a
/// copy for it instead would have the writer's RELEASE publish that copy
/// as a new inode: the name would then lead elsewhere than a process
/// executing the file holds (ETXTBSY no longer kept writers off it), and
/// until the RELEASE, lookups would show the old mode (`cp prog f; chmod
/// +x f; ./f` refused with EACCES).
fn changes_in_place(w: &Writer, ino: u64, set: &SetAttr) -> bool {
    set.size.is_none()
        && matches!(w.stage(), Stage::Published)
        && !w.is_abandoned()
        && w.last_published() == Some(ino)
}
