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
//!
//! Whose drops a reply waits for: its own. A request thread that queues
//! drops while it serves a request (the store tells of a publish's
//! replacement and evictions on the publishing thread) owes them to that
//! request's caller (`take_owed`); drops queued by other threads (another
//! writer's evictions, the expiry sweeper, another daemon's changes) are
//! theirs. A writer's close() that replaced and evicted nothing answers
//! at once instead of queueing behind them: those wait for the lock of
//! their own directory, held by other processes' creates and renames.

use std::cell::Cell;
use std::ffi::OsString;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, OnceLock};

use super::types::KernelCache;

/// Where the kernel's cache goes once the session exists (the filesystem
/// is built before it). Until then nothing is invalidated.
pub type KernelSlot = Arc<OnceLock<Box<dyn KernelCache>>>;

thread_local! {
    /// Whether this thread queued a drop since `take_owed` last asked.
    static OWED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread queued a drop since the last call (and
/// forgets it): a request whose reply promises the change is visible
/// waits (`Invalidator::then`) only when it did. Call it before the
/// request's work too, so a drop queued by an earlier request of the
/// thread is not counted.
pub fn take_owed() -> bool {
    OWED.with(|o| o.replace(false))
}

enum Job {
    Entry { parent: u64, name: OsString },
    Then(Box<dyn FnOnce() + Send>),
}

pub struct Invalidator {
    tx: Sender<Job>,
}

impl Invalidator {
    pub fn new(slot: KernelSlot) -> Invalidator {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("invalidate".into())
            .spawn(move || run(&slot, &rx))
            .expect("spawn the invalidation thread");
        Invalidator { tx }
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
        OWED.with(|o| o.set(true));
        self.send(Job::Entry { parent, name });
    }

    /// Runs `f` once every invalidation queued before it has been sent.
    pub fn then(&self, f: impl FnOnce() + Send + 'static) {
        self.send(Job::Then(Box::new(f)));
    }
}

fn run(slot: &KernelSlot, rx: &Receiver<Job>) {
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
            }
            Job::Then(f) => f(),
        }
    }
}
