//! The in-memory index: key -> entry metadata, recency order, expiry order,
//! and byte/entry accounting per namespace and overall.
//!
//! Each namespace's entries live in an `EntryTable` (table.rs): a slab of
//! compact slots (slot.rs) with a hash table of slot numbers and a recency
//! list through the slots; expiry items name a slot, not a key. That keeps
//! the index near 140 bytes an entry at 10^6, where it took 300 (the
//! budget for the whole daemon is 250; `examples/index_memory` measures).
//!
//! Invariants (checked by `debug_check` in tests):
//! - `ns.bytes` is the sum of `stored_bytes` of the namespace's entries, and
//!   `total_bytes`/`total_entries` the sums over namespaces. Every mutation
//!   goes through `insert`/`remove`, which keep them in step.
//! - Each namespace's recency list has the least recently read or written
//!   entry at its tail. Lookup, recency update and the eviction pick are
//!   O(1) per namespace; the global pick compares the tails of the (few)
//!   namespaces.
//! - The expiry heap holds an item at the expiry instant of every entry
//!   that can expire, naming its namespace and slot. An item only says
//!   "look at this slot then": when popped, the slot's current entry (if
//!   any) is removed only if it has expired by its own metadata, so a stale
//!   item (entry replaced, touched or removed, slot reused) is skipped.
//!
//! The index is plain data; `Store` owns it behind one mutex.

mod evict;
mod meta;
mod rebuilt;
mod slot;
mod table;
#[cfg(test)]
mod tests;
mod tree;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::clock::UnixNanos;
use crate::config::NamespacePolicy;
use crate::metrics::NsMetrics;
use crate::names::{Key, Namespace};
pub use meta::{EntryMeta, GlobalLimits, RemoveReason, Removed};
pub use slot::KeyBytes;
use table::EntryTable;
pub use tree::DirTree;

pub struct NsState {
    pub id: u32,
    pub policy: NamespacePolicy,
    pub from_config: bool,
    /// Owner, group and mode of the namespace's directory (the store
    /// settles them from the config and the namespace's record).
    pub access: crate::access::NsAccess,
    /// Shared with whatever records this namespace's events (lock-free).
    pub metrics: Arc<NsMetrics>,
    entries: EntryTable,
    /// The directories keys make (see tree.rs), kept with `entries`.
    tree: DirTree,
    bytes: u64,
    logical: u64,
}

/// Why a key cannot be an entry's: the tree has it otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathConflict {
    /// The key itself is a directory.
    IsDir,
    /// A directory on the key's path is an entry.
    NotDir,
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

    pub fn peek(&self, key: &Key) -> Option<EntryMeta> {
        let i = self.entries.find(key.as_bytes())?;
        Some(self.entries.meta(i))
    }

    pub fn tree(&self) -> &DirTree {
        &self.tree
    }

    pub fn tree_mut(&mut self) -> &mut DirTree {
        &mut self.tree
    }

    /// Whether `key` cannot hold an entry because the tree uses its path:
    /// it is a directory, or one of its directories is an entry. Costs
    /// nothing for a flat key in a namespace without directories. A nested
    /// key there still checks its directories: `b/x` published (by an
    /// import, or the store API) beside an entry `b` would make `b` both.
    pub fn path_conflict(&self, key: &[u8]) -> Option<PathConflict> {
        if self.tree.dir_count() == 0 && !key.contains(&b'/') {
            return None;
        }
        if self.tree.is_dir(key) {
            return Some(PathConflict::IsDir);
        }
        let mut dir = crate::names::parent_of(key);
        while !dir.is_empty() {
            if self.entries.find(dir).is_some() {
                return Some(PathConflict::NotDir);
            }
            dir = crate::names::parent_of(dir);
        }
        None
    }

    /// The live-or-not metadata and key of an occupied slot (a directory
    /// listing's entries).
    pub fn slot_entry(&self, slot: u32) -> Option<(KeyBytes<'_>, EntryMeta)> {
        let meta = self.entries.get(slot)?;
        Some((self.entries.key(slot), meta))
    }

    /// Entries from least to most recently used.
    pub fn iter_lru(&self) -> impl Iterator<Item = (KeyBytes<'_>, EntryMeta)> {
        self.entries
            .iter_lru()
            .map(|i| (self.entries.key(i), self.entries.meta(i)))
    }

    /// Takes the entry of slot `i` out, keeping the namespace's accounts
    /// (the caller keeps the index's).
    fn remove_slot(&mut self, i: u32) -> (Key, EntryMeta) {
        let key = Key::from_index(&self.entries.key(i));
        let meta = self.entries.remove(i);
        self.tree.remove_file(key.as_bytes(), i);
        self.bytes -= meta.stored_bytes;
        self.logical -= meta.logical_size;
        (key, meta)
    }
}

