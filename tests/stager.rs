//! The stager (src/store/stage_pool.rs) under writers through a mount:
//! staging files made ahead and shard directories made while a key is
//! written change where a publish's inodes come from, never what it
//! publishes. Many writers at once publish every key whole; writers of
//! one key leave one whole version (the last close's); nothing is left
//! with a name in staging; a new key's shard exists before its close.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const CFG: &str = "[namespace.w]\n";
const WRITERS: usize = 8;
const KEYS_EACH: usize = 60;

/// Writer `w`'s value for round `i`: big enough to take two WRITEs, each
/// byte saying whose it is, so a mix of two versions shows.
fn value(w: usize, i: usize) -> Vec<u8> {
    let mut v = format!("{w}:{i}:").into_bytes();
    v.resize(150_000 + w * 1_000 + i, b'a' + w as u8);
    v
}

/// (writer, round) of a whole value, or None if it is torn or foreign.
fn whose(bytes: &[u8]) -> Option<(usize, usize)> {
    let s = std::str::from_utf8(bytes.get(..16)?).ok()?;
    let mut it = s.split(':');
    let w: usize = it.next()?.parse().ok()?;
    let i: usize = it.next()?.parse().ok()?;
    (bytes == value(w, i).as_slice()).then_some((w, i))
}

#[test]
fn many_writers_at_once_publish_every_key_whole_and_one_key_last_close_wins() {
    let m = Mount::new(CFG);
    let shared = m.path("w", "shared");
    let start = Arc::new(Barrier::new(WRITERS));
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (start, shared, ns) = (Arc::clone(&start), shared.clone(), m.ns("w"));
            std::thread::spawn(move || {
                start.wait();
                let mut last = None;
                for i in 0..KEYS_EACH {
                    fs::write(ns.join(format!("k-{w}-{i}")), value(w, i)).unwrap();
                    // Every few keys, a rewrite of the one key all share.
                    if i % 6 == 0 {
                        let mut f = fs::File::create(&shared).unwrap();
                        f.write_all(&value(w, i)).unwrap();
                        drop(f);
                        last = Some(i);
                    }
                }
                last
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for w in 0..WRITERS {
        for i in 0..KEYS_EACH {
            let got = fs::read(m.path("w", &format!("k-{w}-{i}"))).unwrap();
            assert_eq!(whose(&got), Some((w, i)), "k-{w}-{i} is not its value");
        }
    }
    // One writer's whole version, and one of the rewrites made.
    let got = fs::read(&shared).unwrap();
    let (w, i) = whose(&got).expect("the shared key holds a whole value");
    assert!(w < WRITERS && i % 6 == 0, "({w}, {i}) was never written");
    assert_eq!(
        staged_files(&m.backing.join("staging")),
        Vec::<std::path::PathBuf>::new(),
        "a name left in staging"
    );
}

#[test]
fn a_new_key_s_shard_is_there_before_its_close_and_the_daemon_has_a_stager() {
    let m = Mount::new(CFG);
    let threads = fs::read_dir(format!("/proc/{}/task", m.pid()))
        .unwrap()
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("comm")).ok())
        .collect::<Vec<_>>();
    assert!(
        threads.iter().any(|c| c.trim() == "stager"),
        "no stager thread among {threads:?}"
    );
    let key = "a-key-in-a-shard-of-its-own";
    let dest = backing_entry_path(&m.backing, "w", key.as_bytes());
    let shard = dest.parent().unwrap().to_path_buf();
    assert!(!shard.exists());
    let mut f = fs::File::create(m.path("w", key)).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || shard.is_dir()),
        "{shard:?} not made while the key is written"
    );
    assert!(!dest.exists(), "visible before its close");
    f.write_all(b"whole").unwrap();
    drop(f);
    assert!(dest.is_file());
    assert_eq!(fs::read(m.path("w", key)).unwrap(), b"whole");
}
