//! Shared helpers for the integration tests: a `Mount` RAII guard that runs a real
//! `cachefs mount` in temp dirs and always unmounts and reaps it (even when the test
//! panics), plus pollers, errno assertions, stats.json readers, backing-layout paths,
//! xattrs and self-checksummed payloads.
//!
//! Invariants:
//! - Readiness is polled to a deadline (mountpoint in /proc/mounts and
//!   `.cachefs/stats.json` readable), never a fixed sleep.
//! - `Drop` sends SIGTERM to the daemon by PID, waits with a deadline (then SIGKILL),
//!   and lazily unmounts a mountpoint that is still listed in /proc/mounts.
//! - A watchdog SIGKILLs a daemon that outlives `WATCHDOG` so that a deadlocked
//!   filesystem turns into failing syscalls (ENOTCONN) instead of a hung suite.
#![allow(dead_code)]

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_cachefs");
/// How long a mount may take to appear.
pub const MOUNT_DEADLINE: Duration = Duration::from_secs(10);
/// A daemon still alive after this long is killed (a hung test becomes a failing one).
pub const WATCHDOG: Duration = Duration::from_secs(240);
const POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------
// FUSE availability
// ---------------------------------------------------------------------------------

/// Returns true when the test must be skipped because FUSE is unavailable here.
/// Under `CI=true` an unavailable FUSE is a failure, never a skip.
pub fn skip_without_fuse() -> bool {
    match fuse_problem() {
        None => false,
        Some(why) => {
            if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
                panic!("FUSE is unavailable but CI=true, refusing to skip: {why}");
            }
            eprintln!("SKIP: FUSE unavailable ({why}); set CI=true to make this a failure");
            true
        }
    }
}

fn fuse_problem() -> Option<String> {
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        return Some(format!("cannot open /dev/fuse: {e}"));
    }
    let root = unsafe { libc::geteuid() } == 0;
    let has_fusermount = [
        "/usr/bin/fusermount3",
        "/bin/fusermount3",
        "/usr/local/bin/fusermount3",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if root {
        // Mounting as root needs CAP_SYS_ADMIN (bit 21).
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let cap = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        if cap & (1 << 21) == 0 && !has_fusermount {
            return Some("root without CAP_SYS_ADMIN and no fusermount3".into());
        }
    } else if !has_fusermount {
        return Some("not root and no fusermount3".into());
    }
    None
}

// ---------------------------------------------------------------------------------
// /proc/mounts
// ---------------------------------------------------------------------------------

fn unescape_mount_field(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The /proc/mounts line (source, fstype) of `mnt`, if it is a mount point. Reads only
/// /proc, never the FUSE mount itself (so it cannot hang on a dead daemon).
pub fn mount_entry(mnt: &Path) -> Option<(String, String)> {
    let text = fs::read_to_string("/proc/mounts").ok()?;
    let want = mnt.as_os_str().as_bytes();
    let mut found = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() >= 3 && unescape_mount_field(f[1]) == want {
            found = Some((f[0].to_string(), f[2].to_string()));
        }
    }
    found
}

pub fn is_mounted(mnt: &Path) -> bool {
    mount_entry(mnt).is_some()
}

