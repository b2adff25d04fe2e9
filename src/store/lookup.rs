//! Lookups: what the index says of a key (hit, miss, expired), its live
//! metadata, its content digest, and a namespace's listing.
//!
//! Invariants: `lookup` and `entry_info` touch neither the disk nor the
//! key's recency; `lookup_name` (the kernel's LOOKUP) also asks the key's
//! backing path, the truth when several daemons share the backing dir; an
//! expired entry is never reported live; only `lookup` and `lookup_name`
//! count misses.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::clock::UnixNanos;
use super::index::{EntryMeta, Index};
use super::probe::{Probed, quarantine_inode};
use super::{Change, Store, StoreError, entry, meta_from_header};
use crate::metrics;
use crate::names::{Key, Namespace};

/// The outcome of looking a key up.
#[derive(Debug, Clone)]
pub enum Lookup {
    Hit(EntryInfo),
    Miss,
    Expired,
}

/// What callers need to know of a live entry.
/// A name looked up inside a namespace (`Store::lookup_name`).
#[derive(Debug, Clone)]
pub struct Found {
    pub ns: Namespace,
    pub key: Key,
    pub lookup: Lookup,
    /// A writer holds the key (see `claims.rs`): its version is about to
    /// change, so the kernel must not cache the name.
    pub being_written: bool,
    /// The name is a directory (`lookup` is then `Miss`, not counted).
    pub dir: bool,
}

