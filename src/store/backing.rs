//! The one seam between the store and the backing filesystem: every file
//! operation the store makes on entries, staging, trash and namespace
//! markers goes through `BackingIo`, so tests can make any of them fail.
//!
//! Faults exist only in debug builds (`cfg(debug_assertions)`, what
//! `cargo test` builds, unit tests and the daemon the integration tests
//! mount alike). In a release build `BackingIo` is a zero-sized type and
//! `check` is an empty inline function: the seam compiles down to the
//! plain system calls and costs the hot read and publish nothing. A cargo
//! feature would have done as well but would have to be remembered by
//! every `cargo test` run; debug builds already are the test builds.
//!
//! Two ways to inject, both debug-only:
//! - in-process (unit tests): `BackingIo::inject(FaultOp, errno, times)`;
//! - in a daemon (integration tests): the environment variable
//!   `CACHEFS_FAULTS` names a control file; while it exists, each of its
//!   lines `OP ERRNO` (e.g. `rename EIO`, `write ENOSPC`) fails every
//!   such operation. The file is read at each operation, so a test's
//!   write of it takes effect at the daemon's next operation, with no
//!   race; removing it lifts the faults. A line `hold WHAT` keeps WHAT
//!   waiting while it is there (`rebuild`; an operation: `hold fsync`).
//!
//! Contract for callers: an operation that fails here has not touched the
//! disk (a fault is injected before the system call, as a filesystem that
//! refuses a write at once would behave).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;

/// The kinds of file operation the store makes, as faults name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// Creating a file (staging, namespace marker, snapshot).
    Create,
    /// Opening an existing file for reading.
    Open,
    /// Writing bytes (content, trailer, a copy).
    Write,
    /// Changing a file's length.
    Truncate,
    /// fsync of a file or directory.
    Fsync,
    /// Renaming (publish, trash, quarantine).
    Rename,
    /// Making a hard link (a replaced version kept for its readers).
    Link,
    /// Reading bytes of a file.
    Read,
    /// Listing a directory of the backing dir.
    ReadDir,
    /// Removing a file.
    Unlink,
    /// Making a directory (a shard).
    Mkdir,
    /// Creating an unnamed staging file (O_TMPFILE).
    Tmpfile,
}

impl FaultOp {
    pub const ALL: [FaultOp; 12] = [
        FaultOp::Create,
        FaultOp::Open,
        FaultOp::Write,
        FaultOp::Truncate,
        FaultOp::Fsync,
        FaultOp::Rename,
        FaultOp::Link,
        FaultOp::Read,
        FaultOp::ReadDir,
        FaultOp::Unlink,
        FaultOp::Mkdir,
        FaultOp::Tmpfile,
    ];

    /// The name a control file uses.
    pub fn name(self) -> &'static str {
        match self {
            FaultOp::Create => "create",
            FaultOp::Open => "open",
            FaultOp::Write => "write",
            FaultOp::Truncate => "truncate",
            FaultOp::Fsync => "fsync",
            FaultOp::Rename => "rename",
            FaultOp::Link => "link",
            FaultOp::Read => "read",
            FaultOp::ReadDir => "readdir",
            FaultOp::Unlink => "unlink",
            FaultOp::Mkdir => "mkdir",
            FaultOp::Tmpfile => "tmpfile",
        }
    }
}

/// Whether an error says the backing volume (or the user's disk quota on
/// it) is full: room may be made by eviction.
pub fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// See the module docs. Cheap to clone (an `Arc` in debug builds, nothing
/// in release builds).
#[derive(Clone, Default)]
pub struct BackingIo {
    #[cfg(debug_assertions)]
    faults: std::sync::Arc<faults::Faults>,
}

impl BackingIo {
    /// The seam of a store: in a debug build, faults from `CACHEFS_FAULTS`
    /// if it is set.
    pub fn from_env() -> BackingIo {
        BackingIo {
            #[cfg(debug_assertions)]
            faults: std::sync::Arc::new(faults::Faults::from_env()),
        }
    }

