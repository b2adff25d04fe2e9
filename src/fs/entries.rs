//! Entries as the kernel sees them: LOOKUP, GETATTR and SETATTR, and the
//! attributes of every kind of inode, with how long the kernel may cache
//! them.
//!
//! Invariants: an entry's dentry and attributes are cached no longer than
//! its remaining TTL and at most `ENTRY_CACHE_MAX`; a key being written and
//! a redirected writer's new inode are not cached at all; a setattr that
//! makes a new version answers only once the key's old dentry is dropped.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant, SystemTime};

use fuser::Errno;
use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, ReplyAttr, ReplyEntry,
    Request, TimeOrNow,
};

use super::handles::Handle;
use super::inodes::{EntryAttr, InodeKind, kind_of};
use super::{BLOCK, CacheFs, DIR_TTL, ENTRY_CACHE_MAX, control, inodes};
use crate::store::{
    EntryInfo, Lookup, MetaUpdate, NAME_MAX, Namespace, Owner, StagingFile, StoreError, WriteFrom,
    to_nanos, to_system_time,
};

impl CacheFs {
    /// How long the kernel may keep an entry's dentry and attributes:
    /// never past its expiry, and at most `ENTRY_CACHE_MAX`.
    fn entry_ttl(&self, info: &EntryInfo) -> Duration {
        match info.expires {
            None => ENTRY_CACHE_MAX,
            Some(at) => {
                let left = at.saturating_sub(self.store.now());
                Duration::from_nanos(left.max(0) as u64).min(ENTRY_CACHE_MAX)
            }
        }
    }