/// "At `at`, look at slot `slot` of namespace `ns`": 16 bytes, no key.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct ExpiryItem {
    at: UnixNanos,
    ns: u32,
    slot: u32,
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
    /// Bytes reserved by writes in flight (staging files), counted against
    /// the whole-cache quota. Raised only under the index lock; a write
    /// gives its share back lock-free (lowering it only makes room).
    pub staged: Arc<AtomicU64>,
    /// While the index is rebuilt behind a serving daemon: the keys put in
    /// by anything but the rebuild (a publish, a lookup that adopted a
    /// file). The rebuild never puts such a key in again (`insert_rebuilt`),
    /// so it can neither overwrite a newer version nor bring back one
    /// removed since: a key must be in the index to be removed, and the
    /// rebuild meets each key once.
    touched: Option<HashSet<(u32, Box<[u8]>)>>,
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
            staged: Arc::default(),
            touched: None,
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
                access: crate::access::NsAccess::of_daemon(),
                metrics: Arc::default(),
                entries: EntryTable::default(),
                tree: DirTree::default(),
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

    pub fn peek(&self, ns: &Namespace, key: &Key) -> Option<EntryMeta> {
        self.namespaces.get(ns)?.peek(key)
    }

    /// Marks an entry most recently used; returns its metadata.
    pub fn promote(&mut self, ns: &Namespace, key: &Key, now: UnixNanos) -> Option<EntryMeta> {
        let entries = &mut self.namespaces.get_mut(ns)?.entries;
        let i = entries.find(key.as_bytes())?;
        entries.promote(i, now);
        Some(entries.meta(i))
    }

    /// Records that the content of `key`'s entry was checked, if the entry
    /// is still `version`.
    /// Marks a version checked; `compressed` is what its trailer said.
    pub fn mark_verified(
        &mut self,
        ns: &Namespace,
        key: &Key,
        version: u64,
        compressed: bool,
    ) -> bool {
        let Some(state) = self.namespaces.get_mut(ns) else {
            return false;
        };
        match state.entries.find(key.as_bytes()) {
            Some(i) if state.entries.meta(i).version == version => {
                state.entries.set_verified(i, compressed);
                true
            }
            _ => false,
        }
    }

    /// Adds or replaces an entry as the most recently used; returns the
    /// replaced metadata. The namespace must exist. (The index keeps a
    /// compact copy of the key, not `key`.)
    pub fn insert(&mut self, ns: &Namespace, key: Key, meta: EntryMeta) -> Option<EntryMeta> {
        if let Some(t) = &mut self.touched
            && let Some(s) = self.namespaces.get(ns)
        {
            t.insert((s.id, Box::from(key.as_bytes())));
        }
        self.insert_inner(ns, key, meta)
    }

    fn insert_inner(&mut self, ns: &Namespace, key: Key, meta: EntryMeta) -> Option<EntryMeta> {
        let old = self.remove(ns, &key);
        let policy = &self
            .namespaces
            .get(ns)
            .expect("insert into a namespace that exists")
            .policy;
        // The same instant `take_expired` checks against: a TTL too long
        // for i64 nanoseconds saturates (a wrapped one would never fire).
        let expires = self.expires_at(policy, &meta);
        let state = self.namespaces.get_mut(ns).expect("just seen");
        state.bytes += meta.stored_bytes;
        state.logical += meta.logical_size;
        self.total_bytes += meta.stored_bytes;
        self.total_entries += 1;
        let (slot, replaced) = state.entries.insert(key.as_bytes(), &meta);
        debug_assert!(replaced.is_none(), "removed above");
        state.tree.add_file(key.as_bytes(), slot);
        if let Some(at) = expires {
            self.expiry.push(Reverse(ExpiryItem {
                at,
                ns: state.id,
                slot,
            }));
        }
        self.compact_expiry_if_bloated();
        old
    }

    pub fn remove(&mut self, ns: &Namespace, key: &Key) -> Option<EntryMeta> {
        let state = self.namespaces.get_mut(ns)?;
        let slot = state.entries.find(key.as_bytes())?;
        let meta = state.entries.remove(slot);
        state.tree.remove_file(key.as_bytes(), slot);
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
            let Some(ns) = self.by_id.get(&item.ns) else {
                continue;
            };
            let Some(state) = self.namespaces.get(ns) else {
                continue;
            };
            let Some(meta) = state.entries.get(item.slot) else {
                continue;
            };
            match self.expires_at(&state.policy, &meta) {
                Some(at) if at <= now => {
                    let ns = ns.clone();
                    let state = self.namespaces.get_mut(&ns).expect("just seen");
                    let (key, meta) = state.remove_slot(item.slot);
                    self.shared_files.remove(&meta.version);
                    self.total_bytes -= meta.stored_bytes;
                    self.total_entries -= 1;
                    out.push(Removed {
                        ns,
                        key,
                        meta,
                        reason: RemoveReason::Expired,
                    });
                }
                // Not expired: the item is stale (the entry was replaced,
                // touched or its TTL changed, or the slot reused), and a
                // newer item stands for the entry there now.
                _ => {}
            }
        }
        out
    }

    /// Re-derives the expiry heap from the entries (after a TTL policy
    /// change, or when stale items outnumber live ones).
    pub fn rebuild_expiry(&mut self) {
        // Dropped first: the old heap and the new one need not both be in
        // memory at 10^6 entries.
        self.expiry = BinaryHeap::new();
        let mut items = Vec::with_capacity(self.total_entries as usize);
        for state in self.namespaces.values() {
            for slot in state.entries.iter_lru() {
                if let Some(at) = self.expires_at(&state.policy, &state.entries.meta(slot)) {
                    items.push(Reverse(ExpiryItem {
                        at,
                        ns: state.id,
                        slot,
                    }));
                }
            }
        }
        self.expiry = BinaryHeap::from(items);
    }

    /// The rules of expiry changed (a reload): every listing's earliest
    /// expiry may have moved, so no listing taken before is the same.
    pub fn expiry_rules_changed(&mut self) {
        for s in self.namespaces.values_mut() {
            s.tree.all_changed();
        }
    }

    fn compact_expiry_if_bloated(&mut self) {
        if self.expiry.len() as u64 > 2 * self.total_entries + 4096 {
            self.rebuild_expiry();
        }
    }

    /// Panics if the accounting disagrees with the entries, a table breaks
    /// its invariants, or an entry that can expire has no expiry item at
    /// its expiry instant.
    #[cfg(test)]
    pub fn debug_check(&self) {
        use std::collections::HashSet;
        let items: HashSet<(UnixNanos, u32, u32)> = self
            .expiry
            .iter()
            .map(|Reverse(i)| (i.at, i.ns, i.slot))
            .collect();
        let mut total_b = 0;
        let mut total_n = 0;
        for s in self.namespaces.values() {
            s.entries.debug_check();
            let slots: Vec<u32> = s.entries.iter_lru().collect();
            s.tree.debug_check(|i| s.entries.key(i).to_vec(), &slots);
            let b: u64 = s.iter_lru().map(|(_, m)| m.stored_bytes).sum();
            assert_eq!(b, s.bytes, "namespace bytes");
            let l: u64 = s.iter_lru().map(|(_, m)| m.logical_size).sum();
            assert_eq!(l, s.logical, "namespace logical bytes");
            total_b += b;
            total_n += s.len();
            for slot in s.entries.iter_lru() {
                if let Some(at) = self.expires_at(&s.policy, &s.entries.meta(slot)) {
                    assert!(
                        items.contains(&(at, s.id, slot)),
                        "no expiry item for slot {slot} at {at}"
                    );
                }
            }
        }
        assert_eq!(total_b, self.total_bytes, "total bytes");
        assert_eq!(total_n, self.total_entries, "total entries");
    }
}
