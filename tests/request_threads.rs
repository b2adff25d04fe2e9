//! The request-thread model (`src/fs/dispatch.rs`): one thread answers
//! every request that never waits, workers answer those that may. Hits,
//! misses, stats and listings keep being answered while a publish waits
//! on the disk; many writers and readers at once lose nothing; no wait is
//! ever reached on the request thread (the daemon logs one as a bug).
//! The slow disk is the daemon's fault hook (`CACHEFS_FAULTS`, a line
//! `hold OP`), so this file runs in debug builds only.
#![cfg(debug_assertions)]

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

const CONFIG: &str = "[namespace.n]\n[namespace.d]\ndurability = \"fsync\"\n";

/// What the daemon logs if a request that may wait reached a wait on
/// the request thread (`HandleTable::wait_settled`).
const WAIT_BUG: &str = "bug: a wait for a writer on the request thread";

struct Stalled {
    m: Mount,
    control: PathBuf,
    _dir: tempfile::TempDir,
}

impl Stalled {
    fn new() -> Stalled {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("faults");
        // One reader of the kernel's queue: the case `dispatch.rs` argues
        // never waits on it (with the default two, such a wait may happen,
        // bounded, and is not logged as a bug).
        let m = Mount::start(MountOpts {
            config: Some(CONFIG.to_string()),
            env: vec![(
                "CACHEFS_FAULTS".into(),
                control.to_string_lossy().into_owned(),
            )],
            args: vec!["--request-threads".into(), "1".into()],
            ..Default::default()
        });
        Stalled {
            m,
            control,
            _dir: dir,
        }
    }

    fn set(&self, lines: &str) {
        let tmp = self.control.with_extension("tmp");
        fs::write(&tmp, lines).unwrap();
        fs::rename(&tmp, &self.control).unwrap();
    }

    fn lift(&self) {
        let _ = fs::remove_file(&self.control);
    }
}

impl Drop for Stalled {
    /// A test that fails while the disk is stalled must not leave the
    /// mount's unmount waiting behind it.
    fn drop(&mut self) {
        self.lift();
    }
}

/// Hits, misses, stats and a listing, `rounds` times; panics on any wrong
/// answer.
fn serve_reads(mnt: &Path, rounds: usize) {
    let hot = mnt.join("n/hot");
    for i in 0..rounds {
        assert_eq!(fs::read(&hot).unwrap(), b"hot bytes");
        assert_eq!(fs::metadata(&hot).unwrap().len(), 9);
        assert_errno(
            fs::read(mnt.join(format!("n/absent-{i}"))),
            libc::ENOENT,
            "miss",
        );
        assert!(list_str(&mnt.join("n")).contains(&"hot".to_string()));
    }
}

#[test]
fn hits_misses_and_listings_are_answered_while_a_publish_waits_on_the_disk() {
    if skip_without_fuse() {
        return;
    }
    let s = Stalled::new();
    let mnt = s.m.mnt.clone();
    write_file(&mnt.join("n/hot"), b"hot bytes").unwrap();
    serve_reads(&mnt, 1);

    // A publish in the namespace that syncs waits at its fsync, which
    // the disk holds for as long as the test says.
    s.set("hold fsync\n");
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, done) = (mnt.join("d/slow"), Arc::clone(&done));
        std::thread::spawn(move || {
            let r = write_file(&path, b"synced bytes");
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    // Until the publish waits at the disk (the fault hook logs it).
    assert!(
        wait_until(Duration::from_secs(10), || s
            .m
            .log()
            .contains("fault: fsync held")),
        "the publish never reached its fsync: {}",
        s.m.log()
    );

    // Served from another thread, so that a reader stuck behind the
    // stalled publish fails the test instead of hanging it.
    let (tx, rx) = channel();
    let reader = {
        let mnt = mnt.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            serve_reads(&mnt, 200);
            tx.send(start.elapsed()).unwrap();
        })
    };
    let took = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("reads waited behind a publish stalled on the disk");
    reader.join().unwrap();
    assert!(
        !done.load(Ordering::SeqCst),
        "the publish finished before the disk was released: the reads proved nothing"
    );

    s.lift();
    writer.join().unwrap().expect("the stalled publish's close");
    assert_eq!(fs::read(mnt.join("d/slow")).unwrap(), b"synced bytes");
    assert!(!s.m.log().contains(WAIT_BUG), "{}", s.m.log());
    eprintln!("200 rounds of reads while the publish was stalled: {took:?}");
}

/// The bytes writer `w` publishes as its key `i` (and as its `i`th
/// version of the shared key): distinct, and checkable whole.
fn content(w: usize, i: usize) -> Vec<u8> {
    let head = format!("writer {w} version {i};");
    head.bytes().cycle().take(15_000 + w * 37 + i).collect()
}

#[test]
fn eight_writers_and_four_readers_at_once_lose_nothing() {
    // The default two readers of the kernel's queue, and one alone (the
    // case whose waits are logged as bugs, checked at the end).
    for readers in ["2", "1"] {
        eight_writers_and_four_readers(readers);
    }
}

fn eight_writers_and_four_readers(readers: &str) {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::start(MountOpts {
        config: Some(CONFIG.to_string()),
        args: vec!["--request-threads".into(), readers.into()],
        ..Default::default()
    });
    let mnt = m.mnt.clone();
    for r in 0..4 {
        write_file(&mnt.join(format!("n/hot{r}")), &content(100 + r, 0)).unwrap();
    }
    const KEYS: usize = 60;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (mnt, stop) = (mnt.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let got = fs::read(mnt.join(format!("n/hot{r}"))).unwrap();
                    assert_eq!(got, content(100 + r, 0), "hot key {r} read wrong");
                    // A rewrite of the shared key is one writer's whole
                    // version, or none yet: never a mix.
                    match fs::read(mnt.join("n/shared")) {
                        Ok(b) => assert!(
                            (0..8).any(|w| (0..KEYS).any(|i| b == content(w, i))),
                            "torn read of the shared key ({} bytes)",
                            b.len()
                        ),
                        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT)),
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mnt = mnt.clone();
            std::thread::spawn(move || {
                for i in 0..KEYS {
                    // Half in the namespace that syncs: those go to workers.
                    let ns = if i % 2 == 0 { "n" } else { "d" };
                    write_file(&mnt.join(format!("{ns}/w{w}-{i}")), &content(w, i)).unwrap();
                    if i % 10 == 0 {
                        write_file(&mnt.join("n/shared"), &content(w, i)).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("a writer failed");
    }
    stop.store(true, Ordering::SeqCst);
    let reads: u64 = readers
        .into_iter()
        .map(|r| r.join().expect("a reader failed"))
        .sum();
    assert!(reads > 0);
    for w in 0..8 {
        for i in 0..KEYS {
            let ns = if i % 2 == 0 { "n" } else { "d" };
            let got = fs::read(mnt.join(format!("{ns}/w{w}-{i}")))
                .unwrap_or_else(|e| panic!("{ns}/w{w}-{i} lost: {e}"));
            assert!(got == content(w, i), "{ns}/w{w}-{i} has other bytes");
        }
    }
    assert_eq!(
        m.ns_stat("n", "entries") + m.ns_stat("d", "entries"),
        8 * KEYS as u64 + 5
    );
    assert!(!m.log().contains(WAIT_BUG), "{}", m.log());
}