/// `umount -l` until `mnt` no longer appears in /proc/mounts (stacked mounts included).
pub fn lazy_unmount(mnt: &Path) {
    for _ in 0..8 {
        if !is_mounted(mnt) {
            return;
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(mnt)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------

/// Polls `cond` every few ms until it returns true or `timeout` passes; returns
/// whether it became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Sleeps until the wall clock reaches `t` (used only to let a TTL pass).
pub fn sleep_until_wall(t: SystemTime) {
    if let Ok(d) = t.duration_since(SystemTime::now()) {
        std::thread::sleep(d);
    }
}

pub fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

pub fn mtime_of(md: &fs::Metadata) -> SystemTime {
    md.modified().expect("mtime")
}

pub fn to_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

// ---------------------------------------------------------------------------------
// The Mount guard
// ---------------------------------------------------------------------------------

/// Options for `Mount::start`.
#[derive(Default, Clone)]
pub struct MountOpts {
    /// The config file's text; `None` runs without `--config`.
    pub config: Option<String>,
    /// An existing (or to-be-created) backing dir; `None` uses a fresh temp dir.
    pub backing: Option<PathBuf>,
    /// Extra environment for the daemon (e.g. RUST_LOG).
    pub env: Vec<(String, String)>,
    /// Extra `cachefs mount` arguments (e.g. `--stop-timeout 1s`).
    pub args: Vec<String>,
    /// An existing mountpoint to reuse; `None` makes a fresh one.
    pub mountpoint: Option<PathBuf>,
    /// Return as soon as the daemon is spawned, without waiting for the
    /// mount (the test watches readiness itself).
    pub no_wait: bool,
}

pub struct Mount {
    /// Holds the mountpoint, config file and daemon log.
    pub dir: tempfile::TempDir,
    pub backing: PathBuf,
    pub mnt: PathBuf,
    pub config_path: Option<PathBuf>,
    pub log_path: PathBuf,
    child: Option<Child>,
    watchdog: Option<mpsc::Sender<()>>,
    // Declared last so it is removed after the unmount in Drop.
    _backing_tmp: Option<tempfile::TempDir>,
}

impl Mount {
    /// Mounts a fresh cache (fresh backing dir) with this config.
    pub fn new(config_toml: &str) -> Mount {
        Mount::start(MountOpts {
            config: Some(config_toml.to_string()),
            ..Default::default()
        })
    }

    /// Mounts the given backing dir (existing or to be created) with this config.
    pub fn with_backing(config_toml: &str, backing: &Path) -> Mount {
        Mount::start(MountOpts {
            config: Some(config_toml.to_string()),
            backing: Some(backing.to_path_buf()),
            ..Default::default()
        })
    }

    pub fn start(opts: MountOpts) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("cachefs-test-")
            .tempdir()
            .expect("tempdir");
        let dir_path = dir.path().canonicalize().unwrap();
        let (backing, backing_tmp) = match opts.backing {
            Some(b) => (b, None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("cachefs-backing-")
                    .tempdir()
                    .unwrap();
                (t.path().canonicalize().unwrap(), Some(t))
            }
        };
        let mnt = match &opts.mountpoint {
            Some(m) => m.clone(),
            None => {
                let m = dir_path.join("mnt");
                fs::create_dir(&m).unwrap();
                m
            }
        };
        let log_path = dir_path.join("daemon.log");
        let config_path = opts.config.as_ref().map(|text| {
            let p = dir_path.join("config.toml");
            fs::write(&p, text).unwrap();
            p
        });
        let log = File::create(&log_path).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("mount").arg(&backing).arg(&mnt);
        if let Some(c) = &config_path {
            cmd.arg("--config").arg(c);
        }
        cmd.args(&opts.args);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("CACHEFS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn cachefs");
        let pid = child.id() as i32;

        // Watchdog: kill a daemon that outlives WATCHDOG.
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(WATCHDOG) {
                eprintln!("WATCHDOG: cachefs pid {pid} alive after {WATCHDOG:?}; SIGKILL");
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });

        let mut m = Mount {
            dir,
            backing,
            mnt,
            config_path,
            log_path,
            child: Some(child),
            watchdog: Some(tx),
            _backing_tmp: backing_tmp,
        };
        if !opts.no_wait {
            m.wait_mounted();
        }
        m
    }

    fn wait_mounted(&mut self) {
        let deadline = Instant::now() + MOUNT_DEADLINE;
        let stats = self.mnt.join(".cachefs/stats.json");
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                lazy_unmount(&self.mnt);
                panic!(
                    "cachefs exited early with {status} before mounting {}\n--- daemon stderr ---\n{}",
                    self.mnt.display(),
                    self.log()
                );
            }
            if is_mounted(&self.mnt) && fs::read(&stats).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                let log = self.log();
                panic!(
                    "cachefs did not mount {} within {MOUNT_DEADLINE:?} (in /proc/mounts: {})\n--- daemon stderr ---\n{log}",
                    self.mnt.display(),
                    is_mounted(&self.mnt)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("daemon already reaped").id() as i32
    }

    /// The daemon's process, e.g. to signal or poll it.
    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("daemon already reaped")
    }

    /// True while the daemon process has not exited.
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => c.try_wait().unwrap().is_none(),
        }
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    pub fn ns(&self, ns: &str) -> PathBuf {
        self.mnt.join(ns)
    }

    pub fn path(&self, ns: &str, key: &str) -> PathBuf {
        self.mnt.join(ns).join(key)
    }

    pub fn path_bytes(&self, ns: &str, key: &[u8]) -> PathBuf {
        self.mnt.join(ns).join(OsStr::from_bytes(key))
    }

    pub fn backing_path(&self, ns: &str, key: &[u8]) -> PathBuf {
        backing_entry_path(&self.backing, ns, key)
    }

    pub fn stats(&self) -> serde_json::Value {
        read_stats(&self.mnt)
    }

    /// `stats.json` field `field` of namespace `ns` (0 when the namespace is absent).
    pub fn ns_stat(&self, ns: &str, field: &str) -> u64 {
        let s = self.stats();
        s["namespaces"][ns][field].as_u64().unwrap_or(0)
    }

    pub fn total_stat(&self, field: &str) -> u64 {
        let s = self.stats();
        s["total"][field]
            .as_u64()
            .unwrap_or_else(|| panic!("stats.json total.{field} missing: {s}"))
    }

    /// SIGTERM, wait for exit (deadline 20 s), and return the exit status. Asserts the
    /// daemon unmounted itself. Leaves no mount behind either way.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon already reaped");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = wait_child(&mut child, Duration::from_secs(20));
        if status.is_none() {
            kill_and_reap(&mut child, &self.mnt);
        }
        let still = is_mounted(&self.mnt);
        lazy_unmount(&self.mnt);
        let status = status.unwrap_or_else(|| {
            panic!(
                "cachefs did not exit within 20 s of SIGTERM\n--- daemon stderr ---\n{}",
                self.log()
            )
        });
        assert!(
            !still,
            "cachefs exited ({status}) after SIGTERM but left {} mounted",
            self.mnt.display()
        );
        status
    }

    /// `kill -9` the daemon, reap it and lazily unmount the dead mount.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon already reaped");
        kill_and_reap(&mut child, &self.mnt);
        lazy_unmount(&self.mnt);
        assert!(
            !is_mounted(&self.mnt),
            "mount still present after umount -l"
        );
    }
}

