//! Listings: the names of a directory (with the stamp that says, in
//! O(1), whether a listing taken before is still the listing), and a
//! listing's entries with their metadata (READDIRPLUS): many names in one
//! critical section, counting nothing, since a listing is no read.
//!
//! READDIRPLUS looks at each name where the listing found it (its slot,
//! with the version it had): a slot still holding that version under that
//! name is the entry, read without hashing or probing for the name.
//! Anything else (replaced, renamed, removed, the slot reused) is looked
//! up by name, so a line shows the entry as it is now, or nothing.
//!
//! Invariant: a listing taken under stamp `s` is, name for name and
//! version for version, the listing of the directory at any later instant
//! before `s.until` at which `dir_generation` is still `s.generation`
//! (index/tree.rs: the generation changes with whatever the listing
//! shows; an entry's expiry is the one change that happens by the clock
//! alone, hence `until`). `tree_prop_tests.rs` checks it after every step.

use super::index::{EntryMeta, Index, NsState};
use super::{DirItem, EntryInfo, Key, KeyFormat, Namespace, Store, StoreError, UnixNanos};
use crate::config::NamespacePolicy;

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

/// A name of a listing taken by `list_dir`, as it was then.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    /// The name, in directory `dir` of the listing.
    pub name: &'a [u8],
    /// Where `list_dir` found it (`DirItem::File`'s slot).
    pub slot: u32,
    pub version: u64,
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
                slot,
            });
        }
        Ok((out, stamp))
    }

    /// The live entry of each of `names` (in directory `dir` of `ns`), in
    /// order, under one index lock: `None` for a name with no live entry
    /// now (removed, renamed away, expired).
    pub fn listed_infos<'a>(
        &self,
        ns: &Namespace,
        dir: &[u8],
        names: impl IntoIterator<Item = Listed<'a>>,
    ) -> Vec<Option<EntryInfo>> {
        let now = self.clock.now();
        let idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return names.into_iter().map(|_| None).collect();
        };
        names
            .into_iter()
            .map(|l| {
                let meta = Self::listed_meta(state, dir, l)?;
                let expires = idx.expires_at(&state.policy, &meta);
                if expires.is_some_and(|at| at <= now) {
                    return None;
                }
                Some(info_of(&idx, &state.policy, &meta, expires))
            })
            .collect()
    }

    /// The metadata of the entry now under listed name `l`.
    fn listed_meta(state: &NsState, dir: &[u8], l: Listed<'_>) -> Option<EntryMeta> {
        if let Some((key, meta)) = state.slot_entry(l.slot)
            && meta.version == l.version
            && is_joined(&key, dir, l.name)
        {
            return Some(meta);
        }
        // The names came out of the index: they parse as they went in.
        let key = Key::join(dir, l.name, KeyFormat::Any).ok()?;
        state.peek(&key)
    }
}

/// Whether `key` is `name` in directory `dir` ("": the top).
fn is_joined(key: &[u8], dir: &[u8], name: &[u8]) -> bool {
    if dir.is_empty() {
        return key == name;
    }
    key.len() == dir.len() + 1 + name.len()
        && key.starts_with(dir)
        && key[dir.len()] == b'/'
        && key.ends_with(name)
}

/// `Store::info_locked` with the namespace's policy and the expiry at
/// hand (no lookup of the namespace per name).
pub(super) fn info_of(
    idx: &Index,
    policy: &NamespacePolicy,
    meta: &EntryMeta,
    expires: Option<super::UnixNanos>,
) -> EntryInfo {
    EntryInfo {
        version: meta.version,
        logical_size: meta.logical_size,
        stored_bytes: meta.stored_bytes,
        mtime: meta.mtime,
        ctime: meta.ctime,
        atime: meta.atime,
        expires,
        ttl: idx.effective_ttl(policy, meta),
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
    }
}
