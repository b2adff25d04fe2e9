//! Room on the backing volume: writes in flight hold a share of the quota
//! as their bytes arrive, and a backing write that finds the volume full
//! makes room by eviction before it gives up.
//!
//! Invariants:
//! 1. `Index::staged` (bytes reserved by staging files) plus the entries'
//!    stored bytes never exceed the whole-cache quota: a write reserves
//!    under the index lock, evicting (expired first, then LRU) to make
//!    room, and fails with `NoSpace` only when the writes in flight alone
//!    fill the quota. A publish turns its reservation into its entry in
//!    one critical section; a dropped write gives it back.
//! 2. The quota keeps headroom below what the volume holds
//!    (`effective_quota`) for what is not an entry: trailers, directories,
//!    versions kept for their readers, the index snapshot.
//! 3. A backing operation that fails with ENOSPC or EDQUOT (the volume
//!    filled behind the quota's back: other files on it) frees the kept
//!    replaced versions and evicts entries whose bytes cover the need,
//!    unlinked at once, and is retried; it reaches the writer as
//!    `NoSpace` only when all the cache holds could not cover it, and
//!    then no entry was evicted for nothing. Each such episode is counted
//!    in `backing_full`.

use std::fs::File;
use std::io;

use super::backing;
use super::entry;
use super::index::EntryMeta;
use super::reaper::unlink_all;
use super::staging::StagingFile;
use super::{Store, StoreError};
use crate::metrics;
use crate::names::{Key, Namespace};

/// At least this much is freed when the volume is found full, so a stream
/// of small writes does not evict one entry per write.
const MIN_FREE: u64 = 1 << 20;

/// The whole-cache quota for a volume that can hold `cap` bytes of
/// entries: `wanted`, or what the volume holds less headroom for writes
/// in flight and what is not an entry (1/16 of it, 1 MiB to 256 MiB).
pub(super) fn effective_quota(wanted: u64, cap: u64) -> u64 {
    let headroom = (cap / 16).clamp(1 << 20, 256 << 20);
    wanted.min(cap.saturating_sub(headroom))
}

impl Store {
    /// Writes `data` at `offset` of a staged write. Its bytes are reserved
    /// in the quota as they arrive (evicting to make room); past the
    /// entry's limit it fails with `TooBig`, when no room can be made with
    /// `NoSpace`. A refusal is counted here.
    pub fn write_staged(
        &self,
        st: &mut StagingFile,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        self.write_staged_inner(st, offset, data)
            .map_err(|e| st.refused(e))
    }

    fn write_staged_inner(
        &self,
        st: &mut StagingFile,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(StoreError::TooBig)?;
        if end > st.limit {
            return Err(StoreError::TooBig);
        }
        self.reserve(st, end)?;
        self.with_room(data.len() as u64, || st.write_raw(offset, data))?;
        st.modified(self.clock.now());
        Ok(())
    }

    /// Appends at the end of a staged write (see `write_staged`); returns
    /// where the data went.
    pub fn append_staged(&self, st: &mut StagingFile, data: &[u8]) -> Result<u64, StoreError> {
        let at = st.len;
        self.write_staged(st, at, data)?;
        Ok(at)
    }

    /// Sets a staged write's length (see `write_staged`).
    pub fn truncate_staged(&self, st: &mut StagingFile, size: u64) -> Result<(), StoreError> {
        let r = if size > st.limit {
            Err(StoreError::TooBig)
        } else {
            self.reserve(st, size)
                .and_then(|()| self.with_room(0, || st.truncate_raw(size)))
                .map(|()| st.modified(self.clock.now()))
        };
        r.map_err(|e| st.refused(e))
    }

    /// Makes `st`'s reservation cover `len` bytes of content.
    fn reserve(&self, st: &mut StagingFile, len: u64) -> Result<(), StoreError> {
        let want = len.saturating_sub(st.credit);
        if want <= st.reserved {
            return Ok(());
        }
        let add = want - st.reserved;
        let mut trash = Vec::new();
        {
            let mut idx = self.lock();
            let victims = idx
                .reserve_staged(add, self.clock.now())
                .ok_or(StoreError::NoSpace)?;
            self.move_to_trash_locked(&idx, victims, &mut trash);
        }
        st.reserved = want;
        self.dispose(trash);
        Ok(())
    }

