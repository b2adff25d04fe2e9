//! The seed-style workload's promises under its concurrency: several
//! writers at once, one namespace under quota pressure (every publish
//! evicts) and others being rewritten. A writer's close() waits only for
//! the kernel to forget what its own publish replaced or evicted, so these
//! check that its own changes are still visible the moment close()
//! returns while other writers' drops are queued, and that a publish's
//! change-log record, written by the publishing thread itself, is in the
//! log when its close() returns.

mod common;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::*;

const CFG: &str = "[namespace.q]\nmax_bytes = \"16KiB\"\n\n\
                   [namespace.churn]\nmax_bytes = \"16KiB\"\n\n\
                   [namespace.k]\n";

/// Threads publishing new keys into `churn` (each publish evicts, so
/// kernel drops are queued all the time) until stopped. Dropped (a test
/// that panicked), it stops and joins them, so they let go of the mount
/// and its guard unmounts.
struct Churn {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<u64>>,
}

impl Churn {
    fn start(m: &Arc<Mount>) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..3)
            .map(|t| {
                let (m, stop) = (Arc::clone(m), Arc::clone(&stop));
                thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("t{t}-{n}");
                        write_file(&m.path("churn", &key), &[t as u8; 3000]).unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        Churn { stop, threads }
    }

    /// Stops the writers: how many keys they published.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|t| t.join().expect("a churn writer failed"))
            .sum()
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn own_evictions_and_rewrites_are_visible_at_close_among_other_writers() {
    if skip_without_fuse() {
        return;
    }
    let m = Arc::new(Mount::new(CFG));
    let churn = Churn::start(&m);
    // q holds four 3000-byte entries (4 KiB blocks, 16 KiB): only this
    // thread writes there, so the one each publish evicts is known.
    for i in 0..4 {
        write_file(&m.path("q", &format!("e{i}")), &[1; 3000]).unwrap();
        assert!(fs::metadata(m.path("q", &format!("e{i}"))).is_ok());
    }
    for i in 4..40 {
        write_file(&m.path("q", &format!("e{i}")), &[2; 3000]).unwrap();
        // Its record is in this daemon's change log (which the other
        // daemons follow) before its close() returned.
        let record = [b"q".as_slice(), format!("e{i}").as_bytes()].concat();
        assert!(
            change_log(&m).windows(record.len()).any(|w| w == record),
            "no change record of q/e{i} once its close() returned"
        );
        let evicted = m.path("q", &format!("e{}", i - 4));
        assert_errno(
            fs::metadata(&evicted),
            libc::ENOENT,
            &format!("stat of e{} once the publish of e{i} returned", i - 4),
        );
        // The rewrite of a key whose dentry and pages the kernel holds.
        let k = m.path("k", "k");
        let v = format!("value {i}").into_bytes();
        write_file(&k, &v).unwrap();
        assert_eq!(fs::read(&k).unwrap(), v, "read right after close() of {i}");
    }
    assert!(churn.finish() > 0, "the other writers published nothing");
    assert!(m.ns_stat("churn", "evictions") > 0, "{}", m.stats());
}

/// The bytes of this daemon's change logs (`changes/*.log`).
fn change_log(m: &Mount) -> Vec<u8> {
    let mut out = Vec::new();
    for e in fs::read_dir(m.backing.join("changes")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            out.extend(fs::read(p).unwrap());
        }
    }
    out
}
