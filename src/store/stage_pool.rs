//! Unnamed staging files made ahead of the writes that take them.
//!
//! Making an inode is the costliest step of a create on the backing
//! filesystem, and it varies most: ext4 without a journal looks at every
//! free inode of the parent's block group that was freed in the last
//! minute (`recently_deleted`) before it takes one, and every staging file
//! of a daemon has the same parent, so a group that evictions and
//! replacements have just emptied is searched from the start by each
//! create (a third of the daemon's time per publish in a profile of a
//! loaded run). A thread of the store's keeps a few `O_TMPFILE` files
//! ready, so a writer's CREATE takes one and never waits for that search:
//! it runs beside the writes instead of before them.
//!
//! Invariants: a pooled file is unnamed, empty, and made in this
//! session's staging dir, so it is exactly what `create_staging_file`
//! would make now (and a crash leaves nothing: it has no name). The pool
//! never decides anything: a refusal (no O_TMPFILE, a full volume, a
//! fault) stops the refills for a while, and the writers make their own
//! files as before, so every error reaches the writer from its own create.
//! It runs only where started (a daemon); a store of a test or an offline
//! command makes every file inline.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backing::BackingIo;
use super::shards::ShardsSeen;

/// Files kept ready: enough for a burst of writers between two refills.
pub(super) const TARGET: usize = 32;
/// A refill starts when this few are left, so one wake-up of the thread
/// makes many files (its cost is shared by the publishes that take them).
const LOW: usize = TARGET / 2;
/// After a refusal the writers make their own files for this long.
const PAUSE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Ready {
    files: Vec<File>,
    /// No refill before this (after a refusal).
    paused_until: Option<Instant>,
    /// The thread waits for a refill to be asked.
    asked: bool,
    /// Entry paths of writes that began, whose shard directories are
    /// wanted (see `want_shard`).
    shards: Vec<PathBuf>,
    stop: bool,
    /// The thread waits on `wake`: only then is a notify needed (each
    /// one is a futex system call, waiter or not, and a write of a new
    /// key asks for its shard while the thread is often still busy).
    sleeping: bool,
}

#[derive(Default)]
struct Shared {
    ready: Mutex<Ready>,
    wake: Condvar,
}

impl Shared {
    /// Wakes the thread if it waits; `r` is the guard of `ready`, under
    /// which the thread says it sleeps, so no wake-up is lost.
    fn wake_locked(&self, r: &Ready) {
        if r.sleeping {
            self.wake.notify_one();
        }
    }
}

/// The pool, and its thread once started.
#[derive(Default)]
pub(super) struct StagePool {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl StagePool {
    /// Starts keeping files ready in `dir` (once; later calls do nothing);
    /// the shards it makes go into `seen`.
    pub(super) fn start(&self, io: BackingIo, dir: PathBuf, seen: Arc<ShardsSeen>) {
        let mut slot = crate::sync::lock(&self.thread);
        if slot.is_some() {
            return;
        }
        {
            let mut r = crate::sync::lock(&self.shared.ready);
            r.stop = false;
            r.asked = true;
        }
        let shared = Arc::clone(&self.shared);
        match std::thread::Builder::new()
            .name("stager".into())
            .spawn(move || refill(&shared, &io, &dir, &seen))
        {
            Ok(t) => *slot = Some(t),
            Err(e) => log::warn!("no stager thread ({e}): writers make their own staging files"),
        }
    }

    /// A ready file, if any; asks for a refill when few are left.
    pub(super) fn take(&self) -> Option<File> {
        let mut r = crate::sync::lock(&self.shared.ready);
        let file = r.files.pop();
        if r.files.len() <= LOW
            && !r.asked
            && !r.stop
            && r.paused_until.is_none_or(|t| Instant::now() >= t)
        {
            r.asked = true;
            self.shared.wake_locked(&r);
        }
        file
    }

    /// Makes the shard directory of `entry`, a new key's path, while its
    /// writer writes: a mkdir (an inode, as costly as a create) is then off
    /// the publish's path, which finds the shard known (no `stat` of it).
    /// Not for durable namespaces: their publish syncs the parents of a
    /// shard it made itself. Nothing is done unless the thread runs; a
    /// failure is the publish's to meet.
    pub(super) fn want_shard(&self, entry: PathBuf) {
        if crate::sync::lock(&self.thread).is_none() {
            return;
        }
        let mut r = crate::sync::lock(&self.shared.ready);
        if r.stop || r.shards.len() >= TARGET {
            return;
        }
        r.shards.push(entry);
        self.shared.wake_locked(&r);
    }

    /// Makes no more files and closes those made (unnamed: they go);
    /// the thread ends by itself. For a store that stopped making unnamed
    /// files (the filesystem refused one).
    pub(super) fn disable(&self) {
        {
            let mut r = crate::sync::lock(&self.shared.ready);
            r.stop = true;
            r.files.clear();
        }
        self.shared.wake.notify_one();
    }

    /// Stops the thread and closes the files it made (unnamed: they go).
    pub(super) fn stop(&self) {
        self.disable();
        if let Some(t) = crate::sync::lock(&self.thread).take() {
            let _ = t.join();
        }
        crate::sync::lock(&self.shared.ready).files.clear();
    }

    pub(super) fn ready(&self) -> usize {
        crate::sync::lock(&self.shared.ready).files.len()
    }
}

/// Makes the shards of `entries` and marks those made (or found) as known.
fn make_shards(io: &BackingIo, entries: Vec<PathBuf>, seen: &ShardsSeen) {
    for entry in entries {
        if let Some(dir) = entry.parent()
            && io.create_dir_all(dir).is_ok()
        {
            seen.saw(&entry);
        }
    }
}

fn refill(shared: &Shared, io: &BackingIo, dir: &std::path::Path, seen: &ShardsSeen) {
    loop {
        let shards = {
            let mut r = crate::sync::lock(&shared.ready);
            while !r.asked && r.shards.is_empty() && !r.stop {
                r.sleeping = true;
                r = shared
                    .wake
                    .wait(r)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                r.sleeping = false;
            }
            if r.stop {
                return;
            }
            std::mem::take(&mut r.shards)
        };
        make_shards(io, shards, seen);
        if !crate::sync::lock(&shared.ready).asked {
            continue;
        }
        // Made one at a time outside the lock: a writer takes what is
        // there meanwhile.
        loop {
            let made = io.create_unnamed(dir);
            let mut r = crate::sync::lock(&shared.ready);
            if r.stop {
                return;
            }
            match made {
                Ok(f) => r.files.push(f),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                    ) =>
                {
                    // Not this filesystem's feature: a writer's own
                    // create finds out too and switches to named files.
                    // `asked` stays set, so no one wakes this thread again.
                    return;
                }
                Err(e) => {
                    log::debug!("stager: cannot make a staging file ({e}); writers make their own");
                    r.paused_until = Some(Instant::now() + PAUSE);
                    r.asked = false;
                    break;
                }
            }
            if r.files.len() >= TARGET {
                r.asked = false;
                break;
            }
            // A shard asked for meanwhile goes first: its publish is
            // near, while a staging file is only needed by the next
            // writers, and most are still ready.
            let shards = std::mem::take(&mut r.shards);
            drop(r);
            make_shards(io, shards, seen);
        }
    }
}
