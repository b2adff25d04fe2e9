//! A writer's life: one open file handle writing a key, from its open to
//! its last close, as one state type with named transitions. Every path
//! that writes goes through it: create, open for write, WRITE, truncate
//! and the other SETATTR changes, a TTL set on a file being written,
//! FLUSH, FSYNC, RELEASE, and an unlink that abandons it.
//!
//! ```text
//!            open / create
//!                 |
//!                 v          publish (close, fsync, release)
//!   +-------> Staged ------------------------------------> Published
//!   |             |  \ write past a limit, volume full,        |
//!   |             |   \ publish refused                        |
//!   |             |    +--------------> Failed(errno) <--------+ (restage
//!   |             |                                            |  fails)
//!   +-------------+--------------- restage ---------------------+
//!       (a write, truncate or chmod after a publish stages a copy
//!        of what is live, owned as the writer's own)
//! ```
//!
//! Invariants:
//! - What is staged is invisible until published; a failure is sticky: it
//!   is reported by every later write, flush and close, and what was
//!   staged goes at once.
//! - No empty interim version: a writer that opened with O_CREAT or
//!   O_TRUNC and did nothing else publishes its (empty) content at its
//!   last close, RELEASE, not at the FLUSH of a descriptor: a shell's
//!   `echo x > key` closes the descriptor it opened before it writes
//!   through the dup2'ed one (`defer_unwritten`). Until then it is
//!   `deferred`, and lookups by anyone else wait a moment for the
//!   RELEASE (`entries.rs`). If a later write through the same handle
//!   fails, an empty version it published is withdrawn, so a reader never
//!   keeps an empty value that its writer reported as failed.
//! - The writer's view: the thread that opened it (`is_opener`) sees the
//!   staged content under the key; everyone else the published version or
//!   nothing.
//! - Only the writer's own close publishes: a forked child closing its
//!   inherited copy, or a shell closing the fd it just dup2'ed, does not
//!   (`is_closed_by_writer`).
//! - Abandoned (the key was unlinked while being written): the staged
//!   content stays the handle's own, readable, writable and truncatable
//!   as an unlinked file is, its claim on the key let go; nothing is
//!   published.
//! - Killed: a close by a process being killed by a signal publishes
//!   nothing (what it wrote may be cut short, and an unwritten claim is
//!   no value). It marks the writer `killed`; a later close by a live
//!   process sharing the file clears the mark and publishes as usual; a
//!   RELEASE still marked drops what is staged and its claim
//!   (`drop_killed`).

use std::time::Instant;

use super::errno::counted_errno;
use super::types::{Errno, SetAttr};
use crate::store::{
    EntryInfo, Key, Namespace, NewWrite, Owner, StagingFile, Store, StoreError, WriteBy, WriteFrom,
    XattrChange,
};

/// Stands for "whoever" when a write arrives without a lock owner.
pub const ANY_OWNER: u64 = u64::MAX;

/// Where a writer is in its life.
pub enum Stage {
    /// Content staged, not yet published.
    Staged(Box<StagingFile>),
    /// Nothing pending: what was staged is published (or was dropped).
    Published,
    /// A write or publish failed: every later write and close report it.
    Failed(Errno),
}

/// How a writer opens.
#[derive(Debug, Clone, Copy)]
pub struct WriterOpen {
    /// open(2) flags: O_TRUNC starts empty, O_APPEND appends, O_CREAT or
    /// O_TRUNC make the open a change in itself, O_EXCL claims the key.
    pub flags: i32,
    pub owner: Owner,
    /// The inode the kernel already holds for it (a redirected writer), or
    /// `None` for a new one.
    pub version: Option<u64>,
    pub pid: u32,
}

