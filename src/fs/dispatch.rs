//! Which requests the request thread answers itself, and which it hands
//! to a worker (`workers.rs`): the decision, made at a request's start
//! from state in memory, before anything is done.
//!
//! Why one request thread: the kernel hands each FUSE request to a thread
//! reading /dev/fuse, and a thread asleep on another vCPU is woken by an
//! inter-processor interrupt. On a VM that interrupt goes through the
//! hypervisor to a halted vCPU and costs more than the request itself
//! (a hot read's OPEN answered in ~5 us on the thread the caller woke,
//! tens of microseconds on another one). One thread that answers every
//! request that never waits (LOOKUP, GETATTR, a hit's OPEN, READ from the
//! page cache, a reader's RELEASE, FORGET, listings) keeps them on the
//! vCPU where the caller runs; a request that may wait goes to a worker,
//! so the request thread is never held by another request, and by the
//! disk only for a writer's few microseconds of it (below).
//!
//! What goes to a worker: requests that wait on the backing dir's
//! metadata or on a whole file (SETATTR, MKNOD, MKDIR, RMDIR, UNLINK,
//! RENAME, FSYNC, STATFS, xattrs, an OPEN that is not a hit: a writer's
//! staging file, a cold open and its checksum check; a READ the page
//! cache cannot serve at once, as `RWF_NOWAIT` tells; a LOOKUP that looks
//! at the backing dir: a daemon not alone, or its index still being
//! rebuilt), and requests that wait on another request (a LOOKUP of a key
//! being written may wait up to 100 ms for a writer that closed unwritten
//! to be released; a GETATTR of a writer's inode waits for its RELEASE).
//!
//! Writers' requests (CREATE, WRITE, FLUSH, RELEASE, and RENAME of an
//! entry) are the measured exception: their work is a staging file made ahead, bytes into the page
//! cache and one `linkat`, tens of microseconds, less than a hand-off costs
//! here (a publish with CREATE, WRITE and FLUSH handed off took ~300 us
//! against ~90 inline; four and eight writers' ops/s were no better
//! handed off either, on 2 vCPUs). They go to workers only when they
//! would wait for the disk: an `O_EXCL` create (a claim file), no staging
//! file made ahead, a namespace that syncs, other daemons on the backing
//! dir (a publish catches up on their logs; a newcomer waits out their
//! leases), or a disk slow of late (`pace.rs`: a mean over 1 ms or one
//! request over 50 ms sends them to workers for half a second, and then
//! they are tried here again). That is the price of the choice: one
//! publish slower than that holds every request behind it for its time.
//!
//! Why nothing on the request thread waits for a request queued behind it
//! (the deadlock argument). The request thread is the only reader of the
//! kernel's queue, so a request it has not read yet cannot run until the
//! one it is answering returns. The waits for other requests in `fs` are
//! those of `HandleTable::wait_settled`, for a RELEASE of a writer of the
//! key or inode asked about (`writers_view`, `after_release`). A request
//! answered here has been checked, at its start, to have no writer on its
//! key (LOOKUP) or inode (GETATTR, unless asked through that writer's own
//! handle, which never waits), or to hold no writer (a hit's OPEN, READ,
//! a reader's RELEASE). A writer that appears after that check was made by
//! a CREATE or OPEN read before this request (on a worker now); its FLUSH
//! and RELEASE, which alone make it something to wait for, are read after
//! this request returns. So the state such a wait needs cannot arise while
//! the request thread answers. The other waits a request here may meet
//! are for work already running, never for a request: a writer's mutex
//! (checked free at the start with `try_lock`; a worker's request on the
//! same writer may take it meanwhile, and is waited for), the index lock,
//! and the disk itself for writers' requests (above). Workers may wait on
//! each other (bounded: 5 s for a publish at RELEASE, 100 ms for an
//! unwritten close); a writer's RELEASE on a worker, which those waits end
//! with, is urgent (`Workers::submit_urgent`): it never queues behind
//! them. A wait reached on the request thread all the same is logged as a
//! bug (`workers::wait_here_is_a_bug`) when it is the only one (`mount
//! --request-threads 1`). With two readers (the default, see `mount.rs`
//! for why) the argument is weaker: a FLUSH the other
//! reader answers may make a writer something to wait for after this
//! request's check; the wait is then bounded (100 ms, 5 s) and for a
//! RELEASE the other reader is free to read, never a deadlock.
//!
//! Kernel invalidations stay on their own thread (`invalidate.rs`): they
//! wait for a directory lock that a request in flight may hold.