#[derive(Debug, Clone)]
pub struct EntryInfo {
    pub version: u64,
    pub logical_size: u64,
    pub stored_bytes: u64,
    pub mtime: UnixNanos,
    /// The last change of the version or its metadata.
    pub ctime: UnixNanos,
    /// Set by `utimensat`, never by a read.
    pub atime: UnixNanos,
    /// `None`: never expires.
    pub expires: Option<UnixNanos>,
    pub ttl: Duration,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Store {
    pub(super) fn info_locked(idx: &Index, ns: &Namespace, meta: &EntryMeta) -> EntryInfo {
        let policy = &idx.namespace(ns).expect("entry's namespace").policy;
        super::listing::info_of(idx, policy, meta, idx.expires_at(policy, meta))
    }

    /// The content digest of a key's live version, read from its trailer
    /// (the index does not keep it).
    pub fn content_sha256(&self, ns: &Namespace, key: &Key) -> Result<[u8; 32], StoreError> {
        self.live_meta(ns, key)?;
        let file = self
            .layout
            .io
            .open_nofollow(&self.layout.entry_path(ns, key))?;
        let len = file.metadata()?.len();
        entry::read_header(&self.layout.io, &file, len)
            .map(|h| h.content_sha256)
            .map_err(|_| StoreError::NotFound)
    }

    /// Looks a key up (a read's first step: misses are counted), without
    /// touching the disk or the key's recency.
    pub fn lookup(&self, ns: &Namespace, key: &Key) -> Lookup {
        self.lookup_inner(ns, key, true)
    }

    /// Like `lookup`, for metadata questions: counts nothing.
    pub fn entry_info(&self, ns: &Namespace, key: &Key) -> Lookup {
        self.lookup_inner(ns, key, false)
    }

    /// A read's lookup of `name` in directory `dir` of namespace `ns_id`
    /// by thread `pid`: the name is parsed under the namespace's key
    /// format, the index asked, and the backing path looked at (below); a
    /// miss is counted unless it repeats one that thread just had (see
    /// `misses.rs`).
    ///
    /// The backing dir is the truth, the index a cache of it: a key the
    /// index does not know is looked for at its backing path (another
    /// daemon may have published it, or the rebuild not reached it yet)
    /// and adopted if live; a key it knows is checked against the file
    /// there (one `stat`), so a file another daemon replaced or removed is
    /// noticed whenever the kernel asks. A daemon alone on the backing dir
    /// with its index whole answers from the index (no system call): the
    /// index is then the picture of the backing dir.
    pub fn lookup_name(
        &self,
        ns_id: u32,
        dir: &[u8],
        name: &[u8],
        pid: u32,
    ) -> Result<Found, StoreError> {
        let start = Instant::now();
        let now = self.clock.now();
        // Alone with a whole index, the index is the backing dir's
        // picture: no other daemon changes a path (see `Company`).
        let truth = self.index_is_truth();
        let (ns, key, known, unknown, metrics) = {
            let idx = self.lock();
            let ns = idx.namespace_by_id(ns_id).ok_or(StoreError::NotFound)?;
            let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
            let a_dir = |key: Key| Found {
                ns: ns.clone(),
                key,
                lookup: Lookup::Miss,
                being_written: false,
                dir: true,
            };
            let key = match Key::join(dir, name, state.policy.key_format) {
                Ok(key) => key,
                // A directory's name need not be a key of the format (sha256
                // applies to the last component of an entry's key only).
                Err(e) => match Key::join(dir, name, crate::names::KeyFormat::Any) {
                    Ok(key) if state.tree().is_dir(key.as_bytes()) => return Ok(a_dir(key)),
                    Ok(key) if !truth => {
                        let (ns, found) = (ns.clone(), a_dir(key));
                        drop(idx);
                        return match self.dir_elsewhere(&ns, &found.key) {
                            true => Ok(found),
                            false => Err(e.into()),
                        };
                    }
                    _ => return Err(e.into()),
                },
            };
            let known = state.peek(&key);
            // A directory is never an entry too (see `path_conflict`).
            if known.is_none() && state.tree().is_dir(key.as_bytes()) {
                return Ok(a_dir(key));
            }
            let unknown = known.is_none();
            let known = match known {
                _ if truth => Err(Self::outcome_locked(&idx, ns, &key, now)),
                Some(meta) => Ok(Some(meta)),
                None => Ok(None),
            };
            (ns.clone(), key, known, unknown, Arc::clone(&state.metrics))
        };
        let mut lookup = match known {
            Err(settled) => Ok(settled),
            Ok(None) => self.adopt_from_backing(&ns, &key, now),
            Ok(Some(meta)) => self.check_backing(&ns, &key, &meta, now),
        }
        .inspect_err(|e| {
            if matches!(e, StoreError::Io(_)) {
                self.record_io_error();
            }
        })?;
        // Not alone, or the markers not all loaded: the name may be a
        // directory the index does not know yet (see `dir_elsewhere`),
        // or an entry another daemon's record has just made known.
        if unknown && !truth && matches!(lookup, Lookup::Miss) {
            if self.dir_elsewhere(&ns, &key) {
                return Ok(Found {
                    ns,
                    key,
                    lookup,
                    being_written: false,
                    dir: true,
                });
            }
            lookup = self.entry_info(&ns, &key);
        }
        let being_written = match lookup {
            Lookup::Hit(_) => self.claims.is_claimed(&ns, &key),
            Lookup::Miss | Lookup::Expired => {
                let expired = matches!(lookup, Lookup::Expired);
                if self.misses.missed(pid, &ns, &key, expired, start) {
                    count_miss(&metrics, expired);
                }
                false
            }
        };
        metrics.lookup.since(start);
        Ok(Found {
            ns,
            key,
            lookup,
            being_written,
            dir: false,
        })
    }

    /// Whether `path`, which the index took for nothing, is a directory
    /// made through another daemon (or one whose marker a start has not
    /// loaded yet): its marker is looked at (a mkdir, `mkdir -p`, a
    /// directory renamed), then the other daemons' logs are caught up
    /// with (a directory implied by keys published through them: their
    /// records are in the logs before their close() returned) and the
    /// tree asked again. Never called by a daemon alone with its index
    /// whole: it answers from the index.
    fn dir_elsewhere(&self, ns: &Namespace, path: &Key) -> bool {
        if self.dir_from_marker(ns, path) {
            return true;
        }
        self.catch_up();
        let idx = self.lock();
        idx.namespace(ns)
            .is_some_and(|s| s.tree().is_dir(path.as_bytes()))
    }

    /// A key the index does not know: what its backing path holds. A live
    /// valid entry is adopted (indexed and accounted, as the most recently
    /// used); an expired one is `Expired` and left where it is (the daemon
    /// whose index holds it expires it, or the next scan does: removing
    /// it here could race another daemon's rewrite of the key); a bad file
    /// is quarantined, as the scan would, and is a miss.
    pub(super) fn adopt_from_backing(
        &self,
        ns: &Namespace,
        key: &Key,
        now: UnixNanos,
    ) -> Result<Lookup, StoreError> {
        let found = match self.data_dir.probe(&self.layout, ns, key)? {
            None => return Ok(Lookup::Miss),
            Some(Probed::Valid(f))
                if f.header.namespace == ns.as_bytes() && f.header.key == key.as_bytes() =>
            {
                f
            }
            Some(Probed::Valid(f)) => {
                self.quarantine_probed(ns, key, f.file_id, "names disagree with its path");
                return Ok(Lookup::Miss);
            }
            Some(Probed::Bad { ino, why }) => {
                self.quarantine_probed(ns, key, ino, &why);
                return Ok(Lookup::Miss);
            }
        };
        let path = self.layout.entry_path(ns, key);
        let mut meta = meta_from_header(
            &found.header,
            self.new_version(),
            found.file_id,
            found.file_size,
            found.stored_bytes,
            false,
        );
        meta.last_access = now;
        let mut idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return Ok(Lookup::Miss);
        };
        // Put in meanwhile (a publish, another lookup): that stands.
        if state.peek(key).is_some() {
            return Ok(Self::outcome_locked(&idx, ns, key, now));
        }
        if idx
            .expires_at(&state.policy, &meta)
            .is_some_and(|at| at <= now)
        {
            return Ok(Lookup::Expired);
        }
        // Removed since we read it (by this daemon, after another lookup
        // adopted it: a removal moves the file under this lock): a miss.
        match self.layout.io.stat_nofollow(&path) {
            Ok(md) if md.ino() == found.file_id => {}
            _ => return Ok(Lookup::Miss),
        }
        self.index_changed_locked();
        idx.insert(ns, key.clone(), meta);
        Ok(Self::outcome_locked(&idx, ns, key, now))
    }

