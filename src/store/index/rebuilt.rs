//! The index while a rebuild runs behind a serving store: what the
//! rebuild finds goes in only where nothing newer was put in since it
//! began (see `Index::touched`).

use std::collections::HashSet;

use super::{EntryMeta, Index};
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
    pub fn insert_rebuilt(&mut self, ns: &Namespace, key: Key, meta: EntryMeta) -> bool {
        let Some(id) = self.namespaces.get(ns).map(|s| s.id) else {
            return false;
        };
        if let Some(t) = &self.touched
            && t.contains(&(id, Box::from(key.as_bytes())))
        {
            return false;
        }
        if self.peek(ns, &key).is_some() {
            return false;
        }
        self.insert_inner(ns, key, meta);
        true
    }
}
