//! Writers as requests: CREATE, WRITE, FLUSH and FSYNC (RELEASE is in
//! `opens.rs`); the writer's life itself is `writer.rs`.
//!
//! Invariants: a flush or fsync that published answers only once the
//! kernel has dropped the key's old dentry, so every open after close()
//! finds the new version; a writer's handle is found by the inode the
//! kernel holds for it (`writer_of_inode`), for changes made by path.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handles::Handle;
use super::inodes::kind_of;
use super::types::{Created, Ctx, Entry, Errno, Opened, Replier};
use super::writer::{Writer, WriterOpen};
use super::{CacheFs, errno::name_errno, invalidate};
use crate::store::{Key, Namespace, Owner};

/// The longest a request waits for a RELEASE's publish (see
/// `after_release`): far more than a publish takes, short enough that a
/// wedged backing volume shows as a slow request, not a hung one.
const RELEASE_PUBLISH_WAIT: Duration = Duration::from_secs(5);

impl CacheFs {
    /// Answers a flush or fsync. After a publish the answer waits until
    /// the kernel has dropped the key's old dentry (queued by the store's
    /// change listener, as were the dentries of evictions it made): once
    /// close() returns, every open finds the new version. A publish that
    /// replaced and evicted nothing queued no drop, and answers at once
    /// (as does one whose drops are sent already): the drops other
    /// threads queued are owed to their own callers (see
    /// `invalidate.rs`).
    fn reply_when_visible(&self, result: Result<(), Errno>, reply: impl Replier<()>) {
        match result {
            Ok(()) if invalidate::take_owed().is_some_and(|t| !self.invalidate.is_sent(t)) => {
                self.invalidate.then(move || reply.reply(Ok(())))
            }
            r => reply.reply(r),
        }
    }

    /// Publishes what a writer has staged and tells the inode table. The
    /// name's kernel dentry leads to the writer's inode (its lookups were
    /// not cached), unless a rename put another version there meanwhile:
    /// then it is dropped, and the answer waits for that.
    pub(super) fn publish(&self, w: &mut Writer) -> Result<(), Errno> {
        if let Some(info) = w.publish(&self.store)? {
            self.inodes.refresh(self.entry_attr(&info));
            if w.take_renamed_over()
                && let Some(id) = self.store.namespace_id(&w.ns)
            {
                self.drop_name(id, &w.key);
            }
        }
        Ok(())
    }

    /// The write handle whose staged content is inode `ino`, if any. One
    /// being released is waited for (`after_release`): none is then left.
    pub(super) fn writer_of_inode(&self, ino: u64) -> Option<Arc<Handle>> {
        if !self.handles.writes_on_inode(ino) {
            return None;
        }
        self.after_release(ino);
        let (ns, key, _) = self.inodes.get(ino)?;
        self.handles
            .writers_of(&ns, &key)
            .into_iter()
            .find(|h| h.writer().is_some_and(|w| w.ino == ino))
    }

    /// Waits while a write handle on inode `ino` is being released. The
    /// kernel sends RELEASE once close() has returned, and a closing
    /// process goes on at once (`: > f; chmod 444 f`): a request on the
    /// inode meanwhile would find neither the writer nor, for an
    /// unwritten file whose publish is the RELEASE's, the entry (ENOENT).
    /// It acts as after the publish instead. Bounded, so that a publish
    /// stuck on the backing volume cannot hold the request forever.
    pub(super) fn after_release(&self, ino: u64) {
        self.handles
            .wait_released(ino, Instant::now() + RELEASE_PUBLISH_WAIT);
    }

