//! What a lookup finds at a key's backing path when the index cannot
//! answer (the backing dir is the truth: another daemon may have published
//! the key, or the rebuild not reached it yet).
//!
//! Every miss pays for this, so the common case is one system call and no
//! allocation: an `openat` of `ab/cd/<sha256 hex>` under a descriptor of
//! `data/` held for the store's life, its name built on the stack. Only a
//! file found is described by path (to validate and, if bad, quarantine).
//!
//! Invariants: the file checked is the one opened (validated through its
//! descriptor, whatever replaces the path meanwhile); a bad file is moved
//! aside only if it is still the one found.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::backing::{BackingIo, FaultOp};
use super::entry;
use super::layout::Layout;
use super::recover::{Found, check_placement};
use crate::names::{Key, Namespace};

/// What a lookup found at a key's backing path.
pub enum Probed {
    Valid(Found),
    /// Not a valid entry: why, and the inode (to quarantine exactly it).
    Bad {
        ino: u64,
        why: String,
    },
}

/// `data/`, held open (`O_PATH`) so a probe walks three names, not the
/// backing dir's whole path.
pub(super) struct DataDir(Option<OwnedFd>);

/// "ab/cd/" + 64 hex digits + NUL.
const NAME_LEN: usize = 6 + 64 + 1;

impl DataDir {
    pub(super) fn open(layout: &Layout) -> DataDir {
        let path = layout.data_dir();
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return DataDir(None);
        };
        // SAFETY: a NUL-terminated path; the descriptor returned is ours.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            log::warn!(
                "cannot hold {} open ({}); lookups open entries by path",
                path.display(),
                io::Error::last_os_error()
            );
            return DataDir(None);
        }
        // SAFETY: `fd` was just returned by open and is owned by nothing else.
        DataDir(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Opens the entry file of (`ns`, `key`), not following a symlink.
    fn open_entry(&self, layout: &Layout, ns: &Namespace, key: &Key) -> io::Result<File> {
        layout.io.check(FaultOp::Open)?;
        let Some(dir) = &self.0 else {
            return layout.io.open_nofollow(&layout.entry_path(ns, key));
        };
        let mut h = Sha256::new();
        h.update(ns.as_bytes());
        h.update([0u8]);
        h.update(key.as_bytes());
        let digest = h.finalize();
        let mut name = [0u8; NAME_LEN];
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in digest.iter().enumerate() {
            name[6 + 2 * i] = DIGITS[(b >> 4) as usize];
            name[7 + 2 * i] = DIGITS[(b & 15) as usize];
        }
        name.copy_within(6..8, 0);
        name[2] = b'/';
        name.copy_within(8..10, 3);
        name[5] = b'/';
        // SAFETY: `name` is NUL-terminated (its last byte is never
        // written) and `dir` an open descriptor; the one returned is ours.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr().cast(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by openat and is owned by nothing else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// What is at the backing path of (`ns`, `key`): `Ok(None)` when
    /// nothing is, else the file validated as the scan validates it.
    ///
    /// A file whose trailer reads bad or short is opened and read again
    /// before it is called bad: through a view of another host's volume
    /// (a FUSE client whose nodes are paths: bindfs, and NFS clients'
    /// attribute caches alike) a file just replaced there is read at a
    /// size that is not its own. Bad only if a second open reads it bad
    /// in the same way at the same size; a file that keeps changing
    /// under the probe is a miss for now, never quarantined.
    pub(super) fn probe(
        &self,
        layout: &Layout,
        ns: &Namespace,
        key: &Key,
    ) -> io::Result<Option<Probed>> {
        let mut before: Option<(u64, String)> = None;
        for _ in 0..PROBE_OPENS {
            match self.probe_once(layout, ns, key)? {
                Once::Done(p) => return Ok(p),
                Once::Unreadable { ino, len, why } => {
                    if before.as_ref().is_some_and(|b| *b == (len, why.clone())) {
                        return Ok(Some(Probed::Bad { ino, why }));
                    }
                    before = Some((len, why));
                }
                Once::Changed => before = None,
            }
        }
        Ok(None)
    }

    fn probe_once(&self, layout: &Layout, ns: &Namespace, key: &Key) -> io::Result<Once> {
        let file = match self.open_entry(layout, ns, key) {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(Once::Done(None));
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                let path = layout.entry_path(ns, key);
                return Ok(Once::Done(layout.io.stat_nofollow(&path).ok().map(|md| {
                    Probed::Bad {
                        ino: md.ino(),
                        why: "a symlink".into(),
                    }
                })));
            }
            Err(e) => return Err(e),
        };
        let md = file.metadata()?;
        if !md.file_type().is_file() {
            return Ok(Once::Done(Some(Probed::Bad {
                ino: md.ino(),
                why: "not a regular file".into(),
            })));
        }
        let unreadable = |md: &std::fs::Metadata, why: String| {
            Ok(Once::Unreadable {
                ino: md.ino(),
                len: md.len(),
                why,
            })
        };
        let (md, header) = match entry::read_header_settled(&layout.io, &file)? {
            (md, Ok(h)) => (md, h),
            (_, Err(entry::CorruptEntry::Changed)) => return Ok(Once::Changed),
            (md, Err(e)) => return unreadable(&md, e.to_string()),
        };
        match check_placement(header, &layout.entry_path(ns, key), &md) {
            Ok(f) => Ok(Once::Done(Some(Probed::Valid(f)))),
            Err(why) => unreadable(&md, why),
        }
    }
}

/// Opens a probe makes of one path before it says "bad" or "a miss".
const PROBE_OPENS: usize = 4;

/// What one open of a key's path found.
enum Once {
    /// The answer.
    Done(Option<Probed>),
    /// Read bad at this size: damage, or a view's stale size.
    Unreadable { ino: u64, len: u64, why: String },
    /// Read short: changed under the read.
    Changed,
}

/// Quarantines the file at `path` if it is still inode `ino`. Renamed
/// first and checked after, so that a valid file another daemon renamed
/// into place meanwhile is never lost: one moved by mistake is linked
/// back, unless a newer one has taken the path since.
pub fn quarantine_inode(io: &BackingIo, layout: &Layout, path: &Path, ino: u64, why: &str) -> bool {
    let to = layout.quarantine_path(path);
    if io.rename(path, &to).is_err() {
        return false;
    }
    match io.stat_nofollow(&to) {
        Ok(md) if md.ino() == ino => {
            log::warn!("quarantined {} ({why}) -> {}", path.display(), to.display());
            true
        }
        _ => {
            if io.hard_link(&to, path).is_err() {
                log::info!("{}: a newer file took its place", path.display());
            }
            let _ = io.remove_file(&to);
            false
        }
    }
}
