//! Where things live in the backing directory.
//!
//! ```text
//! BACKING/
//!   FORMAT                  "cachefs backing format N": refuses a foreign or newer dir
//!   data/ab/cd/<sha256-hex> one file per entry (content, then a metadata trailer)
//!   staging/                files being written; same filesystem, so publish is one rename
//!   trash/                  evicted entries renamed out of place, unlinked outside the lock
//!   quarantine/             files that failed validation, kept for inspection
//!   namespaces/<name>       one marker per namespace made by mkdir
//!   index.snapshot          the index saved at clean stop; removed at start
//!   lock                    flock: shared by every live daemon, exclusive
//!                           for offline commands that change entries
//! ```
//!
//! An entry's path is a pure function of (namespace, key): sha256 of the
//! namespace, a NUL, and the key. Two levels of 256 shard directories keep
//! every directory under ~1 600 files at 10^8 entries.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::names::{Key, Namespace};

pub const FORMAT_VERSION: u32 = 1;
const FORMAT_FILE: &str = "FORMAT";
const LOCK_FILE: &str = "lock";

pub struct Layout {
    root: PathBuf,
    data: PathBuf,
    staging: PathBuf,
    trash: PathBuf,
    quarantine: PathBuf,
    namespaces: PathBuf,
    unique: AtomicU64,
    /// One bit per leaf shard directory (65 536) known to exist, so a
    /// publish into a known shard makes no `stat` of it.
    shards_seen: Box<[AtomicU64]>,
}

/// Leaf shard directories: two levels of 256.
const SHARDS: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot create backing dir {path}: {source}")]
    Create { path: String, source: io::Error },
    #[error("backing dir {path} is not writable: {source}")]
    NotWritable { path: String, source: io::Error },
    #[error("{path} is not a cachefs backing dir of format {FORMAT_VERSION} (found {found:?})")]
    Foreign { path: String, found: String },
    #[error("{path} is not a cachefs backing dir (no FORMAT file)")]
    Missing { path: String },
    #[error(
        "backing dir {path} is locked by an offline cachefs command (purge --backing or verify --quarantine); retry when it has finished"
    )]
    LockedOffline { path: String },
    #[error(
        "backing dir {path} is in use by a live cachefs daemon; work through its mount instead (e.g. cachefs purge MOUNTPOINT)"
    )]
    LockedLive { path: String },
    #[error("cannot lock backing dir {path}: {source}")]
    Lock { path: String, source: io::Error },
}

/// How a process holds the backing dir's lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// A live daemon: several may share one backing dir.
    Shared,
    /// An offline command that changes entries: alone.
    Exclusive,
}