use super::CacheFs;
use super::handles::Handle;
use super::inodes::{InodeKind, kind_of};
use super::writer::Writer;
use crate::store::{Key, KeyFormat};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

impl CacheFs {
    /// Whether a LOOKUP of `name` in `parent` may wait (see the module
    /// docs): it looks at the backing dir, or a writer of the key is open.
    pub fn lookup_waits(&self, parent: u64, name: &OsStr) -> bool {
        if matches!(kind_of(parent), Some(InodeKind::ControlDir)) {
            return false;
        }
        if !self.store.answers_from_memory() {
            return true;
        }
        if !self.handles.has_writers() {
            return false;
        }
        let Some((id, dir)) = self.dir_of(parent) else {
            return false;
        };
        match self.store.resolve_in(id, &dir, name.as_bytes(), false) {
            Ok((ns, key)) => self.handles.writes_key(&ns, &key),
            Err(_) => false,
        }
    }

    /// Whether a GETATTR of `ino` (through handle `fh`, if any) may wait:
    /// of a writer's inode, unless asked through that writer's own handle
    /// (its `fstat`), which is answered from what it staged.
    pub fn getattr_waits(&self, ino: u64, fh: Option<u64>) -> bool {
        match kind_of(ino) {
            Some(InodeKind::Entry) => {
                self.handles.writes_on_inode(ino)
                    && fh.is_none_or(|fh| self.writer_state(fh, |w| w.ino == ino) != Some(true))
            }
            // Rendered from the store's figures (a statfs of the volume).
            Some(InodeKind::ControlFile(_)) => true,
            _ => false,
        }
    }

    /// Whether a CREATE in `parent` may wait. A create takes a staging
    /// file made ahead and claims its key in memory: answered here. It
    /// waits for the disk with `O_EXCL` (a claim file), with no file made
    /// ahead, in a namespace that syncs, beside other daemons (a publish
    /// there catches up on their logs, a newcomer's waits out their
    /// leases), or while the disk is slow.
    pub fn create_waits(&self, parent: u64, flags: i32) -> bool {
        if flags & libc::O_EXCL != 0
            || self.pace.is_slow()
            || !self.store.answers_from_memory()
            || !self.store.has_staging_ready()
        {
            return true;
        }
        self.dir_of(parent)
            .is_none_or(|(id, _)| self.store.syncs_publishes(id))
    }

    /// Whether a WRITE, FLUSH or RELEASE of handle `fh` may wait. Of a
    /// reader's handle: never. Of a writer's: its bytes go to the page
    /// cache and its publish is a link, tens of microseconds, less than a
    /// hand-off to a worker costs on a VM (see the module docs), so it is
    /// answered here, several writers' too (measured: handed off, four
    /// writers' ops/s fell by a quarter on 2 vCPUs). It goes to a worker
    /// in a namespace that syncs, beside other daemons, while the disk is
    /// slow (then writers wait on workers, in parallel), or when another
    /// request holds the writer's state.
    pub fn writer_waits(&self, fh: u64) -> bool {
        let Some(durable) = self.writer_state(fh, |w| self.store.namespace_syncs(&w.ns)) else {
            // A reader's, or one whose state another request holds.
            return self.is_writer(fh);
        };
        durable || self.pace.is_slow() || !self.store.answers_from_memory()
    }

    /// Whether a RENAME of `name` in `parent` may wait. An entry's rename
    /// is one rename in the backing dir (with a trailer), like a publish:
    /// answered here on the same terms as writers' requests. A
    /// directory's moves its whole subtree: on a worker.
    pub fn rename_waits(&self, parent: u64, name: &OsStr) -> bool {
        if self.pace.is_slow() || !self.store.answers_from_memory() {
            return true;
        }
        let Some((id, dir)) = self.dir_of(parent) else {
            return false;
        };
        match Key::join(&dir, name.as_bytes(), KeyFormat::Any) {
            Ok(from) => self.store.is_dir(id, from.as_bytes()) || self.store.syncs_publishes(id),
            Err(_) => false,
        }
    }

    /// Whether handle `fh` is a writer's.
    pub fn is_writer(&self, fh: u64) -> bool {
        self.handles.get(fh).is_some_and(|h| h.is_writer())
    }

    /// `f` of the writer of handle `fh`, if it is a writer's and its state
    /// is free now (a held one is never waited for here).
    fn writer_state<R>(&self, fh: u64, f: impl FnOnce(&Writer) -> R) -> Option<R> {
        let h = self.handles.get(fh)?;
        match &*h {
            Handle::Write(m) => m.try_lock().ok().map(|w| f(&w)),
            _ => None,
        }
    }
}
