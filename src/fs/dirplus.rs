//! READDIRPLUS: a listing with each name's attributes, so `ls -l` and
//! `du` after a start send no LOOKUP per entry.
//!
//! Invariants: what an entry's line hands out is what LOOKUP would have
//! (the same attributes, cached no longer than the entry's remaining TTL,
//! not cached at all while the key is being written), and it is a lookup:
//! the kernel takes one reference on every inode a line names except `.`
//! and `..` (`fuse_direntplus_link`), which its FORGET gives back, so the
//! inode table counts it here. An entry gone or expired since OPENDIR is
//! left out of the reply. The entries of a namespace, or of a directory
//! inside one, are looked up a chunk at a time in one index lock;
//! directories go through LOOKUP's own code one by one (in the daemon:
//! still no request).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use super::CacheFs;
use super::handles::{DirEntryItem, Handle};
use super::inodes::{InodeKind, kind_of};
use super::types::{Entry, Errno, FileKind};
use crate::store::{EntryInfo, Key, KeyFormat, Lookup, Namespace};

/// Entries looked up in the index per critical section.
const BATCH: usize = 256;

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
        let remember = |sent: &mut Vec<(Key, super::types::Attr)>| {
            if let Some(ns) = &ns {
                self.inodes.remember_all(ns, sent.drain(..));
            }
        };
        for (b, chunk) in items[start..].chunks(BATCH).enumerate() {
            let first = start + b * BATCH;
            let infos = match &ns {
                Some(ns) => self.listed_infos(ns, &path, chunk),
                None => vec![None; chunk.len()],
            };
            // After the lookups: no line outlives its entry's TTL.
            let now = self.store.now();
            for (i, (item, info)) in chunk.iter().zip(infos).enumerate() {
                let name = item.name.as_os_str();
                let next = (first + i) as u64 + 1;
                let full = match (&ns, item.kind, info) {
                    (Some(ns), FileKind::RegularFile, Some((key, info))) => {
                        let entry = self.listed_entry(ns, &key, &info, now);
                        let full = add(name, next, &entry);
                        if !full {
                            sent.push((key, entry.attr));
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

    /// The live version of each of a chunk's keys (names in directory
    /// `dir` of `ns`), in one index lock.
    fn listed_infos(
        &self,
        ns: &Namespace,
        dir: &[u8],
        chunk: &[DirEntryItem],
    ) -> Vec<Option<(Key, EntryInfo)>> {
        // The names came out of the index: they parse as they went in.
        let keys: Vec<Option<Key>> = chunk
            .iter()
            .map(|item| match item.kind {
                FileKind::RegularFile => Key::join(dir, item.name.as_bytes(), KeyFormat::Any).ok(),
                _ => None,
            })
            .collect();
        let mut infos = self
            .store
            .entry_infos(ns, keys.iter().flatten())
            .into_iter();
        keys.into_iter()
            .map(|key| {
                let key = key?;
                match infos.next()? {
                    Lookup::Hit(info) => Some((key, info)),
                    Lookup::Miss | Lookup::Expired => None,
                }
            })
            .collect()
    }

    /// An entry's line: as LOOKUP answers it (no miss counted: a listing
    /// is no read).
    /// `now`: the clock's time, read once a chunk.
    fn listed_entry(
        &self,
        ns: &Namespace,
        key: &Key,
        info: &EntryInfo,
        now: crate::store::UnixNanos,
    ) -> Entry {
        let attr = self.entry_attr(info);
        // A key being written (here) is about to change version: not
        // cached, as in `lookup_key`.
        let busy = (self.handles.has_writers() && !self.handles.writers_of(ns, key).is_empty())
            || self.redirects.targets(ns, key);
        let ttl = if busy {
            Duration::ZERO
        } else {
            Self::entry_ttl_at(info, now)
        };
        Entry::cached(attr, ttl)
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
}
