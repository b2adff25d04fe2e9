//! PRODUCT.md section 6, several daemons on one backing dir: one quota for
//! the directory (not one per daemon), and nothing whose close() succeeded
//! lost when one daemon is killed while the other serves.

#[path = "common/bindview.rs"]
mod bindview;
mod common;

use bindview::BindView;
use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const QUOTA: u64 = 4 << 20;
/// Entries of 100-400 KB.
const MIN_ENTRY: usize = 100_000;
const MAX_ENTRY: usize = 400_000;
/// What the biggest entry stores: its bytes and trailer, in whole blocks.
const MAX_STORED: u64 = (MAX_ENTRY as u64 + 4096).div_ceil(4096) * 4096 + 4096;
const WRITERS_PER_MOUNT: usize = 2;
const TOTAL: usize = 40 << 20;

fn config() -> String {
    format!(
        "[cache]\nmax_bytes = \"1GiB\"\npoll_interval = \"60s\"\n\
         [namespace.q]\nmax_bytes = \"{QUOTA}\"\nttl = \"0s\"\n"
    )
}

/// The directory's usage: what the entries' files under `data/` hold (the
/// test's one namespace), as the quota counts it (blocks). A file moved
/// away during the walk is not counted: it is not there.
fn usage(backing: &Path) -> u64 {
    files_under(&backing.join("data"))
        .iter()
        .filter_map(|p| fs::symlink_metadata(p).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Two daemons on one backing dir: `b` beside `a` (notified), or through
/// a bindfs view (no notifications: a second host on a network volume).
struct Pair {
    // Dropped in this order: `b`, the view it is on, then `a`, whose
    // temp dir holds the backing dir.
    b: Mount,
    _view: Option<BindView>,
    a: Mount,
}

fn pair(cfg: &str, polled: bool) -> Pair {
    let a = Mount::new(cfg);
    let (b, view) = if polled {
        let view = BindView::of(&a.backing);
        (Mount::with_backing(cfg, view.dir.path()), Some(view))
    } else {
        (Mount::with_backing(cfg, &a.backing), None)
    };
    Pair { a, b, _view: view }
}

/// Two writers on each mount write 40 MiB in all into a 4 MiB namespace
/// while a thread samples the directory's usage: never over the quota
/// plus one entry per writer; at the end within the quota, and not
/// emptied (evictions past need are at most one entry per daemon).
fn one_quota_over_two_mounts(polled: bool) {
    if skip_without_fuse() {
        return;
    }
    let p = pair(&config(), polled);
    let writers = 2 * WRITERS_PER_MOUNT;
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (backing, done, peak, samples) = (
            p.a.backing.clone(),
            Arc::clone(&done),
            Arc::clone(&peak),
            Arc::clone(&samples),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                peak.fetch_max(usage(&backing), Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Entries in the order their close() returned.
    let closed: Arc<Mutex<Vec<(String, Vec<u8>)>>> = Arc::default();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let mnt = if w < WRITERS_PER_MOUNT {
                p.a.mnt.clone()
            } else {
                p.b.mnt.clone()
            };
            let closed = Arc::clone(&closed);
            std::thread::spawn(move || {
                let mut rng = Rng::new(0x5eed + w as u64);
                let mut written = 0;
                let mut n = 0;
                while written < TOTAL / writers {
                    let len = rng.range(MIN_ENTRY, MAX_ENTRY + 1);
                    let key = format!("w{w}-{n}");
                    let data = make_payload(&mut rng, len, key.as_bytes());
                    write_file(&mnt.join("q").join(&key), &data)
                        .unwrap_or_else(|e| panic!("writer {w}: {key}: {e}"));
                    written += data.len();
                    n += 1;
                    closed.lock().unwrap().push((key, data));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer panicked");
    }
    done.store(true, Ordering::Release);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    let bound = QUOTA + writers as u64 * MAX_STORED;
    assert!(
        samples.load(Ordering::Relaxed) > 10,
        "the sampler hardly ran"
    );
    assert!(
        peak <= bound,
        "the directory held {peak} bytes: over the quota {QUOTA} plus one entry per writer ({bound})"
    );
    let end = usage(&p.a.backing);
    assert!(
        end <= QUOTA,
        "{end} bytes held once every close() returned: over the quota {QUOTA}"
    );
    assert!(
        end + 3 * MAX_STORED >= QUOTA,
        "{end} bytes held at the end: evicted past need (quota {QUOTA})"
    );
    eprintln!(
        "peak {peak} (bound {bound}), end {end}, {} samples",
        samples.load(Ordering::Relaxed)
    );
    // The last entries closed (one per writer) are the most recently used
    // in both daemons' views: kept, and readable through both mounts.
    let closed = closed.lock().unwrap();
    for (key, data) in closed.iter().rev().take(writers) {
        for m in [&p.a, &p.b] {
            let got = read_file(&m.path("q", key)).unwrap_or_else(|e| {
                panic!(
                    "{key} through {}: {e} (backing file there: {}; a {}, b {})",
                    m.mnt.display(),
                    backing_entry_path(&p.a.backing, "q", key.as_bytes()).exists(),
                    p.a.mnt.display(),
                    p.b.mnt.display()
                )
            });
            assert!(
                got == *data,
                "{key}: other bytes through {}",
                m.mnt.display()
            );
        }
    }
}

#[test]
fn one_quota_holds_for_two_mounts_on_one_host() {
    one_quota_over_two_mounts(false);
}

#[test]
fn one_quota_holds_for_a_mount_that_gets_no_notifications() {
    one_quota_over_two_mounts(true);
}