    /// A bad file found by a lookup: moved aside (exactly that file) and
    /// counted, as the scan would.
    pub(super) fn quarantine_probed(&self, ns: &Namespace, key: &Key, ino: u64, why: &str) {
        let path = self.layout.entry_path(ns, key);
        if quarantine_inode(&self.layout.io, &self.layout, &path, ino, why) {
            crate::metrics::add(&self.metrics.corrupt, 1);
        }
    }

    /// A key the index knows: is its file still the one at the backing
    /// path? The `stat` runs outside the index lock, so a difference may
    /// be this daemon's own publish since the index was read (a metadata
    /// republish renames a new file over the path, same version): the
    /// index decides (`reconcile`), never the racing stat.
    fn check_backing(
        &self,
        ns: &Namespace,
        key: &Key,
        meta: &EntryMeta,
        now: UnixNanos,
    ) -> Result<Lookup, StoreError> {
        let path = self.layout.entry_path(ns, key);
        match self.layout.io.stat_nofollow(&path) {
            Ok(md) if md.ino() == meta.file_id && md.len() == meta.file_size => {}
            Ok(_) => self.reconcile(ns, key, meta)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.reconcile(ns, key, meta)?,
            // The volume cannot tell: the index's answer stands, and the
            // open that follows meets (and reports) the failure.
            Err(e) => log::warn!("cannot check {}: {e}", path.display()),
        }
        let idx = self.lock();
        Ok(Self::outcome_locked(&idx, ns, key, now))
    }

