//! Serving at once: the index is rebuilt behind a serving daemon, from the
//! snapshot of the last clean stop or from a scan of the trailers, while
//! lookups the index cannot answer go to the key's backing path
//! (`lookup.rs`, `adopt_from_backing`).
//!
//! Invariants:
//! - What the rebuild finds goes in only for a key nothing else put in
//!   since it began (`Index::insert_rebuilt`): a publish or an adoption is
//!   newer, and a key removed since cannot come back (it had to be in the
//!   index to be removed). So nothing is counted twice and no removal is
//!   undone.
//! - Until the rebuild ends, the usage the index knows is partial: writes
//!   count against it, the whole-cache quota is capped by the volume's
//!   size rather than by what is free on it (known usage plus free room
//!   would undercount), and at the end the limits are applied again and
//!   whatever is over a quota is evicted at once.
//! - No snapshot is saved while rebuilding (it would miss entries); the
//!   next start then scans.
//!
//! Inserts go in batches under the index lock, so requests wait at most
//! one batch.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::index::EntryMeta;
use super::reaper::unlink_all;
use super::{Store, meta_from_header, recover};
use crate::metrics::{self, IndexStatus};
use crate::names::{Key, KeyFormat, Namespace};

/// Entries put in per hold of the index lock.
const BATCH: usize = 2048;

/// One entry found by the rebuild, before it goes in.
struct Item {
    ns: Vec<u8>,
    /// Parsed where the item is made (a snapshot's on the decoding
    /// thread, off the inserts a listing waits for); `None`: not a key.
    key: Option<Key>,
    order: i64,
    meta: EntryMeta,
}

impl Store {
    /// Rebuilds the index in the calling thread (a store opened by a test
    /// or a tool: complete once open returns).
    pub(super) fn rebuild_now(&self) -> std::io::Result<()> {
        self.begin_rebuild();
        let r = self.rebuild_run();
        self.end_rebuild(r.is_ok());
        self.remove_leftovers();
        r
    }

    /// Starts rebuilding the index on a thread of its own; the store
    /// serves meanwhile.
    pub(super) fn rebuild_behind(self: &Arc<Self>) {
        self.begin_rebuild();
        let weak: Weak<Store> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("rebuild".into())
            .spawn(move || {
                // Held for the whole run; `end_session` asks it to stop.
                let Some(store) = weak.upgrade() else { return };
                let r = store.rebuild_run();
                if let Err(e) = &r
                    && !store.stopping()
                {
                    log::error!(
                        "cannot rebuild the index ({e}): lookups keep going to the backing dir, listings and quotas know only what was found"
                    );
                }
                store.end_rebuild(r.is_ok());
                store.remove_leftovers();
            });
        match spawned {
            Ok(t) => *crate::sync::lock(&self.rebuild.thread) = Some(t),
            Err(e) => {
                log::warn!("no rebuild thread ({e}); rebuilding before serving");
                let r = self.rebuild_run();
                if let Err(e) = &r {
                    log::error!("cannot rebuild the index: {e}");
                }
                self.end_rebuild(r.is_ok());
                self.remove_leftovers();
            }
        }
    }

    fn begin_rebuild(&self) {
        self.rebuild.running.store(true, Ordering::Relaxed);
        self.lock().begin_rebuild();
    }

    /// Whether the index is still being rebuilt.
    pub fn rebuilding(&self) -> bool {
        self.rebuild.running.load(Ordering::Relaxed)
    }

