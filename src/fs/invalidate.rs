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
//! request's caller (`take_owed`), which waits for them unless they are
//! sent already; drops queued by other threads (another
//! writer's evictions, the expiry sweeper, another daemon's changes) are
//! theirs. A writer's close() that replaced and evicted nothing answers
//! at once instead of queueing behind them: those wait for the lock of
//! their own directory, held by other processes' creates and renames.

use std::cell::Cell;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use super::types::KernelCache;

/// Where the kernel's cache goes once the session exists (the filesystem
/// is built before it). Until then nothing is invalidated.
pub type KernelSlot = Arc<OnceLock<Box<dyn KernelCache>>>;

thread_local! {
    /// The ticket of the last drop this thread queued since `take_owed`
    /// last asked (0: none).
    static OWED: Cell<u64> = const { Cell::new(0) };
}

/// The ticket of the last drop the current thread queued since the last
/// call, if any (and forgets it): a request whose reply promises the
/// change is visible waits for it (`Invalidator::then`) unless it is
/// sent already (`Invalidator::is_sent`). Call it before the request's
/// work too, so a drop queued by an earlier request of the thread is not
/// counted.
pub fn take_owed() -> Option<u64> {
    Some(OWED.with(|o| o.replace(0))).filter(|&t| t != 0)
}

enum Job {
    Entry {
        parent: u64,
        name: OsString,
        ticket: u64,
    },
    Then(Box<dyn FnOnce() + Send>),
}

/// The queue's sending end and the last ticket given: numbered and sent
/// under one lock, so the queue's order is the tickets' order.
struct Queue {
    tx: Sender<Job>,
    last: u64,
}

pub struct Invalidator {
    queue: Mutex<Queue>,
    /// The ticket of the last drop sent: every drop up to it is done.
    sent: Arc<AtomicU64>,
}

impl Invalidator {
    pub fn new(slot: KernelSlot) -> Invalidator {
        let (tx, rx) = channel();
        let sent = Arc::new(AtomicU64::new(0));
        let done = Arc::clone(&sent);
        std::thread::Builder::new()
            .name("invalidate".into())
            .spawn(move || run(&slot, &rx, &done))
            .expect("spawn the invalidation thread");
        Invalidator {
            queue: Mutex::new(Queue { tx, last: 0 }),
            sent,
        }
    }

    fn send(&self, job: impl FnOnce(u64) -> Job, numbered: bool) -> u64 {
        let mut q = crate::sync::lock(&self.queue);
        if numbered {
            q.last += 1;
        }
        let ticket = q.last;
        if let Err(failed) = q.tx.send(job(ticket)) {
            drop(q);
            // The thread is gone (it never exits while we live): still
            // answer a waiting request rather than hang its caller.
            if let Job::Then(f) = failed.0 {
                f();
            }
        }
        ticket
    }

    /// Drops the kernel's dentry of `name` in directory `parent`.
    pub fn entry(&self, parent: u64, name: OsString) {
        let ticket = self.send(
            |ticket| Job::Entry {
                parent,
                name,
                ticket,
            },
            true,
        );
        OWED.with(|o| o.set(ticket));
    }

    /// Whether the drop with this ticket, and every one before it, is
    /// done.
    pub fn is_sent(&self, ticket: u64) -> bool {
        self.sent.load(Ordering::Acquire) >= ticket
    }

    /// Runs `f` once every invalidation queued before it has been sent.
    pub fn then(&self, f: impl FnOnce() + Send + 'static) {
        self.send(|_| Job::Then(Box::new(f)), false);
    }
}

fn run(slot: &KernelSlot, rx: &Receiver<Job>, sent: &AtomicU64) {
    for job in rx {
        match job {
            Job::Entry {
                parent,
                name,
                ticket,
            } => {
                if let Some(k) = slot.get()
                    // ENOENT: the kernel had no such dentry; nothing to do.
                    && let Err(e) = k.forget_entry(parent, &name)
                    && e.raw_os_error() != Some(libc::ENOENT)
                {
                    log::debug!("inval_entry {parent:#x}/{name:?}: {e}");
                }
                sent.store(ticket, Ordering::Release);
            }
            Job::Then(f) => f(),
        }
    }
}
