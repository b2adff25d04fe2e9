//! Namespaces and policies: the namespaces known at start (config and
//! markers), the whole-cache limits, config reload (SIGHUP), creating and
//! removing namespaces, and their owners and modes.
//!
//! Invariants: a namespace named in the config keeps its configured policy
//! and cannot be removed; every other namespace has a marker file and the
//! default policy. The whole-cache quota never exceeds what the backing
//! volume can hold, and a lowered quota is enforced at once.
//!
//! Owners and modes: a namespace's marker file holds its record
//! (`NsAccess::encode`: made by mkdir, changed by chmod/chown), replaced
//! whole by a rename so a crash leaves the old record or the new one. An
//! empty or unreadable record means the daemon's user and `0755` (what
//! every namespace was before). The config's `owner`, `group`, `mode`
//! win over the record, at each start and reload.

use std::fs::OpenOptions;
use std::io;
use std::sync::atomic::Ordering;

use super::backing::FaultOp;
use super::index::{GlobalLimits, Index};
use super::reaper::{self, unlink_all};
use super::{Store, StoreError};
use crate::access::{NsAccess, RECORD_MAX};
use crate::config::{Config, NamespacePolicy};
use crate::names::{Key, Namespace};

impl Store {
    pub(super) fn load_namespaces(&self, config: &Config) -> io::Result<()> {
        let mut idx = self.lock();
        for (name, policy) in &config.namespaces {
            let ns = Namespace::parse(name.as_bytes()).map_err(io::Error::other)?;
            let access = self.recorded_access(&ns).with(&policy.access);
            idx.add_namespace(ns.clone(), policy.clone(), true);
            if let Some(state) = idx.namespace_mut(&ns) {
                state.access = access;
            }
        }
        self.adopt_markers_locked(&mut idx)
    }