    /// Fails with the injected errno if a fault applies to `op`.
    #[inline(always)]
    pub fn check(&self, op: FaultOp) -> io::Result<()> {
        #[cfg(debug_assertions)]
        {
            self.faults.check(op)
        }
        #[cfg(not(debug_assertions))]
        {
            let _ = op;
            Ok(())
        }
    }

    /// Whether the control file holds `what` back (a line `hold WHAT`):
    /// a test keeps a stage (`rebuild`) from running to see what holds
    /// before it, with no race on how fast it runs. Never in release.
    pub fn held(&self, what: &str) -> bool {
        #[cfg(debug_assertions)]
        {
            self.faults.held(what)
        }
        #[cfg(not(debug_assertions))]
        {
            let _ = what;
            false
        }
    }

    /// Makes the next `times` operations `op` fail with `errno` (every one
    /// while `times` is `None`, until `lift`).
    #[cfg(debug_assertions)]
    pub fn inject(&self, op: FaultOp, errno: i32, times: Option<u32>) {
        self.faults.inject(op, errno, times);
    }

    /// Runs `hook` once, on the thread of the next `op`, before it is
    /// made: a test sees what another daemon sees between two steps of a
    /// store call, with no race on how fast either runs.
    #[cfg(debug_assertions)]
    pub fn before_next(&self, op: FaultOp, hook: impl FnOnce() + Send + 'static) {
        self.faults.before_next(op, Box::new(hook));
    }

    /// Lifts every in-process fault.
    #[cfg(debug_assertions)]
    pub fn lift(&self) {
        self.faults.lift();
    }

    /// Creates a new file for reading and writing, mode 0600; fails if
    /// the name exists.
    pub fn create_new(&self, path: &Path) -> io::Result<File> {
        self.check(FaultOp::Create)?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    }

    /// Creates an unnamed file in `dir` (O_TMPFILE), mode 0600: it has no
    /// name until `link_unnamed` gives it one, and vanishes with its last
    /// descriptor or a crash. A filesystem without O_TMPFILE refuses with
    /// EOPNOTSUPP (older kernels: EISDIR or EINVAL).
    pub fn create_unnamed(&self, dir: &Path) -> io::Result<File> {
        self.check(FaultOp::Tmpfile)?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
    }

    /// Gives a file made by `create_unnamed` the name `to`; never
    /// replaces (EEXIST).
    pub fn link_unnamed(&self, file: &File, to: &Path) -> io::Result<()> {
        use nix::fcntl::{AT_FDCWD, AtFlags};
        self.check(FaultOp::Link)?;
        // AT_EMPTY_PATH links the descriptor itself but needs
        // CAP_DAC_READ_SEARCH before Linux 6.10 (ENOENT without it); the
        // descriptor's /proc link needs nothing. ENOENT from both: `to`'s
        // directory is missing.
        match nix::unistd::linkat(file, "", AT_FDCWD, to, AtFlags::AT_EMPTY_PATH) {
            Err(nix::errno::Errno::ENOENT) => {
                use std::os::fd::AsRawFd;
                let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
                nix::unistd::linkat(
                    AT_FDCWD,
                    proc.as_str(),
                    AT_FDCWD,
                    to,
                    AtFlags::AT_SYMLINK_FOLLOW,
                )
            }
            r => r,
        }
        .map_err(io::Error::from)
    }

    /// Creates or truncates a file (markers, the snapshot).
    pub fn create(&self, path: &Path) -> io::Result<File> {
        self.check(FaultOp::Create)?;
        File::create(path)
    }

    /// Opens a file for reading; never follows a symlink (the backing dir
    /// is untrusted).
    pub fn open_nofollow(&self, path: &Path) -> io::Result<File> {
        self.check(FaultOp::Open)?;
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    }

