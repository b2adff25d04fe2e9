//! Writers: CREATE, WRITE, FLUSH, FSYNC and RELEASE of write handles, and
//! the publish of what they staged.
//!
//! Invariants: what a writer stages is invisible until it is published (at
//! its closing flush, an fsync, or release); a failed write or publish is
//! remembered and reported by every later flush and close; a flush or fsync
//! that published answers only once the kernel has dropped the key's old
//! dentry, so every open after close() finds the new version.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::Errno;
use fuser::{
    FileAttr, FileHandle, FopenFlags, Generation, INodeNo, LockOwner, ReplyCreate, ReplyEmpty,
    ReplyWrite, Request,
};

use super::CacheFs;
use super::handles::{ANY_OWNER, Handle, WriteState};
use super::inodes::kind_of;
use crate::store::{Key, Lookup, Namespace, Owner, WriteFrom};

impl CacheFs {
    /// Answers a flush or fsync. After a publish the answer waits until the
    /// kernel has dropped the key's old dentry: once close() returns,
    /// every open finds the new version.
    /// (Evictions this publish made queued theirs too: `is_busy`.)
    fn reply_when_visible(&self, result: Result<bool, Errno>, reply: ReplyEmpty) {
        match result {
            Ok(queued) if queued || self.invalidate.is_busy() => {
                self.invalidate.then(move || reply.ok())
            }
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Publishes what a write handle has staged. Errors are remembered so
    /// every later flush/close reports them too. Returns whether the key's
    /// dentry drop was queued: a reply promising the publish must then
    /// wait for it (`reply_when_visible`).
    fn publish_pending(&self, state: &mut WriteState) -> Result<bool, Errno> {
        if let Some(e) = state.failed {
            return Err(e);
        }
        let Some(staging) = state.staging.take() else {
            return Ok(false);
        };
        state.dirty = false;
        if state.cancelled || staging.is_unmodified_copy() {
            return Ok(false);
        }
        let empty = staging.is_empty();
        match self.store.publish(staging) {
            Ok(info) => {
                state.published_empty = empty.then_some(info.version);
                self.inodes.refresh(self.entry_attr(&info));
                // Usually the key's dentry already names this version: the
                // writer's own inode (from its create or its redirect) is
                // the version it publishes, and lookups during the write
                // were not cached. A handle writing again after a publish
                // stages a new version under its old inode: drop that.
                if info.version == state.ino {
                    return Ok(false);
                }
                self.forget_dentry(&state.ns, &state.key);
                Ok(true)
            }
            Err(e) => {
                let en = self.rejected(&state.ns, self.fail(&e));
                state.failed = Some(en);
                Err(en)
            }
        }
    }

    pub(super) fn open_write(
        &self,
        req: &Request,
        ns: Namespace,
        key: Key,
        flags: i32,
        mode: Option<u32>,
        version: Option<u64>,
    ) -> Result<(u64, FileAttr), Errno> {
        let from = if flags & libc::O_TRUNC != 0 {
            WriteFrom::Empty
        } else {
            WriteFrom::Current
        };
        let owner = Owner {
            uid: req.uid(),
            gid: req.gid(),
            mode: mode.unwrap_or(0o644),
        };
        let staging = self
            .store
            .begin_write_as(
                &ns,
                &key,
                from,
                owner,
                version.unwrap_or_else(|| self.store.reserve_version()),
            )
            .map_err(|e| self.rejected(&ns, self.fail(&e)))?;
        let attr = self.staging_attr(&staging);
        let fh = self
            .handles
            .insert(Handle::Write(Box::new(Mutex::new(WriteState {
                ns,
                key,
                append: flags & libc::O_APPEND != 0,
                ino: staging.version(),
                staging: Some(staging),
                failed: None,
                // A create or an O_TRUNC open is a change in itself: its
                // creator's close publishes it even unwritten (read-your-
                // writes for `touch`, claims, `: > key`). A shell's `>`
                // therefore publishes an empty version at its first close
                // (open, dup2, close) before the command writes.
                dirty: flags & (libc::O_TRUNC | libc::O_CREAT) != 0,
                writer_owners: Vec::new(),
                creator_pid: req.pid(),
                published_empty: None,
                cancelled: false,
            }))));
        Ok((fh, attr))
    }

    /// The write handle whose staged content is inode `ino`, if any.
    pub(super) fn writer_of_inode(&self, ino: u64) -> Option<Arc<Handle>> {
        let (ns, key, _) = self.inodes.get(ino)?;
        self.handles
            .writers_of(&ns, &key)
            .into_iter()
            .find(|h| h.write_state().is_some_and(|s| s.ino == ino))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(ns) = self.namespace_of(parent.0) else {
            return reply.error(if kind_of(parent.0).is_some() {
                Errno::EACCES
            } else {
                Errno::ENOENT
            });
        };
        let key = match self.parse_key(&ns, name, Errno::EINVAL) {
            Ok(k) => k,
            Err(e) => return reply.error(self.rejected(&ns, e)),
        };
        self.take_back(&ns, self.misses.created(req.pid(), &ns, &key));
        if flags & libc::O_EXCL != 0
            && (matches!(self.store.entry_info(&ns, &key), Lookup::Hit(_))
                || self.handles.is_being_written(&ns, &key))
        {
            return reply.error(Errno::EEXIST);
        }
        match self.open_write(
            req,
            ns.clone(),
            key.clone(),
            flags,
            Some(mode & !umask & 0o7777),
            None,
        ) {
            Ok((fh, attr)) => {
                self.inodes.remember(&ns, &key, attr);
                reply.created(
                    &Duration::ZERO,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn do_write(
        &self,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(h) = self.handles.get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let Some(mut s) = h.write_state() else {
            return reply.error(Errno::EBADF);
        };
        if let Some(e) = s.failed {
            return reply.error(e);
        }
        if s.staging.is_none() {
            // Written again after a publish (fsync, or a dup'ed fd closed):
            // start a new copy-on-write of what was published.
            let owner = Owner {
                uid: 0,
                gid: 0,
                mode: 0o644,
            };
            match self
                .store
                .begin_write(&s.ns, &s.key, WriteFrom::Current, owner)
            {
                Ok(st) => s.staging = Some(st),
                Err(e) => return reply.error(self.rejected(&s.ns, self.fail(&e))),
            }
        }
        let owner = lock_owner.map_or(ANY_OWNER, |o| o.0);
        if !s.writer_owners.contains(&owner) {
            s.writer_owners.push(owner);
        }
        let append = s.append;
        let st = s.staging.as_mut().expect("just ensured");
        let result = if append {
            st.append(data).map(|_| ())
        } else {
            st.write_at(offset, data)
        };
        s.dirty = true;
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => {
                // Over its limit: the write fails now, close() fails too,
                // and the staged bytes go at once.
                let en = self.rejected(&s.ns, self.fail(&e));
                s.failed = Some(en);
                s.staging = None;
                if let Some(v) = s.published_empty.take() {
                    self.store.remove_version(&s.ns, &s.key, v);
                    self.forget_dentry(&s.ns, &s.key);
                }
                reply.error(en)
            }
        }
    }

    pub(super) fn do_flush(
        &self,
        req: &Request,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let Some(h) = self.handles.get(fh.0) else {
            return reply.ok();
        };
        let result = match h.write_state() {
            Some(mut s) if s.is_closed_by_writer(lock_owner.0, req.pid()) => {
                self.publish_pending(&mut s)
            }
            _ => Ok(false),
        };
        self.reply_when_visible(result, reply);
    }

    pub(super) fn do_fsync(&self, fh: FileHandle, reply: ReplyEmpty) {
        // fsync publishes whatever is staged, written or not.
        let result = match self.handles.get(fh.0) {
            Some(h) => match h.write_state() {
                Some(mut s) => self.publish_pending(&mut s),
                None => Ok(false),
            },
            None => Ok(false),
        };
        self.reply_when_visible(result, reply);
    }

    pub(super) fn do_release(&self, fh: FileHandle, reply: ReplyEmpty) {
        if let Some(h) = self.handles.remove(fh.0)
            && let Some(mut s) = h.write_state()
            && let Err(e) = self.publish_pending(&mut s)
        {
            log::debug!("publish at release of {}/{:?} failed: {e:?}", s.ns, s.key);
        }
        reply.ok()
    }
}
