//! Whether the task closing a file is being killed by a signal.
//!
//! A process killed by SIGKILL (or any fatal signal, or the OOM killer)
//! has its descriptors closed by the kernel, and cachefs sees an ordinary
//! FLUSH: without this check a half-written value would be published as
//! the key's value. The kernel tells the two exits apart in the closing
//! task's `/proc/<tid>/stat`: `flags` (field 9) has PF_EXITING while the
//! task is in do_exit, and `exit_code` (field 52, Linux >= 3.5) holds the
//! waitpid-style status, whose low 7 bits are the killing signal. An
//! exit(0) (files closed by do_exit too) has PF_EXITING and a zero signal,
//! and so do the threads of a process exiting normally (they get the
//! group's exit code): they publish.
//!
//! Whatever cannot be read (the task already gone, /proc mounted with
//! hidepid, another pid namespace) means "not killed": publish, as a
//! close always did.
//!
//! A task's stat must not be read while it is in execve: the read waits
//! for a lock execve holds while it closes the close-on-exec files, and
//! that close is a FLUSH waiting for this answer. So `statm` is read
//! first, which takes no such lock: a task in do_exit has let its memory
//! go before it closes its files (exit_mm, then exit_files), so a task
//! with memory (one in execve included) is not being killed, and only a
//! task without is asked for its stat.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The task is in do_exit (include/linux/sched.h).
const PF_EXITING: u64 = 0x4;

/// Whether thread `tid` is exiting because a signal killed it. One small
/// read of /proc (two for an exiting task), with buffers on the stack: it
/// runs at every FLUSH of a writer that has something to publish.
pub fn killed_by_signal(tid: u32) -> bool {
    let mut buf = [0u8; 2048];
    match read_proc(tid, "statm", &mut buf) {
        Some(statm) if !statm_says_memoryless(statm) => return false,
        Some(_) => {}
        None => return false,
    }
    read_proc(tid, "stat", &mut buf).is_some_and(stat_says_killed)
}

/// `/proc/<tid>/<file>` into `buf`: what was read, or None.
fn read_proc<'a>(tid: u32, file: &str, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    let mut path = [0u8; 40];
    let n = {
        let mut w = &mut path[..];
        write!(w, "/proc/{tid}/{file}").ok()?;
        40 - w.len()
    };
    let mut f = std::fs::File::open(Path::new(OsStr::from_bytes(&path[..n]))).ok()?;
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            // Both files are one line, which procfs hands over whole in
            // one read: a line that is all there needs no read of EOF
            // (one system call less at every FLUSH that publishes).
            Ok(k) if buf[len + k - 1] == b'\n' => {
                len += k;
                break;
            }
            Ok(k) => len += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(&buf[..len])
}

/// A `statm` line of a task without memory (its first field, the size,
/// is 0): an exiting task past exit_mm, or a kernel thread.
pub fn statm_says_memoryless(statm: &[u8]) -> bool {
    statm
        .split(|b| b.is_ascii_whitespace())
        .next()
        .and_then(number)
        .is_some_and(|size| size == 0)
}

/// Reads a `/proc/<tid>/stat` line: PF_EXITING with a signal in the exit
/// status. The comm (field 2) may hold spaces and parentheses, so fields
/// are counted from the last ')'.
pub fn stat_says_killed(stat: &[u8]) -> bool {
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return false;
    };
    let mut fields = stat[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    // Field 3 (state) comes first: flags is field 9, exit_code field 52.
    let flags = fields.nth(6).and_then(number);
    let exit_code = fields.nth(52 - 9 - 1).and_then(number);
    match (flags, exit_code) {
        (Some(flags), Some(code)) => flags & PF_EXITING != 0 && code & 0x7f != 0,
        _ => false,
    }
}

fn number(field: &[u8]) -> Option<u64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line with `flags` and `exit_code`, comm as given.
    fn stat(comm: &str, flags: u64, exit_code: u64) -> String {
        let mut f: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        f[0] = "R".into();
        f[9 - 3] = flags.to_string();
        f[52 - 3] = exit_code.to_string();
        format!("4242 ({comm}) {}\n", f.join(" "))
    }

    #[test]
    fn a_signal_in_the_exit_status_of_an_exiting_task_is_a_kill() {
        assert!(stat_says_killed(stat("python3", 0x404044, 9).as_bytes()));
        // SIGTERM's default action, and a kill that dumped core (0x80).
        assert!(stat_says_killed(stat("w", 0x4, 15).as_bytes()));
        assert!(stat_says_killed(stat("w", 0x4, 0x80 | 6).as_bytes()));
        // The comm is the process's to choose: spaces and parentheses.
        assert!(stat_says_killed(stat("a) 1 2 (b", 0x4, 9).as_bytes()));
    }

    #[test]
    fn a_normal_exit_or_a_live_task_is_not() {
        // exit(0) and exit(3): the status is in the high byte.
        assert!(!stat_says_killed(stat("w", 0x4, 0).as_bytes()));
        assert!(!stat_says_killed(stat("w", 0x4, 3 << 8).as_bytes()));
        // Alive (not exiting) whatever its last status field says.
        assert!(!stat_says_killed(stat("w", 0x400000, 9).as_bytes()));
        // A kernel before 3.5 (no exit_code field), or garbage.
        let old = stat("w", 0x4, 9);
        let cut = old.rsplit_once(' ').unwrap().0;
        assert!(!stat_says_killed(cut.as_bytes()));
        assert!(!stat_says_killed(b""));
        assert!(!stat_says_killed(b"12 (x) R x y z"));
    }

    #[test]
    fn this_process_is_alive_and_a_missing_one_is_not_killed() {
        assert!(!killed_by_signal(std::process::id()));
        assert!(!killed_by_signal(u32::MAX));
        let real = std::fs::read(format!("/proc/{}/stat", std::process::id())).unwrap();
        assert!(!stat_says_killed(&real));
        let statm = std::fs::read(format!("/proc/{}/statm", std::process::id())).unwrap();
        assert!(!statm_says_memoryless(&statm));
        assert!(statm_says_memoryless(b"0 0 0 0 0 0 0\n"));
        assert!(!statm_says_memoryless(b""));
    }
}
