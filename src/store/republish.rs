//! Changes that republish a live entry: rename within a namespace, and
//! metadata updates (touch, chmod, chown, TTL, xattrs, truncate). Each is
//! first tried in place (a new trailer, no content copied: `trailer.rs`);
//! a truncate, or a change that cannot be made in place, republishes a
//! copy.
//!
//! Invariant: the result is verbatim (content, owner, mode, TTL, xattrs)
//! except for what the change names; a copy goes through the same
//! publish as a write.

use super::entry::EntryHeader;
use super::index::EntryMeta;
use super::staging::{Owner, StagingFile};
use super::trailer::{InPlace, RenameTo};
use super::write::{MetaUpdate, Publish, WriteFrom};
use super::xattrs;
use super::{EntryInfo, Store, StoreError};
use crate::names::{Key, Namespace};

impl Store {
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
        let mut staging = self.begin_write(ns, key, WriteFrom::Current, owner)?;
        // Expired or removed in between: nothing was copied.
        if staging.known_sha256.is_none() {
            return Err(StoreError::NotFound);
        }
        // The change this copy is made for happens at its publish.
        staging.ctime = None;
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
        // A new name appears: others must know of this daemon first.
        self.wait_announced();
        let to_ = RenameTo { key: to, noreplace };
        match self.republish_in_place(ns, from, Some(to_), &|_| Ok(())) {
            Ok(InPlace::Done(info)) => Ok(info),
            Ok(InPlace::Copy) => self.rename_copy(ns, from, to, noreplace),
            Err(e) => {
                self.record_refusal(ns, &e);
                Err(e)
            }
        }
    }

    /// A rename by a copy of the entry under the new key.
    fn rename_copy(
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
        // Counted like any publish (its copy's refusal was, at its start).
        let r = self.publish_inner(staging, how);
        if let Err(e) = &r {
            self.record_refusal(ns, e);
        }
        r
    }

    /// Applies metadata changes (touch, chmod, chown, TTL, xattrs,
    /// truncate): in place, or by republishing a copy. Truncation to
    /// another size makes a new version.
    pub fn update(
        &self,
        ns: &Namespace,
        key: &Key,
        update: MetaUpdate,
    ) -> Result<EntryInfo, StoreError> {
        let edit = |h: &mut EntryHeader| -> Result<(), StoreError> {
            if let Some(ttl) = update.ttl_secs {
                h.ttl_secs = ttl;
            }
            h.mode = update.mode.unwrap_or(h.mode);
            h.uid = update.uid.unwrap_or(h.uid);
            h.gid = update.gid.unwrap_or(h.gid);
            h.mtime = update.mtime.unwrap_or(h.mtime);
            h.atime = update.atime.unwrap_or(h.atime);
            if let Some(change) = &update.xattr {
                xattrs::apply(&mut h.xattrs, change)?;
            }
            Ok(())
        };
        let resize = update.truncate.is_some_and(|size| {
            self.live_meta(ns, key)
                .is_ok_and(|m| m.logical_size != size)
        });
        if !resize {
            match self.republish_in_place(ns, key, None, &edit) {
                Ok(InPlace::Done(info)) => return Ok(info),
                Ok(InPlace::Copy) => {}
                Err(e) => {
                    // An xattr's limits are not a quota's refusal.
                    if update.xattr.is_none() {
                        self.record_refusal(ns, &e);
                    }
                    return Err(e);
                }
            }
        }
        self.update_copy(ns, key, update)
    }

    /// `update` by republishing a copy.
    fn update_copy(
        &self,
        ns: &Namespace,
        key: &Key,
        update: MetaUpdate,
    ) -> Result<EntryInfo, StoreError> {
        let (meta, mut staging) = self.copy_of_live(ns, key)?;
        if let Some(change) = &update.xattr {
            staging.change_xattr(change)?;
        }
        if let Some(ttl) = update.ttl_secs {
            staging.ttl_secs = ttl;
        }
        staging.mode = update.mode.unwrap_or(meta.mode);
        staging.uid = update.uid.unwrap_or(meta.uid);
        staging.gid = update.gid.unwrap_or(meta.gid);
        match update.truncate {
            Some(size) if size != meta.logical_size => self.truncate_staged(&mut staging, size)?,
            _ => staging.version = meta.version,
        }
        // After the truncate (which made the mtime now): a time given
        // with it wins. The copy's times are the live version's.
        if let Some(t) = update.mtime {
            staging.mtime = Some(t);
        }
        if let Some(t) = update.atime {
            staging.atime = Some(t);
        }
        self.publish(staging)
    }
}
