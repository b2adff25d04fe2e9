//! `StagingFile`: an entry being written. It lives in `BACKING/staging/`
//! (same filesystem as `data/`, so publish is one atomic link or rename),
//! holds only content until publish appends the trailer, and is removed
//! when dropped unpublished — so a failed or abandoned write leaves
//! nothing.
//!
//! Where the backing filesystem has O_TMPFILE, a staging file has no name
//! at all until its publish links it into place: writers add and remove
//! no name in the staging directory they all share (its lock was where
//! concurrent writers queued), a new key's publish is one `linkat`, and a
//! crash leaves no orphan. Elsewhere (the first refusal switches the store
//! over) it is a uniquely named file, renamed into place.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::backing::BackingIo;
use super::claims::Claim;
use super::clock::UnixNanos;
use super::layout::Layout;
use super::stage_pool::StagePool;
use super::stats::count_refusal;
use super::xattrs::{self, XattrChange, Xattrs};
use super::{Store, StoreError};
use crate::metrics::NsMetrics;
use crate::names::{Key, Namespace};

pub struct StagingFile {
    pub(super) file: File,
    /// Its name in staging; `None` while it is unnamed (O_TMPFILE).
    pub(super) path: Option<PathBuf>,
    pub(super) ns: Namespace,
    pub(super) key: Key,
    /// The version this content will be published as.
    pub(super) version: u64,
    pub(super) len: u64,
    /// Largest logical size allowed (max_entry_bytes and quotas).
    pub(super) limit: u64,
    /// Running hash while writes are sequential from offset 0; lets a
    /// streamed publish skip re-reading its content.
    hasher: Option<(Sha256, u64)>,
    /// The content's digest when it is a verbatim copy of a published one.
    pub(super) known_sha256: Option<[u8; 32]>,
    pub(super) ttl_secs: Option<u64>,
    /// The times the version will be published with, as its writer sees
    /// them: fixed when they change (a create, write or truncate; a
    /// utime; a chmod), never by the publish itself, so what the writer's
    /// `fstat` saw is what is published. `None`: the publish's time.
    pub(super) mtime: Option<UnixNanos>,
    pub(super) ctime: Option<UnixNanos>,
    /// `None`: the mtime.
    pub(super) atime: Option<UnixNanos>,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// The version's own `user.*` xattrs: none for new content, the
    /// copied version's for a copy-on-write open (an append keeps them).
    pub(super) xattrs: Xattrs,
    pub(super) published: bool,
    /// Still a verbatim copy of a published version, metadata included.
    unmodified_copy: bool,
    /// A failed write may have left bytes past `len`: the file is cut back
    /// before the trailer goes on. Otherwise the file is `len` long.
    pub(super) overrun: bool,
    /// A user's write holds its key (see `claims.rs`) until published.
    pub(super) claim: Option<Claim>,
    /// Where a refused write (over its limit, volume full) is counted.
    pub(super) metrics: Option<std::sync::Arc<NsMetrics>>,
    /// Bytes of the quota this write holds (see `room.rs`), out of the
    /// store's `staged` total, given back when it is dropped or published.
    pub(super) reserved: u64,
    /// Bytes the write may stage before it reserves any: the stored size
    /// of the version it replaces, which its publish frees.
    pub(super) credit: u64,
    pub(super) staged: Arc<AtomicU64>,
    pub(super) io: BackingIo,
}

/// Makes a staging file in `layout`'s staging dir: unnamed where the
/// filesystem allows it (see the module docs), else named. An unnamed one
/// comes from `pool` when it has one ready (see `stage_pool.rs`).
pub(super) fn create_staging_file(
    layout: &Layout,
    pool: &StagePool,
) -> io::Result<(File, Option<PathBuf>)> {
    if layout.unnamed.load(Ordering::Relaxed) {
        if let Some(file) = pool.take() {
            return Ok((file, None));
        }
        match layout.io.create_unnamed(&layout.staging_work) {
            Ok(file) => return Ok((file, None)),
            // Not this filesystem's feature: named files from now on.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                log::info!("backing filesystem refuses O_TMPFILE ({e}): staging files are named");
                layout.unnamed.store(false, Ordering::Relaxed);
                pool.disable();
            }
            Err(e) => return Err(e),
        }
    }
    let path = layout.staging_path();
    layout.io.create_new(&path).map(|file| (file, Some(path)))
}