pub struct Writer {
    pub ns: Namespace,
    pub key: Key,
    /// The inode the kernel holds for this handle.
    pub ino: u64,
    stage: Stage,
    append: bool,
    /// Owner and mode of a restaged copy whose live version went away.
    owner: Owner,
    /// Changed since the last publish: a close has something to publish.
    dirty: bool,
    abandoned: bool,
    /// Lock owners (one per process file table) that wrote through this
    /// handle: only their close publishes.
    writer_owners: Vec<u64>,
    /// The thread that opened it: an unwritten exclusive create is
    /// published by its creator's close, not by a forked child's.
    creator_pid: u32,
    /// The empty version an unwritten close published, withdrawn if a
    /// later write fails.
    published_empty: Option<u64>,
    /// The version this handle published last, while it may be live.
    last_published: Option<u64>,
    /// A rename put another version under the key while this was being
    /// written: the kernel may hold that name, so the publish drops it.
    renamed_over: bool,
    /// Opened with O_CREAT or O_TRUNC and nothing else done since: a close
    /// leaves the publish to RELEASE.
    only_opened: bool,
    /// Closed by its writer with nothing written (since then): publishes
    /// at RELEASE unless it writes meanwhile (through a dup'ed descriptor).
    deferred: Option<Instant>,
    /// Last closed by a process being killed (see the invariants).
    killed: bool,
}

impl Writer {
    /// Opens `key` for writing: Staged. Refusals (O_EXCL of a taken key,
    /// a copy over the limit) come from the store, counted there.
    pub fn open(store: &Store, ns: Namespace, key: Key, how: WriterOpen) -> Result<Writer, Errno> {
        let from = if how.flags & libc::O_TRUNC != 0 {
            WriteFrom::Empty
        } else {
            WriteFrom::Current
        };
        let w = NewWrite {
            from,
            owner: how.owner,
            version: how.version,
            exclusive: how.flags & libc::O_EXCL != 0,
            by: WriteBy::Open(how.pid),
        };
        let staging = store
            .start_write(&ns, &key, w)
            .map_err(|e| counted_errno(store, &e))?;
        Ok(Writer {
            ns,
            key,
            ino: staging.version(),
            stage: Stage::Staged(Box::new(staging)),
            append: how.flags & libc::O_APPEND != 0,
            owner: how.owner,
            // A create or an O_TRUNC open is a change in itself: its
            // creator's close publishes it even unwritten.
            dirty: how.flags & (libc::O_TRUNC | libc::O_CREAT) != 0,
            abandoned: false,
            writer_owners: Vec::new(),
            creator_pid: how.pid,
            published_empty: None,
            last_published: None,
            renamed_over: false,
            only_opened: how.flags & (libc::O_TRUNC | libc::O_CREAT) != 0,
            deferred: None,
            killed: false,
        })
    }

    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// The staged content, if any is pending.
    pub fn staged(&self) -> Option<&StagingFile> {
        match &self.stage {
            Stage::Staged(st) => Some(st),
            _ => None,
        }
    }

    /// Staged content to change: Staged as is, Published restages a copy
    /// of what is live, Failed reports its failure.
    fn staged_mut(&mut self, store: &Store) -> Result<&mut StagingFile, Errno> {
        match self.stage {
            Stage::Staged(_) => {}
            Stage::Failed(e) => return Err(e),
            Stage::Published => {
                let w = NewWrite {
                    from: WriteFrom::Current,
                    owner: self.owner,
                    version: None,
                    exclusive: false,
                    by: WriteBy::Restage,
                };
                match store.start_write(&self.ns, &self.key, w) {
                    Ok(mut st) => {
                        // An unlinked file's content is its handle's own.
                        if self.abandoned {
                            st.unclaim();
                        }
                        self.stage = Stage::Staged(Box::new(st))
                    }
                    Err(e) => return Err(self.fail(store, counted_errno(store, &e))),
                }
            }
        }
        match &mut self.stage {
            Stage::Staged(st) => Ok(st),
            _ => unreachable!("staged just above"),
        }
    }

    /// Fails: what was staged goes, every later write and close report
    /// `e`, and an empty version this handle published is withdrawn.
    pub fn fail(&mut self, store: &Store, e: Errno) -> Errno {
        self.stage = Stage::Failed(e);
        if let Some(v) = self.published_empty.take() {
            store.remove_version(&self.ns, &self.key, v);
        }
        e
    }