    /// Opens an existing file for reading and appending a trailer (see
    /// `trailer.rs`); never follows a symlink.
    pub fn open_rw_nofollow(&self, path: &Path) -> io::Result<File> {
        self.check(FaultOp::Open)?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    }

    /// What is at `path` (not following a symlink).
    pub fn stat_nofollow(&self, path: &Path) -> io::Result<fs::Metadata> {
        self.check(FaultOp::Open)?;
        fs::symlink_metadata(path)
    }

    /// The inode and size of what is at `path` (not following a
    /// symlink), asked of the filesystem itself, never of the kernel's
    /// attribute cache: a network volume's client (or a FUSE view) may
    /// show another host's replaced or removed file for a while
    /// (`AT_STATX_FORCE_SYNC`).
    pub fn stat_fresh(&self, path: &Path) -> io::Result<(u64, u64)> {
        use std::os::unix::ffi::OsStrExt;
        self.check(FaultOp::Open)?;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        statx_ino_size(libc::AT_FDCWD, &c, libc::AT_SYMLINK_NOFOLLOW)
    }

    /// (inode, size) of an open file as its filesystem has it now, as
    /// `stat_fresh` for a path: a FUSE view of another host's volume
    /// answers `fstat` from attributes cached up to a second, and after
    /// the file at its path was replaced, that is the old file's size.
    /// Also refreshes what the next `fstat` of it says.
    pub fn fstat_fresh(&self, file: &File) -> io::Result<(u64, u64)> {
        use std::os::fd::AsRawFd;
        // AT_EMPTY_PATH with "": the descriptor itself.
        statx_ino_size(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
    }

    pub fn write_all_at(&self, file: &File, data: &[u8], offset: u64) -> io::Result<()> {
        self.check(FaultOp::Write)?;
        file.write_all_at(data, offset)
    }

    pub fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        self.check(FaultOp::Truncate)?;
        file.set_len(len)
    }

    pub fn sync_all(&self, file: &File) -> io::Result<()> {
        self.check(FaultOp::Fsync)?;
        file.sync_all()
    }

    /// fsync of a directory, so a rename or a new name in it is durable.
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(FaultOp::Fsync)?;
        File::open(dir)?.sync_all()
    }

    pub fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check(FaultOp::Read)?;
        file.read_at(buf, offset)
    }

    pub fn read_exact_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(FaultOp::Read)?;
        file.read_exact_at(buf, offset)
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(FaultOp::Rename)?;
        fs::rename(from, to)
    }

    pub fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(FaultOp::Link)?;
        fs::hard_link(from, to)
    }

    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check(FaultOp::Unlink)?;
        fs::remove_file(path)
    }

    pub fn read_dir(&self, dir: &Path) -> io::Result<fs::ReadDir> {
        self.check(FaultOp::ReadDir)?;
        fs::read_dir(dir)
    }

    /// Removes an empty directory (a directory marker).
    pub fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(FaultOp::Unlink)?;
        fs::remove_dir(dir)
    }

    /// Removes a directory and what is in it, following no symlink.
    pub fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.check(FaultOp::Unlink)?;
        fs::remove_dir_all(dir)
    }

    /// Makes a directory and its missing parents, mode 0700.
    pub fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.check(FaultOp::Mkdir)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
}

#[cfg(debug_assertions)]
mod faults {
    use std::io;
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::store::backing::FaultOp;

    /// One injected fault: `op` fails with `errno`, `times` more times
    /// (`None`: until lifted).
    struct Rule {
        op: FaultOp,
        errno: i32,
        times: Option<u32>,
    }

    type Hook = Box<dyn FnOnce() + Send>;

    #[derive(Default)]
    pub struct Faults {
        /// In-process rules exist (so an unfaulted test pays one load).
        armed: AtomicBool,
        rules: Mutex<Vec<Rule>>,
        /// `before_next`'s hooks, each run once by the next such op.
        hooks: Mutex<Vec<(FaultOp, Hook)>>,
        /// `CACHEFS_FAULTS`: a control file read at each operation.
        control: Option<PathBuf>,
    }