    /// The file at a key's backing path looked different from `seen`, what
    /// the index held when it was read. Settled against the index under
    /// its lock, where this daemon makes every change to a backing path:
    /// if the index no longer holds `seen`, this daemon changed the key
    /// since and the index stands; if it does, a `stat` under the lock
    /// sees another daemon's change (or a foreign hand's), never one of
    /// ours in flight. A removed file is forgotten; another file is read
    /// (through one descriptor, outside the lock) and taken in as a new
    /// version if valid, moved aside (exactly that inode) if not.
    pub(super) fn reconcile(
        &self,
        ns: &Namespace,
        key: &Key,
        seen: &EntryMeta,
    ) -> Result<(), StoreError> {
        let path = self.layout.entry_path(ns, key);
        {
            let mut idx = self.lock();
            if !idx.peek(ns, key).is_some_and(|m| same_file(&m, seen)) {
                return Ok(());
            }
            // Fresh (rare: a difference was seen), so a cached view of
            // another host's change is not taken for "unchanged".
            match self.layout.io.stat_fresh(&path) {
                Ok(id) if id == (seen.file_id, seen.file_size) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.index_changed_locked();
                    idx.remove(ns, key);
                    let ns_id = idx.namespace(ns).expect("held the key").id;
                    self.tell(Change::Removed { ns_id, key });
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        let replacement = match self.data_dir.probe(&self.layout, ns, key)? {
            Some(Probed::Valid(f))
                if f.header.namespace == ns.as_bytes() && f.header.key == key.as_bytes() =>
            {
                Some(f)
            }
            Some(Probed::Valid(f)) => {
                self.quarantine_probed(ns, key, f.file_id, "names disagree with its path");
                None
            }
            Some(Probed::Bad { ino, why }) => {
                self.quarantine_probed(ns, key, ino, &why);
                None
            }
            None => None,
        };
        let mut idx = self.lock();
        // Changed by this daemon meanwhile: that is newer.
        if !idx.peek(ns, key).is_some_and(|m| same_file(&m, seen)) {
            return Ok(());
        }
        self.index_changed_locked();
        let ns_id = idx.namespace(ns).expect("holds the key").id;
        // The kernel forgets the name: its dentry leads to the old version.
        match replacement {
            Some(f) => {
                let version = self.new_version();
                let mut meta = meta_from_header(
                    &f.header,
                    version,
                    f.file_id,
                    f.file_size,
                    f.stored_bytes,
                    false,
                );
                meta.last_access = seen.last_access;
                idx.insert(ns, key.clone(), meta);
                self.tell(Change::Replaced {
                    ns_id,
                    key,
                    version,
                });
            }
            None => {
                idx.remove(ns, key);
                self.tell(Change::Removed { ns_id, key });
            }
        }
        Ok(())
    }

    fn lookup_inner(&self, ns: &Namespace, key: &Key, count: bool) -> Lookup {
        let start = Instant::now();
        let now = self.clock.now();
        let idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return Lookup::Miss;
        };
        let outcome = Self::outcome_locked(&idx, ns, key, now);
        if count {
            let m = &state.metrics;
            if !matches!(outcome, Lookup::Hit(_)) {
                count_miss(m, matches!(outcome, Lookup::Expired));
            }
            m.lookup.since(start);
        }
        outcome
    }

    /// What a key of an existing namespace is at `now` (index lock held).
    fn outcome_locked(idx: &Index, ns: &Namespace, key: &Key, now: UnixNanos) -> Lookup {
        let Some(state) = idx.namespace(ns) else {
            return Lookup::Miss;
        };
        match state.peek(key) {
            None => Lookup::Miss,
            Some(meta) => match idx.expires_at(&state.policy, &meta) {
                Some(at) if at <= now => Lookup::Expired,
                _ => Lookup::Hit(Self::info_locked(idx, ns, &meta)),
            },
        }
    }

    /// The live metadata of a key (not expired).
    pub(super) fn live_meta(&self, ns: &Namespace, key: &Key) -> Result<EntryMeta, StoreError> {
        let now = self.clock.now();
        let idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        let meta = state.peek(key).ok_or(StoreError::NotFound)?;
        if idx
            .expires_at(&state.policy, &meta)
            .is_some_and(|at| at <= now)
        {
            return Err(StoreError::NotFound);
        }
        Ok(meta)
    }

    /// Live keys of a namespace with their versions, least recent first
    /// (once the index is whole: see `list_dir`).
    pub fn list(&self, ns: &Namespace) -> Result<Vec<(Key, u64)>, StoreError> {
        self.wait_rebuilt();
        let now = self.clock.now();
        let idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        Ok(state
            .iter_lru()
            .filter(|(_, m)| idx.expires_at(&state.policy, m).is_none_or(|at| at > now))
            .map(|(k, m)| (Key::from_index(&k), m.version))
            .collect())
    }
}

/// Whether two index records describe one backing file (a metadata
/// republish keeps the version but renames a new file into place).
pub(super) fn same_file(a: &EntryMeta, b: &EntryMeta) -> bool {
    a.version == b.version && a.file_id == b.file_id && a.file_size == b.file_size
}

fn count_miss(m: &crate::metrics::NsMetrics, expired: bool) {
    metrics::add(&m.misses, 1);
    if expired {
        metrics::add(&m.expired_misses, 1);
    }
}
