//! Listings: the names of a directory (with the stamp that says, in
//! O(1), whether a listing taken before is still the listing), and a
//! listing's entries with their metadata (READDIRPLUS): many keys in one
//! critical section, counting nothing, since a listing is no read.
//!
//! Invariant: a listing taken under stamp `s` is, name for name and
//! version for version, the listing of the directory at any later instant
//! before `s.until` at which `dir_generation` is still `s.generation`
//! (index/tree.rs: the generation changes with whatever the listing
//! shows; an entry's expiry is the one change that happens by the clock
//! alone, hence `until`). `tree_prop_tests.rs` checks it after every step.

use super::{DirItem, Key, Lookup, Namespace, Store, StoreError, UnixNanos};

/// What a listing was taken under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingStamp {
    /// The directory's generation then.
    pub generation: u64,
    /// The earliest expiry among the entries listed (`None`: none
    /// expires): from then on the same generation lists fewer names.
    pub until: Option<UnixNanos>,
}

impl ListingStamp {
    /// Whether a listing taken under this stamp is still the listing of a
    /// directory now at `generation`, at `now`.
    pub fn holds(&self, generation: u64, now: UnixNanos) -> bool {
        self.generation == generation && self.until.is_none_or(|u| now < u)
    }
}

impl Store {
    /// The generation of directory `path` of namespace `ns_id`, in O(1):
    /// `None` if there is no such directory, or while the index is being
    /// rebuilt (a listing then waits for it: see `list_dir`).
    pub fn dir_generation(&self, ns_id: u32, path: &[u8]) -> Option<u64> {
        if self.rebuilding() {
            return None;
        }
        let idx = self.lock();
        let ns = idx.namespace_by_id(ns_id)?;
        Some(idx.namespace(ns)?.tree().node(path)?.generation())
    }

    /// The live names directly in directory `path` of `ns`: costs what is
    /// in it, not the namespace's size. While the index is rebuilt behind
    /// a serving mount, waits for it: a listing shows the whole cache
    /// (`ls`, `du`), never the part found so far.
    pub fn list_dir(&self, ns: &Namespace, path: &[u8]) -> Result<Vec<DirItem>, StoreError> {
        self.list_dir_stamped(ns, path).map(|(items, _)| items)
    }

    /// `list_dir`, with the stamp the listing was taken under.
    pub fn list_dir_stamped(
        &self,
        ns: &Namespace,
        path: &[u8],
    ) -> Result<(Vec<DirItem>, ListingStamp), StoreError> {
        self.wait_rebuilt();
        let now = self.clock.now();
        let idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        let node = state.tree().node(path).ok_or(StoreError::NotFound)?;
        let mut stamp = ListingStamp {
            generation: node.generation(),
            until: None,
        };
        let mut out = Vec::with_capacity(node.files.len() + node.subdirs.len());
        for name in &node.subdirs {
            out.push(DirItem::Dir {
                name: name.to_vec(),
            });
        }
        // In slot order: slots are read in address order (the hardware
        // prefetches them; in the set's order each was a cache miss, most
        // of an OPENDIR of 10^5 entries).
        let mut slots: Vec<u32> = node.files.iter().copied().collect();
        slots.sort_unstable();
        for slot in slots {
            let Some((key, meta)) = state.slot_entry(slot) else {
                continue;
            };
            match idx.expires_at(&state.policy, &meta) {
                Some(at) if at <= now => continue,
                Some(at) => stamp.until = Some(stamp.until.map_or(at, |u| u.min(at))),
                None => {}
            }
            let name = match key.iter().rposition(|&b| b == b'/') {
                Some(i) => key[i + 1..].to_vec(),
                None => key.to_vec(),
            };
            out.push(DirItem::File {
                name,
                version: meta.version,
            });
        }
        Ok((out, stamp))
    }

    /// What `entry_info` says of each of `keys` of `ns`, in order, under
    /// one index lock.
    pub fn entry_infos<'a>(
        &self,
        ns: &Namespace,
        keys: impl IntoIterator<Item = &'a Key>,
    ) -> Vec<Lookup> {
        let now = self.clock.now();
        let idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return keys.into_iter().map(|_| Lookup::Miss).collect();
        };
        keys.into_iter()
            .map(|key| match state.peek(key) {
                None => Lookup::Miss,
                Some(meta) => match idx.expires_at(&state.policy, &meta) {
                    Some(at) if at <= now => Lookup::Expired,
                    _ => Lookup::Hit(Self::info_locked(&idx, ns, &meta)),
                },
            })
            .collect()
    }
}
