//! A directory's own owner, group and mode (chmod/chown/mkdir of a
//! directory inside a namespace), and its link count.
//!
//! Why its own: tools that keep their cache dirs in a namespace (and
//! pjdfstest) chmod their dirs, make them with a mode, and expect a
//! 0700 dir made by one user to keep the others out; the mount has
//! `default_permissions`, so the mode shown is the mode enforced.
//!
//! Where: one record per explicit directory, `dirattrs/<sha256(ns, path)>`
//! in the backing dir, in the namespace record's format (`owner= group=
//! mode=`), written to staging and renamed into place. Not in the marker
//! itself: the marker's own mode must stay the daemon's (a 0000 dir would
//! lock the daemon out of its own markers), every byte string is a valid
//! name for a subdirectory (so no file inside a marker can be told from
//! one), and backing filesystems need not have xattrs. Read at each
//! getattr (the kernel caches it for `DIR_TTL`), so every daemon on the
//! backing dir sees a change without a message between them.
//!
//! Invariants: only an explicit directory consults its record (an implied
//! one, made by an entry's key alone, shows its namespace's access);
//! `mkdir` writes a fresh record and chmod/chown of an implied directory
//! makes it explicit first, so a record left over by a crash or by a
//! removed namespace is never read for a directory it was not written for.

use std::io;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{Store, StoreError};
use crate::access::NsAccess;
use crate::names::{Key, Namespace};

impl Store {
    fn dir_record(&self, ns: &Namespace, path: &[u8]) -> PathBuf {
        let mut h = Sha256::new();
        h.update(ns.as_bytes());
        h.update([0]);
        h.update(path);
        let name: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.layout.root().join("dirattrs").join(name)
    }

    fn write_dir_record(&self, ns: &Namespace, path: &[u8], access: &NsAccess) -> io::Result<()> {
        let io = &self.layout.io;
        let target = self.dir_record(ns, path);
        if let Some(parent) = target.parent() {
            io.create_dir_all(parent)?;
        }
        let tmp = self.layout.staging_path();
        let written = io
            .create_new(&tmp)
            .and_then(|f| io.write_all_at(&f, access.encode().as_bytes(), 0))
            .and_then(|()| io.rename(&tmp, &target));
        if written.is_err() {
            let _ = io.remove_file(&tmp);
        }
        written
    }

    /// The record of directory `path`, if it has a valid one (a damaged
    /// one is ignored: the directory shows its namespace's access).
    fn read_dir_record(&self, ns: &Namespace, path: &[u8]) -> Option<NsAccess> {
        let bytes = std::fs::read(self.dir_record(ns, path)).ok()?;
        if bytes.len() > crate::access::RECORD_MAX {
            return None;
        }
        NsAccess::decode(&bytes).ok().flatten()
    }

    /// Directory `path` of namespace `ns_id` (`b""`: the namespace): its
    /// owner, group and mode, and its link count (2 plus its
    /// subdirectories, as a local directory counts its children's `..`).
    pub fn dir_access(&self, ns_id: u32, path: &[u8]) -> Option<(NsAccess, u32)> {
        let (ns, explicit, links, ns_access) = {
            let idx = self.lock();
            let ns = idx.namespace_by_id(ns_id)?.clone();
            let state = idx.namespace(&ns)?;
            let node = state.tree().node(path)?;
            let links = 2 + u32::try_from(node.subdirs.len()).unwrap_or(u32::MAX - 2);
            (ns, node.is_explicit(), links, state.access)
        };
        let own = (explicit && !path.is_empty())
            .then(|| self.read_dir_record(&ns, path))
            .flatten();
        Some((own.unwrap_or(ns_access), links))
    }

    /// `mkdir` with the creator's owner, group and mode.
    pub fn make_dir_as(
        &self,
        ns: &Namespace,
        path: &Key,
        access: NsAccess,
    ) -> Result<(), StoreError> {
        self.make_dir(ns, path)?;
        if let Err(e) = self.write_dir_record(ns, path.as_bytes(), &access) {
            // No directory without its owner: a mkdir fails whole.
            let _ = self.remove_dir(ns, path);
            return Err(e.into());
        }
        Ok(())
    }