/// SIGKILLs a daemon and reaps it. A killed daemon's thread can be stuck
/// in the kernel, writing an invalidation that waits for a lock held by a
/// request that waits for the dead daemon's reply; the process then never
/// finishes dying until its connection is aborted, which `umount -f` does.
fn kill_and_reap(child: &mut Child, mnt: &Path) {
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    if wait_child(child, Duration::from_secs(5)).is_none() {
        eprintln!(
            "cachefs pid {} still dying 5 s after SIGKILL; aborting its connection (umount -f)",
            child.id()
        );
        let _ = Command::new("umount")
            .arg("-f")
            .arg(mnt)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.wait();
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(tx) = self.watchdog.take() {
            let _ = tx.send(());
        }
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            if child.try_wait().ok().flatten().is_none() {
                unsafe { libc::kill(pid, libc::SIGTERM) };
                if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                    eprintln!("cachefs pid {pid} ignored SIGTERM for 10 s; SIGKILL");
                    kill_and_reap(&mut child, &self.mnt);
                }
            }
        }
        lazy_unmount(&self.mnt);
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!(
                "--- cachefs stderr ({}; last {} lines) ---\n{}\n--- end ---",
                self.mnt.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Running the binary expecting an error
// ---------------------------------------------------------------------------------

/// Runs `cachefs ARGS` to completion (an offline command, which ends by
/// itself), with no stdin and no RUST_LOG.
pub fn cachefs<S: AsRef<OsStr>>(args: &[S]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `cachefs ARGS`, which must succeed: its stdout.
#[track_caller]
pub fn cachefs_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out = cachefs(args);
    let words: Vec<_> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    assert!(
        out.status.success(),
        "cachefs {words:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `cachefs ARGS` that is expected to fail before mounting; returns (exit status,
/// stderr). If it is still running after 10 s it is killed, `watch_mnt` lazily
/// unmounted, and the test fails.
pub fn run_expect_exit(args: &[&OsStr], watch_mnt: Option<&Path>) -> (ExitStatus, String) {
    let tmp = tempfile::tempdir().unwrap();
    let errp = tmp.path().join("stderr");
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&errp).unwrap())
        .spawn()
        .unwrap();
    let st = wait_child(&mut child, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&fs::read(&errp).unwrap()).into_owned();
    match st {
        Some(st) => {
            if let Some(m) = watch_mnt {
                if is_mounted(m) {
                    lazy_unmount(m);
                    panic!(
                        "cachefs {args:?} exited {st} but left {} mounted",
                        m.display()
                    );
                }
            }
            (st, stderr)
        }
        None => {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
            }
            if let Some(m) = watch_mnt {
                lazy_unmount(m);
            }
            panic!(
                "cachefs {args:?} was expected to exit with an error but kept running; stderr:\n{stderr}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// stats.json, backing layout
// ---------------------------------------------------------------------------------

pub fn read_stats(mnt: &Path) -> serde_json::Value {
    let p = mnt.join(".cachefs/stats.json");
    let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats.json is not JSON ({e}): {text}"))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// `BACKING/data/h[0..2]/h[2..4]/h`, h = hex(sha256(ns ++ 0 ++ key)).
pub fn backing_entry_path(backing: &Path, ns: &str, key: &[u8]) -> PathBuf {
    let mut h = Sha256::new();
    h.update(ns.as_bytes());
    h.update([0u8]);
    h.update(key);
    let h = hex(&h.finalize());
    backing.join("data").join(&h[0..2]).join(&h[2..4]).join(&h)
}

/// Every regular file under `dir`, recursively (empty when `dir` is missing).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Files under a backing dir's staging/ (or trash/): writes in progress or
/// left behind. A live daemon's session lock file does not count.
pub fn staged_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "lock"))
        .collect()
}

/// Sorted names (as bytes) of a directory's entries.
pub fn list(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

pub fn list_str(dir: &Path) -> Vec<String> {
    list(dir)
        .into_iter()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------
// errno, explicit close, xattrs, statvfs
// ---------------------------------------------------------------------------------

pub fn errno<T>(r: &io::Result<T>) -> Option<i32> {
    r.as_ref().err().and_then(|e| e.raw_os_error())
}

pub fn errno_name(e: i32) -> String {
    let s = unsafe { std::ffi::CStr::from_ptr(libc::strerror(e)) };
    format!("{} ({})", e, s.to_string_lossy())
}

#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, want: i32, what: &str) {
    match r {
        Ok(v) => panic!(
            "{what}: expected {} but succeeded with {v:?}",
            errno_name(want)
        ),
        Err(e) => {
            let got = e.raw_os_error();
            assert_eq!(
                got,
                Some(want),
                "{what}: expected {} but got {} ({e})",
                errno_name(want),
                got.map(errno_name).unwrap_or_else(|| "no errno".into())
            );
        }
    }
}

/// close(2) with its result (dropping a `File` discards close errors).
pub fn close_file(f: File) -> io::Result<()> {
    let fd = f.into_raw_fd();
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// create/truncate, write everything, close, checking close's result.
pub fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    close_file(f)
}

/// Like `write_file` in chunks of `chunk` bytes.
pub fn write_file_chunked(path: &Path, data: &[u8], chunk: usize) -> io::Result<()> {
    let mut f = File::create(path)?;
    for c in data.chunks(chunk.max(1)) {
        f.write_all(c)?;
    }
    close_file(f)
}

/// O_CREAT|O_EXCL create.
pub fn create_excl(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
}

pub fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn getxattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let p = cpath(path);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

pub fn getxattr_str(path: &Path, name: &str) -> io::Result<String> {
    getxattr(path, name).map(|v| {
        String::from_utf8_lossy(&v)
            .trim_end_matches('\0')
            .to_string()
    })
}

pub fn setxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path);
    let n = CString::new(name).unwrap();
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn statvfs(path: &Path) -> libc::statvfs {
    let p = cpath(path);
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(p.as_ptr(), &mut s) };
    assert_eq!(
        r,
        0,
        "statvfs {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
    s
}

/// Bytes in use according to statfs: (f_blocks - f_bfree) * f_frsize.
pub fn statfs_used(path: &Path) -> u64 {
    let s = statvfs(path);
    (s.f_blocks - s.f_bfree) * s.f_frsize
}

pub fn fd_of(f: &File) -> i32 {
    f.as_raw_fd()
}

/// Runs a shell command line; panics with its output when it fails.
#[track_caller]
pub fn sh(cmdline: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmdline).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmdline}` failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Shell-quotes a path for `sh -c`.
pub fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

// ---------------------------------------------------------------------------------
// Deterministic randomness and self-checksummed payloads
// ---------------------------------------------------------------------------------

/// splitmix64: small, seedable, good enough for test data.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// Seeded from the clock; the seed is printed so a failure can be replayed.
    pub fn from_time(what: &str) -> Rng {
        let seed = std::env::var("CACHEFS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: seed {seed} (CACHEFS_TEST_SEED to replay)");
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in lo..hi (hi exclusive).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let x = self.next_u64().to_le_bytes();
            c.copy_from_slice(&x[..c.len()]);
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

pub const PAYLOAD_MAGIC: &[u8; 4] = b"CFT1";
pub const PAYLOAD_HEADER: usize = 4 + 8 + 32;

/// A self-checksummed payload: "CFT1", body length (u64 LE), sha256(body), body. The
/// body starts with `tag` so that versions are distinguishable.
pub fn make_payload(rng: &mut Rng, body_len: usize, tag: &[u8]) -> Vec<u8> {
    let mut body = rng.bytes(body_len.max(tag.len()));
    body[..tag.len()].copy_from_slice(tag);
    let mut out = Vec::with_capacity(PAYLOAD_HEADER + body.len());
    out.extend_from_slice(PAYLOAD_MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    out
}

/// Checks a payload made by `make_payload`: complete, unmixed, untruncated.
pub fn check_payload(b: &[u8]) -> Result<(), String> {
    if b.len() < PAYLOAD_HEADER {
        return Err(format!(
            "short read: {} bytes, less than the {PAYLOAD_HEADER}-byte header",
            b.len()
        ));
    }
    if &b[..4] != PAYLOAD_MAGIC {
        return Err(format!("bad magic {:02x?} (len {})", &b[..4], b.len()));
    }
    let n = u64::from_le_bytes(b[4..12].try_into().unwrap()) as usize;
    if b.len() != PAYLOAD_HEADER + n {
        return Err(format!(
            "length mismatch: header says body {n}, got {} bytes total",
            b.len()
        ));
    }
    if Sha256::digest(&b[PAYLOAD_HEADER..]).as_slice() != &b[12..44] {
        return Err(format!(
            "checksum mismatch (torn or mixed), len {}",
            b.len()
        ));
    }
    Ok(())
}

/// Describes `got` against named candidate versions, for failure messages: which one
/// it equals, or which one it is a prefix of, or neither.
pub fn describe(got: &[u8], candidates: &[(&str, &[u8])]) -> String {
    for (name, c) in candidates {
        if got == *c {
            return format!("{} bytes = {name}", got.len());
        }
    }
    for (name, c) in candidates {
        if !got.is_empty() && c.starts_with(got) {
            return format!(
                "{} bytes = a prefix of {name} ({} bytes)",
                got.len(),
                c.len()
            );
        }
    }
    if !got.is_empty() && got.iter().all(|b| *b == 0) {
        return format!("{} zero bytes", got.len());
    }
    let sizes: Vec<String> = candidates
        .iter()
        .map(|(n, c)| format!("{n}: {} bytes", c.len()))
        .collect();
    format!("{} bytes matching none of {}", got.len(), sizes.join(", "))
}
