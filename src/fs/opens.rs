//! OPEN and READ: a reader gets a published version, a writer on a
//! published version's inode is sent to a new one (`Redirect`), a control
//! file is rendered once per open.
//!
//! Invariants: no writer ever opens a published version's inode; an open
//! that reaches a version gone meanwhile gets ESTALE (the kernel looks up
//! again); a read that must wait for the disk, and the first open after a
//! start (a checksum check of the whole content), run off the FUSE thread
//! (`disk.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::Errno;
use fuser::{
    FileAttr, FileHandle, FopenFlags, INodeNo, OpenAccMode, OpenFlags, ReplyData, ReplyOpen,
    Request,
};

use super::handles::{Handle, HandleTable};
use super::inodes::{EntryAttr, InodeKind, kind_of};
use super::{CacheFs, control, counted_errno};
use crate::store::{Key, Lookup, Namespace, OpenHot, ReadHandle, Store, StoreError};

/// A writer whose open of a published version was refused with ESTALE:
/// the kernel looks the name up again for it, and gets `version`, the
/// inode its staged content will be published as.
pub(super) struct Redirect {
    version: u64,
    /// The size the redirected inode starts with (0 for O_TRUNC).
    size: u64,
    perm: u16,
    until: Instant,
}

/// A redirected writer's lookup and open follow within microseconds; a
/// redirect older than this belongs to a writer that gave up.
const REDIRECT_LIFE: Duration = Duration::from_secs(5);

impl CacheFs {
    /// The inode a redirected writer's lookup gets, if `pid` is one.
    pub(super) fn redirected(&self, pid: u32, ns: &Namespace, key: &Key) -> Option<FileAttr> {
        let redirects = self.redirects.lock().unwrap_or_else(|p| p.into_inner());
        let r = redirects
            .get(&(ns.clone(), key.clone(), pid))
            .filter(|r| r.until > Instant::now())?;
        Some(
            EntryAttr {
                ino: r.version,
                size: r.size,
                blocks: r.size.div_ceil(512),
                mtime: SystemTime::now(),
                perm: u32::from(r.perm),
                uid: self.uid,
                gid: self.gid,
            }
            .to_attr(),
        )
    }

    /// A writer has the key open, or is on its way (redirected).
    pub(super) fn is_being_written(&self, ns: &Namespace, key: &Key) -> bool {
        self.handles.is_being_written(ns, key)
            || self
                .redirects
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .any(|(n, k, _)| n == ns && k == key)
    }

    /// Takes the redirect of thread `pid` to inode `ino`, if any.
    fn take_redirect(&self, pid: u32, ns: &Namespace, key: &Key, ino: u64) -> Option<Redirect> {
        let mut redirects = self.redirects.lock().unwrap_or_else(|p| p.into_inner());
        let k = (ns.clone(), key.clone(), pid);
        if redirects.get(&k).is_some_and(|r| r.version == ino) {
            redirects.remove(&k)
        } else {
            None
        }
    }

