//! A namespace directory's mtime and ctime, as a local directory's move:
//! its mtime and ctime when a name appears in it or leaves it (create,
//! mknod, unlink, rename, and the removals the store tells of: expiry,
//! eviction, purge), its ctime when its owner, group or mode change.
//!
//! Kept in memory only: a namespace nobody changed since this daemon
//! started shows the start time (as before), and so does every namespace
//! after a restart. Nothing on disk is written for them: a directory's
//! times are not cache state, and a create must not cost a backing write.
//!
//! The kernel drops a directory's cached attributes when it creates,
//! unlinks or renames in it, so those changes show at once; a removal the
//! daemon makes itself (expiry, eviction) shows when the namespace's
//! attributes next expire in the kernel (`DIR_TTL`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;
use std::time::SystemTime;

/// (atime, mtime, ctime) of one directory.
type Times = (SystemTime, SystemTime, SystemTime);
/// A directory: its namespace's id and its path (`b""`: the namespace).
type DirId = (u32, Box<[u8]>);

/// Lock order: taken last, alone (nothing else is called under it), so
/// the store's change listener may take it under the store's locks.
///
/// Directories inside a namespace keep theirs here too, by path (`b""`:
/// the namespace itself), so a name made in `a/b` moves `a/b`'s times,
/// not the namespace's.
///
/// Ordered, so a directory's subtree is one range (`subtree`): an mkdir
/// or rmdir costs the subtree's size, not the number of directories
/// (a retain over all of them was 76 % of the request threads at 10^5).
pub struct NsTimes {
    started: SystemTime,
    /// (namespace id, dir path) -> times, for those changed since the start.
    times: Mutex<BTreeMap<DirId, Times>>,
}

/// The keys of `dir` and of every directory under it: `dir` itself and
/// the range of paths that begin with `dir/` (`/` + 1 is `0`, so the
/// range ends before the first path that does not).
fn subtree(t: &BTreeMap<DirId, Times>, id: u32, dir: &[u8]) -> Vec<DirId> {
    let lo: Box<[u8]> = [dir, b"/"].concat().into();
    let hi: Box<[u8]> = [dir, b"0"].concat().into();
    let own: DirId = (id, dir.into());
    let mut keys: Vec<DirId> = t
        .range((Bound::Included((id, lo)), Bound::Excluded((id, hi))))
        .map(|(k, _)| k.clone())
        .collect();
    if t.contains_key(&own) {
        keys.push(own);
    }
    keys
}

impl NsTimes {
    pub fn new(started: SystemTime) -> NsTimes {
        NsTimes {
            started,
            times: Mutex::new(BTreeMap::new()),
        }
    }

    /// A name appeared in namespace `id` or left it (also: `id` was just
    /// made, so an id reused after an rmdir starts afresh).
    pub fn names_changed(&self, id: u32) {
        self.names_changed_in(id, b"");
    }

    /// A name appeared in directory `dir` of namespace `id` or left it
    /// (also: `dir` was just made).
    pub fn names_changed_in(&self, id: u32, dir: &[u8]) {
        let now = SystemTime::now();
        crate::sync::lock(&self.times)
            .entry((id, dir.into()))
            .and_modify(|t| (t.1, t.2) = (now, now))
            .or_insert((now, now, now));
    }

    /// Its owner, group or mode changed.
    pub fn attrs_changed(&self, id: u32) {
        self.attrs_changed_in(id, b"");
    }

    pub fn attrs_changed_in(&self, id: u32, dir: &[u8]) {
        let now = SystemTime::now();
        crate::sync::lock(&self.times)
            .entry((id, dir.into()))
            .and_modify(|t| t.2 = now)
            .or_insert((self.started, self.started, now));
    }

    /// `utimensat` of a directory (`None`: left as is); its ctime is now.
    pub fn set_in(
        &self,
        id: u32,
        dir: &[u8],
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
    ) {
        let now = SystemTime::now();
        let mut t = crate::sync::lock(&self.times);
        let e = t
            .entry((id, dir.into()))
            .or_insert((self.started, self.started, self.started));
        e.0 = atime.unwrap_or(e.0);
        e.1 = mtime.unwrap_or(e.1);
        e.2 = now;
    }

