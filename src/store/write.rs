//! Writes: staging a new version, publishing it atomically, and the
//! changes that republish a copy (rename, metadata updates).
//!
//! Invariants: nothing is visible under a key until its content and
//! trailer are complete and renamed into place from `staging/`; the index,
//! its accounting and the rename change in one critical section, and after
//! every publish usage <= every quota that applies; a replaced version
//! stays readable for a grace period.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use super::index::EntryMeta;
use super::staging::{Owner, StagingFile};
use super::{
    Change, EntryInfo, Store, StoreError, UnixNanos, entry, meta_from_header, open_nofollow,
};
use crate::config::Durability;
use crate::metrics::{self, Op};
use crate::names::{Key, Namespace};

/// Where a new write starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFrom {
    /// Empty content (create, O_TRUNC).
    Empty,
    /// A copy of the live version, if any (in-place writes, append).
    Current,
}

/// Metadata changes applied by republishing a copy under the same version.
#[derive(Debug, Clone, Default)]
pub struct MetaUpdate {
    pub mtime: Option<UnixNanos>,
    /// `Some(None)` clears the per-entry TTL.
    pub ttl_secs: Option<Option<u64>>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub truncate: Option<u64>,
}

/// How a write begins (see `Store::start_write`).
#[derive(Debug, Clone, Copy)]
pub struct NewWrite {
    pub from: WriteFrom,
    /// The owner and mode of a new entry (a copy keeps the live one's).
    pub owner: Owner,
    /// A version reserved with `reserve_version` (the inode the kernel was
    /// already given), or `None` for a new one.
    pub version: Option<u64>,
    /// `O_EXCL`: refused with `Exists` while the key is live or claimed.
    pub exclusive: bool,
    pub by: WriteBy,
}

/// Who writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteBy {
    /// The store's own copy (a rename, a metadata update): no claim.
    Store,
    /// A user's open by thread `pid`: its content claims the key (see
    /// `claims.rs`), and the miss that thread's lookup of the key just
    /// counted is taken back (the kernel looks a name up before it
    /// creates it).
    Open(u32),
    /// A user's writer writing again after a publish: claims the key.
    Restage,
}

impl NewWrite {
    /// A user's open by thread `pid`, not exclusive, on a new version.
    pub fn by(pid: u32, from: WriteFrom, owner: Owner) -> NewWrite {
        NewWrite {
            from,
            owner,
            version: None,
            exclusive: false,
            by: WriteBy::Open(pid),
        }
    }
}

/// What a publish is for.
#[derive(Clone)]
enum Publish {
    /// New content or metadata of the key (the listener hears of the
    /// version it replaces).
    Write,
    /// A rename: `from`, if it still holds `version`, goes in the same
    /// critical section; the kernel moves its own dentries.
    Rename {
        from: Key,
        version: u64,
        noreplace: bool,
    },
}

impl Store {
    /// Starts a write of `key` on the store's own behalf (no claim). Its
    /// content is invisible until `publish`.
    pub fn begin_write(
        &self,
        ns: &Namespace,
        key: &Key,
        from: WriteFrom,
        owner: Owner,
    ) -> Result<StagingFile, StoreError> {
        let w = NewWrite {
            from,
            owner,
            version: None,
            exclusive: false,
            by: WriteBy::Store,
        };
        self.start_write(ns, key, w)
    }

    /// A version number no other write will use: for a writer that must
    /// know the inode its content will be published as before it begins.
    pub fn reserve_version(&self) -> u64 {
        self.new_version()
    }

    /// Starts a write of `key`; its content is invisible until `publish`.
    /// A refusal (exclusive create of a taken key, over the limit) is
    /// decided and counted here.
    pub fn start_write(
        &self,
        ns: &Namespace,
        key: &Key,
        w: NewWrite,
    ) -> Result<StagingFile, StoreError> {
        let r = self.start_write_inner(ns, key, w);
        if let Err(e) = &r {
            self.record_refusal(ns, e);
        }
        r
    }

