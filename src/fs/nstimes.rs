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

/// Lock order: taken last, alone (nothing else is called under it), so
/// the store's change listener may take it under the store's locks.
pub struct NsTimes {
    started: SystemTime,
    /// Namespace id -> (mtime, ctime), for those changed since the start.
    times: Mutex<HashMap<u32, (SystemTime, SystemTime)>>,
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
        let now = SystemTime::now();
        crate::sync::lock(&self.times).insert(id, (now, now));
    }

    /// Its owner, group or mode changed.
    pub fn attrs_changed(&self, id: u32) {
        let now = SystemTime::now();
        crate::sync::lock(&self.times)
            .entry(id)
            .and_modify(|t| t.1 = now)
            .or_insert((self.started, now));
    }

    /// (mtime, ctime) of namespace `id`.
    pub fn get(&self, id: u32) -> (SystemTime, SystemTime) {
        crate::sync::lock(&self.times)
            .get(&id)
            .copied()
            .unwrap_or((self.started, self.started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
