//! Where things live in the backing directory.
//!
//! ```text
//! BACKING/
//!   FORMAT                  "cachefs backing format N": refuses a foreign or newer dir
//!   data/ab/cd/<sha256-hex> one file per entry (content, then a metadata trailer)
//!   staging/<session>/      a daemon's files being written (unnamed: O_TMPFILE,
//!                           where the fs has it); publish links or renames
//!   staging/<session>.lock  flock held by that daemon while it lives
//!   trash/<session>/        a daemon's evicted entries renamed out of place,
//!                           unlinked outside the lock
//!                           (offline commands use staging/ and trash/ themselves)
//!   quarantine/             files that failed validation, kept for inspection
//!   namespaces/<name>       one marker per namespace: its owner, group and mode
//!   claims/<entry hash>     an exclusive create in flight (O_EXCL), naming
//!                           the session that holds it (see `claims.rs`)
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
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::backing::BackingIo;
use super::sessions::{self, flock, new_token, remove_session, session_lock_path};
use super::shards::ShardsSeen;
use crate::names::{Key, Namespace};

pub use super::format::FORMAT_VERSION;
use super::format::{check_format, format_line, read_format};
const FORMAT_FILE: &str = "FORMAT";
const LOCK_FILE: &str = "lock";

pub struct Layout {
    root: PathBuf,
    data: PathBuf,
    staging: PathBuf,
    trash: PathBuf,
    quarantine: PathBuf,
    namespaces: PathBuf,
    claims: PathBuf,
    /// Where this process stages and trashes: its own session's dirs
    /// (`begin_session`), else staging/ and trash/ themselves.
    pub(super) staging_work: PathBuf,
    /// Staging files are made unnamed until the filesystem refuses one.
    pub(super) unnamed: std::sync::atomic::AtomicBool,
    trash_work: PathBuf,
    /// Names this process (a daemon's session, or an offline command)
    /// apart from any other on the backing dir, on any host: unique
    /// names made here cannot collide with another's.
    token: String,
    /// The session's lock (see `begin_session`).
    session_lock: Option<fs::File>,
    /// Keeps the session's file young for daemons on other hosts.
    _heartbeat: Option<sessions::Heartbeat>,
    unique: AtomicU64,
    /// The leaf shard directories known to exist, so a publish into a
    /// known shard makes no `stat` of it (shared with the stager, which
    /// makes new keys' shards).
    shards_seen: Arc<ShardsSeen>,
    /// Every file operation on entries, staging and trash goes through it.
    pub io: BackingIo,
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
        let expected = format_line(FORMAT_VERSION);
        match read_format(&format_path).map(|b| check_format(&b)) {
            Ok(Ok(FORMAT_VERSION)) => {}
            Ok(Ok(older)) => {
                // Staged and renamed: a crash leaves the old line or the new.
                let staged = root.join(format!("{FORMAT_FILE}.{}", std::process::id()));
                fs::write(&staged, &expected)
                    .and_then(|()| fs::rename(&staged, &format_path))
                    .map_err(|source| LayoutError::NotWritable {
                        path: root.display().to_string(),
                        source,
                    })?;
                log::info!(
                    "backing dir {} upgraded from format {older} to {FORMAT_VERSION}",
                    root.display()
                );
            }
            Ok(Err(found)) => {
                return Err(LayoutError::Foreign {
                    path: root.display().to_string(),
                    found,
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
            &layout.claims,
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
        match read_format(&root.join(FORMAT_FILE)).map(|b| check_format(&b)) {
            Ok(Ok(_)) => {}
            Ok(Err(found)) => {
                return Err(LayoutError::Foreign {
                    path: root.display().to_string(),
                    found,
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
            claims: root.join("claims"),
            staging_work: root.join("staging"),
            unnamed: true.into(),
            trash_work: root.join("trash"),
            token: new_token(),
            session_lock: None,
            _heartbeat: None,
            unique: AtomicU64::new(0),
            shards_seen: Arc::new(ShardsSeen::new(SHARDS)),
            io: BackingIo::from_env(),
        }
    }

    /// Takes the backing dir's lock without waiting; the lock lasts as
    /// long as the returned file is open. A daemon takes it shared, an
    /// offline command that changes entries exclusive: either fails at
    /// once, naming the holder, when the other kind holds it.
    pub fn lock(&self, mode: LockMode) -> Result<fs::File, LayoutError> {
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
        self.take_lock(&file, mode)?;
        Ok(file)
    }

    /// Turns an exclusive lock into the shared one a daemon holds.
    /// Linux does this in two steps (unlock, lock), so an offline command
    /// may take the lock in between: then this fails as `lock` would.
    pub fn downgrade(&self, lock: &fs::File) -> Result<(), LayoutError> {
        self.take_lock(lock, LockMode::Shared)
    }

    fn take_lock(&self, file: &fs::File, mode: LockMode) -> Result<(), LayoutError> {
        let op = match mode {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        };
        flock(file, op | libc::LOCK_NB).map_err(|e| {
            let path = self.root.display().to_string();
            match (e.raw_os_error(), mode) {
                (Some(libc::EWOULDBLOCK), LockMode::Shared) => LayoutError::LockedOffline { path },
                (Some(libc::EWOULDBLOCK), LockMode::Exclusive) => LayoutError::LockedLive { path },
                _ => LayoutError::Lock { path, source: e },
            }
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

    /// `dirs/<namespace>/<path>`: mkdir'd directories (store/dirs.rs).
    pub fn dirs_dir(&self) -> PathBuf {
        self.root.join("dirs")
    }

    /// Where an exclusive create of (namespace, key) is claimed for all.
    pub fn claim_path(&self, ns: &Namespace, key: &Key) -> PathBuf {
        self.claims.join(Self::entry_hash(ns, key))
    }

    pub fn claims_dir(&self) -> &Path {
        &self.claims
    }

    /// This process's session name (what its claims hold).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether the session named `token` lives (see `sessions.rs`).
    pub fn session_lives(&self, token: &str) -> bool {
        token == self.token || sessions::lives(&session_lock_path(&self.staging, token))
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
        if self.shards_seen.known(entry_path) {
            return Ok(false);
        }
        let made = !dir.is_dir();
        if made {
            self.io.create_dir_all(dir)?;
        }
        self.shards_seen.saw(entry_path);
        Ok(made)
    }

    /// Whether an entry's shard is known to exist (made or seen).
    pub fn shard_known(&self, entry_path: &Path) -> bool {
        self.shards_seen.known(entry_path)
    }

    /// Forgets that an entry's shard exists (something removed it).
    pub fn shard_vanished(&self, entry_path: &Path) {
        self.shards_seen.forget(entry_path);
    }

    /// The shards known to exist, for a thread that makes them.
    pub(super) fn shards_seen(&self) -> Arc<ShardsSeen> {
        Arc::clone(&self.shards_seen)
    }

    /// A fresh, unique name in staging.
    pub fn staging_path(&self) -> PathBuf {
        self.staging_work.join(self.unique_name("tmp"))
    }

    /// A fresh, unique name in trash.
    pub fn trash_path(&self) -> PathBuf {
        self.trash_work.join(self.unique_name("old"))
    }

    /// Gives this daemon staging and trash dirs of its own, under a lock
    /// it holds while it lives: whatever a daemon leaves there when it dies
    /// is found by the next daemon to start (`reap_dead_sessions`), even
    /// while others share the backing dir.
    pub fn begin_session(&mut self) -> Result<(), LayoutError> {
        let err = |p: &Path, source| LayoutError::NotWritable {
            path: p.display().to_string(),
            source,
        };
        let lock_path = session_lock_path(&self.staging, &self.token);
        let mut lock = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&lock_path)
            .map_err(|e| err(&lock_path, e))?;
        flock(&lock, libc::LOCK_EX | libc::LOCK_NB).map_err(|e| err(&lock_path, e))?;
        sessions::write_record(&mut lock).map_err(|e| err(&lock_path, e))?;
        let staging = self.staging.join(&self.token);
        let trash = self.trash.join(&self.token);
        for dir in [&staging, &trash] {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| err(dir, e))?;
        }
        self.staging_work = staging;
        self.trash_work = trash;
        self.session_lock = Some(lock);
        self._heartbeat = Some(sessions::Heartbeat::start(lock_path));
        Ok(())
    }

    /// Removes this daemon's staging and trash dirs with whatever is left
    /// in them (writes that will never close, kept old versions).
    pub fn end_session(&self) {
        if self.session_lock.is_none() {
            return;
        }
        remove_session(&self.staging, &self.trash, &self.token);
    }

    /// The sessions of daemons that died (their tokens), whose dirs are
    /// left to remove: a daemon starting removes them behind its first
    /// requests (`leftovers.rs`).
    pub fn dead_sessions(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.staging) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let token = name.to_str()?.strip_suffix(".lock")?;
                (token != self.token && !sessions::lives(&e.path())).then(|| token.to_owned())
            })
            .collect()
    }

    /// The staging and trash dirs every session's own dir is in.
    pub fn session_parents(&self) -> (&Path, &Path) {
        (&self.staging, &self.trash)
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
        format!("{}-{n}.{ext}", self.token)
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
