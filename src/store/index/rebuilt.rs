//! The index while a rebuild runs behind a serving store: what the
//! rebuild finds goes in only where nothing newer was put in since it
//! began (see `Index::touched`).

use std::cmp::Reverse;
use std::collections::HashSet;

use super::{EntryMeta, ExpiryItem, Index};
use crate::names::{Key, Namespace};

impl Index {
    /// A rebuild begins: from now on, keys inserted otherwise are kept
    /// from it (see `touched`).
    pub fn begin_rebuild(&mut self) {
        self.touched = Some(HashSet::new());
    }

    /// The rebuild is over (done or abandoned).
    pub fn end_rebuild(&mut self) {
        self.touched = None;
    }

    pub fn rebuilding(&self) -> bool {
        self.touched.is_some()
    }

    /// Inserts what the rebuild found of a key, unless the key was put in
    /// otherwise since the rebuild began (that is newer, or was removed
    /// since). Returns whether it went in.
    ///
    /// The first `du` after a start waits for every call of this (10^5
    /// of them): one lookup of the namespace, no allocation, and the key
    /// probed twice (absent? then in), where `insert` probes four times.
    pub fn insert_rebuilt(&mut self, ns: &Namespace, key: Key, meta: EntryMeta) -> bool {
        let Some(state) = self.namespaces.get(ns) else {
            return false;
        };
        if let Some(t) = &self.touched
            && !t.is_empty()
            && t.contains(&(state.id, Box::from(key.as_bytes())))
        {
            return false;
        }
        let expires = self.expires_at(&state.policy, &meta);
        let state = self.namespaces.get_mut(ns).expect("just seen");
        let Some(slot) = state.entries.insert_new(key.as_bytes(), &meta) else {
            return false;
        };
        state.bytes += meta.stored_bytes;
        state.logical += meta.logical_size;
        state.tree.add_file(key.as_bytes(), slot);
        let id = state.id;
        self.total_bytes += meta.stored_bytes;
        self.total_entries += 1;
        if let Some(at) = expires {
            self.expiry.push(Reverse(ExpiryItem { at, ns: id, slot }));
        }
        self.compact_expiry_if_bloated();
        true
    }

    /// Room for `n` more entries in namespace `ns` (what a rebuild is
    /// about to put in), so its table does not grow and rehash on the way.
    pub fn reserve_rebuilt(&mut self, ns: &Namespace, n: usize) {
        if let Some(state) = self.namespaces.get_mut(ns) {
            state.entries.reserve(n);
            self.expiry.reserve(n);
        }
    }
}
