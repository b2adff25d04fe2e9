//! The mount's guard: a small process that `cachefs mount` starts once it
//! has mounted, which ends the daemon's FUSE connection if the daemon is
//! killed (`kill -9`, the OOM killer) and cannot finish dying.
//!
//! Why a killed daemon can fail to die: its invalidation thread may be in
//! the kernel, dropping a dentry (`fs/invalidate.rs`), waiting for the
//! directory's lock, held by a CREATE or LOOKUP that waits for a reply
//! the dead daemon will never send. That wait cannot be interrupted, so
//! the thread never exits, the process never finishes dying, its
//! /dev/fuse descriptor is never closed and the connection never aborted:
//! the process, that request and every later access to the directory hang
//! until the connection is aborted by hand. No thread of the daemon can
//! do it (a killed process's threads are all killed), hence a process.
//!
//! How it knows: a daemon's main thread lives until the process ends
//! (it runs the session), so a main thread that has exited while the
//! process remains (its state `Z` in /proc) is a process dying. If it
//! still remains after `GRACE`, the guard aborts the connection: through
//! fusectl's `abort` file where fusectl is mounted, else by a forced
//! unmount (root), which aborts it too. The stuck request then fails, the
//! lock is let go, the thread finishes and the process dies; the next
//! `cachefs mount` (systemd's restart) finds a dead mount, as after any
//! other crash.
//!
//! Invariants: the guard acts only on the connection it was given, and
//! only while the mountpoint still holds it; a clean stop ends the guard
//! first (`Guard::dismiss`), so it never acts on a number that a later
//! mount reuses. It ignores SIGINT, SIGTERM and SIGHUP: those are the
//! daemon's (a terminal's ^C and systemd's stop reach the whole group).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How often the guard looks at the daemon.
const POLL: Duration = Duration::from_millis(200);
/// How long a dying daemon is left to die by itself: one that is not
/// stuck is gone in milliseconds, and the kernel aborts its connection.
const GRACE: Duration = Duration::from_millis(500);

/// `cachefs guard` (hidden: started by `cachefs mount` only).
#[derive(clap::Args)]
pub struct GuardArgs {
    /// The daemon's pid.
    #[arg(long)]
    pub pid: i32,
    /// The daemon's FUSE connection: its mount's device number.
    #[arg(long)]
    pub conn: u64,
    /// The daemon's mountpoint (canonical).
    pub mountpoint: PathBuf,
}

/// The guard process of a mount, while it runs.
pub struct Guard(Child);

impl Guard {
    /// Starts the guard of the FUSE mount at `mountpoint` (mounted by this
    /// process just now).
    pub fn start(mountpoint: &Path) -> io::Result<Guard> {
        let mnt = mountpoint.canonicalize()?;
        let conn = mount_device(&mnt)
            .ok_or_else(|| io::Error::other("the mount is not in /proc/self/mountinfo"))?;
        let child = Command::new("/proc/self/exe")
            .arg("guard")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg("--conn")
            .arg(conn.to_string())
            .arg(&mnt)
            .stdin(Stdio::null())
            .spawn()?;
        Ok(Guard(child))
    }

    /// A clean stop: the guard goes before the mount does.
    pub fn dismiss(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The guard's life: watch the daemon until it is gone; abort its
/// connection if it is dying and stuck.
pub fn run(args: &GuardArgs) -> Result<ExitCode> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code; nothing else in this
        // process sets dispositions.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    close_inherited();
    let started = match proc_stat(args.pid) {
        Some(s) => s.start_time,
        None => return Ok(ExitCode::SUCCESS),
    };
    let mut dying_since: Option<Instant> = None;
    loop {
        std::thread::sleep(POLL);
        let Some(stat) = proc_stat(args.pid).filter(|s| s.start_time == started) else {
            // Gone (and the kernel aborted its connection as it went).
            return Ok(ExitCode::SUCCESS);
        };
        if !stat.main_thread_exited {
            dying_since = None;
            continue;
        }
        let since = *dying_since.get_or_insert_with(Instant::now);
        if since.elapsed() < GRACE {
            continue;
        }
        if mount_device(&args.mountpoint) != Some(args.conn) {
            return Ok(ExitCode::SUCCESS);
        }
        log::warn!(
            "cachefs pid {} was killed and cannot finish dying (a request to it holds a \
             directory lock); aborting its connection to {}",
            args.pid,
            args.mountpoint.display()
        );
        abort(args.conn, &args.mountpoint).context("cannot abort the dead daemon's connection")?;
        return Ok(ExitCode::SUCCESS);
    }
}

/// Closes every descriptor but stdin, stdout and stderr. One the daemon
/// let through (a /dev/fuse descriptor received from fusermount3 may not
/// be close-on-exec) would keep its connection alive after it died: the
/// kernel aborts a connection when its last descriptor closes.
fn close_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: closing a descriptor number nothing in this process
        // uses (the guard opened none it keeps; the listing's own is gone
        // once `dir` is dropped, and closing it twice is EBADF, harmless).
        unsafe { libc::close(fd) };
    }
}

/// Aborts FUSE connection `conn` (mounted at `mnt`): every request waiting
/// on it fails with ENOTCONN.
fn abort(conn: u64, mnt: &Path) -> io::Result<()> {
    let fusectl = Path::new("/sys/fs/fuse/connections")
        .join(conn.to_string())
        .join("abort");
    match std::fs::write(&fusectl, b"1") {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            log::debug!("{}: {e}", fusectl.display())
        }
        Err(_) => {}
    }
    // A forced unmount aborts the connection first (fuse's umount_begin),
    // then unmounts if nothing holds the mount: busy or not, the abort is
    // done.
    match nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_FORCE) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(io::Error::other(format!(
            "no fusectl ({}), and umount -f: {e}",
            fusectl.display()
        ))),
    }
}

struct ProcStat {
    /// The thread-group leader (the main thread) has exited: state Z
    /// while other threads of the process remain.
    main_thread_exited: bool,
    start_time: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(ProcStat {
        main_thread_exited: matches!(fields.first(), Some(&"Z") | Some(&"X")),
        // Field 22 of stat(5); `rest` starts at field 3.
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The device number (the kernel's dev_t, which names the connection in
/// fusectl) of the mount at `mnt`, from /proc/self/mountinfo: reading it
/// never touches the mount itself, which may hang.
fn mount_device(mnt: &Path) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mnt.as_os_str().as_bytes();
    // The last line wins: a mount stacked on another hides it.
    text.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() < 5 || unescape(f[4]).as_slice() != want {
            return None;
        }
        let (major, minor) = f[2].split_once(':')?;
        let (major, minor): (u64, u64) = (major.parse().ok()?, minor.parse().ok()?);
        Some((major << 20) | minor)
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = b
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok())
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_unescape() {
        assert_eq!(unescape(r"/a\040b\134c"), b"/a b\\c");
        assert_eq!(unescape(r"/plain"), b"/plain");
        assert_eq!(unescape(r"/end\"), b"/end\\");
    }

    #[test]
    fn this_process_is_alive_and_its_main_thread_runs() {
        let s = proc_stat(std::process::id() as i32).unwrap();
        assert!(!s.main_thread_exited);
        assert!(s.start_time > 0);
        assert!(proc_stat(i32::MAX).is_none());
    }

    #[test]
    fn the_root_mount_has_a_device() {
        assert!(mount_device(Path::new("/")).is_some());
    }
}