    /// A namespace found on disk but in neither the config nor the markers
    /// gets the default policy (its marker is recreated, and a record
    /// another daemon wrote meanwhile is kept).
    pub(super) fn ensure_namespace_locked(&self, idx: &mut Index, ns: &Namespace) {
        if idx.namespace(ns).is_none() {
            // Not truncated: a record another daemon wrote meanwhile stays.
            let marker = self.layout.namespace_marker(ns);
            let _ = self.layout.io.check(FaultOp::Create).and_then(|()| {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&marker)
            });
            let access = self.recorded_access(ns);
            idx.add_namespace(ns.clone(), NamespacePolicy::default(), false);
            if let Some(state) = idx.namespace_mut(ns) {
                state.access = access;
            }
        }
    }

    /// The owner and mode in a namespace's record, or the default when it
    /// has none (or one that does not parse: reported, and the namespace
    /// falls back to the daemon's user and 0755, which only narrows who
    /// may write).
    pub(super) fn recorded_access(&self, ns: &Namespace) -> NsAccess {
        let path = self.layout.namespace_marker(ns);
        let mut buf = [0u8; RECORD_MAX + 1];
        let read = self
            .layout
            .io
            .open_nofollow(&path)
            .and_then(|f| self.layout.io.read_at(&f, &mut buf, 0));
        let record = match read {
            // A record is one short line: one read gets it whole.
            Ok(n) if n > RECORD_MAX => Err(format!("longer than {RECORD_MAX} bytes")),
            Ok(n) => NsAccess::decode(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        match record {
            Ok(Some(a)) => a,
            Ok(None) => NsAccess::of_daemon(),
            Err(e) => {
                log::warn!(
                    "namespace record {}: {e}; using the default owner and mode",
                    path.display()
                );
                NsAccess::of_daemon()
            }
        }
    }

    /// Replaces a namespace's record whole (staged, then renamed over the
    /// marker).
    fn write_record(&self, ns: &Namespace, access: &NsAccess) -> io::Result<()> {
        let io = &self.layout.io;
        let tmp = self.layout.staging_path();
        let written = io
            .create_new(&tmp)
            .and_then(|f| io.write_all_at(&f, access.encode().as_bytes(), 0))
            .and_then(|()| io.rename(&tmp, &self.layout.namespace_marker(ns)));
        if written.is_err() {
            let _ = io.remove_file(&tmp);
        }
        written
    }

    /// A namespace's owner, group and mode.
    pub fn namespace_access(&self, id: u32) -> Option<NsAccess> {
        let idx = self.lock();
        let ns = idx.namespace_by_id(id)?;
        idx.namespace(ns).map(|s| s.access)
    }

    /// chmod/chown of a namespace (`None`: left as is). Who may is the
    /// kernel's decision (the mount has `default_permissions`). The record
    /// is written under the index lock, so two changes land in order; it
    /// is one small file, and namespace changes are rare.
    pub fn set_namespace_access(
        &self,
        id: u32,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> Result<NsAccess, StoreError> {
        let mut idx = self.lock();
        let ns = idx.namespace_by_id(id).ok_or(StoreError::NotFound)?.clone();
        let state = idx.namespace_mut(&ns).ok_or(StoreError::NotFound)?;
        let access = state.access.changed(uid, gid, mode);
        if access != state.access {
            self.write_record(&ns, &access)?;
            state.access = access;
            self.changes.namespace(&ns);
        }
        Ok(access)
    }

    /// Applies the whole-cache limits: the configured (or default) quota,
    /// never more than the backing volume can hold.
    pub(super) fn apply_limits(&self, config: &Config) {
        let mut idx = self.lock();
        let used = idx.total_bytes();
        let (room, size) = volume_room(self.layout.root()).unwrap_or((u64::MAX, u64::MAX));
        let wanted = config
            .cache
            .max_bytes
            .unwrap_or(crate::config::DEFAULT_MAX_BYTES);
        // While the index is rebuilt, `used` is only what it knows so far:
        // cap by the volume's size until the rebuild ends and comes back.
        let cap = if idx.rebuilding() {
            size
        } else {
            used.saturating_add(room)
        };
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
            compression: config.cache.compression,
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
                    // As at start: the record, then what the config sets.
                    let access = self.recorded_access(&ns).with(&policy.access);
                    idx.add_namespace(ns.clone(), policy.clone(), true);
                    if let Some(state) = idx.namespace_mut(&ns) {
                        state.access = access;
                    }
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
                    // It keeps the owner and mode it has now.
                    let access = state.access;
                    if let Err(e) = self.write_record(&ns, &access) {
                        log::warn!("cannot record namespace {ns}: {e}");
                    }
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
            idx.expiry_rules_changed();
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

    /// Whether `mkdir` may make namespaces (without copying the config).
    pub fn allows_new_namespaces(&self) -> bool {
        crate::sync::lock(&self.config).cache.allow_new_namespaces
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

    /// mkdir of a namespace, owned as `access` says (its creator's).
    pub fn create_namespace(
        &self,
        name: &[u8],
        access: NsAccess,
    ) -> Result<(Namespace, u32), StoreError> {
        let ns = Namespace::parse(name)?;
        let allow = self.allows_new_namespaces();
        let mut idx = self.lock();
        if idx.namespace(&ns).is_some() {
            return Err(StoreError::Exists);
        }
        if !allow {
            return Err(StoreError::NotPermitted);
        }
        if !self.create_record(&ns, &access)? {
            // Another daemon on the backing dir made it first.
            self.adopt_marker_locked(&mut idx, &ns);
            return Err(StoreError::Exists);
        }
        idx.add_namespace(ns.clone(), NamespacePolicy::default(), false);
        self.changes.namespace(&ns);
        let state = idx.namespace_mut(&ns).expect("just added");
        state.access = access;
        Ok((ns, state.id))
    }

    pub fn remove_namespace(&self, ns: &Namespace) -> Result<(), StoreError> {
        self.sweep_expired();
        let mut idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        if state.len() > 0 || state.tree().dir_count() > 0 {
            return Err(StoreError::NotEmpty);
        }
        // Its entries are not all known yet: it may not be empty.
        if idx.rebuilding() {
            return Err(StoreError::Busy);
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
        self.changes.namespace(ns);
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
        self.resolve_in(ns_id, b"", name, for_write)
    }

    /// Like `resolve`, for `name` in directory `dir` of the namespace.
    pub fn resolve_in(
        &self,
        ns_id: u32,
        dir: &[u8],
        name: &[u8],
        for_write: bool,
    ) -> Result<(Namespace, Key), StoreError> {
        let idx = self.lock();
        let ns = idx.namespace_by_id(ns_id).ok_or(StoreError::NotFound)?;
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        match Key::join(dir, name, state.policy.key_format) {
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

/// Bytes the backing volume can still give to an unprivileged writer,
/// and its size.
fn volume_room(path: &std::path::Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let f = st.fragment_size() as u64;
    Some((st.blocks_available() as u64 * f, st.blocks() as u64 * f))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::store::ManualClock;

    fn open(backing: &Path, config: &str) -> Store {
        let clock = Arc::new(ManualClock::new(1_800_000_000 * 1_000_000_000));
        Store::open(backing, Config::parse(config).unwrap(), clock).unwrap()
    }

    fn access_of(store: &Store, name: &str) -> NsAccess {
        let id = store
            .namespace_id(&Namespace::parse(name.as_bytes()).unwrap())
            .unwrap();
        store.namespace_access(id).unwrap()
    }

    #[test]
    fn owners_and_modes_persist_and_the_config_wins_at_each_start() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("b");
        let config = "[namespace.svc]\nowner = 998\nmode = \"0750\"\n[namespace.plain]\n";
        let store = open(&b, config);
        let daemon = NsAccess::of_daemon();
        // The config's fields over the default; none: the default.
        assert_eq!(
            access_of(&store, "svc"),
            NsAccess {
                uid: 998,
                mode: 0o750,
                ..daemon
            }
        );
        assert_eq!(access_of(&store, "plain"), daemon);
        // mkdir: the creator's; chmod/chown: recorded.
        let mine = NsAccess {
            uid: 1000,
            gid: 1001,
            mode: 0o700,
        };
        let (_, id) = store.create_namespace(b"mine", mine).unwrap();
        assert_eq!(store.namespace_access(id), Some(mine));
        let plain = store.namespace_id(&Namespace::parse(b"plain").unwrap());
        store
            .set_namespace_access(plain.unwrap(), None, Some(50), Some(0o1777))
            .unwrap();
        let svc = store.namespace_id(&Namespace::parse(b"svc").unwrap());
        store
            .set_namespace_access(svc.unwrap(), Some(7), None, Some(0o700))
            .unwrap();
        drop(store);

        // A restart keeps them, but the config's own fields win again;
        // a config change of them applies.
        let config = "[namespace.svc]\nowner = 998\nmode = \"0770\"\n[namespace.plain]\n";
        let store = open(&b, config);
        assert_eq!(access_of(&store, "mine"), mine);
        let plain = NsAccess {
            gid: 50,
            mode: 0o1777,
            ..daemon
        };
        assert_eq!(access_of(&store, "plain"), plain);
        assert_eq!(
            access_of(&store, "svc"),
            NsAccess {
                uid: 998,
                mode: 0o770,
                ..daemon
            }
        );
        // A reload applies the config the same way; a namespace that
        // leaves the config keeps what it has.
        store.reload(Config::parse("[namespace.svc]\nmode = \"0700\"\n").unwrap());
        assert_eq!(access_of(&store, "svc").mode, 0o700);
        assert_eq!(access_of(&store, "svc").uid, 7, "the recorded chown");
        assert_eq!(access_of(&store, "plain"), plain);
        drop(store);
        let store = open(&b, "");
        assert_eq!(access_of(&store, "plain"), plain);
    }

    #[test]
    fn a_damaged_record_falls_back_to_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("b");
        let store = open(&b, "");
        let mine = NsAccess {
            uid: 1000,
            gid: 1000,
            mode: 0o777,
        };
        store.create_namespace(b"mine", mine).unwrap();
        drop(store);
        std::fs::write(b.join("namespaces/mine"), b"owner=1000 group=\xff mode=777").unwrap();
        let store = open(&b, "");
        assert_eq!(access_of(&store, "mine"), NsAccess::of_daemon());
        // So does one too long to be a record, whatever it starts with.
        drop(store);
        let long = format!("{}{}", mine.encode(), " ".repeat(RECORD_MAX));
        std::fs::write(b.join("namespaces/mine"), long).unwrap();
        let store = open(&b, "");
        assert_eq!(access_of(&store, "mine"), NsAccess::of_daemon());
    }

    /// A record that cannot be written changes nothing: mkdir fails with
    /// the backing error and makes no namespace; a chmod fails and leaves
    /// the owner and mode as they were, in memory and on disk.
    #[cfg(debug_assertions)]
    #[test]
    fn a_record_that_cannot_be_written_changes_nothing() {
        use crate::store::backing::BackingIo;
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("b");
        let io = BackingIo::default();
        let clock = Arc::new(ManualClock::new(1_800_000_000 * 1_000_000_000));
        let store = Store::open_with(&b, Config::default(), clock, io.clone()).unwrap();
        let mine = NsAccess {
            uid: 1000,
            gid: 1000,
            mode: 0o750,
        };
        io.inject(FaultOp::Create, libc::ENOSPC, Some(1));
        match store.create_namespace(b"mine", mine) {
            Err(StoreError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC)),
            other => panic!("mkdir on a full volume: {other:?}"),
        }
        assert_eq!(
            store.namespace_id(&Namespace::parse(b"mine").unwrap()),
            None
        );
        let (_, id) = store.create_namespace(b"mine", mine).unwrap();
        io.inject(FaultOp::Rename, libc::EIO, Some(1));
        match store.set_namespace_access(id, None, None, Some(0o777)) {
            Err(StoreError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EIO)),
            other => panic!("chmod whose record fails: {other:?}"),
        }
        assert_eq!(store.namespace_access(id), Some(mine));
        drop(store);
        assert_eq!(access_of(&open(&b, ""), "mine"), mine);
    }
}
