//! Removal: unlinking a key, the expiry sweep, and taking victims
//! (evicted, expired, purged) out of place into `trash/`, whose files are
//! then freed.
//!
//! Invariants: a victim leaves the index and its file leaves its place in
//! one critical section (a rename into `trash/`); unlinking happens only
//! after the index lock is released; the removal listener hears of every
//! entry the store removes on its own.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::index::{Index, RemoveReason, Removed};
use super::reaper::{Trash, unlink_all};
use super::sweeper::SweepLog;
use super::{Change, RETIRED_GRACE_NANOS, Store, StoreError};
use crate::metrics;
use crate::names::{Key, Namespace};

impl Store {
    /// Frees files moved into trash/: on the reaper's thread, or at once
    /// when the volume is what bounds the cache.
    pub(super) fn dispose(&self, trash: Trash) {
        if self.volume_bound.load(Ordering::Relaxed) {
            unlink_all(&self.layout.io, &trash);
        } else {
            self.reaper.reap(trash);
        }
    }

    /// Takes victims' files out of place (a rename each) and counts them.
    /// Their unlinking waits until the lock is released.
    pub(super) fn move_to_trash_locked(
        &self,
        idx: &Index,
        victims: Vec<Removed>,
        trash: &mut Trash,
    ) {
        if !victims.is_empty() {
            self.index_changed_locked();
        }
        for v in victims {
            if let Some(state) = idx.namespace(&v.ns) {
                self.tell(Change::Removed {
                    ns_id: state.id,
                    key: &v.key,
                });
                let m = &state.metrics;
                let (n, bytes) = match v.reason {
                    RemoveReason::Evicted => (&m.evictions, &m.evicted_bytes),
                    RemoveReason::Expired => (&m.expirations, &m.expired_bytes),
                    RemoveReason::Purged => (&m.purged, &m.purged_bytes),
                };
                metrics::add(n, 1);
                metrics::add(bytes, v.meta.stored_bytes);
            }
            match self.take_out_of_place(&self.layout.entry_path(&v.ns, &v.key)) {
                Ok(Some(to)) => trash.push((to, v.meta.stored_bytes)),
                Ok(None) => {}
                Err(e) => log::warn!(
                    "cannot remove entry {}/{:?} ({} bytes): {e}",
                    v.ns,
                    v.key,
                    v.meta.stored_bytes
                ),
            }
            // Only once the file is out of place: the log's thread may
            // write the record at once, and a follower that read it while
            // the file was still there took it for unchanged for good.
            self.changes.key(&v.ns, &v.key);
        }
    }