    /// WRITE through this handle by `lock_owner`.
    pub fn write(
        &mut self,
        store: &Store,
        offset: u64,
        data: &[u8],
        lock_owner: Option<u64>,
    ) -> Result<u32, Errno> {
        let owner = lock_owner.unwrap_or(ANY_OWNER);
        if !self.writer_owners.contains(&owner) {
            self.writer_owners.push(owner);
        }
        let append = self.append;
        self.only_opened = false;
        self.deferred = None;
        let st = self.staged_mut(store)?;
        let r = if append {
            store.append_staged(st, data).map(|_| ())
        } else {
            store.write_staged(st, offset, data)
        };
        self.dirty = true;
        match r {
            Ok(()) => Ok(data.len() as u32),
            Err(e) => Err(self.fail(store, counted_errno(store, &e))),
        }
    }

    /// SETATTR of the file being written (through its fd, or by path from
    /// the writer): applies to its staged content.
    pub fn change(&mut self, store: &Store, c: &SetAttr) -> Result<&StagingFile, Errno> {
        let now = store.now();
        if !c.is_empty() {
            self.only_opened = false;
            self.deferred = None;
        }
        let st = self.staged_mut(store)?;
        if let Some(size) = c.size
            && let Err(e) = store.truncate_staged(st, size)
        {
            return Err(self.fail(store, counted_errno(store, &e)));
        }
        if let Some(m) = c.mode {
            st.set_mode(m);
        }
        st.set_owner(c.uid, c.gid);
        if let Some(t) = c.mtime {
            st.set_mtime(t.at(now));
        }
        if let Some(t) = c.atime {
            st.set_atime(t.at(now));
        }
        // A failed change changes nothing (returned above); any other
        // changes the ctime, a truncate's included (made by the store).
        if c.mode.is_some()
            || c.uid.is_some()
            || c.gid.is_some()
            || c.mtime.is_some()
            || c.atime.is_some()
        {
            st.changed(now);
        }
        self.owner.mode = c.mode.unwrap_or(self.owner.mode);
        self.owner.uid = c.uid.unwrap_or(self.owner.uid);
        self.owner.gid = c.gid.unwrap_or(self.owner.gid);
        // `touch` (open, futimens, close) must be published by its own
        // close, not later at release.
        self.dirty |= !c.is_empty();
        match &self.stage {
            Stage::Staged(st) => Ok(st),
            _ => unreachable!("staged just above"),
        }
    }

    /// A TTL set on the file while it is staged goes with its content.
    /// Returns false when nothing is staged (the TTL is the live entry's).
    pub fn set_ttl(&mut self, secs: u64) -> bool {
        match &mut self.stage {
            Stage::Staged(st) => {
                self.only_opened = false;
                self.deferred = None;
                st.set_ttl(Some(secs));
                true
            }
            _ => false,
        }
    }

    /// An xattr changed on the file while it is staged goes with its
    /// content. `None` when nothing is staged (the live entry's changes).
    pub fn change_xattr(&mut self, change: &XattrChange) -> Option<Result<(), StoreError>> {
        match &mut self.stage {
            Stage::Staged(st) => {
                self.only_opened = false;
                self.deferred = None;
                Some(st.change_xattr(change))
            }
            _ => None,
        }
    }

    /// The key was unlinked while being written: what is staged stays
    /// this handle's own (an unlinked file is still a file to those who
    /// hold it), the key is let go, and nothing is published from now on.
    pub fn abandon(&mut self) {
        self.abandoned = true;
        self.deferred = None;
        if let Stage::Staged(st) = &mut self.stage {
            st.unclaim();
        }
    }

    /// Its writer renamed the file: what is staged goes to `key`.
    pub fn retarget(&mut self, key: Key) {
        if let Stage::Staged(st) = &mut self.stage {
            st.retarget(key.clone());
        }
        self.key = key;
    }

    /// A rename put another version under this key (see `renamed_over`).
    pub fn renamed_over(&mut self) {
        self.renamed_over = true;
    }

    /// Whether a publish must drop the key's name from the kernel: once.
    pub fn take_renamed_over(&mut self) -> bool {
        std::mem::take(&mut self.renamed_over)
    }