    /// chmod/chown of directory `path` (`None`: left as is). Who may is
    /// the kernel's decision (`default_permissions`). Under the index lock,
    /// so two changes land in order.
    pub fn set_dir_access(
        &self,
        ns_id: u32,
        path: &[u8],
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> Result<NsAccess, StoreError> {
        let mut idx = self.lock();
        let ns = idx
            .namespace_by_id(ns_id)
            .ok_or(StoreError::NotFound)?
            .clone();
        let state = idx.namespace(&ns).ok_or(StoreError::NotFound)?;
        let node = state.tree().node(path).ok_or(StoreError::NotFound)?;
        let current = match node.is_explicit() {
            true => self.read_dir_record(&ns, path),
            false => None,
        }
        .unwrap_or(state.access);
        let access = current.changed(uid, gid, mode);
        if !node.is_explicit() {
            // An implied directory becomes explicit, so the record stays
            // its own when its last entry goes.
            self.layout.io.create_dir_all(&self.dir_marker(&ns, path))?;
            idx.namespace_mut(&ns)
                .expect("seen above")
                .tree_mut()
                .make_dir(path);
        }
        self.write_dir_record(&ns, path, &access)?;
        Ok(access)
    }

    /// Drops the record of a directory being removed.
    pub(super) fn forget_dir_record(&self, ns: &Namespace, path: &[u8]) {
        match self.layout.io.remove_file(&self.dir_record(ns, path)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Left behind, it is never read (see the file's doc).
            Err(e) => log::warn!("directory record of {ns}/{}: {e}", path.escape_ascii()),
        }
    }

    /// Moves the record of a renamed directory.
    pub(super) fn move_dir_record(&self, ns: &Namespace, from: &[u8], to: &[u8]) -> io::Result<()> {
        match self
            .layout
            .io
            .rename(&self.dir_record(ns, from), &self.dir_record(ns, to))
        {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::names::KeyFormat;
    use crate::store::ManualClock;

    fn open(root: &std::path::Path) -> Store {
        let clock = Arc::new(ManualClock::new(1_800_000_000 * 1_000_000_000));
        Store::open(root, Config::parse("").unwrap(), clock).unwrap()
    }

    fn key(k: &str) -> Key {
        Key::parse(k.as_bytes(), KeyFormat::Any).unwrap()
    }

    const ALICE: NsAccess = NsAccess {
        uid: 1000,
        gid: 100,
        mode: 0o750,
    };

    #[test]
    fn a_directorys_access_is_its_own_and_follows_it_through_rename_rmdir_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let store = open(&root);
        let ns_access = NsAccess {
            uid: 0,
            gid: 0,
            mode: 0o755,
        };
        let (ns, id) = store.create_namespace(b"ns", ns_access).unwrap();
        assert_eq!(store.dir_access(id, b""), Some((ns_access, 2)));
        store.make_dir_as(&ns, &key("a"), ALICE).unwrap();
        store.make_dir(&ns, &key("a/plain")).unwrap();
        assert_eq!(store.dir_access(id, b"a"), Some((ALICE, 3)), "2 + a/plain");
        assert_eq!(store.dir_access(id, b""), Some((ns_access, 3)));
        assert_eq!(
            store.dir_access(id, b"a/plain").map(|(a, _)| a),
            Some(ns_access),
            "no record: the namespace's"
        );
        let changed = store
            .set_dir_access(id, b"a/plain", Some(7), None, Some(0o1777))
            .unwrap();
        assert_eq!((changed.uid, changed.gid, changed.mode), (7, 0, 0o1777));
        assert_eq!(store.dir_access(id, b"missing"), None);
        assert!(matches!(
            store.set_dir_access(id, b"missing", None, None, Some(0)),
            Err(StoreError::NotFound)
        ));

        store.rename_dir(&ns, &key("a"), &key("b")).unwrap();
        assert_eq!(store.dir_access(id, b"b").map(|(a, _)| a), Some(ALICE));
        assert_eq!(
            store.dir_access(id, b"b/plain").map(|(a, _)| a),
            Some(changed)
        );
        assert_eq!(store.dir_access(id, b"a"), None);

        drop(store);
        let store = open(&root);
        let id = store.namespace_id(&ns).unwrap();
        assert_eq!(
            store.dir_access(id, b"b"),
            Some((ALICE, 3)),
            "after a reopen"
        );
        assert_eq!(
            store.dir_access(id, b"b/plain").map(|(a, _)| a),
            Some(changed)
        );

        // rmdir drops the record: a new directory of that name is the
        // namespace's (plain mkdir) until given its own.
        store.remove_dir(&ns, &key("b/plain")).unwrap();
        store.make_dir(&ns, &key("b/plain")).unwrap();
        assert_eq!(
            store.dir_access(id, b"b/plain").map(|(a, _)| a),
            Some(ns_access)
        );
        assert_eq!(
            std::fs::read_dir(root.join("dirattrs")).unwrap().count(),
            1,
            "only b's record is left"
        );
    }
}
