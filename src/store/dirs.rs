//! Directories inside a namespace: mkdir, rmdir, listings, the rename of
//! a whole directory, and their markers in the backing dir.
//!
//! A key is a path (`a/b/name`); the index derives each namespace's tree
//! from its keys (index/tree.rs). A directory made by `mkdir` is explicit:
//! it stays while empty, and persists as a real directory mirrored under
//! `dirs/<namespace>/a/b` in the backing dir (made before the index knows
//! it, removed before the index forgets it, so a crash leaves at worst a
//! marker for an empty directory the user was not yet told is gone). A
//! start makes every marker found an explicit directory again; entries
//! bring their own directories back as implied ones (recovery rebuilds the
//! tree from the keys in the entries' trailers).
//!
//! Invariants: no key is both an entry and a directory, and no entry's
//! path goes through an entry (checked under the index lock where a key
//! is claimed, published, made a directory); mkdir needs the parent to
//! be a directory; rmdir needs the directory empty of live entries.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::index::{Index, PathConflict, RemoveReason, Removed};
use super::reaper::unlink_all;
use super::{Store, StoreError};
use crate::names::{DEPTH_MAX, Key, KeyFormat, Namespace, parent_of};

/// One name in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirItem {
    /// An entry, with its live version.
    File {
        name: Vec<u8>,
        version: u64,
    },
    Dir {
        name: Vec<u8>,
    },
}

impl From<PathConflict> for StoreError {
    fn from(c: PathConflict) -> StoreError {
        match c {
            PathConflict::IsDir => StoreError::IsDir,
            PathConflict::NotDir => StoreError::NotDir,
        }
    }
}

impl Store {
    pub(super) fn dir_marker(&self, ns: &Namespace, path: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let mut p = self
            .layout
            .dirs_dir()
            .join(std::ffi::OsStr::from_bytes(ns.as_bytes()));
        if !path.is_empty() {
            p.push(std::ffi::OsStr::from_bytes(path));
        }
        p
    }

    /// Whether `path` (a parsed key path, or `b""`) is a directory of
    /// namespace `ns_id`.
    pub fn is_dir(&self, ns_id: u32, path: &[u8]) -> bool {
        let idx = self.lock();
        idx.namespace_by_id(ns_id)
            .and_then(|ns| idx.namespace(ns))
            .is_some_and(|s| s.tree().is_dir(path))
    }

