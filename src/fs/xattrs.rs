//! Extended attributes: an entry's `user.cachefs.*` metadata (`ttl`,
//! `expires`, `sha256`, `stored_bytes`; only `ttl` may be set or removed),
//! its own `user.*` xattrs (any other `user.` name: kept by the store in
//! the version's trailer, see `store/xattrs.rs`; other namespaces such as
//! `trusted.` and `security.` are ENOTSUP), and purges requested on the
//! mount root or a namespace dir (`user.cachefs.purge`, read back as
//! `user.cachefs.purged`).
//!
//! Who may (the kernel checks, as the mount has `default_permissions`):
//! setting or removing an entry's `user.cachefs.ttl` needs write
//! permission on the entry, reading its xattrs read permission; a purge of
//! a namespace (`user.cachefs.purge` on its dir) needs write permission on
//! that namespace, and reading the result back read permission. A purge
//! of every namespace (on the mount root) is for root and the mount's
//! owner only, checked here too: the root is writable by all while new
//! namespaces are allowed (sticky, and the kernel lets only its owner set
//! a sticky dir's xattrs, but this does not rest on that).
//!
//! Invariants: a purge's result is answered only once the kernel has
//! forgotten the purged keys; a TTL set on a file being written goes with
//! its staged content, and so does a user xattr: a file being written
//! shows its writer (and everyone holding its inode) the xattrs it will be
//! published with, which are none for new content and the live
//! version's for a copy-on-write open (an append keeps them).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::CacheFs;
use super::errno::errno;
use super::inodes::{InodeKind, kind_of};
use super::types::{Ctx, Errno, Replier, XattrReply};
use crate::store::{Key, Namespace, StoreError};
use crate::store::{Lookup, MetaUpdate, PurgeFilter, SetMode, XattrChange, Xattrs};

const XATTR_TTL: &str = "user.cachefs.ttl";
const XATTR_EXPIRES: &str = "user.cachefs.expires";
const XATTR_SHA256: &str = "user.cachefs.sha256";
const XATTR_STORED: &str = "user.cachefs.stored_bytes";
/// Set on the mount root or a namespace dir: purges (value: `all`,
/// `expired`, `older-than=SECONDS`; on a namespace dir, followed by
/// ` under=PATH` for the directory PATH only: `PurgeFilter::wire_value`). The daemon does the work, so its
/// counters and `df` change at once.
pub const XATTR_PURGE: &str = "user.cachefs.purge";
/// Read back on the same dir by the same process: "ENTRIES BYTES" of its
/// last purge there.
pub const XATTR_PURGED: &str = "user.cachefs.purged";

/// Whether `name` is an entry's own xattr (the store keeps it).
fn is_user_name(name: &[u8]) -> bool {
    name.starts_with(b"user.") && !name.starts_with(b"user.cachefs.")
}

impl CacheFs {
    /// Applies a user xattr change to what inode `ino` shows: its staged
    /// content if a writer holds it, else the live version (in place).
    fn change_user_xattr(&self, ino: u64, change: XattrChange) -> Result<(), Errno> {
        self.after_release(ino);
        let (ns, key, _) = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
        for h in self.handles.writers_of(&ns, &key) {
            if let Some(mut w) = h.writer()
                && w.ino == ino
                && let Some(r) = w.change_xattr(&change)
            {
                return r.map_err(|e| errno(&e));
            }
        }
        let update = MetaUpdate {
            xattr: Some(change),
            ..MetaUpdate::default()
        };
        self.store
            .update(&ns, &key, update)
            .map(|_| ())
            .map_err(|e| match e {
                // Nothing live to hold it: an entry gone meanwhile.
                StoreError::NotFound => Errno::ENOENT,
                e => self.fail(&e),
            })
    }

    /// The user xattrs inode `ino` shows (see `change_user_xattr`).
    fn user_xattrs(&self, ns: &Namespace, key: &Key, ino: u64) -> Result<Xattrs, Errno> {
        self.after_release(ino);
        for h in self.handles.writers_of(ns, key) {
            if let Some(w) = h.writer()
                && w.ino == ino
                && let Some(st) = w.staged()
            {
                return Ok(st.xattrs().clone());
            }
        }
        match self.store.xattrs(ns, key) {
            Ok(x) => Ok(x),
            Err(StoreError::NotFound) => Ok(Xattrs::new()),
            Err(e) => Err(errno(&e)),
        }
    }

