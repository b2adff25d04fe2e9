//! A new key's staged file linked into place before its publish takes the
//! index lock: the lock is then held for the index's change alone, not
//! across a directory operation. A `linkat` into a shard is tens of
//! microseconds on a loaded ext4, and every lookup, create and write of
//! every other writer of the daemon waits for the index lock meanwhile
//! (with four writers on two request threads, a third of the publishes
//! found it taken).
//!
//! Only while the index is the truth (`index_is_truth`: this daemon alone
//! on the backing dir, its index whole): its lookups then answer from the
//! index, so a file at the key's path that the index does not hold yet is
//! a miss to every reader until the commit puts it in, as before. With
//! other daemons about (they read the backing paths) the link stays under
//! the lock, and so does every replacement (a rename over a live version).
//!
//! What the commit finds under the lock, and does (`settle_linked_ahead`):
//! - no entry for the key (the usual case): the index takes this one;
//! - an entry of this very file (a lookup adopted it from its path, the
//!   lease having lapsed meanwhile): this version replaces it, nothing
//!   moves on disk;
//! - another version, this file at the path (the index held a version
//!   whose file had gone): replaced, nothing moves on disk;
//! - another version and another file at the path: another writer of the
//!   same key published in between (its own link found the name taken,
//!   so it renamed its file over this one). That publish is the later of
//!   the two, and this one is already replaced: the index keeps it.
//!
//! A refusal after the link (quota, a path conflict, the namespace gone)
//! takes the file back out of place into the trash, under the index lock,
//! if it is still the one there (`unlink_ahead`). Crash safety is as
//! before: the file is whole (content and trailer) before it is linked,
//! and a crash between the link and the commit leaves an entry whose
//! close() had not returned, which the next start finds like any other.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::index::EntryMeta;
use super::staging::StagingFile;
use super::write::Publish;
use super::{EntryInfo, Store, StoreError, UnixNanos};

impl Store {
    /// A publish's commit (see `write.rs`), its file linked into place
    /// first where that may be done outside the index lock. Says whether
    /// a shard directory was made.
    pub(super) fn place_and_commit(
        &self,
        staging: &mut StagingFile,
        how: &Publish,
        meta: &EntryMeta,
        dest: &Path,
        now: UnixNanos,
        durable: bool,
    ) -> Result<(EntryInfo, bool), StoreError> {
        // Durable namespaces keep the path that syncs what it made.
        let ahead = matches!(how, Publish::Write) && !durable && self.link_ahead(staging, dest);
        // A rename that finds the volume full (a directory that must grow)
        // is retried once room is made, like any backing write.
        let committed = self.with_room(0, || self.commit(staging, how, meta, dest, now, ahead));
        if ahead && committed.is_err() {
            self.unlink_ahead(dest, meta.file_id);
        }
        committed
    }

    /// Links `staging`'s unnamed file at `dest`, its new key's path, when
    /// the index is the truth (see the module docs); says whether it did.
    /// A failure (the name is taken, the shard went away, the volume is
    /// full) leaves it unnamed for the usual path under the lock, which
    /// meets the same condition and deals with it.
    pub(super) fn link_ahead(&self, staging: &StagingFile, dest: &Path) -> bool {
        // A write that began over a live version (its credit) replaces
        // it: the link would only find the name taken.
        staging.path.is_none()
            && staging.credit == 0
            && self.index_is_truth()
            && self.layout.io.link_unnamed(&staging.file, dest).is_ok()
    }

    /// Under the index lock: whether a file linked ahead goes into the
    /// index, given the entry the index held for its key (`old`, taken
    /// out). `false`: another writer's publish replaced it since.
    pub(super) fn settle_linked_ahead(
        &self,
        old: Option<&EntryMeta>,
        meta: &EntryMeta,
        dest: &Path,
    ) -> bool {
        match old {
            None => true,
            Some(o) if o.file_id == meta.file_id => true,
            Some(_) => self
                .layout
                .io
                .stat_nofollow(dest)
                .is_ok_and(|md| md.ino() == meta.file_id),
        }
    }

    /// Takes a file linked ahead (inode `file_id`) back out of `dest`
    /// after its commit refused it, if it is still the one there.
    pub(super) fn unlink_ahead(&self, dest: &Path, file_id: u64) {
        let idx = self.lock();
        let ours = self
            .layout
            .io
            .stat_nofollow(dest)
            .is_ok_and(|md| md.ino() == file_id);
        if !ours {
            return;
        }
        match self.take_out_of_place(dest) {
            Ok(Some(to)) => {
                drop(idx);
                // Never counted in the usage: it frees nothing of it.
                self.dispose(vec![(to, 0)]);
            }
            Ok(None) => {}
            // Left whole at its path, as a crash would leave it: the next
            // lookup or start finds it.
            Err(e) => log::warn!("cannot take back {}: {e}", dest.display()),
        }
    }
}
