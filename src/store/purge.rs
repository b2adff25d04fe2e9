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
//! The same `PurgeFilter` drives the offline purge (`offline.rs`), which
//! reads entry trailers instead of the index.

use std::str::FromStr;
use std::time::Duration;

use super::Store;
use super::clock::UnixNanos;
use super::index::{RemoveReason, Removed};
use super::reaper::unlink_all;
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

/// A purge request: a selection, in one namespace or in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeFilter {
    pub namespace: Option<Namespace>,
    pub select: PurgeSelect,
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
    /// Removes the entries `filter` selects; counts them as purged.
    pub fn purge(&self, filter: &PurgeFilter) -> PurgeReport {
        // A purge must reach every entry, not only those found so far.
        self.wait_rebuilt();
        let now = self.clock.now();
        let picked: Vec<(Namespace, Key, u64)> = {
            let idx = self.lock();
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
        if report.entries > 0 {
            log::info!(
                "purged {} entries ({} bytes): {} in {}",
                report.entries,
                report.bytes,
                filter.select,
                filter
                    .namespace
                    .as_ref()
                    .map_or("all namespaces".to_string(), |n| format!("namespace {n}"))
            );
        }
        report
    }
}
