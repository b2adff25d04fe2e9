//! The kernel's own cache of listings (FOPEN_CACHE_DIR): whether an
//! OPENDIR may let the kernel list a directory from the copy it kept of
//! an earlier listing (`keep_cache`), so a repeated `ls -f` of a big
//! namespace sends no READDIRPLUS and the kernel instantiates no dentry
//! and inode per name again.
//!
//! Every listing is opened with FOPEN_CACHE_DIR: the kernel keeps the
//! lines it was sent, as they were sent, in the directory's page cache.
//! An OPENDIR without FOPEN_KEEP_CACHE drops that copy
//! (`invalidate_inode_pages2`), so whether a copy may be used again is
//! decided here, lazily, at each OPENDIR: nothing is sent to the kernel
//! when a name changes, and a publish pays nothing for it.
//!
//! A listing is known by its stamp: inside a namespace, the directory's
//! generation and the earliest expiry of what it listed
//! (`store::ListingStamp`: the same generation before that instant is the
//! same listing), so the OPENDIR of a kept listing costs one lookup of the
//! directory in the index, not a walk of its entries (whose slots, in a
//! table of 10^5, each missed the CPU cache); for the mount's root and
//! `.cachefs/` (a few names, the root's partly read from the backing
//! dir), a keyed fingerprint of the lines. A kept OPENDIR takes no
//! listing: its handle takes one at its first READDIR, if the kernel
//! sends one (its copy was incomplete, or lost a page).
//!
//! Invariants:
//! - A listing is kept only when the listing now is, line for line,
//!   every listing whose lines may be in the kernel's copy (one stamp,
//!   still holding). So the kernel never lists a name removed, expired,
//!   renamed or published since, whoever made the change (this daemon,
//!   another one, the sweeper), and the rule holds without a
//!   notification for each kind of change. A change the kernel made
//!   itself (create, unlink, rename through this mount) also resets its
//!   copy on its own (the directory's i_version). Debug builds take the
//!   listing of a kept OPENDIR all the same and check that it is the one
//!   the copy was filled with.
//! - The listings whose lines may be in the copy: since the copy was
//!   last dropped, those of every OPENDIR answered (a refused keep drops
//!   it) and of every handle still open then (its READDIRs may still
//!   fill the copy after the drop); a kept handle's is the copy's until
//!   it takes its own, which joins them (`relisted`).
//! - A copy is kept for `KEEP_MAX` at most after it was dropped and
//!   refilled: its lines come from READDIRPLUS, which also gave the
//!   kernel each name's dentry and attributes for at most
//!   `ENTRY_CACHE_MAX`. A listing served from the copy gives none, so a
//!   `du` or `ls -l` after it relies on those; past the bound the listing
//!   is taken afresh (READDIRPLUS again), rather than each name being
//!   looked up alone.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::handles::DirEntryItem;
use super::types::ENTRY_CACHE_MAX;
use crate::store::{ListingStamp, UnixNanos};

/// How long after a listing was refilled its copy may serve `ls`: half
/// of the lifetime of the dentries that came with it, so that a `du`
/// started just before the bound still finds them valid.
pub const KEEP_MAX: Duration = Duration::from_secs(ENTRY_CACHE_MAX.as_secs() / 2);

/// Directories remembered at most; past it those with no open handle
/// are forgotten (their next OPENDIR refills the kernel's copy).
const DIRS_MAX: usize = 1 << 16;

/// What may be in the kernel's copy of one directory's listing.
struct Copy {
    /// Generations (or fingerprints) of the listings whose lines may be
    /// in it.
    listings: Vec<u64>,
    /// The earliest of their `until`s.
    until: Option<UnixNanos>,
    /// When it was last dropped (the refill follows).
    dropped: Instant,
    /// The fingerprint of the listing it was refilled with (debug builds:
    /// see `CacheFs::check_kept`).
    fingerprint: u64,
}

impl Copy {
    fn holds(&self, generation: u64, t: UnixNanos, now: Instant) -> bool {
        self.listings == [generation]
            && self.until.is_none_or(|u| t < u)
            && now.duration_since(self.dropped) < KEEP_MAX
    }
}

fn earliest(a: Option<UnixNanos>, b: Option<UnixNanos>) -> Option<UnixNanos> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[derive(Default)]
struct State {
    copies: HashMap<u64, Copy>,
    /// Open listings: handle -> (directory inode, stamp).
    open: HashMap<u64, (u64, ListingStamp)>,
}

/// Lock order: a leaf (nothing is called under it).
pub struct DirCache {
    hasher: RandomState,
    state: Mutex<State>,
}

