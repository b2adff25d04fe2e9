//! Where a rebuild of the index stands (see `rebuild.rs`): read
//! lock-free by `stats`, waited on by an operator's purge. A leaf: the
//! store's rebuild updates it.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;

/// Where a rebuild stands; read lock-free by `stats`.
#[derive(Default)]
pub(super) struct Rebuild {
    /// Set while the index is being rebuilt.
    pub(super) running: AtomicBool,
    /// Set once a rebuild has put in everything it found: only then may
    /// the index be saved as a snapshot.
    pub(super) complete: AtomicBool,
    /// The end was asked for (the store is stopping).
    pub(super) stop: AtomicBool,
    pub(super) from_snapshot: AtomicBool,
    /// Entries (and their stored bytes) found so far.
    pub(super) found_entries: AtomicU64,
    pub(super) found_bytes: AtomicU64,
    /// Milliseconds the last rebuild took, once done.
    pub(super) took_ms: AtomicU64,
    pub(super) done: Mutex<bool>,
    pub(super) done_cv: Condvar,
    pub(super) thread: Mutex<Option<JoinHandle<()>>>,
    /// Set once every directory marker is in the index (`dirs.rs`).
    pub(super) markers_loaded: AtomicBool,
    /// What dead daemons and offline commands left, removed after the
    /// rebuild (`leftovers.rs`).
    pub(super) leftovers: Mutex<Leftovers>,
}

/// What `open` found left in staging/ and trash/ to remove behind.
#[derive(Default)]
pub(super) struct Leftovers {
    /// Tokens of dead daemons' sessions.
    pub(super) sessions: Vec<String>,
    /// Whether files directly in staging/ and trash/ (an offline
    /// command's) go too: only when this daemon started alone.
    pub(super) offline: bool,
}
