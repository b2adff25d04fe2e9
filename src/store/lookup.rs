//! Lookups: what the index says of a key (hit, miss, expired), its live
//! metadata, its content digest, and a namespace's listing.
//!
//! Invariants: a lookup touches neither the disk nor the key's recency; an
//! expired entry is never reported live; only `lookup` counts misses.

use std::time::{Duration, Instant};

use super::clock::UnixNanos;
use super::index::{EntryMeta, Index};
use super::{Store, StoreError, entry};
use crate::metrics;
use crate::names::{Key, Namespace};

/// The outcome of looking a key up.
#[derive(Debug, Clone)]
pub enum Lookup {
    Hit(EntryInfo),
    Miss,
    Expired,
}

/// What callers need to know of a live entry.
/// A name looked up inside a namespace (`Store::lookup_name`).
#[derive(Debug, Clone)]
pub struct Found {
    pub ns: Namespace,
    pub key: Key,
    pub lookup: Lookup,
    /// A writer holds the key (see `claims.rs`): its version is about to
    /// change, so the kernel must not cache the name.
    pub being_written: bool,
    /// The name is a directory (`lookup` is then `Miss`, not counted).
    pub dir: bool,
}

#[derive(Debug, Clone)]
pub struct EntryInfo {
    pub version: u64,
    pub logical_size: u64,
    pub stored_bytes: u64,
    pub mtime: UnixNanos,
    /// The last change of the version or its metadata.
    pub ctime: UnixNanos,
    /// Set by `utimensat`, never by a read.
    pub atime: UnixNanos,
    /// `None`: never expires.
    pub expires: Option<UnixNanos>,
    pub ttl: Duration,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Store {
    pub(super) fn info_locked(idx: &Index, ns: &Namespace, meta: &EntryMeta) -> EntryInfo {
        let policy = &idx.namespace(ns).expect("entry's namespace").policy;
        EntryInfo {
            version: meta.version,
            logical_size: meta.logical_size,
            stored_bytes: meta.stored_bytes,
            mtime: meta.mtime,
            ctime: meta.ctime,
            atime: meta.atime,
            expires: idx.expires_at(policy, meta),
            ttl: idx.effective_ttl(policy, meta),
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
        }
    }

    /// The content digest of a key's live version, read from its trailer
    /// (the index does not keep it).
    pub fn content_sha256(&self, ns: &Namespace, key: &Key) -> Result<[u8; 32], StoreError> {
        self.live_meta(ns, key)?;
        let file = self
            .layout
            .io
            .open_nofollow(&self.layout.entry_path(ns, key))?;
        let len = file.metadata()?.len();
        entry::read_header(&self.layout.io, &file, len)
            .map(|h| h.content_sha256)
            .map_err(|_| StoreError::NotFound)
    }

    /// Looks a key up (a read's first step: misses are counted), without
    /// touching the disk or the key's recency.
    pub fn lookup(&self, ns: &Namespace, key: &Key) -> Lookup {
        self.lookup_inner(ns, key, true)
    }

    /// Like `lookup`, for metadata questions: counts nothing.
    pub fn entry_info(&self, ns: &Namespace, key: &Key) -> Lookup {
        self.lookup_inner(ns, key, false)
    }

    /// A read's lookup of `name` in namespace `ns_id` by thread `pid`, in
    /// one critical section: the name is parsed under the namespace's key
    /// format, and a miss is counted unless it repeats one that thread
    /// just had (see `misses.rs`).
    pub fn lookup_name(
        &self,
        ns_id: u32,
        dir: &[u8],
        name: &[u8],
        pid: u32,
    ) -> Result<Found, StoreError> {
        let start = Instant::now();
        let now = self.clock.now();
        let idx = self.lock();
        let ns = idx.namespace_by_id(ns_id).ok_or(StoreError::NotFound)?;
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        let key = match Key::join(dir, name, state.policy.key_format) {
            Ok(key) => key,
            // A directory's name need not be a key of the format (sha256
            // applies to the last component of an entry's key only).
            Err(e) => match Key::join(dir, name, crate::names::KeyFormat::Any) {
                Ok(key) if state.tree().is_dir(key.as_bytes()) => {
                    return Ok(Found {
                        ns: ns.clone(),
                        key,
                        lookup: Lookup::Miss,
                        being_written: false,
                        dir: true,
                    });
                }
                _ => return Err(e.into()),
            },
        };
        let lookup = Self::outcome_locked(&idx, ns, &key, now);
        let m = &state.metrics;
        let is_dir = matches!(lookup, Lookup::Miss) && state.tree().is_dir(key.as_bytes());
        let being_written = match lookup {
            _ if is_dir => false,
            Lookup::Hit(_) => self.claims.is_claimed(ns, &key),
            Lookup::Miss | Lookup::Expired => {
                let expired = matches!(lookup, Lookup::Expired);
                if self.misses.missed(pid, ns, &key, expired, start) {
                    count_miss(m, expired);
                }
                false
            }
        };
        m.lookup.since(start);
        Ok(Found {
            ns: ns.clone(),
            key,
            lookup,
            being_written,
            dir: is_dir,
        })
    }

    fn lookup_inner(&self, ns: &Namespace, key: &Key, count: bool) -> Lookup {
        let start = Instant::now();
        let now = self.clock.now();
        let idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return Lookup::Miss;
        };
        let outcome = Self::outcome_locked(&idx, ns, key, now);
        if count {
            let m = &state.metrics;
            if !matches!(outcome, Lookup::Hit(_)) {
                count_miss(m, matches!(outcome, Lookup::Expired));
            }
            m.lookup.since(start);
        }
        outcome
    }

    /// What a key of an existing namespace is at `now` (index lock held).
    fn outcome_locked(idx: &Index, ns: &Namespace, key: &Key, now: UnixNanos) -> Lookup {
        let Some(state) = idx.namespace(ns) else {
            return Lookup::Miss;
        };
        match state.peek(key) {
            None => Lookup::Miss,
            Some(meta) => match idx.expires_at(&state.policy, &meta) {
                Some(at) if at <= now => Lookup::Expired,
                _ => Lookup::Hit(Self::info_locked(idx, ns, &meta)),
            },
        }
    }

    /// The live metadata of a key (not expired).
    pub(super) fn live_meta(&self, ns: &Namespace, key: &Key) -> Result<EntryMeta, StoreError> {
        let now = self.clock.now();
        let idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        let meta = state.peek(key).ok_or(StoreError::NotFound)?;
        if idx
            .expires_at(&state.policy, &meta)
            .is_some_and(|at| at <= now)
        {
            return Err(StoreError::NotFound);
        }
        Ok(meta)
    }

    /// Live keys of a namespace with their versions, least recent first.
    pub fn list(&self, ns: &Namespace) -> Result<Vec<(Key, u64)>, StoreError> {
        let now = self.clock.now();
        let idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        Ok(state
            .iter_lru()
            .filter(|(_, m)| idx.expires_at(&state.policy, m).is_none_or(|at| at > now))
            .map(|(k, m)| (Key::from_index(&k), m.version))
            .collect())
    }
}

fn count_miss(m: &crate::metrics::NsMetrics, expired: bool) {
    metrics::add(&m.misses, 1);
    if expired {
        metrics::add(&m.expired_misses, 1);
    }
}
