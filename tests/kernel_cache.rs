//! The kernel caches entries (dentries and attributes up to their expiry,
//! pages of each version across opens). These tests hold cachefs to the
//! contract anyway: every change made through the mount is seen by the
//! next open or stat, an open reader keeps its version, expiry and
//! eviction are not hidden by the caches, and every open is a counted hit.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

use common::*;

const CFG: &str =
    "[namespace.a]\n\n[namespace.t]\nttl = \"2s\"\n\n[namespace.q]\nmax_bytes = \"12KiB\"\n";

fn payload(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag.wrapping_add((i % 251) as u8))
        .collect()
}

#[test]
fn a_rewrite_is_seen_by_the_next_open_although_dentries_are_cached() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("a", "k");
    write_file(&p, b"v1").unwrap();
    for _ in 0..3 {
        assert_eq!(fs::read(&p).unwrap(), b"v1");
    }
    let v2 = payload(2, 30_000);
    fs::write(&p, &v2).unwrap();
    assert_eq!(fs::read(&p).unwrap(), v2, "same process, next open");
    assert_eq!(fs::metadata(&p).unwrap().len(), 30_000, "stat, next call");
    // Another process rewrites; this one and a third read.
    sh(&format!("printf v3 > {}", q(&p)));
    assert_eq!(fs::read(&p).unwrap(), b"v3");
    assert_eq!(sh(&format!("cat {}", q(&p))), "v3");
    // And shorter again, by this process.
    fs::write(&p, b"4").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"4");
    assert_eq!(fs::metadata(&p).unwrap().len(), 1);
}

#[test]
fn an_open_reader_keeps_its_version_through_overwrites() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("a", "k");
    let a = payload(1, 20_000);
    write_file(&p, &a).unwrap();
    let mut reader = File::open(&p).unwrap();
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, a);
    // Longer, then shorter: the first would grow and the second shrink
    // the reader's inode if the writer shared it.
    fs::write(&p, payload(2, 40_000)).unwrap();
    let c = payload(3, 5_000);
    fs::write(&p, &c).unwrap();
    assert_eq!(
        reader.metadata().unwrap().len(),
        20_000,
        "fstat of the reader"
    );
    let mut again = vec![0u8; 20_000];
    reader.read_exact_at(&mut again, 0).unwrap();
    assert_eq!(again, a, "the reader's version, from its start");
    let mut beyond = [0u8; 16];
    assert_eq!(
        reader.read_at(&mut beyond, 20_000).unwrap(),
        0,
        "nothing past it"
    );
    reader.seek(SeekFrom::Start(0)).unwrap();
    got.clear();
    reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, a);
    assert_eq!(fs::read(&p).unwrap(), c, "a new open sees the newest");
}

#[test]
fn r_plus_and_append_of_a_cached_key_start_from_its_content() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("a", "k");
    write_file(&p, b"hello world").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"hello world");
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let mut head = [0u8; 5];
    f.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"hello", "r+ reads the current content");
    f.write_all_at(b"HELLO", 0).unwrap();
    close_file(f).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"HELLO world");
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"!").unwrap();
    close_file(f).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"HELLO world!");
}

#[test]
fn truncate_and_touch_by_path_are_seen_at_once() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("a", "k");
    write_file(&p, &payload(5, 10_000)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 10_000);
    let reader = File::open(&p).unwrap();
    sh(&format!("truncate -s 100 {}", q(&p)));
    assert_eq!(fs::metadata(&p).unwrap().len(), 100, "stat after truncate");
    assert_eq!(fs::read(&p).unwrap(), payload(5, 100));
    assert_eq!(
        reader.metadata().unwrap().len(),
        10_000,
        "the old version's reader"
    );
    // A minute ago (an older mtime could be past the entry's TTL).
    let then = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    sh(&format!("touch -d @{then} {}", q(&p)));
    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
    assert_eq!(
        mtime,
        SystemTime::UNIX_EPOCH + Duration::from_secs(then),
        "stat after touch"
    );
}

