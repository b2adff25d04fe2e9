//! Metadata changes without copying content: a rename within a namespace,
//! chmod, chown, touch, utime, TTL and user xattrs append a new trailer
//! to the live backing file (and a rename then renames that file), so
//! their cost does not depend on the entry's size. A publish of content
//! never changes: the kernel's page cache of the version stays right.
//!
//! How: the file is `[content][dead trailers][trailer]` (entry format 3)
//! and only its last trailer counts. A change appends one trailer with
//! one `pwrite` past the end of the file, placed so it lies within one
//! 4 KiB page (at the end if it fits in the end's page, else at the next
//! page boundary, a hole between), and never overwrites a byte. So:
//!
//! (a) Crash at each step. The write past the end is one page's copy:
//!     the kernel checks for a fatal signal between pages, never within
//!     one, so `kill -9` leaves the file either as it was (the old
//!     trailer, still intact, still last) or with the new one whole.
//!     A rename is two steps: (1) append a trailer naming the new key
//!     with `renamed_from` the old one, (2) `rename(2)` the file from the
//!     old key's path to the new key's (same shard root: atomic). A
//!     crash between leaves a file at the old key's path whose trailer
//!     names the new key: it is read as the old key's entry (the rename
//!     did not happen; `recover::check_placement`), so the entry is under
//!     exactly one name and never lost. Power loss: with `durability =
//!     "fsync"` the file (and for a rename both directories) is synced
//!     before the change is reported done; without, a change may be lost
//!     like any unsynced write (a torn tail reads as a damaged entry).
//! (b) A reader in this daemon holds the backing fd and reads content
//!     only: the content's bytes never change, nor does the inode.
//! (c) Another daemon (or `cachefs verify`) reading the trailer while it
//!     is appended sees the old length with the old trailer or the new
//!     length with the new one: the kernel raises the size only after the
//!     page's bytes are copied, and nothing before the old end changes.
//!     One that read a length before the change reads the old trailer at
//!     that length, still valid. It never sees a state to quarantine.
//! (d) A rename over an existing target drops the target's version
//!     (accounting, a grace link for its readers, as a publish does);
//!     RENAME_NOREPLACE and claims are decided under the index lock, in
//!     the critical section that appends and renames.
//! (e) A rename of an entry open for writing (staged) is the fs layer's
//!     as before: the writer's content moves with it at its publish.
//!
//! Where this does not apply the caller copies, as before (`Copy`): a
//! trailer over one page (big xattrs), a file carrying more than
//! `COMPACT_AT` dead bytes (the copy compacts it), a file not the one the
//! index knows. Accounting: stored bytes are the file's blocks, dead
//! trailers included (holes are not blocks).

use std::os::unix::fs::MetadataExt;

use super::entry::{self, EntryHeader};
use super::index::EntryMeta;
use super::{EntryInfo, Store, StoreError, meta_from_header};
use crate::config::Durability;
use crate::names::{Key, Namespace};

/// A trailer appended in place lies within one page of this size.
const PAGE: u64 = 4096;
/// Dead bytes (old trailers, holes) a file may carry; past this a change
/// copies the entry instead, which writes it compact.
pub(super) const COMPACT_AT: u64 = 64 * 1024;

/// What an in-place change did.
pub(super) enum InPlace {
    Done(EntryInfo),
    /// Cannot be done in place: copy the entry (see the module docs).
    Copy,
}

/// A rename's target and whether it may replace a live one.
pub(super) struct RenameTo<'a> {
    pub key: &'a Key,
    pub noreplace: bool,
}

/// Where a trailer of `len` bytes is appended to a file of `file_len`
/// bytes so it lies within one page; `None` if it is longer than a page.
pub(super) fn append_offset(file_len: u64, len: u64) -> Option<u64> {
    if len > PAGE {
        return None;
    }
    let in_page = file_len % PAGE;
    Some(if in_page + len <= PAGE {
        file_len
    } else {
        file_len + (PAGE - in_page)
    })
}

