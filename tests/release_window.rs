//! The window between a writer's close() and its RELEASE (PRODUCT.md
//! sections 4-5): close() has returned, but the daemon still holds the
//! writer's handle until the kernel's RELEASE arrives and is served, and
//! an unwritten create is only published then. Whatever the closing
//! process (or anyone) does to the name in that window must behave as
//! after the publish: a chmod, a utimensat, an xattr, a stat find the
//! entry (never ENOENT) and the inode the writer had (never a new one, so
//! the kernel's ETXTBSY for a file being executed holds).
//!
//! Each test runs its case in a tight loop: the window is a few
//! microseconds wide and is hit only now and then on each round (pjdfstest
//! `open::etxtbsy` and `utimensat::utime_now_owner` failed about once in
//! 10-20 runs before).

mod common;

use common::*;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

const CFG: &str = "[namespace.rw]\n";

/// Rounds per thread: each is a few milliseconds on a debug build.
const ROUNDS: usize = 300;
/// Threads racing at once: more requests in flight keep both of the
/// daemon's request threads busy, which is what widens the window (a
/// RELEASE picked up by one thread while the other serves the next
/// request).
const THREADS: usize = 4;

/// Runs `f(thread number)` on `THREADS` threads at once.
fn in_parallel(f: impl Fn(usize) + Sync) {
    std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = (0..THREADS).map(|t| s.spawn(move || f(t))).collect();
        for h in hs {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
}

fn utimensat_now(p: &Path) -> std::io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let now = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_NOW,
    };
    let times = [now, now];
    // SAFETY: `c` is a NUL-terminated path and `times` two timespecs,
    // both alive for the call.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn sleep_binary() -> Vec<u8> {
    let out = Command::new("sh")
        .args(["-c", "command -v sleep"])
        .output()
        .expect("sh");
    let path = String::from_utf8(out.stdout).unwrap();
    fs::read(path.trim()).expect("read the sleep binary")
}

/// pjdfstest `open::etxtbsy`: copy an executable in, close, chmod +x, run
/// it, and an open for writing is ETXTBSY. That holds only while the name
/// leads to the inode being executed: a chmod that raced the RELEASE used
/// to stage a copy, which the RELEASE then published as a new inode (and
/// until then, lookups showed the old mode: the exec was EACCES).
///
/// One thread runs the programs; the others race the same close -> chmod
/// without running anything (a program forked while another thread holds
/// a file open for writing would keep that file busy for its own exec),
/// and check the mode and inode the name then shows.
#[test]
fn a_program_written_chmodded_and_run_at_once_is_busy_for_writers() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let prog = sleep_binary();
    in_parallel(|t| {
        for r in 0..ROUNDS {
            let i = format!("{t}.{r}");
            let p = m.path("rw", &format!("prog{i}"));
            let ino = {
                let mut f = File::create(&p).unwrap();
                f.write_all(&prog).unwrap();
                f.metadata().unwrap().ino()
            };
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("round {i}: chmod right after close: {e}"));
            if t == 0 {
                let mut child = Command::new(&p)
                    .arg("10")
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("round {i}: exec right after chmod: {e}"));
                let w = OpenOptions::new().write(true).open(&p);
                let _ = child.kill();
                let _ = child.wait();
                assert_errno(
                    w,
                    libc::ETXTBSY,
                    &format!("round {i}: open for writing of a running program"),
                );
            }
            let md = fs::metadata(&p).unwrap_or_else(|e| panic!("round {i}: stat: {e}"));
            assert_eq!(md.mode() & 0o7777, 0o755, "round {i}: mode after chmod");
            assert_eq!(
                md.ino(),
                ino,
                "round {i}: the name leads to another inode than its writer's after chmod"
            );
        }
    });
    // One version per program: none was published twice (a RELEASE still
    // on its way could only hide an extra one, never add one).
    assert_eq!(
        m.ns_stat("rw", "publishes"),
        (ROUNDS * THREADS) as u64,
        "{}",
        m.stats()
    );
}

