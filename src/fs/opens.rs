//! OPEN, READ and RELEASE: a reader gets a published version, a writer on
//! a published version's inode is sent to a new one (a redirect, see
//! `redirects.rs`), a control file is rendered once per open.
//!
//! Invariants: no writer ever opens a published version's inode; an open
//! that reaches a version gone meanwhile gets ESTALE (the kernel looks up
//! again); a read that must wait for the disk, and the first open after a
//! start (a checksum check of the whole content), run off the request
//! thread (`workers.rs`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::errno::counted_errno;
use super::handles::{Handle, HandleTable};
use super::inodes::{InodeKind, kind_of};
use super::redirects::{REDIRECT_LIFE, Redirect};
use super::types::{Attr, Ctx, Errno, Opened, Replier};
use super::writer::{Writer, WriterOpen};
use super::{CacheFs, control};
use crate::store::{
    Key, Lookup, Namespace, OpenHot, OpenVersion, Owner, ReadHandle, Store, StoreError,
};

impl CacheFs {
    /// A reader's OPEN of a hit, if it is one: answered from the index
    /// with no system call and no wait (the request thread's part of
    /// `open`; anything else is `open`'s, on a worker).
    pub fn open_hit(&self, ino: u64, flags: i32) -> Option<Opened> {
        if !opens_to_read(flags) || kind_of(ino) != Some(InodeKind::Entry) {
            return None;
        }
        let (ns, key, _) = self.inodes.get(ino)?;
        match self.store.open_hot(&ns, &key, ino) {
            OpenHot::Done(rh) => Some(reader_opened(&self.handles, rh, ino)),
            _ => None,
        }
    }

    pub fn open(&self, ctx: &Ctx, ino: u64, flags: i32, reply: impl Replier<Opened>) {
        // O_TRUNC truncates whatever the access mode (the kernel asks
        // write permission for it), and an open that truncates is a
        // writer's: answered as a reader of a published version, the
        // kernel (FUSE_ATOMIC_O_TRUNC: the daemon truncates at OPEN) would
        // set that shared, immutable inode's size to 0 and drop its pages
        // before its own ETXTBSY check, and a process running the file
        // died of SIGBUS at its next page fault.
        let read_only = opens_to_read(flags);
        match kind_of(ino) {
            Some(InodeKind::ControlFile(i)) => {
                if !read_only {
                    return reply.reply(Err(Errno::EACCES));
                }
                let fh = self
                    .handles
                    .insert(Handle::Control(control::render(&self.store, i)));
                reply.reply(Ok(direct(fh)))
            }
            Some(InodeKind::Entry) => {
                let Some((ns, key, last)) = self.inodes.get(ino) else {
                    return reply.reply(Err(Errno::ESTALE));
                };
                if read_only {
                    let hot = self.store.open_hot(&ns, &key, ino);
                    if let OpenHot::Done(rh) = hot {
                        return reply.reply(Ok(reader_opened(&self.handles, rh, ino)));
                    }
                    // The writer's thread, reading the file it is writing.
                    if let Some(w) = self.writer_of_inode(ino)
                        && w.writer().is_some_and(|w| w.staged().is_some())
                    {
                        let fh = self.handles.insert(Handle::Pending(w));
                        return reply.reply(Ok(direct(fh)));
                    }
                    let store = Arc::clone(&self.store);
                    let handles = Arc::clone(&self.handles);
                    let open = move || reply.reply(open_cold(&store, &handles, &ns, &key, ino));
                    // The first open after a start checks the whole content
                    // against its checksum: a disk read, off this thread.
                    if matches!(hot, OpenHot::Verify) {
                        self.workers.submit(open);
                    } else {
                        open();
                    }
                } else if let Some(r) = self.redirects.take(ctx.pid, ino) {
                    // The redirected writer, on the inode it was given.
                    let how = WriterOpen {
                        flags,
                        owner: Owner {
                            uid: r.uid,
                            gid: r.gid,
                            mode: u32::from(r.perm),
                        },
                        version: Some(r.version),
                        pid: ctx.pid,
                    };
                    let r = self.open_writer(ns, key, how).map(|(fh, _)| direct(fh));
                    reply.reply(r)
                } else {
                    // A writer on a published version's inode: send it to
                    // a new one (see the module docs of `fs`).
                    let size = match self.store.entry_info(&ns, &key) {
                        Lookup::Hit(info) if flags & libc::O_TRUNC == 0 => info.logical_size,
                        _ => 0,
                    };
                    let redirect = Redirect {
                        ns,
                        key,
                        version: self.store.reserve_version(),
                        size,
                        perm: last.perm,
                        uid: last.uid,
                        gid: last.gid,
                        until: Instant::now() + REDIRECT_LIFE,
                    };
                    self.redirects.insert(ctx.pid, redirect);
                    reply.reply(Err(Errno::ESTALE))
                }
            }
            Some(_) => reply.reply(Err(Errno::EISDIR)),
            None => reply.reply(Err(Errno::ENOENT)),
        }
    }