#[test]
fn an_evicted_key_is_gone_for_stat_at_once() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    // 12 KiB quota, 4 KiB blocks: three 3000-byte entries fit.
    for k in ["k1", "k2", "k3"] {
        write_file(&m.path("q", k), &[7; 3000]).unwrap();
    }
    assert!(fs::metadata(m.path("q", "k1")).is_ok(), "cached now");
    write_file(&m.path("q", "k4"), &[8; 3000]).unwrap();
    // The write that evicted k1 returned: its dentry is gone already.
    assert_errno(
        fs::metadata(m.path("q", "k1")),
        libc::ENOENT,
        "stat of evicted k1",
    );
    assert_errno(
        File::open(m.path("q", "k1")),
        libc::ENOENT,
        "open of evicted k1",
    );
    assert_eq!(fs::read(m.path("q", "k4")).unwrap(), [8; 3000]);
}

#[test]
fn expiry_is_not_hidden_by_cached_dentries_or_pages() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("t", "k");
    write_file(&p, b"short-lived").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"short-lived");
    let expires: u64 = getxattr_str(&p, "user.cachefs.expires")
        .unwrap()
        .parse()
        .unwrap();
    // The xattr is whole seconds, rounded down.
    sleep_until_wall(SystemTime::UNIX_EPOCH + Duration::from_secs(expires + 1));
    assert_errno(File::open(&p), libc::ENOENT, "open after expiry");
    assert_errno(fs::metadata(&p), libc::ENOENT, "stat after expiry");
}

#[test]
fn every_open_is_a_counted_hit_even_when_pages_are_cached() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("a", "k");
    write_file(&p, &payload(9, 10_000)).unwrap();
    for _ in 0..5 {
        assert_eq!(fs::read(&p).unwrap().len(), 10_000);
    }
    assert_eq!(m.ns_stat("a", "hits"), 5);
    assert_eq!(m.ns_stat("a", "read_bytes"), 50_000);
}

#[test]
fn entries_not_in_any_page_cache_read_back_whole() {
    if skip_without_fuse() {
        return;
    }
    // Opens that must check content on disk, and reads the page cache
    // cannot answer, wait on threads of their own; what they return must
    // be the same bytes.
    let b = tempfile::tempdir().unwrap();
    let backing = b.path().join("b");
    let sizes = [1usize, 4096, 10_000, 300_000, 2_500_000];
    let mut m = Mount::with_backing(CFG, &backing);
    for (i, n) in sizes.iter().enumerate() {
        fs::write(m.path("a", &format!("k{i}")), payload(i as u8, *n)).unwrap();
    }
    let files: Vec<_> = (0..sizes.len())
        .map(|i| m.backing_path("a", format!("k{i}").as_bytes()))
        .collect();
    let drop_pages = || {
        for f in &files {
            let file = File::open(f).unwrap();
            file.sync_all().unwrap();
            // SAFETY: advice on a descriptor we own; no memory is passed.
            let rc =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(rc, 0, "drop {}'s pages", f.display());
        }
    };
    assert!(m.stop().success());
    drop_pages();
    let m = Mount::with_backing(CFG, &backing);
    // The first opens since the start check each entry on disk...
    let opened: Vec<File> = (0..sizes.len())
        .map(|i| File::open(m.path("a", &format!("k{i}"))).unwrap())
        .collect();
    // ...and their reads find nothing cached either.
    drop_pages();
    let readers: Vec<_> = opened
        .into_iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (mut f, n))| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                f.read_to_end(&mut got).unwrap();
                (got, payload(i as u8, n))
            })
        })
        .collect();
    for r in readers {
        let (got, want) = r.join().unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "content of a cold read");
    }
    assert_eq!(m.ns_stat("a", "hits"), sizes.len() as u64);
}