/// pjdfstest `utimensat::utime_now_owner`: create (nothing written, so the
/// publish waits for RELEASE), close, then chmod and utimensat by path at
/// once, from the same thread: neither may find the entry missing while
/// its RELEASE is being served, and the file ends with what they set.
#[test]
fn chmod_and_utimensat_right_after_an_unwritten_close_find_the_file() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    in_parallel(|t| {
        for r in 0..ROUNDS {
            let i = format!("{t}.{r}");
            let p = m.path("rw", &format!("empty{i}"));
            let ino = {
                let f = File::create(&p).unwrap();
                f.metadata().unwrap().ino()
            };
            fs::set_permissions(&p, fs::Permissions::from_mode(0o444))
                .unwrap_or_else(|e| panic!("round {i}: chmod right after close: {e}"));
            utimensat_now(&p).unwrap_or_else(|e| panic!("round {i}: utimensat after chmod: {e}"));
            let md = fs::metadata(&p).unwrap_or_else(|e| panic!("round {i}: stat: {e}"));
            assert_eq!(md.mode() & 0o7777, 0o444, "round {i}: mode");
            assert_eq!(md.nlink(), 1, "round {i}: nlink");
            assert_eq!(md.len(), 0, "round {i}: size");
            assert_eq!(md.ino(), ino, "round {i}: inode changed across the publish");
        }
    });
}

/// The same window for xattrs and a chmod through a fresh descriptor: a
/// user xattr set right after an unwritten close belongs to the published
/// entry.
#[test]
fn an_xattr_set_right_after_an_unwritten_close_stays_with_the_entry() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    in_parallel(|t| {
        for r in 0..ROUNDS {
            let i = format!("{t}.{r}");
            let p = m.path("rw", &format!("x{i}"));
            drop(File::create(&p).unwrap());
            setxattr(&p, "user.etag", format!("e{i}").as_bytes())
                .unwrap_or_else(|e| panic!("round {i}: setxattr right after close: {e}"));
            let got = getxattr(&p, "user.etag")
                .unwrap_or_else(|e| panic!("round {i}: getxattr after setxattr: {e}"));
            assert_eq!(got, format!("e{i}").as_bytes(), "round {i}");
        }
    });
    // Once every RELEASE is served, each entry still has its xattr.
    for (t, r) in (0..THREADS).flat_map(|t| (0..ROUNDS).map(move |r| (t, r))) {
        let i = format!("{t}.{r}");
        let p = m.path("rw", &format!("x{i}"));
        assert_eq!(
            getxattr(&p, "user.etag").unwrap(),
            format!("e{i}").as_bytes(),
            "entry {i} lost its xattr"
        );
    }
}

/// Waits until process `pid` sleeps (state S): a program that has finished
/// loading and runs.
fn wait_sleeping(pid: u32) -> bool {
    wait_until(std::time::Duration::from_secs(10), || {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('S')))
            .unwrap_or(false)
    })
}

/// An open with O_TRUNC (even O_RDONLY) of a program being run: O_WRONLY
/// and O_RDWR are ETXTBSY; O_RDONLY|O_TRUNC truncates the name (a new
/// version, empty), and the running program is left whole: it runs to its
/// end (it used to die of SIGBUS, its pages dropped under it).
#[test]
fn truncating_opens_of_a_running_program_leave_it_running() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("rw", "prog");
    fs::write(&p, sleep_binary()).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Command::new(&p)
        .arg("0.3")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_sleeping(child.id()), "the program never ran");
    for (how, flags) in [("O_WRONLY", libc::O_WRONLY), ("O_RDWR", libc::O_RDWR)] {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; the descriptor, if any, is closed.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        let e = std::io::Error::last_os_error();
        if fd >= 0 {
            // SAFETY: the descriptor just opened.
            unsafe { libc::close(fd) };
        }
        assert_eq!(fd, -1, "{how} of a running program opened");
        assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY), "{how}: {e}");
    }
    let t = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_TRUNC)
        .open(&p);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the running program died after an O_RDONLY|O_TRUNC open of it ({t:?}): {status:?}"
    );
    drop(t.expect("O_RDONLY|O_TRUNC: a writer's open of a new version"));
    assert_eq!(fs::metadata(&p).unwrap().len(), 0, "O_TRUNC truncates");
}
