//! Issue 13, a bug the sharing bench found: a daemon whose backing dir is
//! a bindfs view of another's (a second host on a network volume) read a
//! replaced file's trailer at the size its view still believed (the old
//! version's), got a short read ("failed to fill whole buffer"), and
//! answered a write with EIO. A short or garbled read of a file another
//! daemon may have replaced is "changed, look again", never EIO to the
//! user, never a quarantine of a good file.
//!
//! A rewrites one key with sizes that grow and shrink by orders of
//! magnitude while B, through the view, reads it whole and appends to it.

#[path = "common/bindview.rs"]
mod bindview;
mod common;

use bindview::BindView;
use common::*;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Version byte `b'a' + i` is `SIZES[i]` bytes long, so a read shows
/// which version it got and whether it is whole. Small and big in turn,
/// so each replacement changes the size a stale view holds.
const SIZES: [usize; 12] = [
    5, 180_000, 40, 70_000, 1, 250_000, 300, 9_000, 2, 120_000, 4_000, 33,
];
/// What B's appends add (never a version byte).
const APPENDED: u8 = b'Z';
const RUN: Duration = Duration::from_secs(4);
/// A's pace: far quicker than the view's attribute timeout, slow enough
/// that an open on B is not replaced under it every time (ESTALE twice
/// is what any reader racing constant rewrites may get).
const REWRITE_EVERY: Duration = Duration::from_millis(25);

fn version(i: usize) -> Vec<u8> {
    vec![b'a' + i as u8; SIZES[i]]
}

/// Whether `got` is one of A's versions, whole, followed by B's appends.
fn whole(got: &[u8]) -> bool {
    let core = &got[..got.len() - got.iter().rev().take_while(|&&b| b == APPENDED).count()];
    let Some(&b) = core.first() else {
        return false;
    };
    let i = b.wrapping_sub(b'a') as usize;
    i < SIZES.len() && core.len() == SIZES[i] && core.iter().all(|&c| c == b)
}

#[test]
fn rewrites_of_changing_sizes_read_and_appended_through_a_view_never_fail() {
    if skip_without_fuse() {
        return;
    }
    let a = Mount::new("[cache]\npoll_interval = \"60s\"\n");
    let view = BindView::with_args(&a.backing, &["-o", "direct_io"]);
    // Dropped before the view (declared after it).
    let b = Mount::with_backing("", view.dir.path());
    std::fs::create_dir(a.ns("ns")).unwrap();
    write_file(&a.path("ns", "k"), &version(0)).unwrap();
    assert!(whole(&read_file(&b.path("ns", "k")).unwrap()));

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, done) = (a.path("ns", "k"), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut n = 0;
            let start = Instant::now();
            while start.elapsed() < RUN {
                n += 1;
                write_file(&path, &version(n % SIZES.len())).expect("rewrite on A");
                // Each rewrite leaves B's view holding the old size for
                // up to its attribute timeout (1 s); a pause lets B's
                // reads open what is there, as a fresh lookup would.
                std::thread::sleep(REWRITE_EVERY);
            }
            done.store(true, Ordering::SeqCst);
            n
        })
    };
    let reader = {
        let (path, done) = (b.path("ns", "k"), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) {
                let got = read_file(&path).map_err(|e| format!("read on B: {e}"))?;
                if !whole(&got) {
                    return Err(format!("a torn read of {} bytes on B", got.len()));
                }
                reads += 1;
            }
            Ok::<_, String>(reads)
        })
    };
    let appender = {
        let (path, done) = (b.path("ns", "k"), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut appends = 0;
            while !done.load(Ordering::SeqCst) {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("open for append on B: {e}"))?;
                f.write_all(&[APPENDED; 3])
                    .map_err(|e| format!("append on B: {e}"))?;
                close_file(f).map_err(|e| format!("close of an append on B: {e}"))?;
                appends += 1;
            }
            Ok::<_, String>(appends)
        })
    };
    let rewrites = writer.join().unwrap();
    let (reads, appends) = match (reader.join().unwrap(), appender.join().unwrap()) {
        (Ok(r), Ok(a)) => (r, a),
        (r, a) => panic!("{r:?}, {a:?}\nB's log:\n{}", b.log()),
    };
    eprintln!("{rewrites} rewrites on A, {reads} reads and {appends} appends on B");
    assert!(rewrites > 10 && reads > 0 && appends > 0, "the race ran");

    let log = b.log();
    assert!(
        !log.contains("failed to fill whole buffer"),
        "B read a trailer short:\n{log}"
    );
    let quarantined = files_under(&a.backing.join("quarantine"));
    assert!(
        quarantined.is_empty(),
        "good files quarantined: {quarantined:?}\nA:\n{}\nB:\n{log}",
        a.log()
    );
}