    /// `mkdir`: makes `path` an explicit directory of `ns`. Its parent must
    /// be one (`NotFound`); a live entry or directory there is `Exists`.
    pub fn make_dir(&self, ns: &Namespace, path: &Key) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        let p = path.as_bytes();
        if state.tree().is_dir(p) {
            return Err(StoreError::Exists);
        }
        if let Some(m) = state.peek(path) {
            if idx.expires_at(&state.policy, &m).is_none_or(|at| at > now) {
                return Err(StoreError::Exists);
            }
            self.drop_expired_locked(&mut idx, ns, path);
        }
        let state = idx.namespace(ns).expect("seen above");
        if !state.tree().is_dir(parent_of(p)) {
            return Err(state
                .path_conflict(p)
                .map_or(StoreError::NotFound, StoreError::from));
        }
        if self.claims.is_claimed(ns, path) {
            return Err(StoreError::Exists);
        }
        self.layout.io.create_dir_all(&self.dir_marker(ns, p))?;
        self.changes.dir(ns, p);
        // The marker's parents are markers too: an implied parent (an
        // import's, a recovery's) becomes explicit now, not at the next
        // start.
        idx.namespace_mut(ns)
            .expect("seen above")
            .tree_mut()
            .make_dir_path(p);
        Ok(())
    }

    /// Takes an expired entry out so its name can become a directory.
    fn drop_expired_locked(&self, idx: &mut Index, ns: &Namespace, key: &Key) {
        if let Some(meta) = idx.remove(ns, key) {
            let mut trash = Vec::new();
            let victim = Removed {
                ns: ns.clone(),
                key: key.clone(),
                meta,
                reason: RemoveReason::Expired,
            };
            self.move_to_trash_locked(idx, vec![victim], &mut trash);
            unlink_all(&self.layout.io, &trash);
        }
    }

    /// `rmdir`: removes an empty directory (`NotEmpty` while a live entry
    /// or a directory is in it; expired entries do not count).
    pub fn remove_dir(&self, ns: &Namespace, path: &Key) -> Result<(), StoreError> {
        self.sweep_expired();
        let mut idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        let p = path.as_bytes();
        let Some(node) = state.tree().node(p) else {
            return Err(match state.peek(path) {
                Some(_) => StoreError::NotDir,
                None => StoreError::NotFound,
            });
        };
        if !node.is_empty() {
            return Err(StoreError::NotEmpty);
        }
        self.remove_marker(ns, p)?;
        idx.namespace_mut(ns)
            .expect("seen above")
            .tree_mut()
            .remove_dir(p);
        Ok(())
    }

    fn remove_marker(&self, ns: &Namespace, path: &[u8]) -> Result<(), StoreError> {
        let marker = self.dir_marker(ns, path);
        self.forget_dir_record(ns, path);
        let r = match self.layout.io.remove_dir(&marker) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            // Markers of directories the index no longer has (a crash
            // between a marker's making and its parent's removal): ours,
            // only directories, never followed (remove_dir_all does not
            // follow symlinks).
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => self
                .layout
                .io
                .remove_dir_all(&marker)
                .map_err(StoreError::from),
            Err(e) => Err(e.into()),
        };
        // Noted once the marker is gone: a follower reading the record
        // before would find the marker and never be told again.
        if r.is_ok() {
            self.changes.dir(ns, path);
        }
        r
    }

    /// Live keys under directory `path` (at any depth), with versions.
    pub(super) fn keys_under(&self, ns: &Namespace, path: &[u8]) -> Vec<(Key, u64)> {
        let idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return Vec::new();
        };
        state
            .tree()
            .files_under(path)
            .into_iter()
            .filter_map(|slot| state.slot_entry(slot))
            .map(|(k, m)| (Key::from_index(&k), m.version))
            .collect()
    }

    /// Removes the explicit directories at and under `path` (deepest
    /// first), once no entry is left in them.
    pub(super) fn remove_dirs_under(&self, ns: &Namespace, path: &[u8]) -> Result<(), StoreError> {
        let mut idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return Ok(());
        };
        let mut dirs = state.tree().dirs_under(path);
        dirs.reverse();
        for d in dirs {
            let state = idx.namespace(ns).expect("seen above");
            if d.is_empty() || !state.tree().node(&d).is_some_and(|n| n.is_empty()) {
                continue;
            }
            self.remove_marker(ns, &d)?;
            idx.namespace_mut(ns)
                .expect("seen above")
                .tree_mut()
                .remove_dir(&d);
        }
        Ok(())
    }

    /// Renames directory `from` to `to` within `ns`: its markers move in
    /// one backing rename, then each entry under it is renamed through the
    /// store (O(entries), each a republish: the trailer names the key).
    /// `to` must not exist, or be an empty directory (replaced).
    pub fn rename_dir(&self, ns: &Namespace, from: &Key, to: &Key) -> Result<(), StoreError> {
        let (f, t) = (from.as_bytes(), to.as_bytes());
        if t.starts_with(f) && t.get(f.len()) == Some(&b'/') {
            // Into itself.
            return Err(StoreError::InvalidValue);
        }
        {
            let mut idx = self.lock();
            let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
            if !state.tree().is_dir(f) {
                return Err(StoreError::NotFound);
            }
            if !state.tree().is_dir(parent_of(t)) {
                return Err(StoreError::NotFound);
            }
            match state.tree().node(t) {
                Some(n) if !n.is_empty() => return Err(StoreError::NotEmpty),
                Some(_) => {
                    self.remove_marker(ns, t)?;
                    idx.namespace_mut(ns)
                        .expect("seen")
                        .tree_mut()
                        .remove_dir(t);
                }
                None if state.peek(to).is_some() => return Err(StoreError::NotDir),
                None => {}
            }
            let state = idx.namespace(ns).expect("seen");
            let explicit: Vec<Vec<u8>> = state
                .tree()
                .dirs_under(f)
                .into_iter()
                .filter(|d| state.tree().node(d).is_some_and(|n| n.is_explicit()))
                .collect();
            let (from_marker, to_marker) = (self.dir_marker(ns, f), self.dir_marker(ns, t));
            if let Some(parent) = to_marker.parent() {
                self.layout.io.create_dir_all(parent)?;
            }
            match self.layout.io.rename(&from_marker, &to_marker) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            for d in &explicit {
                let moved = [t, &d[f.len()..]].concat();
                self.move_dir_record(ns, d, &moved)?;
                // The old paths are noted as their markers go, once the
                // entries under them have moved (`remove_dirs_under`).
                self.changes.dir(ns, &moved);
            }
            let tree = idx.namespace_mut(ns).expect("seen").tree_mut();
            // The target's parents have markers now (see `make_dir`).
            if !parent_of(t).is_empty() {
                tree.make_dir_path(parent_of(t));
            }
            for d in explicit {
                let moved = [t, &d[f.len()..]].concat();
                tree.make_dir(&moved);
            }
        }
        for (key, _) in self.keys_under(ns, f) {
            let moved = [t, &key.as_bytes()[f.len()..]].concat();
            let new_key = Key::parse(&moved, KeyFormat::Any)?;
            match self.rename(ns, &key, &new_key, false) {
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        self.remove_dirs_under(ns, f)
    }

    /// A start: every marker under `dirs/` is an explicit directory again
    /// (on the rebuild's thread, before its entries: they add to the trees
    /// the markers start). Until it is done a lookup that finds nothing
    /// looks for a marker (`dir_from_marker`), so the mount serves paths
    /// through directories at once: at 10^5 directories the walk took 1.4 s.
    /// A marker goes in only if it is still there under the index lock,
    /// where every mkdir, rmdir and rename changes markers: one removed
    /// since the walk does not come back.
    pub(super) fn load_dir_markers(&self) -> io::Result<()> {
        let root = self.layout.dirs_dir();
        let top = match std::fs::read_dir(root) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.rebuild.markers_loaded.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for ent in top.flatten() {
            use std::os::unix::ffi::OsStrExt;
            let Ok(ns) = Namespace::parse(ent.file_name().as_bytes()) else {
                continue;
            };
            if !ent.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let mut found = Vec::new();
            walk_markers(&ent.path(), Vec::new(), 0, &mut found);
            // Batches, so requests wait at most one of them.
            for batch in found.chunks(MARKER_BATCH) {
                let mut idx = self.lock();
                self.ensure_namespace_locked(&mut idx, &ns);
                for path in batch {
                    if self.marker_is_dir(&ns, path) {
                        make_dir_found(&mut idx, &ns, path);
                    }
                }
            }
        }
        self.rebuild.markers_loaded.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// While the markers are still being loaded, or while other daemons
    /// share the backing dir (one may have made it): whether `path`,
    /// which the index does not know, has a marker, made an explicit
    /// directory then.
    pub(super) fn dir_from_marker(&self, ns: &Namespace, path: &Key) -> bool {
        if self.rebuild.markers_loaded.load(Ordering::Relaxed) && self.follower.company.alone() {
            return false;
        }
        // Looked at first without the lock (most names looked up are no
        // directory), then again under it, where every mkdir, rmdir and
        // rename of this daemon changes markers, fresh: a view of another
        // host's volume shows a marker removed there for a while, and
        // taken in, a directory removed would come back.
        if !self.marker_is_dir(ns, path.as_bytes()) {
            return false;
        }
        let mut idx = self.lock();
        if !self.marker_is_dir_fresh(ns, path.as_bytes()) || idx.namespace(ns).is_none() {
            return false;
        }
        make_dir_found(&mut idx, ns, path.as_bytes());
        idx.namespace(ns)
            .is_some_and(|s| s.tree().is_dir(path.as_bytes()))
    }

    /// Another daemon made, removed or renamed directory `path` (its
    /// record said so): the tree follows the markers. Made: it and the
    /// ancestors with markers become explicit. Removed: each explicit
    /// directory at or under it whose marker is gone leaves the tree if
    /// empty (entries this daemon still holds under it go by their own
    /// records, written before this one), and the kernel drops its name.
    pub(super) fn recheck_dir(&self, ns: &Namespace, path: &Key) {
        let p = path.as_bytes();
        let mut idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return;
        };
        let ns_id = state.id;
        if self.marker_is_dir_fresh(ns, p) {
            let mut at = p;
            loop {
                if self.marker_is_dir_fresh(ns, at) {
                    make_dir_found(&mut idx, ns, at);
                }
                at = parent_of(at);
                if at.is_empty() {
                    return;
                }
            }
        }
        let mut dirs = state.tree().dirs_under(p);
        dirs.reverse();
        for d in dirs {
            let state = idx.namespace(ns).expect("seen above");
            let gone = state
                .tree()
                .node(&d)
                .is_some_and(|n| n.is_explicit() && n.is_empty())
                && !self.marker_is_dir_fresh(ns, &d);
            if !gone {
                continue;
            }
            idx.namespace_mut(ns)
                .expect("seen above")
                .tree_mut()
                .remove_dir(&d);
            if let Ok(key) = Key::parse(&d, KeyFormat::Any) {
                self.tell(super::Change::Removed { ns_id, key: &key });
            }
        }
    }

    /// `marker_is_dir`, asked of the volume itself: a view of another
    /// host's volume shows a marker removed there for a while.
    fn marker_is_dir_fresh(&self, ns: &Namespace, path: &[u8]) -> bool {
        let marker = self.dir_marker(ns, path);
        self.layout.io.stat_fresh(&marker).is_ok() && self.marker_is_dir(ns, path)
    }

    fn marker_is_dir(&self, ns: &Namespace, path: &[u8]) -> bool {
        std::fs::symlink_metadata(self.dir_marker(ns, path)).is_ok_and(|m| m.is_dir())
    }
}

/// Markers made directories per hold of the index lock.
const MARKER_BATCH: usize = 2048;

/// A marker found: an explicit directory, unless an entry is in its way.
fn make_dir_found(idx: &mut Index, ns: &Namespace, path: &[u8]) {
    let Some(state) = idx.namespace_mut(ns) else {
        return;
    };
    // A marker's subdirectories come first (walk_markers): its own path is
    // then a directory already, made explicit here.
    if state.tree().is_dir(path) || state.path_conflict(path).is_none() {
        state.tree_mut().make_dir(path);
    }
}

/// Collects the marker directories under `dir` (a key path each), never
/// following a symlink, at most `DEPTH_MAX` deep.
fn walk_markers(dir: &std::path::Path, prefix: Vec<u8>, depth: usize, out: &mut Vec<Vec<u8>>) {
    use std::os::unix::ffi::OsStrExt;
    if depth >= DEPTH_MAX {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for ent in rd.flatten() {
        if !ent.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = ent.file_name();
        let path = if prefix.is_empty() {
            name.as_bytes().to_vec()
        } else {
            [&prefix[..], b"/", name.as_bytes()].concat()
        };
        if Key::parse(&path, KeyFormat::Any).is_err() {
            continue;
        }
        walk_markers(&ent.path(), path.clone(), depth + 1, out);
        out.push(path);
    }
}
