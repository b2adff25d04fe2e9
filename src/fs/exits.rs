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
//! The read is made by a thread of its own (`Prober`), and a FLUSH waits
//! for it at most `PROBE_WAIT`: reading a task's stat takes a lock its
//! execve holds, and an exec closes the execing task's close-on-exec
//! files, so a FLUSH from a task in execve would wait for a read that
//! waits for that FLUSH's answer. After `PROBE_WAIT` the answer is "not
//! killed" (an exec is no kill), the FLUSH is answered, the exec goes on
//! and the stuck read returns.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::time::Duration;

/// How long a FLUSH waits for the prober's answer.
const PROBE_WAIT: Duration = Duration::from_millis(50);

type Ask = (u32, SyncSender<bool>);

/// Reads `/proc/<tid>/stat` on its own thread (see above).
pub struct Prober {
    ask: Mutex<Sender<Ask>>,
}

impl Prober {
    pub fn new() -> Prober {
        let (tx, rx) = channel::<Ask>();
        let spawned = std::thread::Builder::new()
            .name("exit-probe".into())
            .spawn(move || serve(rx));
        if let Err(e) = spawned {
            // Then every question times out: closes publish, as before.
            log::warn!("no thread to tell killed writers apart: {e}");
        }
        Prober {
            ask: Mutex::new(tx),
        }
    }

    /// Whether thread `tid` is exiting because a signal killed it; "no"
    /// when the answer takes longer than `PROBE_WAIT`.
    pub fn killed_by_signal(&self, tid: u32) -> bool {
        let (tx, rx) = sync_channel(1);
        if crate::sync::lock(&self.ask).send((tid, tx)).is_err() {
            return false;
        }
        match rx.recv_timeout(PROBE_WAIT) {
            Ok(killed) => killed,
            Err(_) => {
                log::debug!("no answer about thread {tid} (in execve?): not killed");
                false
            }
        }
    }
}

fn serve(rx: Receiver<Ask>) {
    while let Ok((tid, answer)) = rx.recv() {
        // The asker may have stopped waiting: nothing to do then.
        let _ = answer.try_send(killed_by_signal(tid));
    }
}

/// The task is in do_exit (include/linux/sched.h).
const PF_EXITING: u64 = 0x4;

/// Whether thread `tid` is exiting because a signal killed it. One small
/// read of /proc, with buffers on the stack: it runs at every FLUSH of a
/// writer that has something to publish.
pub fn killed_by_signal(tid: u32) -> bool {
    let mut path = [0u8; 32];
    let n = {
        let mut w = &mut path[..];
        if write!(w, "/proc/{tid}/stat").is_err() {
            return false;
        }
        32 - w.len()
    };
    let Ok(mut f) = std::fs::File::open(Path::new(OsStr::from_bytes(&path[..n]))) else {
        return false;
    };
    // 52 numeric fields and a 64-byte comm at most: under 1.2 kB.
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(k) => len += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    stat_says_killed(&buf[..len])
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
    }
}