    pub(super) fn dir_attr(&self, ino: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: FileType::Directory,
            perm: if ino == inodes::CONTROL_DIR {
                0o555
            } else {
                0o755
            },
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        }
    }

    fn control_attr(&self, ino: u64) -> FileAttr {
        let size = control::render(&self.store, ino).len() as u64;
        FileAttr {
            size,
            blocks: size.div_ceil(512),
            kind: FileType::RegularFile,
            perm: 0o444,
            nlink: 1,
            mtime: SystemTime::now(),
            ..self.dir_attr(ino)
        }
    }

    pub(super) fn entry_attr(&self, info: &EntryInfo) -> FileAttr {
        EntryAttr {
            ino: info.version,
            size: info.logical_size,
            blocks: info.stored_bytes.div_ceil(512),
            mtime: to_system_time(info.mtime),
            perm: info.mode,
            uid: info.uid,
            gid: info.gid,
        }
        .to_attr()
    }

    pub(super) fn staging_attr(&self, st: &StagingFile) -> FileAttr {
        let (uid, gid) = st.owner();
        EntryAttr {
            ino: st.version(),
            size: st.len(),
            blocks: st.len().div_ceil(512),
            mtime: SystemTime::now(),
            perm: st.mode(),
            uid,
            gid,
        }
        .to_attr()
    }

    pub(super) fn do_lookup(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
    ) {
        let gen0 = Generation(0);
        match kind_of(parent.0) {
            Some(InodeKind::Root) => {
                if name.as_bytes() == crate::store::CONTROL_DIR {
                    return reply.entry(&DIR_TTL, &self.dir_attr(inodes::CONTROL_DIR), gen0);
                }
                if name.len() > NAME_MAX {
                    return reply.error(Errno::ENAMETOOLONG);
                }
                match Namespace::parse(name.as_bytes())
                    .ok()
                    .and_then(|ns| self.store.namespace_id(&ns))
                {
                    Some(id) => {
                        reply.entry(&DIR_TTL, &self.dir_attr(inodes::namespace_ino(id)), gen0)
                    }
                    None => reply.error(Errno::ENOENT),
                }
            }
            Some(InodeKind::ControlDir) => match control::ino_of(name.as_bytes()) {
                Some(ino) => reply.entry_with_ttls(
                    &Duration::ZERO,
                    &Duration::from_secs(1),
                    &self.control_attr(ino),
                    gen0,
                ),
                None => reply.error(Errno::ENOENT),
            },
            Some(InodeKind::Namespace(_)) => {
                let Some(ns) = self.namespace_of(parent.0) else {
                    return reply.error(Errno::ENOENT);
                };
                let key = match self.parse_key(&ns, name, Errno::ENOENT) {
                    Ok(k) => k,
                    Err(e) => return reply.error(e),
                };
                // A writer sent here by `open` gets its own new inode.
                if let Some(attr) = self.redirected(req.pid(), &ns, &key) {
                    self.inodes.remember(&ns, &key, attr);
                    return reply.entry_with_ttls(&Duration::ZERO, &Duration::ZERO, &attr, gen0);
                }
                // A key being written is invisible to everyone, its writer
                // included, until it is published.
                match self.store.lookup(&ns, &key) {
                    Lookup::Hit(info) => {
                        let attr = self.entry_attr(&info);
                        self.inodes.remember(&ns, &key, attr);
                        // While the key is being written its version is
                        // about to change: not cached, so the publish need
                        // not wait to drop it (see `publish_pending`).
                        let ttl = if self.is_being_written(&ns, &key) {
                            Duration::ZERO
                        } else {
                            self.entry_ttl(&info)
                        };
                        reply.entry_with_ttls(&ttl, &ttl, &attr, gen0);
                    }
                    Lookup::Miss => {
                        let t = self
                            .misses
                            .missed(req.pid(), &ns, &key, false, Instant::now());
                        self.take_back(&ns, t);
                        reply.error(Errno::ENOENT)
                    }
                    Lookup::Expired => {
                        let t = self
                            .misses
                            .missed(req.pid(), &ns, &key, true, Instant::now());
                        self.take_back(&ns, t);
                        reply.error(Errno::ENOENT)
                    }
                }
            }
            _ => reply.error(Errno::ENOTDIR),
        }
    }

    pub(super) fn do_getattr(&self, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match kind_of(ino.0) {
            Some(InodeKind::Root) | Some(InodeKind::ControlDir) => {
                reply.attr(&DIR_TTL, &self.dir_attr(ino.0))
            }
            Some(InodeKind::ControlFile(i)) => reply.attr(&Duration::ZERO, &self.control_attr(i)),
            Some(InodeKind::Namespace(_)) => match self.namespace_of(ino.0) {
                Some(_) => reply.attr(&DIR_TTL, &self.dir_attr(ino.0)),
                None => reply.error(Errno::ENOENT),
            },
            Some(InodeKind::Entry) => {
                // A writer's own handle describes its staged content.
                if let Some(h) = fh.and_then(|fh| self.handles.get(fh.0))
                    && let Some(s) = h.write_state()
                    && s.ino == ino.0
                    && let Some(st) = &s.staging
                {
                    return reply.attr(&Duration::ZERO, &self.staging_attr(st));
                }
                let Some((ns, key, last)) = self.inodes.get(ino.0) else {
                    return reply.error(Errno::ENOENT);
                };
                match self.store.entry_info(&ns, &key) {
                    Lookup::Hit(info) if info.version == ino.0 => {
                        let attr = self.entry_attr(&info);
                        self.inodes.refresh(attr);
                        reply.attr(&self.entry_ttl(&info), &attr)
                    }
                    // An older version, still open somewhere: what it was.
                    _ => reply.attr(&Duration::ZERO, &last),
                }
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        if kind_of(ino.0) != Some(InodeKind::Entry) {
            // Directories and control files: nothing to change; report as is.
            return self.getattr(_req, ino, fh, reply);
        }
        // Changes to a file being written (through its fd, or by path from
        // the writer: `fchmod`, `futimens` arrive without a handle) apply
        // to its staged content.
        let handle = fh
            .and_then(|fh| self.handles.get(fh.0))
            .filter(|h| matches!(**h, Handle::Write(_)))
            .or_else(|| self.writer_of_inode(ino.0));
        if let Some(h) = &handle
            && let Some(mut s) = h.write_state()
        {
            if s.staging.is_none() && s.failed.is_none() {
                match self.store.begin_write(
                    &s.ns,
                    &s.key,
                    WriteFrom::Current,
                    Owner {
                        uid: 0,
                        gid: 0,
                        mode: 0o644,
                    },
                ) {
                    Ok(st) => s.staging = Some(st),
                    Err(e) => return reply.error(self.fail(&e)),
                }
            }
            if let Some(st) = s.staging.as_mut() {
                if let Some(sz) = size
                    && let Err(e) = st.truncate(sz)
                {
                    let en = self.rejected(&s.ns, self.fail(&e));
                    s.failed = Some(en);
                    s.staging = None;
                    return reply.error(en);
                }
                if let Some(m) = mode {
                    st.set_mode(m);
                }
                st.set_owner(uid, gid);
                if let Some(t) = mtime {
                    st.set_mtime(time_of(t, self.store.now()));
                }
                let attr = self.staging_attr(st);
                // Metadata changes too: `touch` (open, futimens, close)
                // must be published by its own close, not later at release.
                s.dirty |= size.is_some()
                    || mtime.is_some()
                    || mode.is_some()
                    || uid.is_some()
                    || gid.is_some();
                return reply.attr(&Duration::ZERO, &attr);
            }
        }
        let Some((ns, key, _)) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let now = self.store.now();
        let update = MetaUpdate {
            mtime: mtime.map(|t| time_of(t, now)),
            ttl_secs: None,
            mode,
            uid,
            gid,
            truncate: size,
        };
        let nothing = update.mtime.is_none()
            && mode.is_none()
            && uid.is_none()
            && gid.is_none()
            && size.is_none();
        let result = if nothing {
            match self.store.entry_info(&ns, &key) {
                Lookup::Hit(info) => Ok(info),
                _ => Err(StoreError::NotFound),
            }
        } else {
            self.store.update(&ns, &key, update)
        };
        match result {
            Ok(info) if info.version == ino.0 => {
                // Same version (touch, chmod, chown): same content, new
                // attributes for the inode the kernel holds.
                let attr = self.entry_attr(&info);
                self.inodes.refresh(attr);
                reply.attr(&self.entry_ttl(&info), &attr)
            }
            Ok(_) => {
                // A truncate made a new version: the asked inode stays
                // the old version (its readers' pages stay right), and
                // the key's dentry goes before the caller learns it is done.
                let old = self.inodes.get(ino.0).map(|(_, _, a)| a);
                self.forget_dentry(&ns, &key);
                self.invalidate.then(move || match old {
                    Some(attr) => reply.attr(&Duration::ZERO, &attr),
                    None => reply.error(Errno::ENOENT),
                });
            }
            Err(e) => reply.error(self.fail(&e)),
        }
    }
}

fn time_of(t: TimeOrNow, now: i64) -> i64 {
    match t {
        TimeOrNow::Now => now,
        TimeOrNow::SpecificTime(st) => to_nanos(st),
    }
}
