//! Extended attributes: an entry's `user.cachefs.*` metadata (`ttl`,
//! `expires`, `sha256`, `stored_bytes`; only `ttl` may be set or removed),
//! and purges requested on the mount root or a namespace dir
//! (`user.cachefs.purge`, read back as `user.cachefs.purged`).
//!
//! Invariants: only root and the mount's owner may purge; a purge's result
//! is answered only once the kernel has forgotten the purged keys; a TTL set
//! on a file being written goes with its staged content.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::Errno;
use fuser::{INodeNo, ReplyEmpty, ReplyXattr, Request};

use super::CacheFs;
use super::errno::errno;
use super::inodes::{InodeKind, kind_of};
use crate::store::{Lookup, MetaUpdate, PurgeFilter, PurgeSelect};

const XATTR_TTL: &str = "user.cachefs.ttl";
const XATTR_EXPIRES: &str = "user.cachefs.expires";
const XATTR_SHA256: &str = "user.cachefs.sha256";
const XATTR_STORED: &str = "user.cachefs.stored_bytes";
/// Set on the mount root or a namespace dir: purges (value: `all`,
/// `expired`, `older-than=SECONDS`). The daemon does the work, so its
/// counters and `df` change at once.
pub const XATTR_PURGE: &str = "user.cachefs.purge";
/// Read back on the same dir by the same process: "ENTRIES BYTES" of its
/// last purge there.
pub const XATTR_PURGED: &str = "user.cachefs.purged";

impl CacheFs {
    fn xattr_value(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, Errno> {
        let (ns, key, _) = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
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
    /// (every namespace) or a namespace dir. Only root and the mount's
    /// owner may purge.
    fn purge(&self, req: &Request, ino: u64, value: &[u8]) -> Result<(), Errno> {
        let namespace = match kind_of(ino) {
            Some(InodeKind::Root) => None,
            Some(InodeKind::Namespace(_)) => Some(self.namespace_of(ino).ok_or(Errno::ENOENT)?),
            _ => return Err(Errno::ENOTSUP),
        };
        if req.uid() != 0 && req.uid() != self.uid {
            return Err(Errno::EPERM);
        }
        let select: PurgeSelect = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim_end_matches('\0').parse().ok())
            .ok_or(Errno::EINVAL)?;
        let report = self.store.purge(&PurgeFilter { namespace, select });
        let mut purges = self.purges.lock().unwrap_or_else(|p| p.into_inner());
        if purges.len() >= 1024 {
            purges.clear();
        }
        purges.insert((req.pid(), ino), report);
        Ok(())
    }

    pub(super) fn do_setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        reply: ReplyEmpty,
    ) {
        if name.as_bytes() == XATTR_PURGE.as_bytes() {
            // Answered at once, not after the purged keys' dentry drops:
            // setxattr holds this directory's lock, which they need. The
            // CLI's next call (getxattr of the result) waits for them.
            return match self.purge(req, ino.0, value) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            };
        }
        if kind_of(ino.0) != Some(InodeKind::Entry) {
            return reply.error(Errno::ENOTSUP);
        }
        match name.as_bytes() {
            n if n == XATTR_TTL.as_bytes() => {
                let Some(secs) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                else {
                    return reply.error(Errno::EINVAL);
                };
                let Some((ns, key, _)) = self.inodes.get(ino.0) else {
                    return reply.error(Errno::ENOENT);
                };
                // A file still being written takes the TTL with it.
                let mut staged = false;
                for h in self.handles.writers_of(&ns, &key) {
                    if let Some(mut s) = h.write_state()
                        && s.ino == ino.0
                        && let Some(st) = s.staging.as_mut()
                    {
                        st.set_ttl(Some(secs));
                        staged = true;
                    }
                }
                if staged {
                    return reply.ok();
                }
                let update = MetaUpdate {
                    ttl_secs: Some(Some(secs)),
                    ..MetaUpdate::default()
                };
                match self.store.update(&ns, &key, update) {
                    Ok(_) => reply.ok(),
                    Err(e) => reply.error(self.fail(&e)),
                }
            }
            n if [XATTR_EXPIRES, XATTR_SHA256, XATTR_STORED]
                .iter()
                .any(|x| x.as_bytes() == n) =>
            {
                reply.error(Errno::EPERM)
            }
            _ => reply.error(Errno::ENOTSUP),
        }
    }

    pub(super) fn do_getxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let value = if name.as_bytes() == XATTR_PURGED.as_bytes() {
            self.purges
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(req.pid(), ino.0))
                .map(|r| format!("{} {}", r.entries, r.bytes).into_bytes())
                .ok_or(Errno::ENODATA)
        } else if kind_of(ino.0) != Some(InodeKind::Entry) {
            Err(Errno::ENODATA)
        } else {
            self.xattr_value(ino.0, name)
        };
        let answer = move || match value {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        };
        if name.as_bytes() == XATTR_PURGED.as_bytes() {
            // A purge's result is read once the kernel has forgotten the
            // purged keys (getxattr holds no directory lock; see setxattr).
            self.invalidate.then(answer);
        } else {
            answer();
        }
    }

    pub(super) fn do_listxattr(&self, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut names = Vec::new();
        if kind_of(ino.0) == Some(InodeKind::Entry) {
            for n in [XATTR_TTL, XATTR_EXPIRES, XATTR_SHA256, XATTR_STORED] {
                names.extend_from_slice(n.as_bytes());
                names.push(0);
            }
        }
        if size == 0 {
            reply.size(names.len() as u32)
        } else if names.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&names)
        }
    }

    pub(super) fn do_removexattr(&self, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if name.as_bytes() != XATTR_TTL.as_bytes() {
            return reply.error(Errno::ENODATA);
        }
        let Some((ns, key, _)) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let update = MetaUpdate {
            ttl_secs: Some(None),
            ..MetaUpdate::default()
        };
        match self.store.update(&ns, &key, update) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(self.fail(&e)),
        }
    }
}
