//! A `kill -9` of the daemon under load (PRODUCT.md section 6: killing it
//! at any instant is survivable; section 8: the service restarts on
//! failure). The killed daemon must finish dying, and its mount must be
//! replaceable by a new daemon, within a bound, with nobody's help.
//!
//! What used to go wrong: the daemon's invalidation thread was in the
//! kernel, dropping a dentry, waiting for the directory's lock held by a
//! CREATE or LOOKUP that waited for the dead daemon's reply. That thread
//! could not die, so the process never finished dying, its /dev/fuse
//! descriptor never closed and the connection was never aborted: the
//! process, the request and every later access to the directory hung
//! until someone ran `umount -f`. (The test harness's `kill_and_reap`
//! still does, as a last resort for other tests; this one does not.)

mod common;

use common::*;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CFG: &str = "[namespace.k]\n";

/// How long a killed daemon may take to be gone (process reaped) and its
/// mount to stop hanging.
const DEATH_BOUND: Duration = Duration::from_secs(5);

/// Rounds of mount, load, kill: the kill must land while the
/// invalidation thread waits on a directory lock, which a round hits only
/// now and then.
const ROUNDS: usize = 12;

/// Rewrites (each drops the key's dentry) and creates (each holds the
/// namespace directory's lock while its CREATE waits for the daemon) in
/// one directory, until `stop` or an error (the daemon died).
fn load(dir: &Path, t: usize, stop: &AtomicBool) {
    let body = vec![b'x'; 4096];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = if t % 2 == 0 {
            format!("hot{}", n % 4)
        } else {
            format!("new{t}-{n}")
        };
        let r = File::create(dir.join(key)).and_then(|mut f| f.write_all(&body));
        if r.is_err() {
            return;
        }
        n += 1;
    }
}

#[test]
fn a_daemon_killed_under_load_dies_and_its_mountpoint_serves_again() {
    if skip_without_fuse() {
        return;
    }
    let own = tempfile::tempdir().unwrap();
    let mnt = own.path().canonicalize().unwrap().join("mnt");
    let backing = own.path().canonicalize().unwrap().join("backing");
    fs::create_dir(&mnt).unwrap();
    for round in 0..ROUNDS {
        let mut m = Mount::start(MountOpts {
            config: Some(CFG.into()),
            backing: Some(backing.clone()),
            mountpoint: Some(mnt.clone()),
            ..Default::default()
        });
        let dir = m.ns("k");
        fs::write(dir.join("kept"), b"kept value").unwrap();
        let stop = AtomicBool::new(false);
        let (reaped, took) = std::thread::scope(|s| {
            for t in 0..6 {
                let (dir, stop) = (&dir, &stop);
                s.spawn(move || load(dir, t, stop));
            }
            // Let the load build up: the namespace's dentries cached,
            // rewrites dropping them while creates hold the directory.
            let ns_dir = dir.clone();
            wait_until(Duration::from_secs(5), || {
                fs::read_dir(&ns_dir).map_or(0, |d| d.count()) > 50
            });
            let killed = Instant::now();
            // SAFETY: kill(2) of our own child's pid, not yet reaped.
            unsafe { libc::kill(m.pid(), libc::SIGKILL) };
            let reaped = wait_until(DEATH_BOUND, || !m.is_alive());
            let took = killed.elapsed();
            if !reaped {
                // Unwedge it so that the load threads end and the test
                // reports instead of hanging.
                let _ = std::process::Command::new("umount")
                    .arg("-f")
                    .arg(&mnt)
                    .status();
            }
            stop.store(true, Ordering::Relaxed);
            (reaped, took)
        });
        assert!(
            reaped,
            "round {round}: the killed daemon was not gone {DEATH_BOUND:?} after SIGKILL\n{}",
            m.log()
        );
        eprintln!("round {round}: daemon gone {took:?} after SIGKILL");
        // What is left at the mountpoint answers at once (ENOTCONN, or the
        // directory underneath): it does not hang.
        let (tx, rx) = std::sync::mpsc::channel();
        let probe = mnt.clone();
        std::thread::spawn(move || {
            let _ = tx.send(nix::sys::statfs::statfs(probe.as_path()).map(|_| ()));
        });
        let answered = rx.recv_timeout(DEATH_BOUND);
        assert!(
            answered.is_ok(),
            "round {round}: statfs of the dead mount hangs"
        );
        // A new daemon on the same mountpoint serves what was published.
        let m2 = Mount::start(MountOpts {
            config: Some(CFG.into()),
            backing: Some(backing.clone()),
            mountpoint: Some(mnt.clone()),
            ..Default::default()
        });
        assert_eq!(
            fs::read(m2.path("k", "kept")).unwrap(),
            b"kept value",
            "round {round}"
        );
        drop(m2);
        drop(m);
    }
}
