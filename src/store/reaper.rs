//! Unlinks files already moved into `trash/`, on a thread of its own.
//!
//! Unlinking a file frees its blocks, and on ext4 that is the costliest
//! step of an eviction (the inode's truncation and journal work). The
//! victims are out of place before the index lock is released, so no one
//! can reach them any more; only their space is still held. Freeing it
//! here keeps it off the reply of the publish that evicted them. When the
//! thread falls behind by `BACKLOG_FILES` files or `BACKLOG_BYTES` bytes,
//! callers unlink their own, so what trash holds beyond the quotas stays
//! bounded.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::path::Path;

use super::backing::BackingIo;

const BACKLOG_FILES: usize = 1024;
pub const BACKLOG_BYTES: u64 = 64 << 20;

/// Files and bytes handed over and not yet unlinked.
#[derive(Default)]
struct Backlog {
    files: AtomicUsize,
    bytes: AtomicU64,
}

pub struct Reaper {
    tx: Mutex<Option<Sender<(PathBuf, u64)>>>,
    backlog: Arc<Backlog>,
    thread: Mutex<Option<JoinHandle<()>>>,
    io: BackingIo,
}

impl Reaper {
    pub fn start(io: BackingIo) -> Reaper {
        let (tx, rx) = channel::<(PathBuf, u64)>();
        let backlog = Arc::new(Backlog::default());
        let left = Arc::clone(&backlog);
        let clone_io = io.clone();
        let thread = std::thread::Builder::new()
            .name("cachefs-reaper".into())
            .spawn(move || {
                for (path, bytes) in rx {
                    unlink(&io, &path);
                    left.files.fetch_sub(1, Ordering::Relaxed);
                    left.bytes.fetch_sub(bytes, Ordering::Relaxed);
                }
            })
            .map_err(|e| log::warn!("no reaper thread ({e}); evictions unlink inline"))
            .ok();
        Reaper {
            tx: Mutex::new(thread.is_some().then_some(tx)),
            backlog,
            thread: Mutex::new(thread),
            io: clone_io,
        }
    }

    /// Unlinks the trash soon (or now, when the thread is behind or gone).
    pub fn reap(&self, trash: Trash) {
        if trash.is_empty() {
            return;
        }
        let tx = crate::sync::lock(&self.tx).clone();
        let io = &self.io;
        let b = &self.backlog;
        for (path, bytes) in trash {
            let Some(tx) = &tx else {
                unlink(io, &path);
                continue;
            };
            if b.files.load(Ordering::Relaxed) >= BACKLOG_FILES
                || b.bytes.load(Ordering::Relaxed) + bytes > BACKLOG_BYTES
            {
                unlink(io, &path);
                continue;
            }
            b.files.fetch_add(1, Ordering::Relaxed);
            b.bytes.fetch_add(bytes, Ordering::Relaxed);
            if let Err(e) = tx.send((path, bytes)) {
                b.files.fetch_sub(1, Ordering::Relaxed);
                b.bytes.fetch_sub(bytes, Ordering::Relaxed);
                unlink(io, &e.0.0);
            }
        }
    }

    /// Waits until every file handed over so far is unlinked.
    pub fn finish(&self) {
        drop(crate::sync::lock(&self.tx).take());
        if let Some(t) = crate::sync::lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Files moved into trash/, each with the bytes its unlinking frees.
pub(super) type Trash = Vec<(PathBuf, u64)>;

pub(super) fn unlink_all(io: &BackingIo, trash: &[(PathBuf, u64)]) {
    for (path, _) in trash {
        unlink(io, path);
    }
}

pub(super) fn unlink(io: &BackingIo, path: &Path) {
    if let Err(e) = io.remove_file(path) {
        log::warn!("cannot unlink {}: {e}", path.display());
    }
}