    pub(super) fn do_open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match kind_of(ino.0) {
            Some(InodeKind::ControlFile(i)) => {
                if flags.acc_mode() != OpenAccMode::O_RDONLY {
                    return reply.error(Errno::EACCES);
                }
                let fh = self
                    .handles
                    .insert(Handle::Control(control::render(&self.store, i)));
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
            }
            Some(InodeKind::Entry) => {
                let Some((ns, key, last)) = self.inodes.get(ino.0) else {
                    return reply.error(Errno::ESTALE);
                };
                if flags.acc_mode() == OpenAccMode::O_RDONLY {
                    let hot = self.store.open_hot(&ns, &key, ino.0);
                    if let OpenHot::Done(rh) = hot {
                        return reply_opened(&self.handles, rh, ino.0, reply);
                    }
                    let store = Arc::clone(&self.store);
                    let handles = Arc::clone(&self.handles);
                    let open = move || open_and_reply(&store, &handles, &ns, &key, ino.0, reply);
                    // The first open after a start checks the whole content
                    // against its checksum: a disk read, off this thread.
                    if matches!(hot, OpenHot::Verify) {
                        self.disk.submit(open);
                    } else {
                        open();
                    }
                } else if let Some(r) = self.take_redirect(req.pid(), &ns, &key, ino.0) {
                    // The redirected writer, on the inode it was given.
                    match self.open_write(
                        req,
                        ns,
                        key,
                        flags.0,
                        Some(u32::from(r.perm)),
                        Some(r.version),
                    ) {
                        Ok((fh, _)) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                        Err(e) => reply.error(e),
                    }
                } else {
                    // A writer on a published version's inode: send it to
                    // a new one (see the module docs).
                    let size = match self.store.entry_info(&ns, &key) {
                        Lookup::Hit(info) if flags.0 & libc::O_TRUNC == 0 => info.logical_size,
                        _ => 0,
                    };
                    let redirect = Redirect {
                        version: self.store.reserve_version(),
                        size,
                        perm: last.perm,
                        until: Instant::now() + REDIRECT_LIFE,
                    };
                    let mut redirects = self.redirects.lock().unwrap_or_else(|p| p.into_inner());
                    // Redirects of writers that never came back go here,
                    // not on every lookup.
                    let now = Instant::now();
                    redirects.retain(|_, r| r.until > now);
                    redirects.insert((ns, key, req.pid()), redirect);
                    reply.error(Errno::ESTALE)
                }
            }
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    pub(super) fn do_read(&self, fh: FileHandle, offset: u64, size: u32, reply: ReplyData) {
        let Some(h) = self.handles.get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match &*h {
            Handle::Read(rh) => match rh.read_cached(offset, size as usize) {
                Ok(Some(buf)) => reply.data(&buf),
                Ok(None) => {
                    let store = Arc::clone(&self.store);
                    self.disk.submit(move || {
                        let Handle::Read(rh) = &*h else {
                            return reply.error(Errno::EBADF);
                        };
                        match rh.read_at(offset, size as usize) {
                            Ok(buf) => reply.data(&buf),
                            Err(e) => reply.error(counted_errno(&store, &StoreError::Io(e))),
                        }
                    });
                }
                Err(e) => reply.error(self.fail(&StoreError::Io(e))),
            },
            Handle::Write(_) => {
                let s = h.write_state().expect("write handle");
                match &s.staging {
                    Some(st) => {
                        let mut buf = vec![0u8; size as usize];
                        match st.read_at(offset, &mut buf) {
                            Ok(n) => reply.data(&buf[..n]),
                            Err(e) => reply.error(self.fail(&StoreError::Io(e))),
                        }
                    }
                    None => reply.error(s.failed.unwrap_or(Errno::EBADF)),
                }
            }
            Handle::Control(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = (start + size as usize).min(bytes.len());
                reply.data(&bytes[start..end])
            }
            Handle::Dir(_) => reply.error(Errno::EISDIR),
        }
    }
}

/// Opens version `ino` of a key for reading and answers the open.
fn open_and_reply(
    store: &Store,
    handles: &HandleTable,
    ns: &Namespace,
    key: &Key,
    ino: u64,
    reply: ReplyOpen,
) {
    match store.open_version(ns, key, ino) {
        // Replaced or removed since the kernel looked it up (or cached its
        // dentry), and no longer kept: the kernel retries an ESTALE open
        // with a fresh lookup.
        Ok(rh) if rh.version() != ino => reply.error(Errno::ESTALE),
        Ok(rh) => reply_opened(handles, rh, ino, reply),
        // Expired or removed behind a cached dentry: the retry's lookup
        // says so (and counts the miss).
        Err(StoreError::NotFound) => reply.error(Errno::ESTALE),
        Err(e) => reply.error(counted_errno(store, &e)),
    }
}

fn reply_opened(handles: &HandleTable, rh: ReadHandle, ino: u64, reply: ReplyOpen) {
    // A version is immutable: its pages may stay. Except while a handle
    // that published it is still open for writing: its writes (to a new
    // version) would move the inode's size.
    let cache = if handles.writes_on_inode(ino) {
        FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::FOPEN_KEEP_CACHE
    };
    let fh = handles.insert(Handle::Read(rh));
    reply.opened(FileHandle(fh), cache | FopenFlags::FOPEN_NOFLUSH)
}