impl Default for DirCache {
    fn default() -> Self {
        DirCache {
            hasher: RandomState::new(),
            state: Mutex::default(),
        }
    }
}

impl DirCache {
    /// A listing's fingerprint. Keyed at random per daemon, so nobody
    /// can name keys whose listings collide.
    pub fn fingerprint(&self, items: &[DirEntryItem]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_usize(items.len());
        for item in items {
            h.write_u64(item.ino);
            h.write_u8(item.kind as u8);
            let name = item.name.as_bytes();
            // The length first: names run together otherwise.
            h.write_usize(name.len());
            h.write(name);
        }
        h.finish()
    }

    /// OPENDIR of directory `dir`, now at `generation`, answered with
    /// handle `fh` whose listing is not taken yet, at `t` (the store's
    /// clock) and `now`: whether the kernel may keep its copy. If so the
    /// handle's listing is the copy's; if not, nothing changed here and
    /// the caller takes the listing (`opened`).
    pub fn keep(&self, dir: u64, fh: u64, generation: u64, t: UnixNanos, now: Instant) -> bool {
        let mut st = crate::sync::lock(&self.state);
        let Some(c) = st.copies.get(&dir).filter(|c| c.holds(generation, t, now)) else {
            return false;
        };
        let stamp = ListingStamp {
            generation,
            until: c.until,
        };
        st.open.insert(fh, (dir, stamp));
        true
    }

    /// The fingerprint of the listing the copy of `dir` was refilled
    /// with, and the copy's `until`.
    pub fn refilled_with(&self, dir: u64) -> Option<(u64, Option<UnixNanos>)> {
        let st = crate::sync::lock(&self.state);
        st.copies.get(&dir).map(|c| (c.fingerprint, c.until))
    }

    /// OPENDIR of directory `dir` answered with handle `fh` on a listing
    /// taken under `stamp` (of fingerprint `fingerprint`, or 0 where none
    /// was computed), at `t` and `now`: whether the kernel may keep its
    /// copy (`keep_cache`); if not, it drops it.
    pub fn opened(
        &self,
        dir: u64,
        fh: u64,
        stamp: ListingStamp,
        fingerprint: u64,
        t: UnixNanos,
        now: Instant,
    ) -> bool {
        let mut st = crate::sync::lock(&self.state);
        let keep = st
            .copies
            .get(&dir)
            .is_some_and(|c| c.holds(stamp.generation, t, now));
        if !keep {
            let mut listings = vec![stamp.generation];
            let mut until = stamp.until;
            for &(d, s) in st.open.values() {
                if d == dir {
                    if !listings.contains(&s.generation) {
                        listings.push(s.generation);
                    }
                    until = earliest(until, s.until);
                }
            }
            if st.copies.len() >= DIRS_MAX && !st.copies.contains_key(&dir) {
                let open: Vec<u64> = st.open.values().map(|&(d, _)| d).collect();
                st.copies.retain(|d, _| open.contains(d));
            }
            st.copies.insert(
                dir,
                Copy {
                    listings,
                    until,
                    dropped: now,
                    fingerprint,
                },
            );
        }
        st.open.insert(fh, (dir, stamp));
        keep
    }

    /// Handle `fh` of a kept OPENDIR took its own listing, under `stamp`
    /// (the kernel sent a READDIR): its lines may go into the copy too.
    pub fn relisted(&self, fh: u64, stamp: ListingStamp) {
        let mut st = crate::sync::lock(&self.state);
        let Some(&(dir, was)) = st.open.get(&fh) else {
            return;
        };
        if was == stamp {
            return;
        }
        st.open.insert(fh, (dir, stamp));
        if let Some(c) = st.copies.get_mut(&dir) {
            if !c.listings.contains(&stamp.generation) {
                c.listings.push(stamp.generation);
            }
            c.until = earliest(c.until, stamp.until);
        }
    }