    impl Faults {
        pub fn from_env() -> Faults {
            Faults {
                control: std::env::var_os("CACHEFS_FAULTS").map(PathBuf::from),
                ..Faults::default()
            }
        }

        pub fn check(&self, op: FaultOp) -> io::Result<()> {
            if self.held(op.name()) {
                log::warn!("fault: {} held", op.name()); // tests wait for it
                while self.held(op.name()) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            if let Some(path) = &self.control
                && let Ok(text) = std::fs::read_to_string(path)
                && let Some(errno) = text.lines().find_map(|l| parse_line(l, op))
            {
                return Err(io::Error::from_raw_os_error(errno));
            }
            if !self.armed.load(Ordering::Relaxed) {
                return Ok(());
            }
            let hook = {
                let mut hooks = crate::sync::lock(&self.hooks);
                let at = hooks.iter().position(|(o, _)| *o == op);
                at.map(|i| hooks.remove(i).1)
            };
            // Run with no lock of ours held: it may make operations too.
            if let Some(hook) = hook {
                hook();
            }
            let mut rules = crate::sync::lock(&self.rules);
            let Some(i) = rules.iter().position(|r| r.op == op) else {
                return Ok(());
            };
            let errno = rules[i].errno;
            if let Some(n) = &mut rules[i].times {
                *n -= 1;
                if *n == 0 {
                    rules.remove(i);
                }
            }
            Err(io::Error::from_raw_os_error(errno))
        }

        pub fn held(&self, what: &str) -> bool {
            self.control
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .is_some_and(|t| t.lines().any(|l| l.split_whitespace().eq(["hold", what])))
        }

        pub fn inject(&self, op: FaultOp, errno: i32, times: Option<u32>) {
            if times == Some(0) {
                return;
            }
            crate::sync::lock(&self.rules).push(Rule { op, errno, times });
            self.armed.store(true, Ordering::Relaxed);
        }

        pub fn before_next(&self, op: FaultOp, hook: Hook) {
            crate::sync::lock(&self.hooks).push((op, hook));
            self.armed.store(true, Ordering::Relaxed);
        }

        pub fn lift(&self) {
            crate::sync::lock(&self.hooks).clear();
            crate::sync::lock(&self.rules).clear();
            self.armed.store(false, Ordering::Relaxed);
        }
    }

    /// The errno of a control-file line `OP ERRNO` that names `op`.
    fn parse_line(line: &str, op: FaultOp) -> Option<i32> {
        let mut words = line.split_whitespace();
        if words.next()? != op.name() {
            return None;
        }
        match words.next()? {
            "ENOSPC" => Some(libc::ENOSPC),
            "EDQUOT" => Some(libc::EDQUOT),
            "EIO" => Some(libc::EIO),
            "EROFS" => Some(libc::EROFS),
            "EOPNOTSUPP" => Some(libc::EOPNOTSUPP),
            _ => None,
        }
    }
}

/// `statx` of (inode, size) at `path` relative to `dirfd`, with `flags`
/// and `AT_STATX_FORCE_SYNC` (asked of the filesystem, never of the
/// kernel's attribute cache).
fn statx_ino_size(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_int,
) -> io::Result<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `path` is a NUL-terminated string that outlives the call,
    // `dirfd` is AT_FDCWD or an open descriptor of the caller's, and `st`
    // points to writable memory the size of a `statx`.
    let r = unsafe {
        libc::statx(
            dirfd,
            path.as_ptr(),
            flags | libc::AT_STATX_FORCE_SYNC,
            libc::STATX_INO | libc::STATX_SIZE,
            st.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded, so it filled `st` (and it was zeroed).
    let st = unsafe { st.assume_init() };
    Ok((st.stx_ino, st.stx_size))
}
