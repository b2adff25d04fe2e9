//! Which daemons on the backing dir are alive, without trusting `flock`.
//!
//! Every daemon (and every command that opens a store) has a session:
//! `staging/<token>.lock`, created with `O_EXCL`, holding one line that
//! names its process: the host's boot id, its pid namespace, its pid and
//! its start time. Whatever a session owns (its staging and trash dirs, the
//! claims it holds) may be removed by another only once the session is
//! known dead. The answer never rests on `flock` alone, for a lock taken
//! through a view that does not forward locks (bindfs, some network
//! volumes) is always free:
//! - the lock held: alive (where locks work, that is certain);
//! - the same boot and pid namespace as ours: alive exactly while its pid
//!   runs with the recorded start time (certain, and at once);
//! - another host or container: alive while the file's mtime, which the
//!   session touches every `HEARTBEAT`, is younger than `STALE`.
//!
//! So a session on another host is taken for dead `STALE` after its
//! daemon dies (or stops beating: a host whose clock runs `STALE` behind
//! the volume's would look dead; `STALE` is long for that reason).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How often a session touches its file.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A session on another host whose file is older than this is dead.
pub const STALE: Duration = Duration::from_secs(90);

/// Who runs a session, as recorded in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    boot: String,
    pidns: String,
    pid: u32,
    start: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            boot: boot_id(),
            pidns: pid_namespace(),
            pid,
            start: start_ticks(pid).unwrap_or(0),
        }
    }

    fn line(&self) -> String {
        format!(
            "cachefs session 1 boot={} pidns={} pid={} start={}\n",
            self.boot, self.pidns, self.pid, self.start
        )
    }

    /// Parses a session file's line; anything else is `None`.
    fn parse(text: &str) -> Option<Owner> {
        let rest = text.trim_end().strip_prefix("cachefs session 1 ")?;
        let mut f = rest.split(' ');
        let mut field = |name: &str| f.next()?.strip_prefix(name)?.strip_prefix('=');
        let boot = field("boot")?.to_owned();
        let pidns = field("pidns")?.to_owned();
        let pid = field("pid")?.parse().ok()?;
        let start = field("start")?.parse().ok()?;
        Some(Owner {
            boot,
            pidns,
            pid,
            start,
        })
    }

    /// Whether this process, seen from `here`, still runs; `None` when
    /// `here` cannot see it (another host or pid namespace).
    fn runs_seen_from(&self, here: &Owner) -> Option<bool> {
        if self.boot.is_empty() || self.boot != here.boot || self.pidns != here.pidns {
            return None;
        }
        Some(start_ticks(self.pid) == Some(self.start))
    }
}

/// Writes this process's session record into a new session file.
pub fn write_record(file: &mut fs::File) -> io::Result<()> {
    file.write_all(Owner::current().line().as_bytes())
}

/// Decides whether the session whose file is `path` is alive.
/// `lock_free` is whether its flock could be taken (false: held, alive).
pub fn liveness(path: &Path, lock_free: bool) -> Liveness {
    if !lock_free {
        return Liveness::Alive;
    }
    let Ok(mut file) = fs::File::open(path) else {
        // Gone: its owner ended it.
        return Liveness::Dead;
    };
    let mut text = String::new();
    let recorded = Read::by_ref(&mut file)
        .take(512)
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| Owner::parse(&text));
    if let Some(runs) = recorded.and_then(|o| o.runs_seen_from(&Owner::current())) {
        return if runs {
            Liveness::Alive
        } else {
            Liveness::Dead
        };
    }
    // Another host, or a file written before records (or before its
    // record was written): its heartbeat decides.
    let age = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    match age {
        Some(age) if age > STALE => Liveness::Dead,
        _ => Liveness::Alive,
    }
}

/// Whether the session whose file is `path` lives; a session with no
/// file has ended.
pub fn lives(path: &Path) -> bool {
    let free = match fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
        // Not ours to open: its record and heartbeat still tell.
        Err(_) => true,
    };
    liveness(path, free) == Liveness::Alive
}

/// The thread that touches a session's file every `HEARTBEAT`; stops
/// when dropped.
pub struct Heartbeat {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(path: PathBuf) -> Heartbeat {
        let (tx, rx) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || beat(&path, &rx));
        match thread {
            Ok(t) => Heartbeat {
                stop: Some(tx),
                thread: Some(t),
            },
            Err(e) => {
                log::warn!(
                    "no heartbeat thread ({e}): daemons on other hosts may take this one for dead"
                );
                Heartbeat {
                    stop: None,
                    thread: None,
                }
            }
        }
    }
}