/// Who writes, for the entry's owner and mode.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl StagingFile {
    #[allow(clippy::too_many_arguments)] // each is a distinct part of a new write
    pub(super) fn new(
        file: File,
        path: Option<PathBuf>,
        ns: Namespace,
        key: Key,
        version: u64,
        limit: u64,
        owner: Owner,
        io: BackingIo,
        staged: Arc<AtomicU64>,
    ) -> StagingFile {
        StagingFile {
            file,
            path,
            ns,
            key,
            version,
            len: 0,
            limit,
            hasher: Some((Sha256::new(), 0)),
            known_sha256: None,
            ttl_secs: None,
            mtime: None,
            ctime: None,
            atime: None,
            mode: owner.mode,
            uid: owner.uid,
            gid: owner.gid,
            xattrs: Xattrs::new(),
            published: false,
            unmodified_copy: false,
            overrun: false,
            claim: None,
            metrics: None,
            reserved: 0,
            credit: 0,
            staged,
            io,
        }
    }

    /// Counts a refusal where it is decided, and passes it on.
    pub(super) fn refused(&self, e: StoreError) -> StoreError {
        if let Some(m) = &self.metrics {
            count_refusal(m, &e);
        }
        e
    }

    /// Marks the staged bytes as an unmodified copy of a published entry.
    pub(super) fn set_copied(&mut self, len: u64, sha256: [u8; 32]) {
        self.len = len;
        self.hasher = None;
        self.known_sha256 = Some(sha256);
        self.unmodified_copy = true;
    }

    /// Nothing was changed since the copy was taken: publishing would only
    /// make a new version of the same bytes.
    pub fn is_unmodified_copy(&self) -> bool {
        self.unmodified_copy
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn mode(&self) -> u32 {
        self.mode
    }

    pub fn owner(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// The mtime the version will have, if fixed yet.
    pub fn mtime(&self) -> Option<UnixNanos> {
        self.mtime
    }

    /// The ctime the version will have, if fixed yet.
    pub fn ctime(&self) -> Option<UnixNanos> {
        self.ctime
    }

    /// The atime the version will have, if set apart from its mtime.
    pub fn atime(&self) -> Option<UnixNanos> {
        self.atime
    }

    /// The content changed at `now` (a write, a truncate, the create).
    pub(super) fn modified(&mut self, now: UnixNanos) {
        self.mtime = Some(now);
        self.ctime = Some(now);
    }

    /// The metadata changed at `now` (chmod, chown, utime, TTL).
    pub fn changed(&mut self, now: UnixNanos) {
        self.unmodified_copy = false;
        self.ctime = Some(now);
    }

    pub fn ttl_secs(&self) -> Option<u64> {
        self.ttl_secs
    }

    /// Points this write at another key of the same namespace (a rename of
    /// a file still being written).
    pub fn retarget(&mut self, key: Key) {
        self.unmodified_copy = false;
        self.claim = self.claim.take().map(|c| c.moved_to(&key));
        self.key = key;
    }

    /// Lets the key go: this content will never be published (its key was
    /// unlinked while it was written), so it no longer holds the key.
    pub fn unclaim(&mut self) {
        self.claim = None;
    }

    pub fn set_ttl(&mut self, ttl_secs: Option<u64>) {
        self.unmodified_copy = false;
        self.ttl_secs = ttl_secs;
    }

    /// The TTL clock of the published entry starts here (`cp -p`, `touch -d`).
    pub fn set_mtime(&mut self, mtime: UnixNanos) {
        self.unmodified_copy = false;
        self.mtime = Some(mtime);
    }

    pub fn set_atime(&mut self, atime: UnixNanos) {
        self.unmodified_copy = false;
        self.atime = Some(atime);
    }

    /// The xattrs the version will be published with.
    pub fn xattrs(&self) -> &Xattrs {
        &self.xattrs
    }

    /// Changes an xattr of the version being written (a metadata change,
    /// like a chmod: the content stays a copy if it was one).
    pub fn change_xattr(&mut self, change: &XattrChange) -> Result<(), StoreError> {
        xattrs::apply(&mut self.xattrs, change)?;
        self.unmodified_copy = false;
        Ok(())
    }

    /// Sets each of `list`'s xattrs, as `setfattr` would one by one;
    /// says how many were refused (not a `user.` name, over a limit).
    pub fn keep_xattrs(&mut self, list: &[(Vec<u8>, Vec<u8>)]) -> u64 {
        let refused = list.iter().filter(|(name, value)| {
            let change = XattrChange::Set {
                name: name.clone(),
                value: value.clone(),
                mode: xattrs::SetMode::Any,
            };
            self.change_xattr(&change).is_err()
        });
        refused.count() as u64
    }

    pub fn set_mode(&mut self, mode: u32) {
        self.unmodified_copy = false;
        self.mode = mode;
    }

    pub fn set_owner(&mut self, uid: Option<u32>, gid: Option<u32>) {
        self.unmodified_copy = false;
        self.uid = uid.unwrap_or(self.uid);
        self.gid = gid.unwrap_or(self.gid);
    }

    /// Writes at `offset`; fails with `TooBig` past the entry's limit.
    /// Unaccounted: users' writes go through `Store::write_staged`.
    #[cfg(test)]
    pub(super) fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        self.write_raw(offset, data).map_err(|e| self.refused(e))
    }

    /// Writes at `offset`, counting nothing (the store counts a refusal
    /// once it has given up making room).
    pub(super) fn write_raw(&mut self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        // Writing nothing changes nothing, wherever (it used to stretch
        // `len` past the file's end).
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(StoreError::TooBig)?;
        if end > self.limit {
            return Err(StoreError::TooBig);
        }
        // Whatever happens next, the bytes may no longer be the copy's.
        self.known_sha256 = None;
        self.unmodified_copy = false;
        if let Err(e) = self.io.write_all_at(&self.file, data, offset) {
            self.overrun = true;
            self.hasher = None;
            return Err(e.into());
        }
        match &mut self.hasher {
            Some((h, upto)) if *upto == offset && offset == self.len => {
                h.update(data);
                *upto = end;
            }
            _ => self.hasher = None,
        }
        self.len = self.len.max(end);
        Ok(())
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = buf.len().min((self.len - offset) as usize);
        self.io.read_at(&self.file, &mut buf[..n], offset)
    }

    /// Changes the staged length, counting nothing (see `write_raw`).
    pub(super) fn truncate_raw(&mut self, size: u64) -> Result<(), StoreError> {
        if size > self.limit {
            return Err(StoreError::TooBig);
        }
        if let Err(e) = self.io.set_len(&self.file, size) {
            self.overrun = true;
            self.known_sha256 = None;
            self.unmodified_copy = false;
            self.hasher = None;
            return Err(e.into());
        }
        if size != self.len {
            self.known_sha256 = None;
            self.unmodified_copy = false;
            if !matches!(self.hasher, Some((_, upto)) if upto == size) {
                self.hasher = None;
            }
        }
        self.len = size;
        Ok(())
    }

    /// The content digest, from the running hash when writes were
    /// sequential, else by reading the staged bytes back.
    pub(super) fn content_sha256(&mut self) -> io::Result<[u8; 32]> {
        if let Some(sha) = self.known_sha256 {
            return Ok(sha);
        }
        if let Some((h, upto)) = self.hasher.take()
            && upto == self.len
        {
            return Ok(h.finalize().into());
        }
        super::entry::content_sha256(&self.io, &self.file, self.len)
    }
}

