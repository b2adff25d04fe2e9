//! Unlinks files already moved into `trash/`, on a thread of its own.
//!
//! Unlinking a file frees its blocks, and on ext4 that is the costliest
//! step of an eviction (the inode's truncation and journal work). The
//! victims are out of place before the index lock is released, so no one
//! can reach them any more; only their space is still held. Freeing it
//! here keeps it off the reply of the publish that evicted them. When the
//! thread falls behind by `BACKLOG_MAX` files, callers unlink their own, so
//! the space held in trash stays bounded.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const BACKLOG_MAX: usize = 1024;

pub struct Reaper {
    tx: Mutex<Option<Sender<PathBuf>>>,
    backlog: Arc<AtomicUsize>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Reaper {
    pub fn start() -> Reaper {
        let (tx, rx) = channel::<PathBuf>();
        let backlog = Arc::new(AtomicUsize::new(0));
        let left = Arc::clone(&backlog);
        let thread = std::thread::Builder::new()
            .name("cachefs-reaper".into())
            .spawn(move || {
                for path in rx {
                    unlink(&path);
                    left.fetch_sub(1, Ordering::Relaxed);
                }
            })
            .map_err(|e| log::warn!("no reaper thread ({e}); evictions unlink inline"))
            .ok();
        Reaper {
            tx: Mutex::new(thread.is_some().then_some(tx)),
            backlog,
            thread: Mutex::new(thread),
        }
    }

    /// Unlinks `paths` soon (or now, when the thread is behind or gone).
    pub fn reap(&self, paths: Vec<PathBuf>) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        for path in paths {
            match &*tx {
                Some(tx) if self.backlog.load(Ordering::Relaxed) < BACKLOG_MAX => {
                    self.backlog.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = tx.send(path) {
                        self.backlog.fetch_sub(1, Ordering::Relaxed);
                        unlink(&e.0);
                    }
                }
                _ => unlink(&path),
            }
        }
    }

    /// Waits until every file handed over so far is unlinked.
    pub fn finish(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.finish();
    }
}

fn unlink(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(path) {
        log::warn!("cannot unlink {}: {e}", path.display());
    }
}