fn beat(path: &Path, stop: &Receiver<()>) {
    loop {
        match stop.recv_timeout(HEARTBEAT) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        // Opened each time rather than held: a session keeps no more
        // files open than its lock.
        let touched = fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        match touched {
            Ok(()) => {}
            // The session has ended (`end_session` removed its file).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => log::warn!("cannot touch the session file: {e}"),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long a survey of the sessions that found no other one lets this
/// daemon take itself for the only one on the backing dir.
pub(super) const ALONE_LEASE: Duration = Duration::from_millis(500);
/// What a newcomer waits beyond `ALONE_LEASE` before its first change:
/// for clocks that run apart and a survey that started before its file.
pub(super) const HOLD_MARGIN: Duration = Duration::from_millis(100);

/// Whether this daemon is alone on the backing dir, and a newcomer's
/// hold. A daemon alone answers a key its index does not hold as a miss
/// without looking at the key's backing path, and a publish skips reading
/// the others' logs: nobody else writes there.
///
/// Why that is safe: "alone" is a lease, taken by a survey (`surveyed`)
/// that lists `staging/` and finds no other session file, and it ends
/// `ALONE_LEASE` after the survey began, whatever happens to the thread
/// that renews it. A daemon that starts while another's session file is
/// there (`newcomer`) changes no backing path (publish, rename) until
/// `ALONE_LEASE + HOLD_MARGIN` after it looked: every lease that missed
/// its session file has ended by then, and every survey since sees it.
/// A survey cannot miss both: a daemon's file is made before its own
/// survey, so of two daemons starting at once at least one sees the other
/// (and holds) or both see each other. Session files of dead daemons count
/// as company until they are reaped: slower, never wrong.
pub(super) struct Company {
    base: Instant,
    /// Nanoseconds after `base` until which this daemon is alone; 0: not.
    alone_until: AtomicU64,
    /// Nanoseconds after `base` before which this daemon, a newcomer,
    /// changes no backing path; 0: no hold (or over).
    hold_until: AtomicU64,
}

impl Default for Company {
    fn default() -> Company {
        Company {
            base: Instant::now(),
            alone_until: AtomicU64::new(0),
            hold_until: AtomicU64::new(0),
        }
    }
}

impl Company {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether this daemon may take itself for the only one now.
    pub(super) fn alone(&self) -> bool {
        let until = self.alone_until.load(Ordering::Acquire);
        until != 0 && self.nanos(Instant::now()) < until
    }

    /// A survey begun at `at` found other sessions, or none.
    pub(super) fn surveyed(&self, at: Instant, others: bool) {
        let until = if others {
            0
        } else {
            self.nanos(at + ALONE_LEASE).max(1)
        };
        self.alone_until.store(until, Ordering::Release);
    }

    /// This daemon started where others were (it looked at `at`): its
    /// changes wait until every lease that missed it has ended.
    pub(super) fn newcomer(&self, at: Instant) {
        let until = self.nanos(at + ALONE_LEASE + HOLD_MARGIN).max(1);
        self.hold_until.store(until, Ordering::Release);
    }

    /// Waits out a newcomer's hold (at once when there is none).
    pub(super) fn wait_announced(&self) {
        let until = self.hold_until.load(Ordering::Acquire);
        if until == 0 {
            return;
        }
        let now = self.nanos(Instant::now());
        if now < until {
            std::thread::sleep(Duration::from_nanos(until - now));
        }
        self.hold_until.store(0, Ordering::Release);
    }
}

/// Whether `staging/` holds a session file other than `own`'s.
pub(super) fn others_there(staging: &Path, own: &str) -> bool {
    let Ok(rd) = fs::read_dir(staging) else {
        // Cannot tell: company, to be safe.
        return true;
    };
    rd.flatten().any(|e| {
        let name = e.file_name();
        name.as_bytes()
            .strip_suffix(b".lock")
            .is_some_and(|t| t != own.as_bytes())
    })
}

/// A name for this process no other can take: its pid (for people
/// reading the dir) and 64 random bits (pids repeat across hosts and
/// containers).
pub(super) fn new_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{}-{:016x}", std::process::id(), h.finish())
}

pub(super) fn flock(file: &fs::File, op: libc::c_int) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes a session's staging and trash dirs and then its lock file;
/// returns how many files went.
pub(super) fn remove_session(staging: &Path, trash: &Path, token: &str) -> usize {
    let mut n = 0;
    for dir in [staging.join(token), trash.join(token)] {
        n += empty_dir(&dir);
        let _ = fs::remove_dir(&dir);
    }
    let _ = fs::remove_file(session_lock_path(staging, token));
    n
}

pub(super) fn session_lock_path(staging: &Path, token: &str) -> PathBuf {
    staging.join(format!("{token}.lock"))
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

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn pid_namespace() -> String {
    fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().replace(' ', "_"))
        .unwrap_or_default()
}

/// A process's start time in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`): with the pid, it names one process for good.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_names_this_process() {
        let me = Owner::current();
        assert!(me.start > 0, "start time of this process: {me:?}");
        assert_eq!(Owner::parse(&me.line()), Some(me.clone()));
        assert_eq!(me.runs_seen_from(&me), Some(true));
    }

    #[test]
    fn a_dead_pid_or_a_reused_one_is_dead() {
        let me = Owner::current();
        let reused = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(reused.runs_seen_from(&me), Some(false));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = Owner { pid, ..me.clone() };
        assert_eq!(gone.runs_seen_from(&me), Some(false));
    }

    #[test]
    fn another_host_is_judged_by_its_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.lock");
        let other = Owner {
            boot: "another-host".into(),
            ..Owner::current()
        };
        fs::write(&path, other.line()).unwrap();
        assert_eq!(liveness(&path, true), Liveness::Alive);
        let old = SystemTime::now() - STALE - Duration::from_secs(1);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(liveness(&path, true), Liveness::Dead);
        // Held lock: alive whatever the file says.
        assert_eq!(liveness(&path, false), Liveness::Alive);
    }

    #[test]
    fn garbage_is_never_a_panic_and_falls_back_to_the_heartbeat() {
        for text in [
            "",
            "cachefs session 1 boot=x",
            "cachefs session 1 boot= pidns= pid=zz start=1",
            "\u{0}\u{ff}",
        ] {
            assert_eq!(Owner::parse(text), None, "{text:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.lock");
        fs::write(&path, b"junk").unwrap();
        assert_eq!(liveness(&path, true), Liveness::Alive);
        assert_eq!(liveness(&dir.path().join("none"), true), Liveness::Dead);
    }
}
