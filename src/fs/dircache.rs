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
//! Invariants:
//! - A listing is kept only when the listing taken now is, line for
//!   line, every listing whose lines may be in the kernel's copy (equal
//!   fingerprints: names, inodes, kinds, order). So the kernel never
//!   lists a name removed, expired, renamed or published since, whoever
//!   made the change (this daemon, another one, the sweeper), and the
//!   rule holds without a notification for each kind of change. A
//!   change the kernel made itself (create, unlink, rename through this
//!   mount) also resets its copy on its own (the directory's i_version).
//! - The listings whose lines may be in the copy: since the copy was
//!   last dropped, those of every OPENDIR answered (a refused keep drops
//!   it) and of every handle still open then (its READDIRs may still
//!   fill the copy after the drop).
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

/// How long after a listing was refilled its copy may serve `ls`: half
/// of the lifetime of the dentries that came with it, so that a `du`
/// started just before the bound still finds them valid.
pub const KEEP_MAX: Duration = Duration::from_secs(ENTRY_CACHE_MAX.as_secs() / 2);

/// Directories remembered at most; past it those with no open handle
/// are forgotten (their next OPENDIR refills the kernel's copy).
const DIRS_MAX: usize = 1 << 16;

/// What may be in the kernel's copy of one directory's listing.
struct Copy {
    /// Fingerprints of the listings whose lines may be in it.
    listings: Vec<u64>,
    /// When it was last dropped (the refill follows).
    dropped: Instant,
}

#[derive(Default)]
struct State {
    copies: HashMap<u64, Copy>,
    /// Open listings: handle -> (directory inode, fingerprint).
    open: HashMap<u64, (u64, u64)>,
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

    /// OPENDIR of directory `dir` answered with handle `fh` on a listing
    /// of fingerprint `fp`, at `now`: whether the kernel may keep its
    /// copy (`keep_cache`); if not, it drops it.
    pub fn opened(&self, dir: u64, fh: u64, fp: u64, now: Instant) -> bool {
        let mut st = crate::sync::lock(&self.state);
        let keep = st
            .copies
            .get(&dir)
            .is_some_and(|c| c.listings == [fp] && now.duration_since(c.dropped) < KEEP_MAX);
        if !keep {
            let mut listings = vec![fp];
            for &(d, f) in st.open.values() {
                if d == dir && !listings.contains(&f) {
                    listings.push(f);
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
                    dropped: now,
                },
            );
        }
        st.open.insert(fh, (dir, fp));
        keep
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
                slot: None,
            })
            .collect()
    }

    #[test]
    fn a_listing_is_kept_only_while_it_is_the_same_and_young() {
        let c = DirCache::default();
        let t0 = Instant::now();
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

        // Never listed: refilled.
        assert!(!c.opened(7, 1, a, t0));
        c.released(1);
        assert!(c.opened(7, 2, a, t0 + Duration::from_secs(1)));
        c.released(2);
        // Another directory has its own copy.
        assert!(!c.opened(8, 3, a, t0));
        c.released(3);
        // A change: dropped; the new listing is kept after it.
        let b = c.fingerprint(&items(&[("x", 10)]));
        assert!(!c.opened(7, 4, b, t0 + Duration::from_secs(2)));
        c.released(4);
        assert!(c.opened(7, 5, b, t0 + Duration::from_secs(3)));
        c.released(5);
        // Too old: its dentries are about to expire; refilled, then kept.
        let late = t0 + Duration::from_secs(2) + KEEP_MAX;
        assert!(!c.opened(7, 6, b, late));
        c.released(6);
        assert!(c.opened(7, 7, b, late));
        c.released(7);
    }

    #[test]
    fn a_listing_still_open_at_a_drop_may_refill_the_copy() {
        let c = DirCache::default();
        let t0 = Instant::now();
        let a = c.fingerprint(&items(&[("x", 10)]));
        let b = c.fingerprint(&items(&[("y", 11)]));
        assert!(!c.opened(7, 1, a, t0));
        // Handle 1 (listing a) is still open when b drops the copy: its
        // READDIRs may fill the copy with a's lines after the drop.
        assert!(!c.opened(7, 2, b, t0));
        c.released(2);
        assert!(!c.opened(7, 3, b, t0), "a's lines may be in the copy");
        c.released(1);
        c.released(3);
        // Handle 1 was open at that drop too: dropped once more, with no
        // other handle open, the copy holds b's lines only.
        assert!(!c.opened(7, 4, b, t0));
        c.released(4);
        assert!(c.opened(7, 5, b, t0));
        c.released(5);
    }
}
