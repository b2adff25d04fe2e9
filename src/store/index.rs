//! The in-memory index: key -> entry metadata, recency order, expiry order,
//! and byte/entry accounting per namespace and overall.
//!
//! Invariants (checked by `debug_check` in tests):
//! - `ns.bytes` is the sum of `stored_bytes` of the namespace's entries, and
//!   `total_bytes`/`total_entries` the sums over namespaces. Every mutation
//!   goes through `insert`/`remove`, which keep them in step.
//! - Each namespace's LRU is ordered by `last_access`: the tail is the least
//!   recently read or written entry. Lookup, recency update and the
//!   eviction pick are O(1) per namespace; the global pick compares the tails
//!   of the (few) namespaces.
//! - The expiry heap holds at least one item for every entry that can
//!   expire; items are checked against the entry when popped, so a stale
//!   item (entry replaced, touched or removed) is simply skipped.
//!
//! The index is plain data; `Store` owns it behind one mutex.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use lru::LruCache;

use super::clock::UnixNanos;
use super::names::{Key, Namespace};
use crate::config::NamespacePolicy;
use crate::metrics::NsMetrics;

/// What the index knows of one published entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// The version's identity (the inode number the fs hands out). A new
    /// content is a new version; metadata-only updates keep it.
    pub version: u64,
    /// The backing file's inode number: tells a file replaced behind our back.
    pub file_id: u64,
    /// Size of the whole backing file (content and trailer).
    pub file_size: u64,
    pub mtime: UnixNanos,
    pub ttl_secs: Option<u64>,
    pub logical_size: u64,
    pub stored_bytes: u64,
    // The content's sha256 is not kept here (32 bytes an entry): it is in
    // the entry's trailer, read when needed.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The content checksum was checked (or computed) by this process.
    pub verified: bool,
    pub last_access: UnixNanos,
}

pub struct NsState {
    pub id: u32,
    pub policy: NamespacePolicy,
    pub from_config: bool,
    /// Shared with whatever records this namespace's events (lock-free).
    pub metrics: Arc<NsMetrics>,
    entries: LruCache<Key, EntryMeta>,
    bytes: u64,
    logical: u64,
}

impl NsState {
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn logical_bytes(&self) -> u64 {
        self.logical
    }

    pub fn peek(&self, key: &Key) -> Option<&EntryMeta> {
        self.entries.peek(key)
    }