impl Store {
    /// Applies `edit` to the live version's trailer in place, and for a
    /// rename moves the file to `to`'s path. `Copy` when it cannot (the
    /// caller then copies); errors are the change's refusals.
    pub(super) fn republish_in_place(
        &self,
        ns: &Namespace,
        key: &Key,
        to: Option<RenameTo<'_>>,
        edit: &dyn Fn(&mut EntryHeader) -> Result<(), StoreError>,
    ) -> Result<InPlace, StoreError> {
        let meta = self.live_meta(ns, key)?;
        let io = &self.layout.io;
        let path = self.layout.entry_path(ns, key);
        let Ok(file) = io.open_rw_nofollow(&path) else {
            return Ok(InPlace::Copy);
        };
        // Fresh: through a view of another host's volume, a file replaced
        // there still shows the old one's cached size, and a trailer
        // appended at that size would land inside another daemon's file.
        if io.fstat_fresh(&file)? != (meta.file_id, meta.file_size) {
            return Ok(InPlace::Copy);
        }
        let Ok(mut header) = entry::read_header(io, &file, meta.file_size) else {
            return Ok(InPlace::Copy);
        };
        edit(&mut header)?;
        let now = self.clock.now();
        header.ctime = now;
        header.renamed_from = None;
        if let Some(to) = &to {
            header.renamed_from = Some(key.as_bytes().to_vec());
            header.key = to.key.as_bytes().to_vec();
        }
        let trailer = header.encode_trailer();
        let len = trailer.len() as u64;
        let Some(at) = append_offset(meta.file_size, len) else {
            return Ok(InPlace::Copy);
        };
        if at - header.stored_content_size > COMPACT_AT {
            return Ok(InPlace::Copy);
        }
        let dest = to.as_ref().map(|t| self.layout.entry_path(ns, t.key));
        if let Some(d) = &dest {
            self.layout.ensure_shard(d)?;
        }
        let durability = self
            .lock()
            .namespace(ns)
            .ok_or(StoreError::NotFound)?
            .policy
            .durability;

        let mut trash = Vec::new();
        let mut idx = self.lock();
        let state = idx.namespace(ns).ok_or(StoreError::NotFound)?;
        let policy = state.policy.clone();
        let same = |m: &EntryMeta| {
            (m.version, m.file_id, m.file_size) == (meta.version, meta.file_id, meta.file_size)
        };
        if !idx.peek(ns, key).is_some_and(|m| same(&m)) {
            // Changed since it was read: the copy path decides afresh.
            return Ok(InPlace::Copy);
        }
        if let Some(c) = to
            .as_ref()
            .and_then(|t| state.path_conflict(t.key.as_bytes()))
        {
            return Err(c.into());
        }
        if let Some(to) = &to
            && to.noreplace
        {
            let live = idx
                .peek(ns, to.key)
                .is_some_and(|m| idx.expires_at(&policy, &m).is_none_or(|at| at > now));
            if live || self.claims.is_claimed(ns, to.key) {
                return Err(StoreError::Exists);
            }
        }
        self.index_changed_locked();
        let shared = idx.shared_file(meta.version);
        let old = idx.remove(ns, key).expect("peeked");
        let replaced = to.as_ref().and_then(|t| idx.remove(ns, t.key));
        // At most the new bytes and a page of them rounded up: the
        // quotas hold after the change as after any publish.
        let grow = at + len - meta.file_size + PAGE;
        let undo = |idx: &mut super::index::Index| {
            if let (Some(t), Some(r)) = (&to, &replaced) {
                idx.insert(ns, t.key.clone(), r.clone());
            }
            idx.insert(ns, key.clone(), old.clone());
        };
        let Some(victims) = idx.make_room(ns, old.stored_bytes + grow, now) else {
            undo(&mut idx);
            return Err(StoreError::NoSpace);
        };
        let grown = io
            .write_all_at(&file, &trailer, at)
            .and_then(|()| file.metadata());
        let md = match grown {
            Ok(md) => md,
            Err(e) => {
                undo(&mut idx);
                self.move_to_trash_locked(&idx, victims, &mut trash);
                drop(idx);
                self.dispose(trash);
                return Err(e.into());
            }
        };
        let mut new = meta_from_header(
            &header,
            old.version,
            md.ino(),
            md.len(),
            md.blocks() * 512,
            old.verified,
        );
        new.last_access = old.last_access;
        let mut under = key;
        if let (Some(t), Some(dest)) = (&to, &dest) {
            // The replaced version stays readable for a grace period.
            let retired = replaced.as_ref().and_then(|r| {
                let keep = self.layout.trash_path();
                io.hard_link(dest, &keep).ok().map(|()| (r.clone(), keep))
            });
            match self.rename_into_place(&path, dest) {
                Ok(_) => {
                    under = t.key;
                    if let Some((r, keep)) = retired {
                        self.retired_lock().insert(r.version, (r, keep, now));
                    }
                }
                Err(e) => {
                    // Still at the old key's path, whose entry it still
                    // is (its trailer's `renamed_from`), with its new size.
                    log::warn!("rename of {ns}/{key:?} failed: {e}");
                    if let Some((_, keep)) = retired {
                        trash.push((keep, 0));
                    }
                    if let Some(r) = replaced {
                        idx.insert(ns, t.key.clone(), r);
                    }
                    idx.insert(ns, key.clone(), new);
                    self.changes.key(ns, key);
                    self.move_to_trash_locked(&idx, victims, &mut trash);
                    drop(idx);
                    self.dispose(trash);
                    return Err(e.into());
                }
            }
        }
        idx.insert(ns, under.clone(), new.clone());
        // The other daemons read the new trailer (or miss the old name).
        // Written by this thread below, as a publish's record is: waking
        // the log's thread for it costs a hand-off to the other core per
        // rename, and the others learn of it before the reply.
        self.changes.key_flushed_by_caller(ns, key);
        if let Some(t) = &to {
            self.changes.key_flushed_by_caller(ns, t.key);
        }
        if let Some(f) = shared {
            idx.share_file(new.version, &f);
        }
        self.move_to_trash_locked(&idx, victims, &mut trash);
        let info = Self::info_locked(&idx, ns, &new);
        drop(idx);
        self.changes.flush();
        self.dispose(trash);
        if durability == Durability::Fsync {
            io.sync_all(&file)?;
            for d in [Some(&path), dest.as_ref()].into_iter().flatten() {
                if let Some(dir) = d.parent() {
                    io.sync_dir(dir)?;
                }
            }
        }
        Ok(InPlace::Done(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailer_never_straddles_a_page() {
        assert_eq!(append_offset(0, 100), Some(0));
        assert_eq!(append_offset(4000, 96), Some(4000));
        assert_eq!(append_offset(4000, 97), Some(4096));
        assert_eq!(append_offset(8192, 4096), Some(8192));
        assert_eq!(append_offset(8193, 4096), Some(12288));
        assert_eq!(append_offset(1, 4097), None);
        for len in [1u64, 200, 4095, 4096] {
            for file_len in [0u64, 1, 4095, 4096, 5000, 1 << 20] {
                let at = append_offset(file_len, len).unwrap();
                assert!(at >= file_len && at / PAGE == (at + len - 1) / PAGE);
            }
        }
    }
}
