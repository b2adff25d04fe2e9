//! Purge: removing entries by namespace, age or expiry, on demand.
//!
//! The live purge runs in the daemon (`Store::purge`), so its counters,
//! `df` and listings change at once. It picks its victims under the index
//! lock (memory work only), then removes them in chunks: each chunk takes
//! the lock, re-checks every victim's version (a key republished since the
//! pick is kept), takes it out of the index and renames its file into
//! `trash/`; unlinking happens after the lock is released. A purge of 10^5
//! entries therefore never holds the lock for long.
//!
//! A purge under a prefix (`ns/a/b`) takes the entries under that
//! directory of the tree (what is in the subtree, not the namespace's
//! size), at a directory boundary: `a/b` holds `a/b/x` and `a/b/c/y`, never
//! `a/bc`. With `all` it is `rm -r` of the directory: its explicit
//! directories (markers) go too, the one named by the prefix included,
//! save any a new entry was published into meanwhile.
//!
//! The same `PurgeFilter` drives the offline purge (`offline.rs`), which
//! reads entry trailers instead of the index.

use std::str::FromStr;
use std::time::Duration;

use super::clock::UnixNanos;
use super::index::{RemoveReason, Removed};
use super::reaper::unlink_all;
use super::{Store, StoreError};
use crate::names::{Key, Namespace};

/// Which entries a purge removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeSelect {
    /// Every entry.
    All,
    /// Entries whose TTL has run out.
    Expired,
    /// Entries published (or touched) longer ago than this.
    OlderThan(Duration),
}

/// A purge request: a selection, in one namespace or in all, optionally
/// under one directory of that namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeFilter {
    pub namespace: Option<Namespace>,
    /// A directory of `namespace` (ignored without one): only keys under
    /// it, at any depth.
    pub prefix: Option<Key>,
    pub select: PurgeSelect,
}

impl PurgeFilter {
    /// Whether `key` (of the filter's namespace) is under the prefix: a
    /// directory boundary, so `a/b` holds `a/b/c` but not `a/bc` or `a/b`.
    pub fn under_prefix(&self, key: &[u8]) -> bool {
        self.prefix.as_ref().is_none_or(|p| {
            let p = p.as_bytes();
            key.len() > p.len() && key.starts_with(p) && key[p.len()] == b'/'
        })
    }

    /// Whether the directories under the prefix go too (`rm -r`).
    pub fn removes_dirs(&self) -> bool {
        self.prefix.is_some() && self.namespace.is_some() && self.select == PurgeSelect::All
    }

    /// The value of the `user.cachefs.purge` xattr set on the namespace's
    /// dir (or the root) for this filter: the selection, then
    /// ` under=PATH` for a prefix (PATH is raw bytes, as keys are).
    pub fn wire_value(&self) -> Vec<u8> {
        let mut v = self.select.to_string().into_bytes();
        if let Some(p) = &self.prefix {
            v.extend_from_slice(b" under=");
            v.extend_from_slice(p.as_bytes());
        }
        v
    }

    /// Parses `wire_value`'s form for a purge of `namespace`.
    pub fn from_wire(namespace: Option<Namespace>, value: &[u8]) -> Result<Self, String> {
        let value = value.strip_suffix(b"\0").unwrap_or(value);
        let (select, rest) = match value.iter().position(|&b| b == b' ') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        };
        let select: PurgeSelect = std::str::from_utf8(select)
            .map_err(|_| "bad purge request (not UTF-8)".to_string())?
            .parse()?;
        let prefix = match rest {
            None => None,
            Some(r) => {
                let path = r.strip_prefix(b"under=").ok_or_else(|| {
                    "bad purge request (after the selection: under=PATH)".to_string()
                })?;
                if namespace.is_none() {
                    return Err("a purge under a prefix needs a namespace".to_string());
                }
                Some(
                    Key::parse(path, crate::names::KeyFormat::Any)
                        .map_err(|e| format!("bad prefix: {e}"))?,
                )
            }
        };
        Ok(PurgeFilter {
            namespace,
            prefix,
            select,
        })
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub entries: u64,
    /// Stored bytes freed.
    pub bytes: u64,
}

impl PurgeSelect {
    /// Whether an entry of this mtime and expiry instant is selected.
    pub fn matches(&self, mtime: UnixNanos, expires: Option<UnixNanos>, now: UnixNanos) -> bool {
        match self {
            PurgeSelect::All => true,
            PurgeSelect::Expired => expires.is_some_and(|at| at <= now),
            PurgeSelect::OlderThan(d) => {
                let bound = now.saturating_sub(d.as_nanos().min(i64::MAX as u128) as i64);
                mtime < bound
            }
        }
    }
}

/// The wire form shared by the CLI and the daemon (the value of the
/// `user.cachefs.purge` xattr): `all`, `expired` or `older-than=SECONDS`.
impl std::fmt::Display for PurgeSelect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PurgeSelect::All => write!(f, "all"),
            PurgeSelect::Expired => write!(f, "expired"),
            PurgeSelect::OlderThan(d) => write!(f, "older-than={}", d.as_secs()),
        }
    }
}

impl FromStr for PurgeSelect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => Ok(PurgeSelect::All),
            "expired" => Ok(PurgeSelect::Expired),
            other => other
                .strip_prefix("older-than=")
                .and_then(|v| v.parse::<u64>().ok())
                .map(|secs| PurgeSelect::OlderThan(Duration::from_secs(secs)))
                .ok_or_else(|| {
                    format!("bad purge request {other:?} (all, expired, older-than=SECONDS)")
                }),
        }
    }
}