    fn xattr_value(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, Errno> {
        let (ns, key, _) = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
        if is_user_name(name.as_bytes()) {
            let list = self.user_xattrs(&ns, &key, ino)?;
            return list
                .iter()
                .find(|(n, _)| n.as_slice() == name.as_bytes())
                .map(|(_, v)| v.clone())
                .ok_or(Errno::ENODATA);
        }
        self.after_release(ino);
        let info = match self.store.entry_info(&ns, &key) {
            Lookup::Hit(info) => info,
            _ => return Err(Errno::ENODATA),
        };
        let text = match name.as_bytes() {
            n if n == XATTR_TTL.as_bytes() => info.ttl.as_secs().to_string(),
            n if n == XATTR_EXPIRES.as_bytes() => match info.expires {
                Some(at) => (at.div_euclid(1_000_000_000)).to_string(),
                None => "never".to_string(),
            },
            n if n == XATTR_SHA256.as_bytes() => {
                let digest = self
                    .store
                    .content_sha256(&ns, &key)
                    .map_err(|e| errno(&e))?;
                crate::store::Layout::hex_digest(&digest)
            }
            n if n == XATTR_STORED.as_bytes() => info.stored_bytes.to_string(),
            _ => return Err(Errno::ENODATA),
        };
        Ok(text.into_bytes())
    }

    /// A purge requested through `user.cachefs.purge` on the mount root
    /// (every namespace: root and the mount's owner only) or a namespace
    /// dir (whoever may write it; see the module docs).
    fn purge(&self, ctx: &Ctx, ino: u64, value: &[u8]) -> Result<(), Errno> {
        let (namespace, ns_id) = match kind_of(ino) {
            Some(InodeKind::Root) => {
                if ctx.uid != 0 && ctx.uid != self.uid {
                    return Err(Errno::EPERM);
                }
                (None, None)
            }
            Some(InodeKind::Namespace(id)) => (
                Some(self.store.namespace_by_id(id).ok_or(Errno::ENOENT)?),
                Some(id),
            ),
            _ => return Err(Errno::ENOTSUP),
        };
        let filter = PurgeFilter::from_wire(namespace, value).map_err(|_| Errno::EINVAL)?;
        let report = self.store.purge(&filter).map_err(|e| self.fail(&e))?;
        if let (Some(id), Some(prefix)) = (ns_id, &filter.prefix)
            && filter.removes_dirs()
        {
            self.dirs_purged(id, prefix);
        }
        let mut purges = crate::sync::lock(&self.purges);
        if purges.len() >= 1024 {
            purges.clear();
        }
        purges.insert((ctx.pid, ino), report);
        Ok(())
    }

    /// `flags`: `XATTR_CREATE`, `XATTR_REPLACE` (honoured for user
    /// xattrs; ours are set whatever the flags).
    pub fn setxattr(
        &self,
        ctx: &Ctx,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<(), Errno> {
        if name.as_bytes() == XATTR_PURGE.as_bytes() {
            // Answered at once, not after the purged keys' dentry drops:
            // setxattr holds this directory's lock, which they need. The
            // CLI's next call (getxattr of the result) waits for them.
            return self.purge(ctx, ino, value);
        }
        if kind_of(ino) != Some(InodeKind::Entry) {
            return Err(Errno::ENOTSUP);
        }
        if is_user_name(name.as_bytes()) {
            let mode = match flags & (libc::XATTR_CREATE | libc::XATTR_REPLACE) {
                0 => SetMode::Any,
                libc::XATTR_CREATE => SetMode::Create,
                libc::XATTR_REPLACE => SetMode::Replace,
                _ => return Err(Errno::EINVAL),
            };
            let change = XattrChange::Set {
                name: name.as_bytes().to_vec(),
                value: value.to_vec(),
                mode,
            };
            return self.change_user_xattr(ino, change);
        }
        match name.as_bytes() {
            n if n == XATTR_TTL.as_bytes() => {
                let secs = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or(Errno::EINVAL)?;
                self.after_release(ino);
                let (ns, key, _) = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
                // A file still being written takes the TTL with it.
                let mut staged = false;
                for h in self.handles.writers_of(&ns, &key) {
                    if let Some(mut w) = h.writer()
                        && w.ino == ino
                    {
                        staged |= w.set_ttl(secs);
                    }
                }
                if staged {
                    return Ok(());
                }
                let update = MetaUpdate {
                    ttl_secs: Some(Some(secs)),
                    ..MetaUpdate::default()
                };
                self.store
                    .update(&ns, &key, update)
                    .map(|_| ())
                    .map_err(|e| self.fail(&e))
            }
            n if [XATTR_EXPIRES, XATTR_SHA256, XATTR_STORED]
                .iter()
                .any(|x| x.as_bytes() == n) =>
            {
                Err(Errno::EPERM)
            }
            _ => Err(Errno::ENOTSUP),
        }
    }

    pub fn getxattr(
        &self,
        ctx: &Ctx,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: impl Replier<XattrReply>,
    ) {
        let purged = name.as_bytes() == XATTR_PURGED.as_bytes();
        let value = if purged {
            crate::sync::lock(&self.purges)
                .get(&(ctx.pid, ino))
                .map(|r| format!("{} {}", r.entries, r.bytes).into_bytes())
                .ok_or(Errno::ENODATA)
        } else if kind_of(ino) != Some(InodeKind::Entry) {
            Err(Errno::ENODATA)
        } else {
            self.xattr_value(ino, name)
        };
        let answer = value.and_then(|v| XattrReply::fit(v, size));
        if purged {
            // A purge's result is read once the kernel has forgotten the
            // purged keys (getxattr holds no directory lock; see setxattr).
            self.invalidate.then(move || reply.reply(answer));
        } else {
            reply.reply(answer);
        }
    }

    pub fn listxattr(&self, ino: u64, size: u32) -> Result<XattrReply, Errno> {
        let mut names = Vec::new();
        if kind_of(ino) == Some(InodeKind::Entry) {
            for n in [XATTR_TTL, XATTR_EXPIRES, XATTR_SHA256, XATTR_STORED] {
                names.extend_from_slice(n.as_bytes());
                names.push(0);
            }
            let (ns, key, _) = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
            for (n, _) in self.user_xattrs(&ns, &key, ino)? {
                names.extend_from_slice(&n);
                names.push(0);
            }
        }
        XattrReply::fit(names, size)
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Result<(), Errno> {
        if kind_of(ino) == Some(InodeKind::Entry) && is_user_name(name.as_bytes()) {
            let name = name.as_bytes().to_vec();
            return self.change_user_xattr(ino, XattrChange::Remove { name });
        }
        if name.as_bytes() != XATTR_TTL.as_bytes() {
            return Err(Errno::ENODATA);
        }
        self.after_release(ino);
        let (ns, key, _) = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
        let update = MetaUpdate {
            ttl_secs: Some(None),
            ..MetaUpdate::default()
        };
        self.store
            .update(&ns, &key, update)
            .map(|_| ())
            .map_err(|e| self.fail(&e))
    }
}