    /// (atime, mtime, ctime) of directory `dir` of namespace `id`.
    pub fn get_in(&self, id: u32, dir: &[u8]) -> Times {
        crate::sync::lock(&self.times)
            .get(&(id, dir.into()))
            .copied()
            .unwrap_or((self.started, self.started, self.started))
    }

    /// A directory and everything under it moved: their times go along
    /// (a rename changes the directory's ctime, as a local one's).
    pub fn rename_in(&self, id: u32, from: &[u8], to: &[u8]) {
        let now = SystemTime::now();
        let mut t = crate::sync::lock(&self.times);
        for k in subtree(&t, id, to) {
            t.remove(&k);
        }
        for old in subtree(&t, id, from) {
            let v = t.remove(&old).expect("listed");
            let new: Box<[u8]> = [to, &old.1[from.len()..]].concat().into();
            t.insert((id, new), v);
        }
        t.entry((id, to.into()))
            .and_modify(|v| v.2 = now)
            .or_insert((self.started, self.started, now));
    }

    /// A directory and everything under it are gone.
    pub fn forget_in(&self, id: u32, dir: &[u8]) {
        let mut t = crate::sync::lock(&self.times);
        for k in subtree(&t, id, dir) {
            t.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    impl NsTimes {
        fn get(&self, id: u32) -> (SystemTime, SystemTime) {
            let (_, m, c) = self.get_in(id, b"");
            (m, c)
        }
    }

    #[test]
    fn names_move_both_times_attributes_only_the_ctime() {
        let start = SystemTime::now() - Duration::from_secs(60);
        let t = NsTimes::new(start);
        assert_eq!(t.get(3), (start, start));
        t.attrs_changed(3);
        let (m, c) = t.get(3);
        assert_eq!(m, start);
        assert!(c > start);
        t.names_changed(3);
        let (m2, c2) = t.get(3);
        assert!(m2 > start && c2 >= c && m2 == c2);
        assert_eq!(t.get(4), (start, start), "others keep theirs");
    }

    /// Whether `dir` of namespace `id` has times of its own.
    fn kept(t: &NsTimes, id: u32, dir: &[u8]) -> bool {
        crate::sync::lock(&t.times).contains_key(&(id, dir.into()))
    }

    #[test]
    fn forget_in_forgets_the_directory_and_its_subtree_only() {
        let t = NsTimes::new(SystemTime::now() - Duration::from_secs(60));
        // `a-b`, `a.b` and `a0` sort around `a/...` ('-' '.' < '/' < '0');
        // `ab` shares the prefix without the slash.
        let dirs: [&[u8]; 10] = [
            b"", b"a", b"a/b", b"a/b/c", b"a/\xff", b"a-b", b"a.b", b"a0", b"ab", b"b",
        ];
        for id in [3, 4] {
            for d in dirs {
                t.names_changed_in(id, d);
            }
        }
        t.forget_in(3, b"a");
        for d in [&b"a"[..], b"a/b", b"a/b/c", b"a/\xff"] {
            assert!(
                !kept(&t, 3, d),
                "{:?} is under a",
                String::from_utf8_lossy(d)
            );
            assert!(kept(&t, 4, d), "another namespace's {d:?} stays");
        }
        for d in [&b""[..], b"a-b", b"a.b", b"a0", b"ab", b"b"] {
            assert!(
                kept(&t, 3, d),
                "{:?} is not under a",
                String::from_utf8_lossy(d)
            );
        }
        t.forget_in(3, b"");
        assert!(!kept(&t, 3, b""), "the namespace's own times go");
        assert!(
            kept(&t, 3, b"b"),
            "forgetting the namespace itself leaves its dirs"
        );
    }

    #[test]
    fn a_renamed_subtree_takes_its_times_along_and_replaces_the_target() {
        let t = NsTimes::new(SystemTime::now() - Duration::from_secs(60));
        for d in [&b"a"[..], b"a/b", b"ab", b"c", b"c/old"] {
            t.names_changed_in(1, d);
        }
        let before = t.get_in(1, b"a/b");
        t.rename_in(1, b"a", b"c");
        assert!(!kept(&t, 1, b"a") && !kept(&t, 1, b"a/b"));
        assert!(!kept(&t, 1, b"c/old"), "the replaced target's subtree goes");
        assert_eq!(t.get_in(1, b"c/b"), before);
        assert!(kept(&t, 1, b"ab"), "a sibling sharing the prefix stays");
    }
}
