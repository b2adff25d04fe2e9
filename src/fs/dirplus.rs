//! READDIRPLUS: a listing with each name's attributes, so `ls -l` and
//! `du` after a start send no LOOKUP per entry.
//!
//! Invariants: what an entry's line hands out is what LOOKUP would have
//! (the same attributes, cached no longer than the entry's remaining TTL,
//! not cached at all while the key is being written), and it is a lookup:
//! the kernel takes one reference on every inode a line names except `.`
//! and `..` (`fuse_direntplus_link`), which its FORGET gives back, so the
//! inode table counts it here. A line shows the entry as it is at the
//! READDIRPLUS: one gone, renamed away or expired since OPENDIR is left
//! out of the reply, one replaced shows its new version. The entries of a
//! namespace, or of a directory inside one, are read a chunk at a time in
//! one index lock, each where OPENDIR found it (its slot, checked to hold
//! the same version under the same name; looked up by name only if not:
//! `store/listing.rs`); directories go through LOOKUP's own code one by
//! one (in the daemon: still no request).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use super::CacheFs;
use super::handles::{DirEntryItem, Handle};
use super::inodes::{InodeKind, Told, kind_of};
use super::types::{Entry, Errno, FileKind};
use crate::store::{EntryInfo, Key, KeyFormat, Listed, Namespace};

/// Entries looked up in the index per critical section.
const BATCH: usize = 256;

/// The key of `name` in directory `dir` of a listing: its name came out
/// of the index, so it is parsed already (as it went in), not again.
fn listed_key(dir: &[u8], name: &OsStr) -> Key {
    if dir.is_empty() {
        Key::from_index(name.as_bytes())
    } else {
        Key::from_index(&[dir, b"/", name.as_bytes()].concat())
    }
}