    /// Opens a writer and registers its handle: (fh, its inode's attrs).
    pub(super) fn open_writer(
        &self,
        ns: Namespace,
        key: Key,
        how: WriterOpen,
    ) -> Result<(u64, Attr), Errno> {
        let w = Writer::open(&self.store, ns, key, how)?;
        let attr = match w.staged() {
            Some(st) => self.staging_attr(st, w.ino),
            None => unreachable!("a writer opens staged"),
        };
        let fh = self.handles.insert(Handle::Write(Box::new(Mutex::new(w))));
        Ok((fh, attr))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32, reply: impl Replier<Vec<u8>>) {
        let Some(h) = self.handles.get(fh) else {
            return reply.reply(Err(Errno::EBADF));
        };
        match &*h {
            Handle::Read(rh) => match rh.read_cached(offset, size as usize) {
                Ok(Some(buf)) => reply.reply(Ok(buf)),
                Ok(None) => {
                    let store = Arc::clone(&self.store);
                    self.workers.submit(move || {
                        let Handle::Read(rh) = &*h else {
                            return reply.reply(Err(Errno::EBADF));
                        };
                        let r = rh.read_at(offset, size as usize);
                        reply.reply(r.map_err(|e| counted_errno(&store, &StoreError::Io(e))))
                    });
                }
                Err(e) => reply.reply(Err(self.fail(&StoreError::Io(e)))),
            },
            Handle::Write(_) => reply.reply(self.read_staged(&h, offset, size)),
            Handle::Pending(w) => reply.reply(self.read_staged(w, offset, size)),
            Handle::Control(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = (start + size as usize).min(bytes.len());
                reply.reply(Ok(bytes[start..end].to_vec()))
            }
            Handle::Dir(_) => reply.reply(Err(Errno::EISDIR)),
        }
    }

    /// Reads what write handle `h` has staged.
    fn read_staged(&self, h: &Handle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let w = h.writer().ok_or(Errno::EBADF)?;
        match w.staged() {
            Some(st) => {
                let mut buf = vec![0u8; size as usize];
                st.read_at(offset, &mut buf)
                    .map(|n| {
                        buf.truncate(n);
                        buf
                    })
                    .map_err(|e| self.fail(&StoreError::Io(e)))
            }
            None => match w.stage() {
                super::writer::Stage::Failed(e) => Err(*e),
                // Published (a close of a dup, an fsync): what it wrote is
                // the live version, unless that went since.
                _ => match self.store.open_read(&w.ns, &w.key) {
                    Ok(rh) => rh
                        .read_at(offset, size as usize)
                        .map_err(|e| self.fail(&StoreError::Io(e))),
                    Err(StoreError::NotFound) => Ok(Vec::new()),
                    Err(e) => Err(self.fail(&e)),
                },
            },
        }
    }

    /// RELEASE: the last close of a handle. A writer publishes whatever is
    /// still pending (a failure here reaches no one: it is logged), unless
    /// its last close was by a killed process: then that is dropped. It
    /// stays registered as a writer of its key until that is done, so a
    /// lookup meanwhile waits for it (`entries.rs`).
    pub fn release(&self, fh: u64) {
        if let Some(h) = self.handles.remove(fh)
            && let Some(mut w) = h.writer()
        {
            if w.drop_killed() {
                self.store.record_killed_write();
                log::info!(
                    "{}/{:?}: its writer was killed by a signal: nothing published",
                    w.ns,
                    w.key
                );
            } else if let Err(e) = self.publish(&mut w) {
                log::debug!("publish at release of {}/{:?} failed: {e}", w.ns, w.key);
            }
            self.handles.forget_writer(fh, &w);
        }
    }
}

/// Opens version `ino` of a key for reading, with system calls.
fn open_cold(
    store: &Store,
    handles: &HandleTable,
    ns: &Namespace,
    key: &Key,
    ino: u64,
) -> Result<Opened, Errno> {
    match store.open_version(ns, key, ino) {
        Ok(OpenVersion::Opened(rh)) => Ok(reader_opened(handles, rh, ino)),
        // Replaced, removed or expired since the kernel looked it up (or
        // cached its dentry), and no longer kept: the kernel retries an
        // ESTALE open with a fresh lookup, which says so (and counts a
        // miss).
        Ok(OpenVersion::Gone) | Err(StoreError::NotFound) => Err(Errno::ESTALE),
        Err(e) => Err(counted_errno(store, &e)),
    }
}

fn reader_opened(handles: &HandleTable, rh: ReadHandle, ino: u64) -> Opened {
    // A version is immutable: its pages may stay. Except while a handle
    // that published it is still open for writing: its writes (to a new
    // version) would move the inode's size.
    let writing = handles.writes_on_inode(ino);
    let fh = handles.insert(Handle::Read(rh));
    Opened {
        fh,
        direct_io: writing,
        keep_cache: !writing,
        noflush: true,
    }
}

/// An open that reads only: O_RDONLY without O_TRUNC (see `open`).
fn opens_to_read(flags: i32) -> bool {
    flags & libc::O_ACCMODE == libc::O_RDONLY && flags & libc::O_TRUNC == 0
}

fn direct(fh: u64) -> Opened {
    Opened {
        fh,
        direct_io: true,
        keep_cache: false,
        noflush: false,
    }
}