    /// RELEASEDIR of handle `fh`: its READDIRs fill nothing any more.
    pub fn released(&self, fh: u64) {
        crate::sync::lock(&self.state).open.remove(&fh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::types::FileKind;

    fn items(names: &[(&str, u64)]) -> Vec<DirEntryItem> {
        names
            .iter()
            .map(|&(n, ino)| DirEntryItem {
                ino,
                kind: FileKind::RegularFile,
                name: n.into(),
            })
            .collect()
    }

    fn stamp(generation: u64, until: Option<UnixNanos>) -> ListingStamp {
        ListingStamp { generation, until }
    }

    const T: UnixNanos = 1_000;

    #[test]
    fn fingerprints_tell_listings_apart() {
        let c = DirCache::default();
        let a = c.fingerprint(&items(&[("x", 10), ("y", 11)]));
        // The same names, another version of one, another order, names
        // run together: all other listings.
        for other in [
            items(&[("x", 10), ("y", 12)]),
            items(&[("y", 11), ("x", 10)]),
            items(&[("x", 10)]),
            items(&[("xy", 10), ("", 11)]),
        ] {
            assert_ne!(a, c.fingerprint(&other));
        }
        assert_eq!(a, c.fingerprint(&items(&[("x", 10), ("y", 11)])));
    }

    #[test]
    fn a_listing_is_kept_only_while_it_is_the_same_and_young() {
        let c = DirCache::default();
        let t0 = Instant::now();
        let a = stamp(5, None);
        // Never listed: refilled; nothing kept before.
        assert!(!c.keep(7, 1, 5, T, t0));
        assert!(!c.opened(7, 1, a, 0, T, t0));
        c.released(1);
        assert!(c.keep(7, 2, 5, T, t0 + Duration::from_secs(1)));
        c.released(2);
        // Another directory has its own copy.
        assert!(!c.keep(8, 3, 5, T, t0));
        assert!(!c.opened(8, 3, a, 0, T, t0));
        c.released(3);
        // A change (another generation): not kept; the new listing is
        // kept after it.
        assert!(!c.keep(7, 4, 6, T, t0 + Duration::from_secs(2)));
        assert!(!c.opened(7, 4, stamp(6, None), 0, T, t0 + Duration::from_secs(2)));
        c.released(4);
        assert!(c.keep(7, 5, 6, T, t0 + Duration::from_secs(3)));
        c.released(5);
        // Too old: its dentries are about to expire; refilled, then kept.
        let late = t0 + Duration::from_secs(2) + KEEP_MAX;
        assert!(!c.keep(7, 6, 6, T, late));
        assert!(!c.opened(7, 6, stamp(6, None), 0, T, late));
        c.released(6);
        assert!(c.keep(7, 7, 6, T, late));
        c.released(7);
    }

    #[test]
    fn a_listing_is_not_kept_once_an_entry_in_it_expires() {
        let c = DirCache::default();
        let t0 = Instant::now();
        assert!(!c.opened(7, 1, stamp(5, Some(T + 10)), 0, T, t0));
        c.released(1);
        assert!(c.keep(7, 2, 5, T + 9, t0));
        c.released(2);
        // The same generation, but an entry listed has expired since.
        assert!(!c.keep(7, 3, 5, T + 10, t0));
        assert!(!c.opened(7, 3, stamp(5, Some(T + 40)), 0, T + 10, t0));
        c.released(3);
        assert!(c.keep(7, 4, 5, T + 39, t0));
        c.released(4);
    }

    #[test]
    fn a_listing_still_open_at_a_drop_may_refill_the_copy() {
        let c = DirCache::default();
        let t0 = Instant::now();
        let (a, b) = (stamp(1, None), stamp(2, Some(T + 100)));
        assert!(!c.opened(7, 1, a, 0, T, t0));
        // Handle 1 (listing a) is still open when b drops the copy: its
        // READDIRs may fill the copy with a's lines after the drop.
        assert!(!c.opened(7, 2, b, 0, T, t0));
        c.released(2);
        assert!(!c.keep(7, 3, 2, T, t0), "a's lines may be in the copy");
        assert!(!c.opened(7, 3, b, 0, T, t0));
        c.released(1);
        c.released(3);
        // Handle 1 was open at that drop too: dropped once more, with no
        // other handle open, the copy holds b's lines only.
        assert!(!c.keep(7, 4, 2, T, t0));
        assert!(!c.opened(7, 4, b, 0, T, t0));
        c.released(4);
        assert!(c.keep(7, 5, 2, T, t0));
        c.released(5);
    }

    #[test]
    fn a_kept_handle_that_takes_another_listing_spoils_the_copy() {
        let c = DirCache::default();
        let t0 = Instant::now();
        assert!(!c.opened(7, 1, stamp(1, None), 0, T, t0));
        c.released(1);
        assert!(c.keep(7, 2, 1, T, t0));
        // The kernel lost a page and asked handle 2 for lines: by then
        // the directory had changed (generation 2); the same listing
        // again changes nothing.
        c.relisted(2, stamp(1, None));
        assert!(c.keep(7, 3, 1, T, t0));
        c.released(3);
        c.relisted(2, stamp(2, Some(T + 5)));
        c.released(2);
        assert!(!c.keep(7, 4, 2, T, t0), "the copy may mix both listings");
        assert!(!c.keep(7, 4, 1, T, t0));
        assert!(!c.opened(7, 4, stamp(2, None), 0, T, t0));
        c.released(4);
        assert!(c.keep(7, 5, 2, T, t0));
        c.released(5);
    }
}