    fn start_write_inner(
        &self,
        ns: &Namespace,
        key: &Key,
        w: NewWrite,
    ) -> Result<StagingFile, StoreError> {
        let (limit, current, claim, metrics) = {
            let idx = self.lock();
            let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
            let limit = [
                state.policy.max_entry_bytes,
                state.policy.max_bytes,
                Some(idx.limits.max_bytes),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(u64::MAX);
            let now = self.clock.now();
            let live = state
                .peek(key)
                .filter(|m| idx.expires_at(&state.policy, m).is_none_or(|at| at > now));
            if let WriteBy::Open(pid) = w.by {
                let back = self.misses.created(pid, ns, key);
                self.take_back_miss(&state.metrics, back);
            }
            if w.exclusive && (live.is_some() || self.claims.is_claimed(ns, key)) {
                return Err(StoreError::Exists);
            }
            let claim = (w.by != WriteBy::Store).then(|| self.claims.take(ns, key));
            let current = match w.from {
                WriteFrom::Empty => None,
                WriteFrom::Current => live,
            };
            (limit, current, claim, std::sync::Arc::clone(&state.metrics))
        };
        let version = w.version.unwrap_or_else(|| self.new_version());
        let owner = w.owner;
        let path = self.layout.staging_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut staging =
            StagingFile::new(file, path, ns.clone(), key.clone(), version, limit, owner);
        staging.claim = claim;
        staging.metrics = Some(metrics);
        if let Some(meta) = current {
            if meta.logical_size > limit {
                return Err(StoreError::TooBig);
            }
            let src = open_nofollow(&self.layout.entry_path(ns, key))?;
            let mut reader = io::Read::take(&src, meta.logical_size);
            let copied = io::copy(&mut reader, &mut &staging.file)?;
            if copied != meta.logical_size {
                return Err(StoreError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "entry shorter than its header says",
                )));
            }
            let header = entry::read_header(&src, meta.file_size).map_err(|e| {
                StoreError::Io(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
            })?;
            staging.set_copied(meta.logical_size, header.content_sha256);
            staging.mode = meta.mode;
            staging.uid = meta.uid;
            staging.gid = meta.gid;
            staging.ttl_secs = meta.ttl_secs;
        }
        Ok(staging)
    }

    /// Publishes a staged write atomically, replacing any earlier version
    /// and evicting to stay within quotas.
    /// A refusal (over a limit, no room) is counted here. The change
    /// listener hears of the version it replaced.
    pub fn publish(&self, staging: StagingFile) -> Result<EntryInfo, StoreError> {
        let start = Instant::now();
        let ns = staging.ns.clone();
        let r = self.publish_inner(staging, Publish::Write);
        match &r {
            Ok(_) => self.record_latency(&ns, Op::Publish, start.elapsed()),
            Err(e) => self.record_refusal(&ns, e),
        }
        r
    }

    fn publish_inner(
        &self,
        mut staging: StagingFile,
        how: Publish,
    ) -> Result<EntryInfo, StoreError> {
        let sha256 = staging.content_sha256()?;
        let now = self.clock.now();
        let durability = {
            let idx = self.lock();
            idx.namespace(&staging.ns)
                .ok_or(StoreError::NotFound)?
                .policy
                .durability
        };
        let header = entry::EntryHeader {
            namespace: staging.ns.as_bytes().to_vec(),
            key: staging.key.as_bytes().to_vec(),
            mtime: staging.mtime.unwrap_or(now),
            ttl_secs: staging.ttl_secs,
            logical_size: staging.len,
            stored_content_size: staging.len,
            compression: 0,
            content_sha256: sha256,
            mode: staging.mode,
            uid: staging.uid,
            gid: staging.gid,
            // Every publish, a metadata change's or a rename's included,
            // changes the entry.
            ctime: now,
        };
        {
            use std::os::unix::fs::FileExt;
            if staging.overrun {
                staging.file.set_len(staging.len)?;
            }
            staging
                .file
                .write_all_at(&header.encode_trailer(), staging.len)?;
        }
        if durability == Durability::Fsync {
            staging.file.sync_all()?;
        }
        let md = staging.file.metadata()?;
        let meta = meta_from_header(
            &header,
            staging.version,
            md.ino(),
            md.len(),
            md.blocks() * 512,
            true,
        );
        let dest = self.layout.entry_path(&staging.ns, &staging.key);
        let mut made_shard = self.layout.ensure_shard(&dest)?;

        let (ns, key) = (staging.ns.clone(), staging.key.clone());
        let mut trash = Vec::new();
        let info = {
            let mut idx = self.lock();
            let state = idx.namespace(&ns).ok_or(StoreError::NotFound)?;
            let policy = state.policy.clone();
            if policy
                .max_entry_bytes
                .is_some_and(|m| meta.logical_size > m)
                || policy.max_bytes.is_some_and(|q| meta.stored_bytes > q)
                || meta.stored_bytes > idx.limits.max_bytes
            {
                return Err(StoreError::TooBig);
            }
            if policy.max_entries == Some(0) || idx.limits.max_entries == Some(0) {
                return Err(StoreError::NoSpace);
            }
            if let Publish::Rename {
                noreplace: true, ..
            } = how
            {
                let now_live = idx
                    .peek(&ns, &key)
                    .is_some_and(|m| idx.expires_at(&policy, &m).is_none_or(|at| at > now));
                if now_live || self.claims.is_claimed(&ns, &key) {
                    return Err(StoreError::Exists);
                }
            }
            self.index_changed_locked();
            let old = idx.remove(&ns, &key);
            let Some(victims) = idx.make_room(&ns, meta.stored_bytes, now) else {
                if let Some(old) = old {
                    idx.insert(&ns, key.clone(), old);
                }
                return Err(StoreError::NoSpace);
            };
            // Keep the replaced version readable for a grace period: a
            // reader whose lookup saw it may open it a moment later.
            let retired = old
                .as_ref()
                .filter(|o| o.version != meta.version)
                .and_then(|o| {
                    let keep = self.layout.trash_path();
                    fs::hard_link(&dest, &keep).ok().map(|()| (o.clone(), keep))
                });
            match self.rename_into_place(&staging.path, &dest) {
                Ok(made) => made_shard |= made,
                Err(e) => {
                    if let Some((_, keep)) = retired {
                        // A second link of the live file: it frees nothing.
                        trash.push((keep, 0));
                    }
                    if let Some(old) = old {
                        idx.insert(&ns, key.clone(), old);
                    }
                    self.move_to_trash_locked(&idx, victims, &mut trash);
                    drop(idx);
                    self.dispose(trash);
                    return Err(e.into());
                }
            }
            staging.published = true;
            if let Some((old, keep)) = retired {
                self.retired_lock().insert(old.version, (old, keep, now));
            }
            if let (Publish::Write, Some(old)) = (&how, &old)
                && old.version != meta.version
            {
                let ns_id = idx.namespace(&ns).expect("exists").id;
                self.tell(Change::Replaced {
                    ns_id,
                    key: &key,
                    version: meta.version,
                });
            }
            if let Publish::Rename { from, version, .. } = &how
                && idx.peek(&ns, from).is_some_and(|m| m.version == *version)
            {
                let gone = idx.remove(&ns, from).map_or(0, |m| m.stored_bytes);
                let from_path = self.layout.entry_path(&ns, from);
                let to = self.layout.trash_path();
                if fs::rename(&from_path, &to).is_ok() {
                    trash.push((to, gone));
                }
            }
            idx.insert(&ns, key.clone(), meta.clone());
            let m = &idx.namespace(&ns).expect("exists").metrics;
            metrics::add(&m.publishes, 1);
            metrics::add(&m.published_bytes, meta.logical_size);
            self.move_to_trash_locked(&idx, victims, &mut trash);
            // Live now: the writer's claim may go (see `claims.rs`).
            staging.claim = None;
            Self::info_locked(&idx, &ns, &meta)
        };
        self.dispose(trash);
        if durability == Durability::Fsync
            && let Some(dir) = dest.parent()
        {
            File::open(dir)?.sync_all()?;
            // A shard made for this entry must be in its parents too.
            if made_shard {
                for up in dir.ancestors().skip(1).take(2) {
                    File::open(up)?.sync_all()?;
                }
            }
        }
        Ok(info)
    }

