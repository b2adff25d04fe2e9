//! Writes: staging a new version, publishing it atomically, and the
//! changes that republish a copy (rename, metadata updates).
//!
//! Invariants: nothing is visible under a key until its content and
//! trailer are complete and renamed into place from `staging/`; the index,
//! its accounting and the rename change in one critical section, and after
//! every publish usage <= every quota that applies; a replaced version
//! stays readable for a grace period.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::index::EntryMeta;
use super::staging::{Owner, StagingFile, create_staging_file};
use super::xattrs::XattrChange;
use super::{Change, EntryInfo, Store, StoreError, UnixNanos, entry, meta_from_header};
use crate::config::{Compression, Durability};
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
    pub atime: Option<UnixNanos>,
    /// `Some(None)` clears the per-entry TTL.
    pub ttl_secs: Option<Option<u64>>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub truncate: Option<u64>,
    /// A `user.*` xattr set or removed.
    pub xattr: Option<XattrChange>,
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
pub(super) enum Publish {
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
        // Across daemons first (file I/O stays outside the index lock);
        // a refusal is returned once the miss below is taken back.
        let across = match w.exclusive && w.by != WriteBy::Store {
            true => self.claim_across(ns, key).map(Some),
            false => Ok(None),
        };
        let (limit, current, credit, claim, metrics, staged, durable) = {
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
            if let Some(c) = state.path_conflict(key.as_bytes()) {
                return Err(c.into());
            }
            let across = across?;
            if w.exclusive && (live.is_some() || self.claims.is_claimed(ns, key)) {
                return Err(StoreError::Exists);
            }
            let claim =
                (w.by != WriteBy::Store).then(|| self.claims.take(ns, key).with_file(across));
            let credit = live.as_ref().map_or(0, |m| m.stored_bytes);
            let current = match w.from {
                WriteFrom::Empty => None,
                WriteFrom::Current => live,
            };
            let metrics = std::sync::Arc::clone(&state.metrics);
            let staged = std::sync::Arc::clone(&idx.staged);
            let durable = state.policy.durability == Durability::Fsync;
            (limit, current, credit, claim, metrics, staged, durable)
        };
        // A new key's shard is made while its writer writes (see
        // `StagePool::want_shard`).
        if current.is_none() && w.by != WriteBy::Store && !durable {
            let dest = self.layout.entry_path(ns, key);
            if !self.layout.shard_known(&dest) {
                self.stage_pool.want_shard(dest);
            }
        }
        let version = w.version.unwrap_or_else(|| self.new_version());
        let owner = w.owner;
        let io = &self.layout.io;
        let (file, path) =
            self.with_room_io(0, || create_staging_file(&self.layout, &self.stage_pool))?;
        let mut staging = StagingFile::new(
            file,
            path,
            ns.clone(),
            key.clone(),
            version,
            limit,
            owner,
            io.clone(),
            staged,
        );
        staging.claim = claim;
        staging.metrics = Some(metrics);
        staging.credit = credit;
        // A user's new content is made now: its creator's `fstat` shows
        // this time, and so does the version published from it.
        if current.is_none() && w.by != WriteBy::Store {
            staging.modified(self.clock.now());
        }
        if let Some(meta) = current {
            let (meta, src, header) = self.current_source(ns, key, meta)?;
            if meta.logical_size > limit {
                return Err(StoreError::TooBig);
            }
            if header.compression == entry::COMPRESSION_NONE {
                self.copy_content(&src, &mut staging, meta.logical_size)?;
            } else {
                self.copy_plain_into(&src, &header, &mut staging)?;
            }
            staging.set_copied(meta.logical_size, header.content_sha256);
            // Until it changes, the copy has the times of what it copies.
            staging.mtime = Some(meta.mtime);
            staging.ctime = Some(meta.ctime);
            staging.atime = Some(meta.atime);
            staging.mode = meta.mode;
            staging.uid = meta.uid;
            staging.gid = meta.gid;
            staging.ttl_secs = meta.ttl_secs;
            staging.xattrs = header.xattrs;
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

    pub(super) fn publish_inner(
        &self,
        mut staging: StagingFile,
        how: Publish,
    ) -> Result<EntryInfo, StoreError> {
        let sha256 = staging.content_sha256()?;
        let now = self.clock.now();
        let (durability, compression) = {
            let idx = self.lock();
            let policy = &idx
                .namespace(&staging.ns)
                .ok_or(StoreError::NotFound)?
                .policy;
            let c = policy.compression.unwrap_or(idx.limits.compression);
            (policy.durability, c)
        };
        let mtime = staging.mtime.unwrap_or(now);
        let mut header = entry::EntryHeader {
            namespace: staging.ns.as_bytes().to_vec(),
            key: staging.key.as_bytes().to_vec(),
            mtime,
            ttl_secs: staging.ttl_secs,
            logical_size: staging.len,
            stored_content_size: staging.len,
            compression: 0,
            content_sha256: sha256,
            mode: staging.mode,
            uid: staging.uid,
            gid: staging.gid,
            // A change made while staged was made then; a store's copy
            // (a metadata change, a rename) changes the entry now.
            ctime: staging.ctime.unwrap_or(now),
            atime: staging.atime.unwrap_or(mtime),
            renamed_from: None,
            xattrs: staging.xattrs.clone(),
        };
        let io = &self.layout.io;
        if staging.overrun {
            io.set_len(&staging.file, staging.len)?;
        }
        if let Compression::Zstd { level } = compression {
            self.compress_staged(&mut staging, &mut header, level)?;
        }
        let trailer = header.encode_trailer();
        self.with_room_io(trailer.len() as u64, || {
            io.write_all_at(&staging.file, &trailer, header.stored_content_size)
        })?;
        if durability == Durability::Fsync {
            io.sync_all(&staging.file)?;
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
        let mut made_shard = self.with_room_io(0, || self.layout.ensure_shard(&dest))?;

        // What the other daemons published counts in the quota this
        // publish makes room in (see `catch_up`); a daemon just started
        // beside others publishes once they know of it.
        self.wait_announced();
        self.catch_up();
        // A rename that finds the volume full (a directory that must grow)
        // is retried once room is made, like any backing write.
        let (info, made) =
            self.with_room(0, || self.commit(&mut staging, &how, &meta, &dest, now))?;
        // This entry is in the log before close() returns; a publish of
        // another daemon's that decided its evictions without it is seen
        // now (one of the two sees the other) and evicted for.
        self.changes.flush();
        self.catch_up();
        made_shard |= made;
        if durability == Durability::Fsync
            && let Some(dir) = dest.parent()
        {
            io.sync_dir(dir)?;
            // A shard made for this entry must be in its parents too.
            if made_shard {
                for up in dir.ancestors().skip(1).take(2) {
                    io.sync_dir(up)?;
                }
            }
        }
        Ok(info)
    }

    /// The critical section of a publish: quotas decided, victims taken,
    /// the staged file renamed into place, the index changed. Says whether
    /// a shard directory was made. On failure nothing changed.
    fn commit(
        &self,
        staging: &mut StagingFile,
        how: &Publish,
        meta: &EntryMeta,
        dest: &Path,
        now: UnixNanos,
    ) -> Result<(EntryInfo, bool), StoreError> {
        let io = &self.layout.io;
        let (ns, key) = (staging.ns.clone(), staging.key.clone());
        let mut trash = Vec::new();
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
        if let Some(c) = state.path_conflict(key.as_bytes()) {
            return Err(c.into());
        }
        if policy.max_entries == Some(0) || idx.limits.max_entries == Some(0) {
            return Err(StoreError::NoSpace);
        }
        if let Publish::Rename {
            noreplace: true, ..
        } = *how
        {
            let now_live = idx
                .peek(&ns, &key)
                .is_some_and(|m| idx.expires_at(&policy, &m).is_none_or(|at| at > now));
            if now_live || self.claims.is_claimed(&ns, &key) {
                return Err(StoreError::Exists);
            }
        }
        self.index_changed_locked();
        // The write's share of the quota becomes its entry's, in this
        // critical section (see room.rs).
        staging
            .staged
            .fetch_sub(std::mem::take(&mut staging.reserved), Ordering::Relaxed);
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
                io.hard_link(dest, &keep).ok().map(|()| (o.clone(), keep))
            });
        let made = match self.put_in_place(staging, dest, old.is_some()) {
            Ok(m) => m,
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
        };
        staging.published = true;
        if let Some((old, keep)) = retired {
            self.retired_lock().insert(old.version, (old, keep, now));
        }
        if let (Publish::Write, Some(old)) = (how, &old)
            && old.version != meta.version
        {
            let ns_id = idx.namespace(&ns).expect("exists").id;
            self.tell(Change::Replaced {
                ns_id,
                key: &key,
                version: meta.version,
            });
        }
        if let Publish::Rename { from, version, .. } = how
            && idx.peek(&ns, from).is_some_and(|m| m.version == *version)
        {
            let gone = idx.remove(&ns, from).expect("peeked");
            match self.take_out_of_place(&self.layout.entry_path(&ns, from)) {
                Ok(Some(to)) => trash.push((to, gone.stored_bytes)),
                Ok(None) => {}
                Err(e) => {
                    // Still on disk, so still in the index: the
                    // rename became a copy, never a loss.
                    log::warn!("cannot remove {ns}/{from:?} after its rename: {e}");
                    idx.insert(&ns, from.clone(), gone);
                }
            }
        }
        idx.insert(&ns, key.clone(), meta.clone());
        // Written by `publish` itself right after (no thread woken).
        self.changes.key_flushed_by_caller(&ns, &key);
        if let Publish::Rename { from, .. } = how {
            self.changes.key(&ns, from);
        }
        let m = &idx.namespace(&ns).expect("exists").metrics;
        metrics::add(&m.publishes, 1);
        metrics::add(&m.published_bytes, meta.logical_size);
        self.move_to_trash_locked(&idx, victims, &mut trash);
        // Live now: the writer's claim may go (see `claims.rs`).
        staging.claim = None;
        let info = Self::info_locked(&idx, &ns, meta);
        drop(idx);
        self.dispose(trash);
        Ok((info, made))
    }
}
