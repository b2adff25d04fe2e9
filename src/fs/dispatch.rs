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
//! leases), or a disk slow of late (`DiskPace`: a mean over 500 us or one
//! request over 20 ms sends them to workers for half a second, and then
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
//! bug (`workers::on_request_thread`).
//!
//! Kernel invalidations stay on their own thread (`invalidate.rs`): they
//! wait for a directory lock that a request in flight may hold.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::CacheFs;
use super::handles::Handle;
use super::inodes::{InodeKind, kind_of};
use super::writer::Writer;
use crate::store::{Key, KeyFormat};

/// Inline writers' requests that average more than this (a network
/// volume, a disk busy with writeback) or one that takes more than
/// `STALL` (a journal commit) say the disk is slow right now: writers'
/// requests go to workers for `SLOW_FOR`, then are tried here again. A
/// request thread merely preempted on a busy machine is well under
/// `STALL` (a time slice is a few milliseconds), and only requests that
/// slept count (see `DiskPace::timed`).
const SLOW_MEAN: Duration = Duration::from_micros(500);
const STALL: Duration = Duration::from_millis(20);
const SLOW_FOR: Duration = Duration::from_millis(500);

/// How long writers' requests answered inline took of late (see
/// `SLOW_MEAN`). Updated without a lock: a lost update of the mean by two
/// racing writers changes nothing that matters.
#[derive(Default)]
pub struct DiskPace {
    /// A moving mean (weight 1/8) of inline writers' requests, in ns.
    mean: AtomicU64,
    /// Nanoseconds since `epoch` until which writers go to workers.
    slow_until: AtomicU64,
    epoch: OnceLock<Instant>,
}

impl DiskPace {
    fn now(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        epoch.elapsed().as_nanos() as u64
    }

    pub fn is_slow(&self) -> bool {
        let until = self.slow_until.load(Ordering::Relaxed);
        until != 0 && self.now() < until
    }

    /// Runs a writer's request on this thread, and notes how long it took
    /// if it slept on the way (the disk, a lock): a request that never
    /// slept was only preempted, as on any busy machine, and says nothing
    /// of the disk.
    pub fn timed<R>(&self, f: impl FnOnce() -> R) -> R {
        let (start, slept) = (self.now(), sleeps());
        let r = f();
        if sleeps() != slept {
            let end = self.now();
            self.note(end, end - start);
        }
        r
    }

    fn note(&self, now: u64, took: u64) {
        let mean = self.mean.load(Ordering::Relaxed);
        let mean = mean - mean / 8 + took / 8;
        if took > STALL.as_nanos() as u64 || mean > SLOW_MEAN.as_nanos() as u64 {
            self.slow_until
                .store(now + SLOW_FOR.as_nanos() as u64, Ordering::Relaxed);
            // Measured afresh when they come back.
            self.mean.store(0, Ordering::Relaxed);
            log::debug!(
                "writers' requests are slow ({} us, mean {} us): on workers for a while",
                took / 1000,
                mean / 1000
            );
        } else {
            self.mean.store(mean, Ordering::Relaxed);
        }
    }
}

/// How many times the current thread has slept (voluntary context
/// switches), or 0 if the kernel does not say.
fn sleeps() -> i64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_THREAD only reads
    // the calling thread's counters into it.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) };
    if r != 0 {
        return 0;
    }
    // SAFETY: getrusage succeeded, so it filled `ru` (and it was zeroed).
    i64::from(unsafe { ru.assume_init() }.ru_nvcsw)
}

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
                    && !fh.is_some_and(|fh| self.writer_state(fh, |w| w.ino == ino) == Some(true))
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
        let Some(durable) = self.writer_state(fh, |w| {
            self.store
                .namespace_id(&w.ns)
                .is_none_or(|id| self.store.syncs_publishes(id))
        }) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1000;

    #[test]
    fn fast_writers_stay_inline() {
        let p = DiskPace::default();
        for i in 0..1000 {
            p.note(p.now() + i, 80 * US);
        }
        assert!(!p.is_slow());
    }

    #[test]
    fn a_slow_disk_sends_writers_to_workers_for_a_while() {
        let p = DiskPace::default();
        let now = p.now();
        // A mean over 500 us takes a few slow requests, not one.
        let mut notes = 0;
        while !p.is_slow() {
            assert!(notes < 20, "900 us requests never made the disk slow");
            p.note(now, 900 * US);
            notes += 1;
        }
        assert!(notes > 2, "slow after {notes} requests of 900 us");
        // Measured afresh, and tried again once the while is over.
        assert_eq!(p.mean.load(Ordering::Relaxed), 0);
        p.slow_until.store(now, Ordering::Relaxed);
        assert!(!p.is_slow());
    }

    #[test]
    fn a_request_that_sleeps_is_timed_one_that_spins_is_not() {
        let p = DiskPace::default();
        // Busy for 30 ms without sleeping: the machine, not the disk.
        p.timed(|| {
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(30) {
                std::hint::spin_loop();
            }
        });
        assert!(!p.is_slow());
        p.timed(|| std::thread::sleep(Duration::from_millis(30)));
        assert!(p.is_slow());
    }

    #[test]
    fn one_stall_is_enough() {
        let p = DiskPace::default();
        p.note(p.now(), 25_000 * US);
        assert!(p.is_slow());
    }
}
