//! Eviction picks: making room for a publish or for bytes a write in
//! flight stages, finding room on a full volume, and shrinking to lowered
//! limits. Plain data work on the index; the store moves the victims'
//! files out of place.
//!
//! Invariant: a pick that cannot meet its limits evicts nothing (victims
//! taken and then dropped would leave files no index knows), except a
//! shrink, which takes what it can.

use std::sync::atomic::Ordering;

use super::EntryMeta;
use super::{Index, RemoveReason, Removed};
use crate::names::{Key, Namespace};
use crate::store::clock::UnixNanos;

impl Index {
    /// Makes room for an entry of `add_bytes` in `ns`: expired entries
    /// first, then the namespace's LRU, then the globally least recently
    /// used. Caller guarantees the entry fits the quotas on its own and has
    /// already removed the version it replaces. Fails only on entry-count
    /// limits of zero.
    pub fn make_room(
        &mut self,
        ns: &Namespace,
        add_bytes: u64,
        now: UnixNanos,
    ) -> Option<Vec<Removed>> {
        let mut out = Vec::new();
        self.fit(Some(ns), add_bytes, 1, now, &mut out)?;
        Some(out)
    }

    /// Makes room in the whole-cache quota for `add_bytes` more staged by
    /// a write in flight, and reserves them: expired entries first, then
    /// the least recently used. `None` (nothing evicted, nothing reserved)
    /// when the writes in flight alone would pass the quota.
    pub fn reserve_staged(&mut self, add_bytes: u64, now: UnixNanos) -> Option<Vec<Removed>> {
        let mut out = Vec::new();
        self.fit(None, add_bytes, 0, now, &mut out)?;
        self.staged.fetch_add(add_bytes, Ordering::Relaxed);
        Some(out)
    }

    /// Takes entries until their stored bytes reach `bytes`: expired ones
    /// first, then the least recently used. Nothing when even all of them
    /// together fall short (the caller could not be helped, so no entry is
    /// lost for nothing).
    pub fn evict_bytes(&mut self, bytes: u64, now: UnixNanos) -> Vec<Removed> {
        if self.total_bytes < bytes {
            return Vec::new();
        }
        let mut out = self.take_expired(now);
        let mut freed: u64 = out.iter().map(|r| r.meta.stored_bytes).sum();
        while freed < bytes {
            let Some(victim_ns) = self.lru_namespace() else {
                break;
            };
            let (key, meta) = self.pop_lru(&victim_ns).expect("just seen");
            freed += meta.stored_bytes;
            out.push(Removed {
                ns: victim_ns,
                key,
                meta,
                reason: RemoveReason::Evicted,
            });
        }
        out
    }

    /// The namespace holding the globally least recently used entry.
    fn lru_namespace(&self) -> Option<Namespace> {
        self.namespaces
            .iter()
            .filter_map(|(n, s)| s.entries.lru_last_access().map(|at| (at, n)))
            .min()
            .map(|(_, n)| n.clone())
    }

    /// Evicts until every namespace and the whole cache are within their
    /// limits (after a reload lowered them).
    pub fn shrink_to_limits(&mut self, now: UnixNanos) -> Vec<Removed> {
        let mut out = Vec::new();
        let names: Vec<Namespace> = self.namespaces.keys().cloned().collect();
        for ns in &names {
            let _ = self.fit(Some(ns), 0, 0, now, &mut out);
        }
        let _ = self.fit(None, 0, 0, now, &mut out);
        out
    }

    /// Evicts until `add_bytes` and `add_entries` more fit in `ns` (if
    /// given) and in the whole cache. `None` when the limits cannot be
    /// met even with everything evicted.
    fn fit(
        &mut self,
        ns: Option<&Namespace>,
        add_bytes: u64,
        add_entries: u64,
        now: UnixNanos,
        out: &mut Vec<Removed>,
    ) -> Option<()> {
        let over_ns = |idx: &Index| {
            ns.is_some_and(|ns| {
                let s = &idx.namespaces[ns];
                s.policy.max_bytes.is_some_and(|q| s.bytes + add_bytes > q)
                    || s.policy
                        .max_entries
                        .is_some_and(|m| s.len() + add_entries > m)
            })
        };
        let staged = self.staged.load(Ordering::Relaxed);
        // Refused before anything is evicted: victims taken and then
        // dropped would leave files no index knows.
        let fits_alone = ns.is_none_or(|ns| {
            let p = &self.namespaces[ns].policy;
            p.max_bytes.is_none_or(|q| add_bytes <= q)
                && p.max_entries.is_none_or(|m| add_entries <= m)
        }) && staged.saturating_add(add_bytes) <= self.limits.max_bytes
            && self.limits.max_entries.is_none_or(|m| add_entries <= m);
        // A shrink (nothing to add) evicts what it can regardless.
        if !fits_alone && (add_bytes > 0 || add_entries > 0) {
            return None;
        }
        let over_total = |idx: &Index| {
            idx.total_bytes + staged + add_bytes > idx.limits.max_bytes
                || idx
                    .limits
                    .max_entries
                    .is_some_and(|m| idx.total_entries + add_entries > m)
        };
        if over_ns(self) || over_total(self) {
            out.extend(self.take_expired(now));
        }
        while over_ns(self) {
            let ns = ns.expect("over_ns implies a namespace");
            let (key, meta) = self.pop_lru(ns)?;
            out.push(Removed {
                ns: ns.clone(),
                key,
                meta,
                reason: RemoveReason::Evicted,
            });
        }
        while over_total(self) {
            let victim_ns = self.lru_namespace()?;
            let (key, meta) = self.pop_lru(&victim_ns).expect("just seen");
            out.push(Removed {
                ns: victim_ns,
                key,
                meta,
                reason: RemoveReason::Evicted,
            });
        }
        Some(())
    }

    /// Takes a namespace's least recently used entry, keeping accounts.
    pub(super) fn pop_lru(&mut self, ns: &Namespace) -> Option<(Key, EntryMeta)> {
        let state = self.namespaces.get_mut(ns)?;
        let (key, meta) = state.remove_slot(state.entries.lru()?);
        self.shared_files.remove(&meta.version);
        self.total_bytes -= meta.stored_bytes;
        self.total_entries -= 1;
        Some((key, meta))
    }
}
