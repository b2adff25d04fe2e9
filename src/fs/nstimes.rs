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

use std::collections::HashMap;
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
pub struct NsTimes {
    started: SystemTime,
    /// (namespace id, dir path) -> times, for those changed since the start.
    times: Mutex<HashMap<DirId, Times>>,
}

fn is_under(path: &[u8], dir: &[u8]) -> bool {
    path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

impl NsTimes {
    pub fn new(started: SystemTime) -> NsTimes {
        NsTimes {
            started,
            times: Mutex::new(HashMap::new()),
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
        t.retain(|(i, p), _| *i != id || !is_under(p, to));
        let moved: Vec<(Box<[u8]>, Times)> = t
            .iter()
            .filter(|((i, p), _)| *i == id && is_under(p, from))
            .map(|((_, p), v)| (p.clone(), *v))
            .collect();
        for (old, v) in moved {
            t.remove(&(id, old.clone()));
            let new: Box<[u8]> = [to, &old[from.len()..]].concat().into();
            t.insert((id, new), v);
        }
        t.entry((id, to.into()))
            .and_modify(|v| v.2 = now)
            .or_insert((self.started, self.started, now));
    }

    /// A directory and everything under it are gone.
    pub fn forget_in(&self, id: u32, dir: &[u8]) {
        crate::sync::lock(&self.times).retain(|(i, p), _| *i != id || !is_under(p, dir));
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
}
