//! Kernel cache invalidations, sent by one thread of their own.
//!
//! Entries' dentries are cached by the kernel (see the module docs of
//! `fs`), so a key that changes behind the kernel's back (a publish, an
//! eviction, a purge) has its dentry dropped here. A request whose reply
//! promises the change is visible (a writer's close, a purge) hands its
//! reply to this thread too, queued after the invalidations, so the
//! caller wakes only once no stale dentry remains.
//!
//! Why a thread: forgetting a dentry takes the parent directory's lock in
//! the kernel. Sent from a request handler, it would wait for a CREATE or
//! LOOKUP in that directory that is itself waiting for a free handler
//! thread: with every handler thread in that state the mount deadlocks.
//! This thread handles no requests, so the handlers stay free to answer
//! whatever holds the lock, and it never takes a lock of ours.

use std::ffi::OsString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, OnceLock};

use super::types::KernelCache;

/// Where the kernel's cache goes once the session exists (the filesystem
/// is built before it). Until then nothing is invalidated.
pub type KernelSlot = Arc<OnceLock<Box<dyn KernelCache>>>;

enum Job {
    Entry { parent: u64, name: OsString },
    Then(Box<dyn FnOnce() + Send>),
}

pub struct Invalidator {
    tx: Sender<Job>,
    /// Invalidations queued and not yet sent.
    pending: Arc<AtomicUsize>,
}

impl Invalidator {
    pub fn new(slot: KernelSlot) -> Invalidator {
        let (tx, rx) = channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let left = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("invalidate".into())
            .spawn(move || run(&slot, &rx, &left))
            .expect("spawn the invalidation thread");
        Invalidator { tx, pending }
    }

    /// Whether invalidations are queued (a reply that must follow them
    /// then waits with `then`; otherwise it can go at once).
    pub fn is_busy(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    fn send(&self, job: Job) {
        if let Err(failed) = self.tx.send(job) {
            // The thread is gone (it never exits while we live): still
            // answer a waiting request rather than hang its caller.
            if let Job::Then(f) = failed.0 {
                f();
            }
        }
    }

    /// Drops the kernel's dentry of `name` in directory `parent`.
    pub fn entry(&self, parent: u64, name: OsString) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.send(Job::Entry { parent, name });
    }

    /// Runs `f` once every invalidation queued before it has been sent.
    pub fn then(&self, f: impl FnOnce() + Send + 'static) {
        self.send(Job::Then(Box::new(f)));
    }
}

fn run(slot: &KernelSlot, rx: &Receiver<Job>, pending: &AtomicUsize) {
    for job in rx {
        match job {
            Job::Entry { parent, name } => {
                if let Some(k) = slot.get()
                    // ENOENT: the kernel had no such dentry; nothing to do.
                    && let Err(e) = k.forget_entry(parent, &name)
                    && e.raw_os_error() != Some(libc::ENOENT)
                {
                    log::debug!("inval_entry {parent:#x}/{name:?}: {e}");
                }
                pending.fetch_sub(1, Ordering::AcqRel);
            }
            Job::Then(f) => f(),
        }
    }
}
