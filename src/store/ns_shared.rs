//! Namespaces another daemon on the backing dir made: found by their
//! markers (`namespaces/<name>`) when a lookup or a listing of the root
//! meets them, and a mkdir that races another daemon's loses cleanly.
//!
//! Invariant: a namespace's marker is made whole or not at all, and never
//! replaces another's (`create_record`: staged, then linked into place).

use std::io;

use super::Store;
use super::index::Index;
use crate::access::NsAccess;
use crate::config::NamespacePolicy;
use crate::names::Namespace;

impl Store {
    /// Adds the namespaces whose markers the index does not know yet (made
    /// by another daemon on the backing dir, or found at start).
    pub(super) fn adopt_markers_locked(&self, idx: &mut Index) -> io::Result<()> {
        for e in self
            .layout
            .io
            .read_dir(self.layout.namespaces_dir())?
            .flatten()
        {
            use std::os::unix::ffi::OsStrExt;
            match Namespace::parse(e.file_name().as_bytes()) {
                Ok(ns) if idx.namespace(&ns).is_none() => self.adopt_marker_locked(idx, &ns),
                Ok(_) => {}
                Err(_) => log::warn!("ignoring namespace marker {:?}", e.file_name()),
            }
        }
        Ok(())
    }

    pub(super) fn adopt_marker_locked(&self, idx: &mut Index, ns: &Namespace) {
        let access = self.recorded_access(ns);
        idx.add_namespace(ns.clone(), NamespacePolicy::default(), false);
        if let Some(state) = idx.namespace_mut(ns) {
            state.access = access;
        }
    }

    /// The id of a namespace: the index's, or, for one the index does not
    /// know, its marker's in the backing dir (another daemon made it):
    /// the namespace is adopted then, with its recorded owner and mode.
    pub fn find_namespace(&self, ns: &Namespace) -> Option<u32> {
        let mut idx = self.lock();
        if let Some(s) = idx.namespace(ns) {
            return Some(s.id);
        }
        match self
            .layout
            .io
            .stat_nofollow(&self.layout.namespace_marker(ns))
        {
            Ok(md) if md.file_type().is_file() => {
                self.adopt_marker_locked(&mut idx, ns);
                idx.namespace(ns).map(|s| s.id)
            }
            _ => None,
        }
    }

    /// Every namespace, those other daemons made included (the markers are
    /// read again: a listing of the root is rare).
    pub fn namespaces_on_disk(&self) -> Vec<(Namespace, u32)> {
        if let Err(e) = self.adopt_markers_locked(&mut self.lock()) {
            log::warn!("cannot list the namespace markers: {e}");
        }
        self.namespaces()
    }

    /// Makes a new namespace's record, unless one exists (another daemon
    /// made the namespace): staged, then linked into place, which fails
    /// rather than replace. Returns whether it was made.
    pub(super) fn create_record(&self, ns: &Namespace, access: &NsAccess) -> io::Result<bool> {
        let io = &self.layout.io;
        let tmp = self.layout.staging_path();
        let linked = io
            .create_new(&tmp)
            .and_then(|f| io.write_all_at(&f, access.encode().as_bytes(), 0))
            .and_then(|()| io.hard_link(&tmp, &self.layout.namespace_marker(ns)));
        let _ = io.remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }
}
