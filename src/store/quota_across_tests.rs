//! Two stores on one backing dir sharing changes (two daemons, without
//! FUSE): one quota for the directory, whichever store publishes; and the
//! change logs of sessions that are over are removed after their grace.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::backing::BackingIo;
use super::pair_tests::{pair_on, put_in};
use super::*;

fn ns() -> Namespace {
    Namespace::parse(b"q").unwrap()
}

fn put(s: &Store, k: &str, data: &[u8]) {
    put_in(s, &ns(), k, data)
}

fn pair(config: &str) -> (tempfile::TempDir, Arc<ManualClock>, Arc<Store>, Arc<Store>) {
    pair_on(config, BackingIo::from_env())
}

/// Blocks the entries' files hold in the backing dir.
fn usage(dir: &std::path::Path) -> u64 {
    fn walk(p: &std::path::Path, sum: &mut u64) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                walk(&e.path(), sum);
            } else {
                *sum += md.blocks() * 512;
            }
        }
    }
    let mut sum = 0;
    walk(&dir.join("b").join("data"), &mut sum);
    sum
}

#[test]
fn a_publish_through_either_store_keeps_the_directory_within_one_quota() {
    // Room for four entries of 8 KiB (and their trailers' blocks).
    let quota = 4 * 12 * 1024;
    let (dir, clock, a, b) = pair(&format!(
        "[namespace.q]\nmax_bytes = \"{quota}\"\nttl = \"0s\"\n"
    ));
    let body = vec![1u8; 8 * 1024];
    for i in 0..12 {
        clock.advance(Duration::from_secs(1));
        let (s, other) = if i % 3 == 0 { (&a, &b) } else { (&b, &a) };
        put(s, &format!("k{i}"), &body);
        let used = usage(dir.path());
        assert!(used <= quota, "after publish {i}: {used} > {quota}");
        // Nothing past need: the four most recent are all kept.
        if i >= 3 {
            for j in i - 3..=i {
                let id = other.namespace_id(&ns()).unwrap();
                let found = other.lookup_name(id, b"", format!("k{j}").as_bytes(), 1);
                assert!(
                    matches!(found.unwrap().lookup, Lookup::Hit(_)),
                    "k{j} evicted after publish {i} (used {used})"
                );
            }
        }
    }
    a.end_session();
    b.end_session();
}

#[test]
fn the_log_of_a_session_that_is_over_goes_after_its_grace() {
    let (dir, _clock, a, _b) = pair("[namespace.q]\n");
    let changes = dir.path().join("b").join("changes");
    let staging = dir.path().join("b").join("staging");
    let old = SystemTime::now() - Duration::from_secs(120);
    let make = |token: &str, mtime: SystemTime, lock: bool| {
        let f = std::fs::File::create(changes.join(format!("{token}.log"))).unwrap();
        f.set_modified(mtime).unwrap();
        if lock {
            std::fs::write(staging.join(format!("{token}.lock")), b"").unwrap();
        }
    };
    make("ended", old, false);
    make("recent", SystemTime::now(), false);
    make("running", old, true);
    a.remove_dead_logs();
    let exists = |t: &str| changes.join(format!("{t}.log")).exists();
    assert!(!exists("ended"), "an ended session's idle log stays");
    assert!(
        exists("recent"),
        "a log written lately went before its grace"
    );
    assert!(exists("running"), "a live session's log went");
    assert!(exists(a.layout.token()), "its own log went");
}