impl CacheFs {
    /// READDIRPLUS of directory `dir` from `offset`: `add(name, next
    /// offset, entry)` until it says the reply is full. Every entry `add`
    /// took has been counted as a lookup.
    pub fn readdirplus(
        &self,
        dir: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&OsStr, u64, &Entry) -> bool,
    ) -> Result<(), Errno> {
        let h = self.handles.get(fh).ok_or(Errno::EBADF)?;
        let Handle::Dir(listing) = &*h else {
            return Err(Errno::ENOTDIR);
        };
        let items = self.listing_items(fh, listing)?;
        // A directory inside a namespace is listed as the namespace is:
        // its entries from the index, a chunk per lock. (Through LOOKUP's
        // code, each name cost a stat of its backing file: `ls` of a
        // directory then cost with the size of the backing tree.)
        let (ns, path) = match kind_of(dir) {
            Some(InodeKind::Namespace(_)) | Some(InodeKind::SubDir) => match self.dir_of(dir) {
                Some((id, path)) => (self.store.namespace_by_id(id), path),
                None => (None, Vec::new()),
            },
            _ => (None, Vec::new()),
        };
        let start = (offset as usize).min(items.len());
        // The lines of a chunk that were sent: remembered (the kernel
        // holds one more reference on each) in one hold of the table's
        // lock, before the reply goes out and a FORGET can follow it.
        let mut sent = Vec::new();
        let remember = |sent: &mut Vec<(u64, Key, Told)>| {
            if let Some(ns) = &ns {
                self.inodes.remember_all(ns, items.len(), sent.drain(..));
            }
        };
        for (b, chunk) in items[start..].chunks(BATCH).enumerate() {
            let first = start + b * BATCH;
            let infos = match &ns {
                Some(ns) => self.listed_infos(ns, &path, chunk),
                None => vec![None; chunk.len()],
            };
            // After the lookups: no line outlives its entry's TTL, and no
            // key written now is cached (with no writer at all, which is
            // the rule, nothing to ask per line).
            let now = self.store.now();
            let quiet = !self.handles.has_writers() && self.redirects.is_empty();
            for (i, (item, info)) in chunk.iter().zip(infos).enumerate() {
                let name = item.name.as_os_str();
                let next = (first + i) as u64 + 1;
                let full = match (&ns, item.kind, info) {
                    (Some(ns), FileKind::RegularFile, Some(info)) => {
                        let told = Told::of(&info);
                        let entry = Entry::cached(told.attr(info.version), {
                            let busy = !quiet && self.is_busy(ns, &path, name);
                            Self::line_ttl(&info, now, busy)
                        });
                        let full = add(name, next, &entry);
                        if !full {
                            sent.push((info.version, listed_key(&path, name), told));
                        }
                        full
                    }
                    // Gone or expired since OPENDIR: left out.
                    (Some(_), FileKind::RegularFile, None) => false,
                    _ => match self.listed_other(dir, item.ino, name) {
                        Some(entry) => {
                            let full = add(name, next, &entry);
                            if full && entry.attr.kind == FileKind::RegularFile {
                                // An entry of a directory inside a namespace,
                                // looked up (a reference) but not sent.
                                self.forget(entry.attr.ino, 1);
                            }
                            full
                        }
                        None => false,
                    },
                };
                if full {
                    remember(&mut sent);
                    return Ok(());
                }
            }
            remember(&mut sent);
        }
        Ok(())
    }

    /// The live entry of each of a chunk's names (in directory `dir` of
    /// `ns`), read where OPENDIR found it, in one index lock.
    fn listed_infos(
        &self,
        ns: &Namespace,
        dir: &[u8],
        chunk: &[DirEntryItem],
    ) -> Vec<Option<EntryInfo>> {
        let files = chunk
            .iter()
            .filter_map(|item| match (item.kind, item.slot) {
                (FileKind::RegularFile, Some(slot)) => Some(Listed {
                    name: item.name.as_bytes(),
                    slot,
                    version: item.ino,
                }),
                _ => None,
            });
        let mut infos = self.store.listed_infos(ns, dir, files).into_iter();
        chunk
            .iter()
            .map(|item| match (item.kind, item.slot) {
                (FileKind::RegularFile, Some(_)) => infos.next().flatten(),
                _ => None,
            })
            .collect()
    }

    /// Whether `name` in directory `dir` of `ns` is being written (here):
    /// about to change version, so its line is not cached, as in
    /// `lookup_key`.
    fn is_busy(&self, ns: &Namespace, dir: &[u8], name: &OsStr) -> bool {
        let Ok(key) = Key::join(dir, name.as_bytes(), KeyFormat::Any) else {
            return false;
        };
        (self.handles.has_writers() && !self.handles.writers_of(ns, &key).is_empty())
            || self.redirects.targets(ns, &key)
    }

    /// How long the kernel may keep a line: not past the entry's TTL
    /// (`now`: the clock's time, read once a chunk), not at all while the
    /// key is being written.
    fn line_ttl(info: &EntryInfo, now: crate::store::UnixNanos, busy: bool) -> Duration {
        if busy {
            Duration::ZERO
        } else {
            Self::entry_ttl_at(info, now)
        }
    }

    /// The line of a directory or control file: as LOOKUP answers it.
    fn listed_other(&self, dir: u64, ino: u64, name: &OsStr) -> Option<Entry> {
        if name == "." || name == ".." {
            // The kernel takes no reference on these and reads no
            // attributes from them.
            return Some(Entry::cached(self.dir_attr(ino), Duration::ZERO));
        }
        let ctx = super::types::Ctx {
            uid: self.uid,
            gid: self.gid,
            pid: 0,
        };
        self.lookup(&ctx, dir, name).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::fs::inodes::{ROOT, namespace_ino};
    use crate::store::{ManualClock, Owner, Store, WriteFrom};

    const T0: i64 = 1_800_000_000 * 1_000_000_000;

    /// A store on a fresh backing dir (kept while the tempdir lives) with
    /// config `cfg`, on a clock the test moves.
    fn open_store(cfg: &str) -> (tempfile::TempDir, Arc<ManualClock>, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let store = Store::open(
            &dir.path().join("b"),
            Config::parse(cfg).unwrap(),
            clock.clone(),
        )
        .unwrap();
        (dir, clock, Arc::new(store))
    }

    fn put(store: &Store, ns: &Namespace, key: &str, data: &[u8], mode: u32) -> u64 {
        let owner = Owner {
            uid: 7,
            gid: 8,
            mode,
        };
        let key = Key::parse(key.as_bytes(), KeyFormat::Any).unwrap();
        let mut st = store
            .begin_write(ns, &key, WriteFrom::Empty, owner)
            .unwrap();
        store.write_staged(&mut st, 0, data).unwrap();
        store.publish(st).unwrap().version
    }

    /// (name, ino, size, perm, ttl) of every line from `offset`, at most
    /// `room` of them (the reply is full after that).
    fn lines(
        fs: &CacheFs,
        dir: u64,
        fh: u64,
        offset: u64,
        room: usize,
    ) -> Vec<(String, u64, u64, u16, Duration)> {
        let mut out = Vec::new();
        fs.readdirplus(dir, fh, offset, |name, _, e| {
            if out.len() == room {
                return true;
            }
            let n = name.to_string_lossy().into_owned();
            out.push((n, e.attr.ino, e.attr.size, e.attr.perm, e.entry_ttl));
            false
        })
        .unwrap();
        out
    }

    #[test]
    fn a_listing_gives_what_lookup_gives_and_counts_it_as_a_lookup() {
        let (_dir, clock, store) =
            open_store("[namespace.a]\nttl = \"30s\"\n[namespace.forever]\nttl = 0\n");
        let fs = CacheFs::new(Arc::clone(&store));
        let a = Namespace::parse(b"a").unwrap();
        let x = put(&store, &a, "x", b"12345", 0o640);
        clock.advance(Duration::from_secs(10));
        let y = put(&store, &a, "y", b"1", 0o600);
        let gone = put(&store, &a, "gone", b"", 0o644);
        let ns_ino = namespace_ino(store.namespace_id(&a).unwrap());
        let d = fs.opendir(ns_ino).unwrap();
        store
            .remove(&a, &Key::parse(b"gone", KeyFormat::Any).unwrap())
            .unwrap();
        clock.advance(Duration::from_secs(5));

        let got = lines(&fs, ns_ino, d.fh, 0, usize::MAX);
        let mut names: Vec<_> = got.iter().map(|l| l.0.as_str()).collect();
        names.sort();
        // Removed since OPENDIR: left out.
        assert_eq!(names, [".", "..", "x", "y"]);
        for (name, ino, size, perm, ttl) in &got {
            match name.as_str() {
                // Written at T0 with a 30 s TTL, listed at T0 + 15 s.
                "x" => assert_eq!(
                    (*ino, *size, *perm, *ttl),
                    (x, 5, 0o640, Duration::from_secs(15))
                ),
                "y" => assert_eq!(
                    (*ino, *size, *perm, *ttl),
                    (y, 1, 0o600, Duration::from_secs(25))
                ),
                _ => {}
            }
        }
        assert!(fs.inodes.holds(x) && fs.inodes.holds(y) && !fs.inodes.holds(gone));
        // One reference each: the kernel's FORGET of 1 frees them.
        fs.forget(x, 1);
        fs.forget(y, 1);
        assert!(!fs.inodes.holds(x) && !fs.inodes.holds(y));

        // A line that does not fit is not a reference: "." and ".." fit,
        // the first entry does not.
        let got = lines(&fs, ns_ino, d.fh, 0, 2);
        assert_eq!(got.len(), 2);
        assert!(!fs.inodes.holds(x) && !fs.inodes.holds(y));
        // From an offset: what is past it ("gone" still left out).
        assert_eq!(lines(&fs, ns_ino, d.fh, 2, usize::MAX).len(), 2);
        assert_eq!(lines(&fs, ns_ino, d.fh, 5, usize::MAX).len(), 0);
        fs.releasedir(d.fh);

        // Expired by the time of the READDIRPLUS: left out too.
        let d = fs.opendir(ns_ino).unwrap();
        clock.advance(Duration::from_secs(16));
        let got = lines(&fs, ns_ino, d.fh, 0, usize::MAX);
        let names: Vec<_> = got.iter().map(|l| l.0.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"y") && !names.contains(&"x"));
        fs.releasedir(d.fh);

        // No TTL: cached for the longest the kernel is ever told.
        let f = Namespace::parse(b"forever").unwrap();
        put(&store, &f, "k", b"k", 0o644);
        let f_ino = namespace_ino(store.namespace_id(&f).unwrap());
        let d = fs.opendir(f_ino).unwrap();
        let got = lines(&fs, f_ino, d.fh, 0, usize::MAX);
        let k = got.iter().find(|l| l.0 == "k").unwrap();
        assert_eq!(k.4, crate::fs::ENTRY_CACHE_MAX);
        fs.releasedir(d.fh);

        // The root lists namespaces with their directory attributes.
        let d = fs.opendir(ROOT).unwrap();
        let got = lines(&fs, ROOT, d.fh, 0, usize::MAX);
        let a_line = got.iter().find(|l| l.0 == "a").unwrap();
        assert_eq!(a_line.1, ns_ino);
        fs.releasedir(d.fh);
    }

    /// A directory inside a namespace: its entries' lines are theirs
    /// (not those of a key of the same name at the top), from the index.
    #[test]
    fn a_subdirectory_lists_its_own_entries_with_their_attributes() {
        let (_dir, clock, store) = open_store("[namespace.a]\nttl = \"30s\"\n");
        let fs = CacheFs::new(Arc::clone(&store));
        let a = Namespace::parse(b"a").unwrap();
        put(&store, &a, "x", b"top", 0o644);
        let dx = put(&store, &a, "d/e/x", b"12345", 0o640);
        let gone = put(&store, &a, "d/e/gone", b"", 0o644);
        let id = store.namespace_id(&a).unwrap();
        let d_ino = fs.subdirs.ino_for(id, b"d/e");
        let d = fs.opendir(d_ino).unwrap();
        store
            .remove(&a, &Key::parse(b"d/e/gone", KeyFormat::Any).unwrap())
            .unwrap();
        clock.advance(Duration::from_secs(5));
        let got = lines(&fs, d_ino, d.fh, 0, usize::MAX);
        let mut names: Vec<_> = got.iter().map(|l| l.0.as_str()).collect();
        names.sort();
        assert_eq!(names, [".", "..", "x"]);
        let x = got.iter().find(|l| l.0 == "x").unwrap();
        assert_eq!(
            (x.1, x.2, x.3, x.4),
            (dx, 5, 0o640, Duration::from_secs(25))
        );
        assert!(fs.inodes.holds(dx) && !fs.inodes.holds(gone));
        fs.forget(dx, 1);
        assert!(!fs.inodes.holds(dx));
        fs.releasedir(d.fh);
    }

    /// Between OPENDIR and READDIRPLUS: an entry replaced shows its new
    /// version and size, one renamed away (same version, perhaps in the
    /// same slot, under another name) is left out, one changed only in its
    /// metadata shows the new metadata.
    #[test]
    fn a_line_shows_the_entry_as_it_is_at_the_readdirplus() {
        let (_dir, _clock, store) = open_store("[namespace.a]\nttl = \"30s\"\n");
        let fs = CacheFs::new(Arc::clone(&store));
        let a = Namespace::parse(b"a").unwrap();
        let key = |k: &str| Key::parse(k.as_bytes(), KeyFormat::Any).unwrap();
        let old_x = put(&store, &a, "x", b"123", 0o644);
        let moved = put(&store, &a, "m", b"mm", 0o644);
        let same = put(&store, &a, "s", b"s", 0o644);
        put(&store, &a, "d/y", b"yy", 0o644);
        let ns_ino = namespace_ino(store.namespace_id(&a).unwrap());
        let d = fs.opendir(ns_ino).unwrap();
        let new_x = put(&store, &a, "x", b"1234567", 0o600);
        store.rename(&a, &key("m"), &key("n"), false).unwrap();
        assert_eq!(
            match store.entry_info(&a, &key("n")) {
                crate::store::Lookup::Hit(i) => i.version,
                _ => 0,
            },
            moved,
            "a rename keeps the version: the slot's version alone tells nothing"
        );
        let got = lines(&fs, ns_ino, d.fh, 0, usize::MAX);
        let mut names: Vec<_> = got.iter().map(|l| l.0.as_str()).collect();
        names.sort();
        assert_eq!(names, [".", "..", "d", "s", "x"]);
        let x = got.iter().find(|l| l.0 == "x").unwrap();
        assert_ne!(new_x, old_x);
        assert_eq!((x.1, x.2, x.3), (new_x, 7, 0o600));
        let s = got.iter().find(|l| l.0 == "s").unwrap();
        assert_eq!((s.1, s.2), (same, 1));
        assert!(fs.inodes.holds(new_x) && !fs.inodes.holds(old_x));
        assert!(!fs.inodes.holds(moved));
        fs.releasedir(d.fh);
    }

    /// A line's attributes are LOOKUP's (`entry_attr`), whatever the
    /// times (before the epoch, far after 2038) and mode bits.
    #[test]
    fn a_lines_attributes_are_lookups() {
        let (_dir, _clock, store) = open_store("");
        let fs = CacheFs::new(store);
        for (t, mode, stored) in [
            (T0 + 7, 0o100644, 5),
            (-1_500_000_000_123, 0o4755, 0),
            ((1i64 << 33) * 1_000_000_000 + 9, 0o170777, 513),
        ] {
            let info = EntryInfo {
                version: 77,
                logical_size: 9,
                stored_bytes: stored,
                mtime: t,
                ctime: t + 5,
                atime: t - 3,
                expires: None,
                ttl: Duration::ZERO,
                mode,
                uid: 7,
                gid: 8,
            };
            assert_eq!(Told::of(&info).attr(77), fs.entry_attr(&info));
        }
    }
}