/// Victims removed per hold of the index lock.
const CHUNK: usize = 1024;

impl Store {
    /// Removes the entries `filter` selects; counts them as purged. Fails
    /// only when a directory's marker cannot be removed (the entries are
    /// gone by then).
    pub fn purge(&self, filter: &PurgeFilter) -> Result<PurgeReport, StoreError> {
        // A purge must reach every entry, not only those found so far.
        self.wait_rebuilt();
        let now = self.clock.now();
        let picked: Vec<(Namespace, Key, u64)> = {
            let idx = self.lock();
            if let (Some(ns), Some(prefix)) = (&filter.namespace, &filter.prefix) {
                // The subtree only: what is under the directory, not the
                // namespace's size.
                idx.namespace(ns).map_or_else(Vec::new, |state| {
                    state
                        .tree()
                        .files_under(prefix.as_bytes())
                        .into_iter()
                        .filter_map(|slot| state.slot_entry(slot))
                        .filter(|(_, meta)| {
                            let expires = idx.expires_at(&state.policy, meta);
                            filter.select.matches(meta.mtime, expires, now)
                        })
                        .map(|(key, meta)| (ns.clone(), Key::from_index(&key), meta.version))
                        .collect()
                })
            } else {
                idx.namespaces()
                    .filter(|(ns, _)| filter.namespace.as_ref().is_none_or(|want| want == *ns))
                    .flat_map(|(ns, state)| {
                        let idx = &idx;
                        state.iter_lru().filter_map(move |(key, meta)| {
                            let expires = idx.expires_at(&state.policy, &meta);
                            filter
                                .select
                                .matches(meta.mtime, expires, now)
                                .then(|| (ns.clone(), Key::from_index(&key), meta.version))
                        })
                    })
                    .collect()
            }
        };
        let mut report = PurgeReport::default();
        for chunk in picked.chunks(CHUNK) {
            let mut trash = Vec::new();
            {
                let mut idx = self.lock();
                let mut victims = Vec::with_capacity(chunk.len());
                for (ns, key, version) in chunk {
                    if idx.peek(ns, key).is_none_or(|m| m.version != *version) {
                        continue;
                    }
                    let meta = idx.remove(ns, key).expect("peeked");
                    report.entries += 1;
                    report.bytes += meta.stored_bytes;
                    victims.push(Removed {
                        ns: ns.clone(),
                        key: key.clone(),
                        meta,
                        reason: RemoveReason::Purged,
                    });
                }
                self.move_to_trash_locked(&idx, victims, &mut trash);
            }
            unlink_all(&self.layout.io, &trash);
        }
        if filter.removes_dirs()
            && let (Some(ns), Some(prefix)) = (&filter.namespace, &filter.prefix)
        {
            self.remove_dirs_under(ns, prefix.as_bytes())?;
        }
        if report.entries > 0 {
            log::info!(
                "purged {} entries ({} bytes): {} in {}",
                report.entries,
                report.bytes,
                filter.select,
                match (&filter.namespace, &filter.prefix) {
                    (None, _) => "all namespaces".to_string(),
                    (Some(n), None) => format!("namespace {n}"),
                    (Some(n), Some(p)) => format!("{n}/{}", String::from_utf8_lossy(p.as_bytes())),
                }
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::KeyFormat;

    fn ns() -> Option<Namespace> {
        Some(Namespace::parse(b"news").unwrap())
    }

    #[test]
    fn a_prefix_is_a_directory_boundary() {
        let f = PurgeFilter {
            namespace: ns(),
            prefix: Some(Key::parse(b"a/b", KeyFormat::Any).unwrap()),
            select: PurgeSelect::All,
        };
        assert!(f.under_prefix(b"a/b/c"));
        assert!(f.under_prefix(b"a/b/c/d"));
        for not in [&b"a/bc"[..], b"a/b", b"a/bc/d", b"a", b"b/a/b/c"] {
            assert!(!f.under_prefix(not), "{:?}", String::from_utf8_lossy(not));
        }
        assert!(f.removes_dirs());
        let entries_only = PurgeFilter {
            select: PurgeSelect::Expired,
            ..f.clone()
        };
        assert!(!entries_only.removes_dirs());
    }

    #[test]
    fn the_wire_form_round_trips_and_refuses_what_is_not_it() {
        let key = Key::parse(b"a b/\xff/c", KeyFormat::Any).unwrap();
        for select in [
            PurgeSelect::All,
            PurgeSelect::Expired,
            PurgeSelect::OlderThan(Duration::from_secs(90)),
        ] {
            for prefix in [None, Some(key.clone())] {
                let f = PurgeFilter {
                    namespace: ns(),
                    prefix,
                    select,
                };
                assert_eq!(PurgeFilter::from_wire(ns(), &f.wire_value()), Ok(f));
            }
        }
        // The kernel may hand the value over with a trailing NUL.
        assert!(PurgeFilter::from_wire(None, b"all\0").is_ok());
        for bad in [
            &b"all under="[..],
            b"all under=a/../b",
            b"all prefix=a",
            b"some",
            b"all ",
        ] {
            assert!(PurgeFilter::from_wire(ns(), bad).is_err(), "{bad:?}");
        }
        assert!(
            PurgeFilter::from_wire(None, b"all under=a").is_err(),
            "a prefix needs a namespace"
        );
    }
}