    /// Entries from least to most recently used.
    pub fn iter_lru(&self) -> impl Iterator<Item = (&Key, &EntryMeta)> {
        self.entries.iter().rev()
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct ExpiryItem {
    at: UnixNanos,
    version: u64,
    /// The namespace's id: 4 bytes an item where a handle takes 16.
    ns: u32,
    key: Key,
}

/// An entry taken out of the index whose file must now be removed.
#[derive(Debug)]
pub struct Removed {
    pub ns: Namespace,
    pub key: Key,
    pub meta: EntryMeta,
    pub reason: RemoveReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    Expired,
    Evicted,
    Purged,
}

/// Limits on the whole mount.
#[derive(Debug, Clone, Copy)]
pub struct GlobalLimits {
    pub max_bytes: u64,
    pub max_entries: Option<u64>,
    pub default_ttl: Duration,
}

pub struct Index {
    namespaces: HashMap<Namespace, NsState>,
    by_id: HashMap<u32, Namespace>,
    next_ns_id: u32,
    total_bytes: u64,
    total_entries: u64,
    expiry: BinaryHeap<Reverse<ExpiryItem>>,
    /// Open backing files of verified versions, shared by their readers
    /// (reads are `pread`), so a hot open makes no system call. Kept here
    /// so that every way out of the index (`remove`, `pop_lru`) closes
    /// the version's file: none holds disk space behind the quota's back.
    shared_files: HashMap<u64, Arc<File>>,
    pub limits: GlobalLimits,
}

/// At most this many files are shared (well under the default soft limit
/// of 1024 descriptors).
const SHARED_FILES_MAX: usize = 256;

impl Index {
    pub fn new(limits: GlobalLimits) -> Index {
        Index {
            namespaces: HashMap::new(),
            by_id: HashMap::new(),
            next_ns_id: 0,
            total_bytes: 0,
            total_entries: 0,
            expiry: BinaryHeap::new(),
            shared_files: HashMap::new(),
            limits,
        }
    }

    /// The shared open file of a live version, if one is kept.
    pub fn shared_file(&self, version: u64) -> Option<Arc<File>> {
        self.shared_files.get(&version).cloned()
    }

    /// Keeps a live version's open file for its next readers.
    pub fn share_file(&mut self, version: u64, file: &Arc<File>) {
        if self.shared_files.len() >= SHARED_FILES_MAX {
            self.shared_files.clear();
        }
        self.shared_files.insert(version, Arc::clone(file));
    }

    pub fn add_namespace(&mut self, ns: Namespace, policy: NamespacePolicy, from_config: bool) {
        if let Some(state) = self.namespaces.get_mut(&ns) {
            state.policy = policy;
            state.from_config |= from_config;
            return;
        }
        let id = self.next_ns_id;
        self.next_ns_id += 1;
        self.by_id.insert(id, ns.clone());
        self.namespaces.insert(
            ns,
            NsState {
                id,
                policy,
                from_config,
                metrics: Arc::default(),
                entries: LruCache::unbounded(),
                bytes: 0,
                logical: 0,
            },
        );
    }

    /// Removes an empty namespace. Caller guarantees it holds no entries.
    pub fn remove_namespace(&mut self, ns: &Namespace) {
        if let Some(state) = self.namespaces.remove(ns) {
            debug_assert_eq!(state.len(), 0);
            self.by_id.remove(&state.id);
        }
    }

    pub fn namespace(&self, ns: &Namespace) -> Option<&NsState> {
        self.namespaces.get(ns)
    }

    pub fn namespace_mut(&mut self, ns: &Namespace) -> Option<&mut NsState> {
        self.namespaces.get_mut(ns)
    }

    pub fn namespace_by_id(&self, id: u32) -> Option<&Namespace> {
        self.by_id.get(&id)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&Namespace, &NsState)> {
        self.namespaces.iter()
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn total_entries(&self) -> u64 {
        self.total_entries
    }

    /// When an entry expires under its namespace's policy; `None` = never.
    pub fn expires_at(&self, policy: &NamespacePolicy, meta: &EntryMeta) -> Option<UnixNanos> {
        let ttl = match meta.ttl_secs {
            Some(s) => Duration::from_secs(s),
            None => policy.ttl.unwrap_or(self.limits.default_ttl),
        };
        if ttl.is_zero() {
            None
        } else {
            Some(
                meta.mtime
                    .saturating_add(ttl.as_nanos().min(i64::MAX as u128) as i64),
            )
        }
    }

    /// The effective TTL of an entry (`ZERO` = never).
    pub fn effective_ttl(&self, policy: &NamespacePolicy, meta: &EntryMeta) -> Duration {
        match meta.ttl_secs {
            Some(s) => Duration::from_secs(s),
            None => policy.ttl.unwrap_or(self.limits.default_ttl),
        }
    }

    pub fn peek(&self, ns: &Namespace, key: &Key) -> Option<&EntryMeta> {
        self.namespaces.get(ns)?.entries.peek(key)
    }

    /// Marks an entry most recently used.
    pub fn promote(&mut self, ns: &Namespace, key: &Key, now: UnixNanos) -> Option<&mut EntryMeta> {
        let meta = self.namespaces.get_mut(ns)?.entries.get_mut(key)?;
        meta.last_access = now;
        Some(meta)
    }

    /// Adds or replaces an entry as the most recently used; returns the
    /// replaced metadata. The namespace must exist.
    pub fn insert(&mut self, ns: &Namespace, key: Key, meta: EntryMeta) -> Option<EntryMeta> {
        let old = self.remove(ns, &key);
        let state = self
            .namespaces
            .get_mut(ns)
            .expect("insert into a namespace that exists");
        let expires = {
            let ttl = match meta.ttl_secs {
                Some(s) => Duration::from_secs(s),
                None => state.policy.ttl.unwrap_or(self.limits.default_ttl),
            };
            (!ttl.is_zero()).then(|| meta.mtime.saturating_add(ttl.as_nanos() as i64))
        };
        if let Some(at) = expires {
            self.expiry.push(Reverse(ExpiryItem {
                at,
                version: meta.version,
                ns: state.id,
                key: key.clone(),
            }));
        }
        state.bytes += meta.stored_bytes;
        state.logical += meta.logical_size;
        self.total_bytes += meta.stored_bytes;
        self.total_entries += 1;
        state.entries.push(key, meta);
        self.compact_expiry_if_bloated();
        old
    }

    pub fn remove(&mut self, ns: &Namespace, key: &Key) -> Option<EntryMeta> {
        let state = self.namespaces.get_mut(ns)?;
        let meta = state.entries.pop(key)?;
        self.shared_files.remove(&meta.version);
        state.bytes -= meta.stored_bytes;
        state.logical -= meta.logical_size;
        self.total_bytes -= meta.stored_bytes;
        self.total_entries -= 1;
        Some(meta)
    }

    /// Takes every entry whose expiry instant is at or before `now`.
    pub fn take_expired(&mut self, now: UnixNanos) -> Vec<Removed> {
        let mut out = Vec::new();
        while let Some(Reverse(top)) = self.expiry.peek() {
            if top.at > now {
                break;
            }
            let Reverse(item) = self.expiry.pop().expect("peeked");
            let Some(ns) = self.by_id.get(&item.ns).cloned() else {
                continue;
            };
            let Some(state) = self.namespaces.get(&ns) else {
                continue;
            };
            let Some(meta) = state.entries.peek(&item.key) else {
                continue;
            };
            if meta.version != item.version {
                continue;
            }
            match self.expires_at(&state.policy, meta) {
                Some(at) if at <= now => {
                    let meta = self.remove(&ns, &item.key).expect("peeked");
                    out.push(Removed {
                        ns,
                        key: item.key,
                        meta,
                        reason: RemoveReason::Expired,
                    });
                }
                // Touched, or its TTL changed: a newer item stands for it.
                _ => {}
            }
        }
        out
    }

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
        let over_total = |idx: &Index| {
            idx.total_bytes + add_bytes > idx.limits.max_bytes
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
            let victim_ns = self
                .namespaces
                .iter()
                .filter_map(|(n, s)| s.entries.peek_lru().map(|(_, m)| (m.last_access, n)))
                .min()
                .map(|(_, n)| n.clone())?;
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
    fn pop_lru(&mut self, ns: &Namespace) -> Option<(Key, EntryMeta)> {
        let state = self.namespaces.get_mut(ns)?;
        let (key, meta) = state.entries.pop_lru()?;
        self.shared_files.remove(&meta.version);
        state.bytes -= meta.stored_bytes;
        state.logical -= meta.logical_size;
        self.total_bytes -= meta.stored_bytes;
        self.total_entries -= 1;
        Some((key, meta))
    }

    /// Re-derives the expiry heap from the entries (after a TTL policy
    /// change, or when stale items outnumber live ones).
    pub fn rebuild_expiry(&mut self) {
        let mut heap = BinaryHeap::with_capacity(self.total_entries as usize);
        for state in self.namespaces.values() {
            for (key, meta) in state.entries.iter() {
                if let Some(at) = self.expires_at(&state.policy, meta) {
                    heap.push(Reverse(ExpiryItem {
                        at,
                        version: meta.version,
                        ns: state.id,
                        key: key.clone(),
                    }));
                }
            }
        }
        self.expiry = heap;
    }

    fn compact_expiry_if_bloated(&mut self) {
        if self.expiry.len() as u64 > 2 * self.total_entries + 4096 {
            self.rebuild_expiry();
        }
    }

    /// Panics if the accounting disagrees with the entries.
    #[cfg(test)]
    pub fn debug_check(&self) {
        let mut total_b = 0;
        let mut total_n = 0;
        for s in self.namespaces.values() {
            let b: u64 = s.entries.iter().map(|(_, m)| m.stored_bytes).sum();
            assert_eq!(b, s.bytes, "namespace bytes");
            let l: u64 = s.entries.iter().map(|(_, m)| m.logical_size).sum();
            assert_eq!(l, s.logical, "namespace logical bytes");
            total_b += b;
            total_n += s.len();
        }
        assert_eq!(total_b, self.total_bytes, "total bytes");
        assert_eq!(total_n, self.total_entries, "total entries");
    }
}