impl Layout {
    /// Opens (creating if needed, mode 0700) a backing directory.
    pub fn open(root: &Path) -> Result<Layout, LayoutError> {
        let create = |p: &Path| -> Result<(), LayoutError> {
            fs::DirBuilder::new()
                .recursive(false)
                .mode(0o700)
                .create(p)
                .or_else(|e| if p.is_dir() { Ok(()) } else { Err(e) })
                .map_err(|source| LayoutError::Create {
                    path: p.display().to_string(),
                    source,
                })
        };
        create(root)?;
        let layout = Layout::at(root);
        let format_path = root.join(FORMAT_FILE);
        let expected = format!("cachefs backing format {FORMAT_VERSION}\n");
        match fs::read_to_string(&format_path) {
            Ok(found) if found == expected => {}
            Ok(found) => {
                return Err(LayoutError::Foreign {
                    path: root.display().to_string(),
                    found: found.trim().to_string(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::write(&format_path, &expected).map_err(|source| LayoutError::NotWritable {
                    path: root.display().to_string(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(LayoutError::NotWritable {
                    path: root.display().to_string(),
                    source,
                });
            }
        }
        for dir in [
            &layout.data,
            &layout.staging,
            &layout.trash,
            &layout.quarantine,
            &layout.namespaces,
        ] {
            create(dir)?;
        }
        // Prove we can write before we mount, not at the first publish.
        let probe = layout.staging_path();
        fs::write(&probe, b"")
            .and_then(|()| fs::remove_file(&probe))
            .map_err(|source| LayoutError::NotWritable {
                path: root.display().to_string(),
                source,
            })?;
        Ok(layout)
    }

    /// Opens an existing backing dir without creating or writing anything
    /// (offline commands must not turn a typo into a new cache).
    pub fn open_existing(root: &Path) -> Result<Layout, LayoutError> {
        let expected = format!("cachefs backing format {FORMAT_VERSION}\n");
        match fs::read_to_string(root.join(FORMAT_FILE)) {
            Ok(found) if found == expected => {}
            Ok(found) => {
                return Err(LayoutError::Foreign {
                    path: root.display().to_string(),
                    found: found.trim().to_string(),
                });
            }
            Err(_) => {
                return Err(LayoutError::Missing {
                    path: root.display().to_string(),
                });
            }
        }
        Ok(Layout::at(root))
    }

    /// The paths of a backing dir at `root` (nothing is touched).
    fn at(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            data: root.join("data"),
            staging: root.join("staging"),
            trash: root.join("trash"),
            quarantine: root.join("quarantine"),
            namespaces: root.join("namespaces"),
            unique: AtomicU64::new(0),
            shards_seen: (0..SHARDS / 64).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Takes the backing dir's lock without waiting; the lock lasts as
    /// long as the returned file is open. A daemon takes it shared, an
    /// offline command that changes entries exclusive: either fails at
    /// once, naming the holder, when the other kind holds it.
    pub fn lock(&self, mode: LockMode) -> Result<fs::File, LayoutError> {
        use std::os::unix::io::AsRawFd;
        let path = self.root.join(LOCK_FILE);
        let err = |source| LayoutError::Lock {
            path: self.root.display().to_string(),
            source,
        };
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        let op = match mode {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        };
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        let path = self.root.display().to_string();
        Err(match (e.raw_os_error(), mode) {
            (Some(libc::EWOULDBLOCK), LockMode::Shared) => LayoutError::LockedOffline { path },
            (Some(libc::EWOULDBLOCK), LockMode::Exclusive) => LayoutError::LockedLive { path },
            _ => err(e),
        })
    }

    /// Turns an exclusive lock into the shared one a daemon holds.
    /// Linux does this in two steps (unlock, lock), so an offline command
    /// may take the lock in between: then this fails as `lock` would.
    pub fn downgrade(&self, lock: &fs::File) -> Result<(), LayoutError> {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        let path = self.root.display().to_string();
        Err(match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => LayoutError::LockedOffline { path },
            _ => LayoutError::Lock { path, source: e },
        })
    }

    pub fn quarantine_dir(&self) -> &Path {
        &self.quarantine
    }

    /// Lowercase hex of a digest, as `user.cachefs.sha256` shows it.
    pub fn hex_digest(digest: &[u8; 32]) -> String {
        hex(digest)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    pub fn trash_dir(&self) -> &Path {
        &self.trash
    }

    pub fn namespaces_dir(&self) -> &Path {
        &self.namespaces
    }

    pub fn snapshot_path(&self) -> PathBuf {
        self.root.join("index.snapshot")
    }

    /// The hex name of an entry's file: sha256(namespace ‖ NUL ‖ key).
    pub fn entry_hash(ns: &Namespace, key: &Key) -> String {
        let mut h = Sha256::new();
        h.update(ns.as_bytes());
        h.update([0u8]);
        h.update(key.as_bytes());
        hex(&h.finalize())
    }

    pub fn entry_path(&self, ns: &Namespace, key: &Key) -> PathBuf {
        let h = Self::entry_hash(ns, key);
        self.data.join(&h[0..2]).join(&h[2..4]).join(h)
    }

    /// Creates the shard directories of an entry path if they are missing;
    /// says whether it made any.
    pub fn ensure_shard(&self, entry_path: &Path) -> io::Result<bool> {
        let Some(dir) = entry_path.parent() else {
            return Ok(false);
        };
        let shard = shard_of(entry_path);
        if let Some((word, bit)) = shard
            && self.shards_seen[word].load(Ordering::Relaxed) & bit != 0
        {
            return Ok(false);
        }
        let made = !dir.is_dir();
        if made {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        if let Some((word, bit)) = shard {
            self.shards_seen[word].fetch_or(bit, Ordering::Relaxed);
        }
        Ok(made)
    }

    /// Forgets that an entry's shard exists (something removed it).
    pub fn shard_vanished(&self, entry_path: &Path) {
        if let Some((word, bit)) = shard_of(entry_path) {
            self.shards_seen[word].fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// A fresh, unique name in staging.
    pub fn staging_path(&self) -> PathBuf {
        self.staging.join(self.unique_name("tmp"))
    }

    /// A fresh, unique name in trash.
    pub fn trash_path(&self) -> PathBuf {
        self.trash.join(self.unique_name("old"))
    }

    pub fn quarantine_path(&self, original: &Path) -> PathBuf {
        let base = original
            .file_name()
            .map_or_else(|| "entry".into(), |n| n.to_string_lossy().into_owned());
        self.quarantine
            .join(format!("{base}.{}", self.unique_name("bad")))
    }

    pub fn namespace_marker(&self, ns: &Namespace) -> PathBuf {
        self.namespaces.join(OsStr::from_bytes(ns.as_bytes()))
    }

    fn unique_name(&self, ext: &str) -> String {
        let n = self.unique.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}.{ext}", std::process::id())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The word and bit of an entry path's leaf shard in `shards_seen`: the
/// first four hex digits of its file name.
fn shard_of(entry_path: &Path) -> Option<(usize, u64)> {
    let name = entry_path.file_name()?.as_bytes().get(..4)?;
    let n = u16::from_str_radix(std::str::from_utf8(name).ok()?, 16).ok()? as usize;
    Some((n / 64, 1 << (n % 64)))
}

/// Removes every file directly inside `dir`; returns how many.
pub fn empty_dir(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
    }
    n
}