impl Store {
    /// Keeps unnamed staging files ready for writers, and makes new keys'
    /// shards while they are written (a daemon does; see `stage_pool.rs`).
    /// Stopped by `end_session`. Where the filesystem has no O_TMPFILE it
    /// does neither, and writers make named files.
    pub fn start_stager(&self) {
        if self.layout.unnamed.load(Ordering::Relaxed) {
            self.stage_pool.start(
                self.layout.io.clone(),
                self.layout.staging_work.clone(),
                self.layout.shards_seen(),
            );
        }
    }
}

/// Where a staged file goes at publish (under the index lock).
impl Store {
    /// Puts a staged file at its entry path. An unnamed one is linked
    /// there while the name is free (one directory operation); to replace
    /// a version it is named in staging first and renamed over it, as a
    /// named one is. Says whether a shard directory was made.
    pub(super) fn put_in_place(
        &self,
        staging: &mut StagingFile,
        dest: &Path,
        replacing: bool,
    ) -> io::Result<bool> {
        let io = &self.layout.io;
        if staging.path.is_none() {
            if !replacing {
                // EEXIST: a file the index does not know yet (another
                // daemon's publish): replaced, as a rename would.
                match self.link_into_place(&staging.file, dest) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    r => return r,
                }
            }
            let name = self.layout.staging_path();
            io.link_unnamed(&staging.file, &name)?;
            staging.path = Some(name);
        }
        let from = staging.path.clone().expect("named above");
        self.rename_into_place(&from, dest)
    }

    /// Links an unnamed staged file at `dest`, making its shard directory
    /// again if it went away; says whether it did.
    fn link_into_place(&self, file: &std::fs::File, dest: &Path) -> io::Result<bool> {
        let io = &self.layout.io;
        match io.link_unnamed(file, dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.layout.shard_vanished(dest);
                let made = self.layout.ensure_shard(dest)?;
                io.link_unnamed(file, dest).map(|()| made)
            }
            r => r.map(|()| false),
        }
    }

    /// Renames a staged file to its entry path. The shard directory is
    /// made again if it went away since it was last seen; says whether.
    pub(super) fn rename_into_place(&self, from: &Path, dest: &Path) -> io::Result<bool> {
        let io = &self.layout.io;
        match io.rename(from, dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && from.exists() => {
                self.layout.shard_vanished(dest);
                let made = self.layout.ensure_shard(dest)?;
                io.rename(from, dest).map(|()| made)
            }
            r => r.map(|()| false),
        }
    }
}

impl Drop for StagingFile {
    fn drop(&mut self) {
        // Giving back lowers the total only: no lock needed (see room.rs).
        self.staged.fetch_sub(self.reserved, Ordering::Relaxed);
        if !self.published
            && let Some(path) = &self.path
        {
            let _ = self.io.remove_file(path);
        }
    }
}