    /// Takes an entry's file out of its place: renamed into trash/ (its
    /// new path returned, to be unlinked after the lock), else unlinked at
    /// once; `None` when it is gone either way. An error means the file is
    /// still in place. Call with the index lock held.
    pub(super) fn take_out_of_place(
        &self,
        path: &std::path::Path,
    ) -> io::Result<Option<std::path::PathBuf>> {
        let to = self.layout.trash_path();
        match self.layout.io.rename(path, &to) {
            Ok(()) => Ok(Some(to)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => match self.layout.io.remove_file(path) {
                Ok(()) => Ok(None),
                Err(u) if u.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(_) => Err(e),
            },
        }
    }

    /// Removes a key only if it still holds `version` (a writer taking
    /// back the empty version its first close published). The listener
    /// hears of it: no one asked the kernel to forget the name.
    pub fn remove_version(&self, ns: &Namespace, key: &Key, version: u64) {
        let _ = self.remove_inner(ns, key, Some(version));
    }

    /// Removes a key (unlink).
    pub fn remove(&self, ns: &Namespace, key: &Key) -> Result<(), StoreError> {
        self.remove_inner(ns, key, None)
    }

    fn remove_inner(
        &self,
        ns: &Namespace,
        key: &Key,
        only_version: Option<u64>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut trash = Vec::new();
        {
            let mut idx = self.lock();
            let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
            let meta = state.peek(key).ok_or(StoreError::NotFound)?;
            if only_version.is_some_and(|v| v != meta.version) {
                return Err(StoreError::NotFound);
            }
            let expired = idx
                .expires_at(&state.policy, &meta)
                .is_some_and(|at| at <= now);
            self.index_changed_locked();
            let meta = idx.remove(ns, key).expect("peeked");
            let victim = Removed {
                ns: ns.clone(),
                key: key.clone(),
                meta,
                reason: RemoveReason::Expired,
            };
            if expired {
                self.move_to_trash_locked(&idx, vec![victim], &mut trash);
                drop(idx);
                self.dispose(trash);
                return Err(StoreError::NotFound);
            }
            match self.take_out_of_place(&self.layout.entry_path(ns, key)) {
                Ok(Some(to)) => trash.push((to, victim.meta.stored_bytes)),
                Ok(None) => {}
                Err(e) => {
                    // Still on disk: still in the index, or a restart
                    // would bring back what the user was told is gone.
                    idx.insert(ns, key.clone(), victim.meta);
                    return Err(e.into());
                }
            }
            // After the file went (see `move_to_trash_locked`).
            self.changes.key(ns, key);
            let state = idx.namespace(ns).expect("peeked");
            if only_version.is_some() {
                self.tell(Change::Removed {
                    ns_id: state.id,
                    key,
                });
            } else {
                // A user's unlink (one by one, `rm -r` of a directory) is
                // a purge of that entry.
                metrics::add(&state.metrics.purged, 1);
                metrics::add(&state.metrics.purged_bytes, victim.meta.stored_bytes);
            }
        }
        self.dispose(trash);
        Ok(())
    }

    /// Removes expired entries and reclaims their space; returns how many.
    pub fn sweep_expired(&self) -> usize {
        let now = self.clock.now();
        let mut trash = Vec::new();
        self.retired_lock().retain(|_, (meta, path, at)| {
            let keep = now - *at < RETIRED_GRACE_NANOS;
            if !keep {
                trash.push((path.clone(), meta.stored_bytes));
            }
            keep
        });
        let n = {
            let mut idx = self.lock();
            let expired = idx.take_expired(now);
            let n = expired.len();
            self.move_to_trash_locked(&idx, expired, &mut trash);
            n
        };
        unlink_all(&self.layout.io, &trash);
        n
    }

    /// Starts expiring entries in the background (once; later calls do
    /// nothing). The store stops it at `end_session`.
    pub fn start_sweeper(self: &Arc<Self>) {
        self.sweeper.start(Arc::downgrade(self), Store::sweep_tick);
    }

    /// One step of the sweeper: reclaims expired entries and, at most every
    /// `SUMMARY_EVERY`, logs one line summing up what was evicted and
    /// expired. Returns how long to wait before the next step.
    fn sweep_tick(&self, log: &mut SweepLog) -> Duration {
        const SUMMARY_EVERY: Duration = Duration::from_secs(300);
        let n = self.sweep_expired();
        if n > 0 {
            log::debug!("swept {n} expired entries");
        }
        let now = self.stats().total;
        let totals = (now.evictions, now.expirations);
        match log.last {
            None => {
                *log = SweepLog {
                    last: Some(totals),
                    at: Instant::now(),
                }
            }
            Some((ev, ex)) if log.at.elapsed() >= SUMMARY_EVERY => {
                let (evicted, expired) = (totals.0 - ev, totals.1 - ex);
                if evicted + expired > 0 {
                    log::info!(
                        "last {}: {evicted} entries evicted, {expired} expired; {} entries, {} stored",
                        humantime::format_duration(log.at.elapsed()),
                        now.entries,
                        bytesize::ByteSize(now.bytes).to_string_as(true),
                    );
                }
                *log = SweepLog {
                    last: Some(totals),
                    at: Instant::now(),
                };
            }
            Some(_) => {}
        }
        self.config().cache.sweep_interval
    }
}