    /// The version this handle published last, if any.
    pub fn last_published(&self) -> Option<u64> {
        self.last_published
    }

    pub fn is_abandoned(&self) -> bool {
        self.abandoned
    }

    /// At the writer's close: whether its publish waits for RELEASE (it
    /// opened with O_CREAT or O_TRUNC and did nothing else). A shell's
    /// `echo x > key` closes the descriptor it opened before it writes
    /// through its dup: publishing then would show an empty version.
    pub fn defer_unwritten(&mut self) -> bool {
        if self.only_opened
            && !self.abandoned
            && matches!(self.stage, Stage::Staged(_))
            && self.deferred.is_none()
        {
            self.deferred = Some(Instant::now());
        }
        self.deferred.is_some()
    }

    /// Closed unwritten, its publish waiting for RELEASE.
    pub fn is_deferred(&self) -> bool {
        self.deferred.is_some()
    }

    /// Since when it waits for RELEASE, if it does.
    pub fn deferred_since(&self) -> Option<Instant> {
        self.deferred
    }

    /// Whether thread `pid` opened this writer: that thread's path
    /// operations see what it staged under the key. (The thread, not its
    /// whole process: another thread of a server reading the key while
    /// one writes it must never see a half-written value.)
    pub fn is_opener(&self, pid: u32) -> bool {
        pid == self.creator_pid
    }

    /// Whether a close could still publish something: content is staged
    /// and its writer's own close has not come yet (a writer that closed
    /// unwritten waits for RELEASE, and a killed process that shared its
    /// file takes nothing back from it).
    pub fn awaits_close(&self) -> bool {
        !self.abandoned && self.deferred.is_none() && matches!(self.stage, Stage::Staged(_))
    }

    /// A process being killed by a signal closed it: nothing is published
    /// until a live process closes it too.
    pub fn mark_killed(&mut self) {
        self.killed = true;
    }

    /// A live process closed it: the usual rules apply again.
    pub fn clear_killed(&mut self) {
        self.killed = false;
    }

    pub fn is_killed(&self) -> bool {
        self.killed
    }

    /// At RELEASE: a writer last closed by a killed process drops what it
    /// staged (the staging file goes, and with it the claim on the key).
    /// Says whether there was something to drop.
    pub fn drop_killed(&mut self) -> bool {
        if !self.killed || !matches!(self.stage, Stage::Staged(_)) {
            return false;
        }
        self.stage = Stage::Published;
        self.dirty = false;
        self.deferred = None;
        true
    }

    /// Publishes what is staged: Staged -> Published (or Failed). Returns
    /// the new version's info when one was published.
    pub fn publish(&mut self, store: &Store) -> Result<Option<EntryInfo>, Errno> {
        if self.abandoned {
            return Ok(None);
        }
        self.deferred = None;
        let staging = match std::mem::replace(&mut self.stage, Stage::Published) {
            Stage::Staged(st) => st,
            Stage::Published => return Ok(None),
            Stage::Failed(e) => {
                self.stage = Stage::Failed(e);
                return Err(e);
            }
        };
        self.dirty = false;
        // Opened (or restaged) and closed unchanged: republishing would
        // only make a new version of the same bytes.
        if staging.is_unmodified_copy() {
            return Ok(None);
        }
        let empty = staging.is_empty();
        match store.publish(*staging) {
            Ok(info) => {
                self.published_empty = empty.then_some(info.version);
                self.last_published = Some(info.version);
                Ok(Some(info))
            }
            Err(e) => Err(self.fail(store, counted_errno(store, &e))),
        }
    }

    /// Whether a FLUSH from `lock_owner` (thread `pid`) is the writer's
    /// own close, which publishes.
    pub fn is_closed_by_writer(&self, lock_owner: u64, pid: u32) -> bool {
        if matches!(self.stage, Stage::Failed(_)) {
            return true;
        }
        if !self.dirty {
            return false;
        }
        if self.writer_owners.is_empty() {
            return pid == self.creator_pid;
        }
        self.writer_owners
            .iter()
            .any(|&o| o == lock_owner || o == ANY_OWNER)
    }
}
