//! A listing's entries with their metadata (READDIRPLUS): many names in
//! one critical section, counting nothing, since a listing is no read.
//!
//! Each name is looked at where the listing found it (its slot, with the
//! version it had): a slot still holding that version under that name is
//! the entry, read without hashing or probing for the name. Anything else
//! (replaced, renamed, removed, the slot reused) is looked up by name, so
//! a line shows the entry as it is now, or nothing.

use super::index::{EntryMeta, Index, NsState};
use super::{EntryInfo, Key, KeyFormat, Namespace, Store};
use crate::config::NamespacePolicy;

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
