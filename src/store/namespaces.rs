//! Namespaces and policies: the namespaces known at start (config and
//! markers), the whole-cache limits, config reload (SIGHUP), and creating
//! and removing namespaces.
//!
//! Invariants: a namespace named in the config keeps its configured policy
//! and cannot be removed; every other namespace has a marker file and the
//! default policy. The whole-cache quota never exceeds what the backing
//! volume can hold, and a lowered quota is enforced at once.

use std::io;
use std::sync::atomic::Ordering;

use super::index::{GlobalLimits, Index};
use super::reaper::{self, unlink_all};
use super::{Store, StoreError};
use crate::config::{Config, NamespacePolicy};
use crate::names::{Key, Namespace};

impl Store {
    pub(super) fn load_namespaces(&self, config: &Config) -> io::Result<()> {
        let mut idx = self.lock();
        for (name, policy) in &config.namespaces {
            let ns = Namespace::parse(name.as_bytes()).map_err(io::Error::other)?;
            idx.add_namespace(ns, policy.clone(), true);
        }
        for e in self
            .layout
            .io
            .read_dir(self.layout.namespaces_dir())?
            .flatten()
        {
            use std::os::unix::ffi::OsStrExt;
            match Namespace::parse(e.file_name().as_bytes()) {
                Ok(ns) if idx.namespace(&ns).is_none() => {
                    idx.add_namespace(ns, NamespacePolicy::default(), false)
                }
                Ok(_) => {}
                Err(_) => log::warn!("ignoring namespace marker {:?}", e.file_name()),
            }
        }
        Ok(())
    }

    /// A namespace found on disk but in neither the config nor the markers
    /// gets the default policy (its marker is recreated).
    pub(super) fn ensure_namespace_locked(&self, idx: &mut Index, ns: &Namespace) {
        if idx.namespace(ns).is_none() {
            let _ = self.layout.io.create(&self.layout.namespace_marker(ns));
            idx.add_namespace(ns.clone(), NamespacePolicy::default(), false);
        }
    }

    /// Applies the whole-cache limits: the configured (or default) quota,
    /// never more than the backing volume can hold.
    pub(super) fn apply_limits(&self, config: &Config) {
        let mut idx = self.lock();
        let used = idx.total_bytes();
        let room = volume_available(self.layout.root()).unwrap_or(u64::MAX);
        let wanted = config
            .cache
            .max_bytes
            .unwrap_or(crate::config::DEFAULT_MAX_BYTES);
        let cap = used.saturating_add(room);
        let quota = super::room::effective_quota(wanted, cap);
        // The reaper frees evicted space a moment later; where the volume,
        // not the quota, is the limit, that space is needed at once.
        self.volume_bound.store(
            wanted > cap.saturating_sub(reaper::BACKLOG_BYTES),
            Ordering::Relaxed,
        );
        if wanted > quota {
            log::warn!(
                "quota {wanted} bytes exceeds what the backing volume can hold ({cap}, less room for writes in flight); using {quota}"
            );
        }
        idx.limits = GlobalLimits {
            max_bytes: quota,
            max_entries: config.cache.max_entries,
            default_ttl: config.cache.default_ttl,
        };
    }

    /// Reloads policies (SIGHUP): limits, TTLs, namespaces named in the
    /// config. Entries over a lowered quota are evicted at once; returns
    /// how many were.
    pub fn reload(&self, config: Config) -> usize {
        {
            let mut idx = self.lock();
            for (name, policy) in &config.namespaces {
                if let Ok(ns) = Namespace::parse(name.as_bytes()) {
                    idx.add_namespace(ns, policy.clone(), true);
                }
            }
            let names: Vec<Namespace> = idx.namespaces().map(|(n, _)| n.clone()).collect();
            for ns in names {
                let name = String::from_utf8_lossy(ns.as_bytes()).into_owned();
                if let Some(state) = idx.namespace_mut(&ns)
                    && state.from_config
                    && !config.namespaces.contains_key(&name)
                {
                    state.policy = NamespacePolicy::default();
                    state.from_config = false;
                    let _ = self.layout.io.create(&self.layout.namespace_marker(&ns));
                }
            }
        }
        self.apply_limits(&config);
        *crate::sync::lock(&self.config) = config;
        let mut trash = Vec::new();
        let n = {
            let mut idx = self.lock();
            // After apply_limits: the default TTL is among what changed.
            idx.rebuild_expiry();
            let victims = idx.shrink_to_limits(self.clock.now());
            let n = victims.len();
            self.move_to_trash_locked(&idx, victims, &mut trash);
            n
        };
        unlink_all(&self.layout.io, &trash);
        n
    }

    pub fn config(&self) -> Config {
        crate::sync::lock(&self.config).clone()
    }

    // ----- namespaces -----

    pub fn namespaces(&self) -> Vec<(Namespace, u32)> {
        let idx = self.lock();
        let mut v: Vec<_> = idx.namespaces().map(|(n, s)| (n.clone(), s.id)).collect();
        v.sort();
        v
    }

    pub fn namespace_id(&self, ns: &Namespace) -> Option<u32> {
        self.lock().namespace(ns).map(|s| s.id)
    }

    pub fn namespace_by_id(&self, id: u32) -> Option<Namespace> {
        self.lock().namespace_by_id(id).cloned()
    }

    pub fn create_namespace(&self, name: &[u8]) -> Result<(Namespace, u32), StoreError> {
        let ns = Namespace::parse(name)?;
        let allow = self.config().cache.allow_new_namespaces;
        let mut idx = self.lock();
        if idx.namespace(&ns).is_some() {
            return Err(StoreError::Exists);
        }
        if !allow {
            return Err(StoreError::NotPermitted);
        }
        self.layout.io.create(&self.layout.namespace_marker(&ns))?;
        idx.add_namespace(ns.clone(), NamespacePolicy::default(), false);
        let id = idx.namespace(&ns).expect("just added").id;
        Ok((ns, id))
    }

    pub fn remove_namespace(&self, ns: &Namespace) -> Result<(), StoreError> {
        self.sweep_expired();
        let mut idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        if state.len() > 0 {
            return Err(StoreError::NotEmpty);
        }
        if state.from_config {
            return Err(StoreError::Busy);
        }
        match self
            .layout
            .io
            .remove_file(&self.layout.namespace_marker(ns))
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        idx.remove_namespace(ns);
        Ok(())
    }

    /// The namespace `ns_id` and `name` parsed as a key of it, in one
    /// critical section. A name refused for a write is counted as a
    /// refused write.
    pub fn resolve(
        &self,
        ns_id: u32,
        name: &[u8],
        for_write: bool,
    ) -> Result<(Namespace, Key), StoreError> {
        let idx = self.lock();
        let ns = idx.namespace_by_id(ns_id).ok_or(StoreError::NotFound)?;
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        match Key::parse(name, state.policy.key_format) {
            Ok(key) => Ok((ns.clone(), key)),
            Err(e) => {
                let e = StoreError::InvalidName(e);
                if for_write {
                    super::stats::count_refusal(&state.metrics, &e);
                }
                Err(e)
            }
        }
    }
}

/// Bytes the backing volume can still give to an unprivileged writer.
fn volume_available(path: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}