    /// Renames a staged file to its entry path. The shard directory is
    /// made again if it went away since it was last seen; says whether.
    fn rename_into_place(&self, from: &Path, dest: &Path) -> io::Result<bool> {
        match fs::rename(from, dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && from.exists() => {
                self.layout.shard_vanished(dest);
                let made = self.layout.ensure_shard(dest)?;
                fs::rename(from, dest).map(|()| made)
            }
            r => r.map(|()| false),
        }
    }

    /// Stages a verbatim copy of a key's live version (content, owner,
    /// mode, TTL), for changes that republish it.
    fn copy_of_live(
        &self,
        ns: &Namespace,
        key: &Key,
    ) -> Result<(EntryMeta, StagingFile), StoreError> {
        let meta = self.live_meta(ns, key)?;
        let owner = Owner {
            uid: meta.uid,
            gid: meta.gid,
            mode: meta.mode,
        };
        let staging = self.begin_write(ns, key, WriteFrom::Current, owner)?;
        // Expired or removed in between: nothing was copied.
        if staging.known_sha256.is_none() {
            return Err(StoreError::NotFound);
        }
        Ok((meta, staging))
    }

    /// Renames a live entry within its namespace, replacing the target
    /// unless `noreplace` (then a live or claimed target is `Exists`,
    /// decided in the critical section that renames). Content and metadata
    /// travel unchanged; the trailer names the new key.
    pub fn rename(
        &self,
        ns: &Namespace,
        from: &Key,
        to: &Key,
        noreplace: bool,
    ) -> Result<EntryInfo, StoreError> {
        let (meta, mut staging) = self.copy_of_live(ns, from)?;
        staging.retarget(to.clone());
        staging.mtime = Some(meta.mtime);
        staging.version = meta.version;
        let how = Publish::Rename {
            from: from.clone(),
            version: meta.version,
            noreplace,
        };
        self.publish_inner(staging, how)
    }

    /// Applies metadata changes (touch, chmod, chown, TTL, truncate) by
    /// republishing a copy. Truncation makes a new version.
    pub fn update(
        &self,
        ns: &Namespace,
        key: &Key,
        update: MetaUpdate,
    ) -> Result<EntryInfo, StoreError> {
        let (meta, mut staging) = self.copy_of_live(ns, key)?;
        staging.mtime = Some(update.mtime.unwrap_or(meta.mtime));
        if let Some(ttl) = update.ttl_secs {
            staging.ttl_secs = ttl;
        }
        staging.mode = update.mode.unwrap_or(meta.mode);
        staging.uid = update.uid.unwrap_or(meta.uid);
        staging.gid = update.gid.unwrap_or(meta.gid);
        match update.truncate {
            Some(size) if size != meta.logical_size => staging.truncate(size)?,
            _ => staging.version = meta.version,
        }
        self.publish(staging)
    }
}