    /// Waits until the index is complete (an operator's purge must see
    /// every entry).
    pub fn wait_rebuilt(&self) {
        if !self.rebuilding() {
            return;
        }
        let mut done = crate::sync::lock(&self.rebuild.done);
        while self.rebuilding() && !*done {
            done = self
                .rebuild
                .done_cv
                .wait(done)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Whether the index holds everything a rebuild found (a snapshot of
    /// it may be saved).
    pub(super) fn rebuilt(&self) -> bool {
        self.rebuild.complete.load(Ordering::Relaxed)
    }

    /// Stops a rebuild under way and waits for its thread.
    pub(super) fn stop_rebuild(&self) {
        self.rebuild.stop.store(true, Ordering::Relaxed);
        let t = crate::sync::lock(&self.rebuild.thread).take();
        if let Some(t) = t
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }

    /// What `stats` says of the index.
    pub(super) fn index_status(&self) -> IndexStatus {
        let r = &self.rebuild;
        IndexStatus {
            rebuilding: self.rebuilding(),
            complete: self.rebuilt(),
            source: if r.from_snapshot.load(Ordering::Relaxed) {
                "snapshot"
            } else {
                "scan"
            },
            found_entries: r.found_entries.load(Ordering::Relaxed),
            found_bytes: r.found_bytes.load(Ordering::Relaxed),
            seconds: r.took_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }

    pub(super) fn stopping(&self) -> bool {
        self.rebuild.stop.load(Ordering::Relaxed)
    }

    fn rebuild_run(&self) -> std::io::Result<()> {
        // A test's hold (debug builds: see backing.rs).
        while self.layout.io.held("rebuild") && !self.stopping() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let start = Instant::now();
        let r = &self.rebuild;
        // Explicit directories first: the entries add to the trees they
        // start.
        self.load_dir_markers()?;
        let mut added = 0;
        let mut found = 0;
        let mut items = Vec::new();
        let mut scan = true;
        if let Some(bytes) = recover::take_snapshot_bytes(&self.layout) {
            match recover::streamable(&bytes) {
                Some((counts, body)) => {
                    r.from_snapshot.store(true, Ordering::Relaxed);
                    self.reserve_counts(counts.iter().map(|(n, c)| (&n[..], *c)));
                    let (n, a, whole) = self.insert_streamed(body)?;
                    (found, added, scan) = (n, a, !whole);
                }
                None => match recover::parse_snapshot(&bytes) {
                    Ok(entries) => {
                        r.from_snapshot.store(true, Ordering::Relaxed);
                        items = entries.into_iter().map(|e| self.item_of(e)).collect();
                        scan = false;
                    }
                    Err(e) => log::warn!("index snapshot {e}; scanning instead"),
                },
            }
        }
        if scan {
            r.from_snapshot.store(false, Ordering::Relaxed);
            let report = recover::scan_until(
                &self.layout,
                || self.stopping(),
                |f| {
                    metrics::add(&r.found_entries, 1);
                    metrics::add(&r.found_bytes, f.stored_bytes);
                    let meta = meta_from_header(
                        &f.header,
                        self.new_version(),
                        f.file_id,
                        f.file_size,
                        f.stored_bytes,
                        false,
                    );
                    items.push(Item {
                        order: f.header.mtime,
                        ns: f.header.namespace,
                        key: Key::parse(&f.header.key, KeyFormat::Any).ok(),
                        meta,
                    });
                },
            )?;
            metrics::add(&self.metrics.corrupt, report.quarantined);
            if report.quarantined > 0 {
                log::info!("{} bad files quarantined", report.quarantined);
            }
            // Oldest first, so the LRU order follows publish times.
            items.sort_by_key(|i| i.order);
        }
        // (A snapshot is saved namespace by namespace, each in its recency
        // order: that is already the order to insert in.)
        found += items.len();
        self.reserve_for(&items);
        added += self.insert_items(items.into_iter(), &mut None)?;
        r.took_ms
            .store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        log::info!(
            "index rebuilt from the {} in {:.3}s: {found} entries found, {added} new to the index",
            if r.from_snapshot.load(Ordering::Relaxed) {
                "snapshot"
            } else {
                "scan"
            },
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// A snapshot entry as the rebuild puts it in (a new version).
    fn item_of(&self, e: recover::SnapshotEntry) -> Item {
        metrics::add(&self.rebuild.found_entries, 1);
        metrics::add(&self.rebuild.found_bytes, e.stored_bytes);
        let meta = e.meta(self.new_version());
        Item {
            order: e.last_access,
            ns: e.namespace,
            key: Key::parse(&e.key, KeyFormat::Any).ok(),
            meta,
        }
    }

    /// Puts in a current-format snapshot's entries while they are decoded
    /// on a second thread (a listing waits for the whole rebuild: with
    /// both cores the decoding costs it nothing). Returns the entries
    /// found and put in, and whether the snapshot decoded to its end; if
    /// not, what went in stays (each entry was whole) and the caller scans
    /// for the rest.
    fn insert_streamed(&self, body: &[u8]) -> std::io::Result<(usize, usize, bool)> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Item>>(4);
        std::thread::scope(|s| {
            let decoder = std::thread::Builder::new()
                .name("rebuild-decode".into())
                .spawn_scoped(s, move || {
                    let mut chunk = Vec::with_capacity(BATCH);
                    let r = recover::stream_snapshot(body, |e| {
                        chunk.push(self.item_of(e));
                        if chunk.len() < BATCH {
                            return true;
                        }
                        // The inserter gone (stopping): no point going on.
                        tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(BATCH)))
                            .is_ok()
                    });
                    if !chunk.is_empty() {
                        let _ = tx.send(chunk);
                    }
                    r
                });
            let decoder = match decoder {
                Ok(d) => d,
                Err(e) => {
                    // No thread: decoded here first, then put in.
                    log::warn!("no decoding thread ({e}); decoding first");
                    let mut items = Vec::new();
                    let r = recover::stream_snapshot(body, |e| {
                        items.push(self.item_of(e));
                        true
                    });
                    let found = items.len();
                    let added = self.insert_items(items.into_iter(), &mut None)?;
                    return Ok(Self::streamed(found, added, r));
                }
            };
            let (mut found, mut added, mut cur) = (0, 0, None);
            for chunk in rx {
                found += chunk.len();
                added += self.insert_items(chunk.into_iter(), &mut cur)?;
            }
            let r = decoder
                .join()
                .unwrap_or_else(|_| Err("decoding panicked".into()));
            Ok(Self::streamed(found, added, r))
        })
    }

    fn streamed(found: usize, added: usize, r: Result<usize, String>) -> (usize, usize, bool) {
        if let Err(e) = &r {
            log::warn!("index snapshot {e}: {found} entries read before; scanning for the rest");
        }
        (found, added, r.is_ok())
    }

    /// Puts rebuilt entries in, oldest first, `BATCH` per hold of the
    /// index lock. `cur`: the namespace of the last item put in (a
    /// snapshot's come in long runs: each is parsed, and made to exist,
    /// once a run and a lock hold, not once an entry).
    fn insert_items(
        &self,
        items: impl Iterator<Item = Item>,
        cur: &mut Option<Namespace>,
    ) -> std::io::Result<usize> {
        let mut added = 0;
        let mut rest = items.peekable();
        while rest.peek().is_some() {
            if self.stopping() {
                log::info!("index rebuild stopped: the store is closing");
                return Err(std::io::Error::other("stopped"));
            }
            let mut idx = self.lock();
            let mut ensured = false;
            for it in rest.by_ref().take(BATCH) {
                if cur.as_ref().is_none_or(|c| c.as_bytes() != &it.ns[..]) {
                    *cur = Namespace::parse(&it.ns).ok();
                    ensured = false;
                }
                let (Some(ns), Some(key)) = (&*cur, it.key) else {
                    continue;
                };
                // The namespace may have gone while the lock was let go.
                if !ensured {
                    self.ensure_namespace_locked(&mut idx, ns);
                    ensured = true;
                }
                if idx.insert_rebuilt(ns, key, it.meta) {
                    added += 1;
                }
            }
        }
        Ok(added)
    }

    /// Sizes each namespace's table for what the rebuild found of it.
    fn reserve_for(&self, items: &[Item]) {
        let mut counts: HashMap<&[u8], usize> = HashMap::new();
        for it in items {
            *counts.entry(&it.ns[..]).or_default() += 1;
        }
        self.reserve_counts(counts.into_iter());
    }

    /// Sizes namespaces' tables for (name, entries about to go in), so
    /// none grows and rehashes on the way (a third of the inserts' time).
    /// Only namespaces the index has (all but those whose marker went):
    /// a count makes nothing exist, an entry put in does.
    fn reserve_counts<'a>(&self, counts: impl Iterator<Item = (&'a [u8], usize)>) {
        let mut idx = self.lock();
        for (name, n) in counts {
            if let Ok(ns) = Namespace::parse(name) {
                idx.reserve_rebuilt(&ns, n);
            }
        }
    }

    /// The index is complete (or given up on): the limits apply to the
    /// whole usage now.
    fn end_rebuild(&self, complete: bool) {
        self.lock().end_rebuild();
        self.rebuild.complete.store(complete, Ordering::Relaxed);
        self.rebuild.running.store(false, Ordering::Relaxed);
        {
            let mut done = crate::sync::lock(&self.rebuild.done);
            *done = true;
            self.rebuild.done_cv.notify_all();
        }
        if !complete {
            return;
        }
        let config = self.config();
        self.apply_limits(&config);
        let mut trash = Vec::new();
        {
            let mut idx = self.lock();
            let victims = idx.shrink_to_limits(self.clock.now());
            if !victims.is_empty() {
                log::info!("{} entries over the quota evicted", victims.len());
            }
            self.move_to_trash_locked(&idx, victims, &mut trash);
        }
        unlink_all(&self.layout.io, &trash);
        super::release_freed_memory();
    }
}