    /// The name CREATE and MKNOD make in `parent` (its namespace id,
    /// namespace and key) and whose it is: its creator's, a setgid
    /// directory's group, the mode less the umask.
    pub(super) fn new_name(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<(u32, Namespace, Key, Owner), Errno> {
        let Some((ns_id, dir)) = self.dir_of(parent) else {
            return Err(if kind_of(parent).is_some() {
                Errno::EACCES
            } else {
                Errno::ENOENT
            });
        };
        let (ns, key) = self
            .store
            .resolve_in(ns_id, &dir, name.as_bytes(), true)
            .map_err(|e| name_errno(&e, Errno::EINVAL))?;
        let owner = Owner {
            uid: ctx.uid,
            gid: self.new_entry_gid(ctx, ns_id, &dir),
            mode: mode & !umask & 0o7777,
        };
        Ok((ns_id, ns, key, owner))
    }

    pub fn create(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<Created, Errno> {
        let (ns_id, ns, key, owner) = self.new_name(ctx, parent, name, mode, umask)?;
        let how = WriterOpen {
            flags,
            owner,
            version: None,
            pid: ctx.pid,
        };
        let (fh, attr) = self.open_writer(ns.clone(), key.clone(), how)?;
        self.inodes.remember(&ns, &key, attr);
        // The kernel creates only a name it did not find: a new name,
        // to its creator from now on.
        self.ns_times.names_changed_in(ns_id, key.dir());
        Ok(Created {
            entry: Entry::cached(attr, Duration::ZERO),
            opened: Opened {
                fh,
                direct_io: true,
                keep_cache: false,
                noflush: false,
            },
        })
    }

    pub fn write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        lock_owner: Option<u64>,
    ) -> Result<u32, Errno> {
        let h = self.handles.get(fh).ok_or(Errno::EBADF)?;
        let mut w = h.writer().ok_or(Errno::EBADF)?;
        let settled = w.is_deferred();
        let r = w.write(&self.store, offset, data, lock_owner);
        drop(w);
        if settled {
            // Lookups waiting for its RELEASE learn it is being written.
            self.handles.settle_writers();
        }
        r
    }

    /// FLUSH: a close. The writer's own close publishes, unless it wrote
    /// nothing: then its RELEASE does (see `writer.rs`). A close by a
    /// process being killed publishes nothing: the kernel closes a killed
    /// process's files as it does an exiting one's, so only the closing
    /// thread's state tells a cut-short write from a finished one. It is
    /// asked only when this close could publish something, and only of
    /// the thread that opened the file: reading /proc of another process
    /// can wait on that process (a child closing inherited descriptors as
    /// it execs waits for this FLUSH meanwhile: asking it deadlocked).
    pub fn flush(&self, ctx: &Ctx, fh: u64, lock_owner: u64, reply: impl Replier<()>) {
        invalidate::take_owed();
        let result = match self.handles.get(fh) {
            Some(h) => match h.writer() {
                Some(mut w)
                    if w.awaits_close()
                        && w.is_opener(ctx.pid)
                        && (self.killed_by_signal)(ctx.pid) =>
                {
                    if !w.is_killed() {
                        log::debug!(
                            "{}/{:?}: closed by thread {} being killed by a signal: not published",
                            w.ns,
                            w.key,
                            ctx.pid
                        );
                    }
                    w.mark_killed();
                    Ok(())
                }
                Some(mut w) => {
                    w.clear_killed();
                    if w.is_closed_by_writer(lock_owner, ctx.pid) {
                        if w.defer_unwritten() {
                            Ok(())
                        } else {
                            self.publish(&mut w)
                        }
                    } else {
                        Ok(())
                    }
                }
                None => Ok(()),
            },
            None => Ok(()),
        };
        self.reply_when_visible(result, reply);
    }

    /// FSYNC publishes whatever is staged, written or not.
    pub fn fsync(&self, fh: u64, reply: impl Replier<()>) {
        invalidate::take_owed();
        let result = match self.handles.get(fh) {
            Some(h) => match h.writer() {
                // Only a live process calls fsync.
                Some(mut w) => {
                    w.clear_killed();
                    self.publish(&mut w)
                }
                None => Ok(()),
            },
            None => Ok(()),
        };
        self.reply_when_visible(result, reply);
    }
}