    /// Runs a backing operation that needs about `need` bytes of the
    /// volume; when it finds the volume full, makes room and retries (see
    /// the module docs). Its other failures pass through.
    pub(super) fn with_room<T>(
        &self,
        need: u64,
        mut op: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut counted = false;
        loop {
            match op() {
                Err(StoreError::Io(e)) if backing::is_full(&e) => {
                    if !counted {
                        metrics::add(&self.metrics.backing_full, 1);
                        counted = true;
                    }
                    if !self.free_volume(need) {
                        return Err(StoreError::NoSpace);
                    }
                }
                r => return r,
            }
        }
    }

    /// Like `with_room`, for an operation that fails with a plain I/O error.
    pub(super) fn with_room_io<T>(
        &self,
        need: u64,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Result<T, StoreError> {
        self.with_room(need, || op().map_err(StoreError::from))
    }

    /// Frees at least `need` bytes of the volume (and `MIN_FREE`, where
    /// the cache holds that much): kept replaced versions, then entries,
    /// expired first. Says whether anything was freed; evicts no entry
    /// when everything together would not cover `need`.
    fn free_volume(&self, need: u64) -> bool {
        let mut trash: Vec<_> = crate::sync::lock(&self.retired)
            .drain()
            .map(|(_, (meta, path, _))| (path, meta.stored_bytes))
            .collect();
        let kept: u64 = trash.iter().map(|t| t.1).sum();
        {
            let mut idx = self.lock();
            let held = idx.total_bytes().saturating_add(kept);
            let want = need.max(MIN_FREE).min(held).saturating_sub(kept);
            if held >= need.max(1) && want > 0 {
                let victims = idx.evict_bytes(want, self.clock.now());
                self.move_to_trash_locked(&idx, victims, &mut trash);
            }
        }
        let freed = !trash.is_empty();
        // At once, not on the reaper: the space is wanted now.
        unlink_all(&self.layout.io, &trash);
        freed
    }

    /// The live version a write starts from, opened with its trailer.
    /// Another daemon may have replaced it since the index said `meta`
    /// (through a view of another host's volume, the file's cached size
    /// is then the old one's): the index learns the new one and the copy
    /// starts from it, rather than failing the user's open with EIO.
    pub(super) fn current_source(
        &self,
        ns: &Namespace,
        key: &Key,
        mut meta: EntryMeta,
    ) -> Result<(EntryMeta, std::fs::File, entry::EntryHeader), StoreError> {
        let io = &self.layout.io;
        for _ in 0..4 {
            let src = io.open_nofollow(&self.layout.entry_path(ns, key))?;
            let read = match io.fstat_fresh(&src)? {
                id if id == (meta.file_id, meta.file_size) => {
                    entry::read_header(io, &src, meta.file_size)
                }
                _ => Err(entry::CorruptEntry::Changed),
            };
            match read {
                Ok(header) => return Ok((meta, src, header)),
                Err(entry::CorruptEntry::Changed) => {
                    self.reconcile(ns, key, &meta)?;
                    meta = self.live_meta(ns, key)?;
                }
                Err(entry::CorruptEntry::Io(e)) => return Err(StoreError::Io(e)),
                Err(e) => {
                    return Err(StoreError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        e.to_string(),
                    )));
                }
            }
        }
        Err(StoreError::Io(io::Error::other(
            "entry keeps changing under the writer",
        )))
    }

    /// Copies the first `len` bytes of a published version into a staged
    /// write, through the seam (room is made if the volume is full).
    pub(super) fn copy_content(
        &self,
        src: &File,
        staging: &mut StagingFile,
        len: u64,
    ) -> Result<(), StoreError> {
        let io = &self.layout.io;
        let mut buf = vec![0u8; (len.min(256 * 1024) as usize).max(1)];
        let mut done = 0u64;
        while done < len {
            let want = buf.len().min((len - done) as usize);
            let n = io.read_at(src, &mut buf[..want], done)?;
            if n == 0 {
                return Err(StoreError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "entry shorter than its header says",
                )));
            }
            let chunk = &buf[..n];
            self.with_room_io(n as u64, || io.write_all_at(&staging.file, chunk, done))?;
            done += n as u64;
        }
        Ok(())
    }
}
