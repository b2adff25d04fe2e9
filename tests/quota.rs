//! Acceptance 5: quotas. Writing past a namespace quota evicts least recently used
//! entries first (entries read recently survive, expired ones go before live ones),
//! usage never exceeds the quota after a publish, and an entry over `max_entry_bytes`
//! or over the quota fails with EFBIG (from write() and close()) and leaves nothing.

mod common;

use common::*;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

fn stored(p: &Path) -> u64 {
    let v = getxattr_str(p, "user.cachefs.stored_bytes")
        .unwrap_or_else(|e| panic!("stored_bytes of {}: {e}", p.display()));
    v.trim()
        .parse()
        .unwrap_or_else(|_| panic!("stored_bytes not a number: {v:?}"))
}

/// LRU model check: after a publish of `new`, the entries evicted must be the oldest of
/// `order` (a prefix), at least as many as needed to fit, and not more than needed
/// unless a watermark is in use (we require: no eviction at all when it fit).
fn apply_publish(
    m: &Mount,
    ns: &str,
    order: &mut VecDeque<(String, u64)>,
    new: &str,
    quota: u64,
    step: &str,
) {
    let s_new = stored(&m.path(ns, new));
    order.retain(|(k, _)| k != new);
    let listed: Vec<String> = list_str(&m.ns(ns));
    let present = |k: &str| listed.iter().any(|x| x == k);
    assert!(
        present(new),
        "{step}: the entry just published ({new}) is not listed: {listed:?}"
    );
    let used_before: u64 = order.iter().map(|(_, s)| s).sum();
    let mut min_evict = 0;
    let mut u = used_before;
    while u + s_new > quota && min_evict < order.len() {
        u -= order[min_evict].1;
        min_evict += 1;
    }
    // Which of the old entries survived.
    let survived: Vec<bool> = order.iter().map(|(k, _)| present(k)).collect();
    let n_evicted = survived.iter().filter(|s| !**s).count();
    // Evicted ones form a prefix of the LRU order.
    let prefix_ok =
        survived.iter().skip(n_evicted).all(|s| *s) && survived.iter().take(n_evicted).all(|s| !*s);
    let names: Vec<&str> = order.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        prefix_ok,
        "{step}: evicted entries are not the least recently used ones.\nLRU order (oldest first): {names:?}\nsurvived: {survived:?}\nlisted: {listed:?}"
    );
    assert!(
        n_evicted >= min_evict,
        "{step}: usage would exceed the quota: evicted {n_evicted}, needed {min_evict} (LRU order {names:?})"
    );
    if min_evict == 0 {
        assert_eq!(
            n_evicted, 0,
            "{step}: evicted entries although the new one fit (LRU order {names:?}, listed {listed:?})"
        );
    }
    order.drain(..n_evicted);
    order.push_back((new.to_string(), s_new));
    let used: u64 = order.iter().map(|(_, s)| s).sum();
    assert!(
        used <= quota,
        "{step}: stored bytes of listed entries {used} > quota {quota}"
    );
    let ns_bytes = m.ns_stat(ns, "bytes");
    assert_eq!(
        ns_bytes,
        used,
        "{step}: stats.json bytes vs sum of stored_bytes; stats {}",
        m.stats()
    );
    assert_eq!(
        m.ns_stat(ns, "entries"),
        order.len() as u64,
        "{step}: stats.json entries"
    );
}

#[test]
fn lru_eviction_keeps_recently_read_entries() {
    if skip_without_fuse() {
        return;
    }
    let quota = 65536u64;
    let m = Mount::new(
        r#"
[cache]
max_bytes = "256MiB"
[namespace.q]
max_bytes = "64KiB"
"#,
    );
    let mut rng = Rng::from_time("lru_eviction_keeps_recently_read_entries");
    let mut order: VecDeque<(String, u64)> = VecDeque::new();

    // Equal-size entries first: a deterministic scenario.
    let e0 = m.path("q", "e0");
    write_file(&e0, &rng.bytes(10_000)).unwrap();
    let s = stored(&e0);
    let bp = m.backing_path("q", b"e0");
    let md = fs::metadata(&bp)
        .unwrap_or_else(|e| panic!("backing file of q/e0 at {}: {e}", bp.display()));
    assert_eq!(
        s,
        md.blocks() * 512,
        "stored_bytes xattr vs st_blocks*512 of the backing file"
    );
    assert!(s >= 10_000, "stored bytes {s} < logical size");
    assert_eq!(
        fs::metadata(&e0).unwrap().blocks() * 512,
        s,
        "st_blocks of the entry = stored_bytes/512"
    );
    let n_fit = (quota / s) as usize;
    assert!(
        n_fit >= 3,
        "test needs at least 3 entries to fit (stored {s})"
    );
    apply_publish(&m, "q", &mut order, "e0", quota, "publish e0");
    for i in 1..n_fit {
        let k = format!("e{i}");
        write_file(&m.path("q", &k), &rng.bytes(10_000)).unwrap();
        apply_publish(&m, "q", &mut order, &k, quota, &format!("publish {k}"));
    }
    assert_eq!(
        m.ns_stat("q", "evictions"),
        0,
        "no eviction while everything fits"
    );
    // Read e0: now e1 is the least recently used.
    fs::read(&e0).unwrap();
    let e0_entry = order.pop_front().unwrap();
    order.push_back(e0_entry);
    let k = format!("e{n_fit}");
    write_file(&m.path("q", &k), &rng.bytes(10_000)).unwrap();
    assert_errno(
        File::open(m.path("q", "e1")),
        libc::ENOENT,
        "e1 (least recently used) after eviction",
    );
    apply_publish(&m, "q", &mut order, &k, quota, "publish after reading e0");
    assert!(
        fs::read(&e0).is_ok(),
        "e0 was read recently and must survive"
    );
    // That fs::read was a use too: reflect it in the model.
    let e0_entry = order.iter().position(|(k, _)| k == "e0").unwrap();
    let e = order.remove(e0_entry).unwrap();
    order.push_back(e);
    assert!(
        m.ns_stat("q", "evictions") >= 1,
        "evictions counted: {}",
        m.stats()
    );

    // Random mix of reads, new keys of varied sizes and overwrites.
    let mut next = n_fit + 1;
    for step in 0..40 {
        let op = rng.range(0, 10);
        if op < 4 && !order.is_empty() {
            let i = rng.range(0, order.len());
            let k = order[i].0.clone();
            fs::read(m.path("q", &k))
                .unwrap_or_else(|e| panic!("step {step}: read of listed {k}: {e}"));
            let e = order.remove(i).unwrap();
            order.push_back(e);
        } else {
            let k = if op < 6 && !order.is_empty() {
                order[rng.range(0, order.len())].0.clone()
            } else {
                next += 1;
                format!("r{next}")
            };
            let n = rng.range(0, 25_000);
            write_file(&m.path("q", &k), &rng.bytes(n))
                .unwrap_or_else(|e| panic!("step {step}: write {k} ({n} B): {e}"));
            apply_publish(
                &m,
                "q",
                &mut order,
                &k,
                quota,
                &format!("step {step}: publish {k} ({n} B)"),
            );
        }
    }
}

#[test]
fn expired_entries_are_evicted_before_live_ones() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(
        r#"
[cache]
sweep_interval = "1h"
[namespace.q]
max_bytes = "64KiB"
ttl = "1h"
"#,
    );
    let mut rng = Rng::from_time("expired_entries_are_evicted_before_live_ones");
    // e0 is the least recently used; e1 expires in 1 s; then fill up.
    write_file(&m.path("q", "e0"), &rng.bytes(10_000)).unwrap();
    write_file(&m.path("q", "e1"), &rng.bytes(10_000)).unwrap();
    setxattr(&m.path("q", "e1"), "user.cachefs.ttl", b"1").unwrap();
    let exp = mtime_of(&fs::metadata(m.path("q", "e1")).unwrap()) + Duration::from_secs(1);
    let s = stored(&m.path("q", "e0"));
    let n_fit = (65536 / s) as usize;
    for i in 2..n_fit {
        write_file(&m.path("q", &format!("e{i}")), &rng.bytes(10_000)).unwrap();
    }
    assert_eq!(list_str(&m.ns("q")).len(), n_fit, "all fit");
    sleep_until_wall(exp + Duration::from_millis(100));
    write_file(&m.path("q", "new"), &rng.bytes(10_000)).unwrap();
    assert!(
        fs::read(m.path("q", "e0")).is_ok(),
        "the LRU live entry was evicted while an expired one could go"
    );
    assert_errno(File::open(m.path("q", "e1")), libc::ENOENT, "expired entry");
    assert!(m.ns_stat("q", "bytes") <= 65536);
}

#[test]
fn usage_never_exceeds_mount_quota() {
    if skip_without_fuse() {
        return;
    }
    let quota = 128 * 1024u64;
    let m = Mount::new(
        r#"
[cache]
max_bytes = "128KiB"
"#,
    );
    let mut rng = Rng::from_time("usage_never_exceeds_mount_quota");
    fs::create_dir(m.ns("x")).unwrap();
    fs::create_dir(m.ns("y")).unwrap();
    let s = statvfs(&m.mnt);
    assert_eq!(s.f_blocks * s.f_frsize, quota, "statfs size = quota");
    for i in 0..40 {
        let ns = if i % 2 == 0 { "x" } else { "y" };
        let n = rng.range(0, 30_000);
        let p = m.path(ns, &format!("k{i}"));
        write_file(&p, &rng.bytes(n)).unwrap_or_else(|e| panic!("write #{i} of {n} B: {e}"));
        assert!(fs::metadata(&p).is_ok(), "entry just published is present");
        let total = m.total_stat("bytes");
        assert!(
            total <= quota,
            "after publish #{i}: stats total bytes {total} > quota {quota}"
        );
        let used = statfs_used(&m.mnt);
        assert!(
            used <= quota,
            "after publish #{i}: statfs used {used} > quota"
        );
        let mut sum = 0;
        for ns in ["x", "y"] {
            for k in list_str(&m.ns(ns)) {
                sum += stored(&m.path(ns, &k));
            }
        }
        assert_eq!(
            sum, total,
            "after publish #{i}: sum of stored_bytes of listed entries vs stats total"
        );
        assert_eq!(
            m.ns_stat("x", "bytes") + m.ns_stat("y", "bytes"),
            total,
            "namespace bytes add up to the total"
        );
    }
    assert!(
        m.total_stat("evictions") > 0,
        "40 writes into 128 KiB must evict: {}",
        m.stats()
    );
    // The backing volume holds no more than the quota once evictions are unlinked.
    let data = m.backing.join("data");
    assert!(
        wait_until(Duration::from_secs(3), || files_under(&data)
            .iter()
            .map(|p| fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0))
            .sum::<u64>()
            <= quota),
        "backing data/ holds more than the quota"
    );
}

/// Writes `total` bytes in 4 KiB chunks with plain write(2); returns (bytes accepted,
/// errno of the first failing write and the offset it was at) and the close result.
fn write_until_error(
    p: &Path,
    total: usize,
    create: bool,
) -> (usize, Option<(i32, usize)>, std::io::Result<()>) {
    let mut f = if create {
        File::create(p).unwrap()
    } else {
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p)
            .unwrap()
    };
    let buf = vec![0x5au8; 4096];
    let mut done = 0;
    let mut err = None;
    while done < total {
        let n = (total - done).min(buf.len());
        match f.write(&buf[..n]) {
            Ok(0) => {
                err = Some((0, done));
                break;
            }
            Ok(k) => done += k,
            Err(e) => {
                err = Some((e.raw_os_error().unwrap_or(-1), done));
                break;
            }
        }
    }
    let c = close_file(f);
    (done, err, c)
}

#[track_caller]
fn assert_efbig(p: &Path, total: usize, limit: usize, create: bool, what: &str) {
    let (done, err, close) = write_until_error(p, total, create);
    match err {
        Some((e, at)) => {
            assert_eq!(
                e,
                libc::EFBIG,
                "{what}: write at offset {at} failed with {} instead of EFBIG",
                errno_name(e)
            );
            assert!(
                at <= limit,
                "{what}: EFBIG only at offset {at}, after writing past the limit {limit}"
            );
            assert!(
                at + 4096 > limit,
                "{what}: EFBIG at offset {at}, before reaching the limit {limit}"
            );
        }
        None => panic!("{what}: all {done} bytes written without error (limit {limit})"),
    }
    assert_errno(close, libc::EFBIG, &format!("{what}: close() after EFBIG"));
}

#[test]
fn oversized_entries_fail_with_efbig_and_leave_nothing() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(
        r#"
[cache]
max_bytes = "256KiB"
[namespace.small]
max_entry_bytes = "16KiB"
[namespace.tiny]
max_bytes = "32KiB"
[namespace.open]
"#,
    );
    let staging = m.backing.join("staging");
    let staging_empty = || wait_until(Duration::from_secs(2), || staged_files(&staging).is_empty());

    // Exactly the limit is fine.
    let ok = m.path("small", "exact");
    write_file(&ok, &vec![1u8; 16384]).unwrap();
    assert_eq!(fs::read(&ok).unwrap().len(), 16384);

    // New key over max_entry_bytes: EFBIG from write() and close(), nothing published.
    let p = m.path("small", "too-big");
    assert_efbig(&p, 20_000, 16384, true, "new key over max_entry_bytes");
    assert_errno(
        File::open(&p),
        libc::ENOENT,
        "over-limit key after the failed publish",
    );
    assert!(
        staging_empty(),
        "staging not empty after a failed publish: {:?}",
        files_under(&staging)
    );
    assert_eq!(list_str(&m.ns("small")), vec!["exact"]);
    assert_eq!(m.ns_stat("small", "entries"), 1, "stats: {}", m.stats());

    // Existing key rewritten past the limit keeps its old version.
    assert_efbig(
        &ok,
        40_000,
        16384,
        false,
        "rewrite of an existing key over max_entry_bytes",
    );
    assert_eq!(
        fs::read(&ok).unwrap(),
        vec![1u8; 16384],
        "old version after a failed rewrite"
    );
    // Append past the limit.
    let mut f = OpenOptions::new().append(true).open(&ok).unwrap();
    let r = f.write_all(b"one byte too many");
    assert_errno(r, libc::EFBIG, "append past max_entry_bytes");
    assert_errno(close_file(f), libc::EFBIG, "close after a failed append");
    assert_eq!(
        fs::read(&ok).unwrap(),
        vec![1u8; 16384],
        "old version after a failed append"
    );
    assert!(
        staging_empty(),
        "staging not empty: {:?}",
        files_under(&staging)
    );

    // A shell tool sees the failure.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 20000 /dev/zero > {}",
            q(&m.path("small", "shell"))
        ))
        .output()
        .unwrap();
    assert!(!out.status.success(), "head > over-limit key succeeded");
    assert_errno(
        File::open(m.path("small", "shell")),
        libc::ENOENT,
        "shell over-limit key",
    );

    // Larger than the namespace quota.
    write_file(&m.path("tiny", "keep"), b"small entry").unwrap();
    let p = m.path("tiny", "huge");
    assert_efbig(
        &p,
        40_000,
        32 * 1024,
        true,
        "entry over the namespace quota",
    );
    assert_errno(File::open(&p), libc::ENOENT, "over-quota key");

    // Larger than the mount quota.
    let p = m.path("open", "huge");
    assert_efbig(&p, 300_000, 256 * 1024, true, "entry over the mount quota");
    assert_errno(File::open(&p), libc::ENOENT, "over-mount-quota key");
    assert!(
        staging_empty(),
        "staging not empty: {:?}",
        files_under(&staging)
    );
    assert!(m.total_stat("bytes") <= 256 * 1024);
}

#[test]
fn max_entries_and_overwrite_accounting() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(
        r#"
[namespace.cnt]
max_entries = 3
"#,
    );
    for i in 0..5 {
        write_file(
            &m.path("cnt", &format!("k{i}")),
            format!("value {i}").as_bytes(),
        )
        .unwrap();
        let n = list_str(&m.ns("cnt")).len();
        assert!(n <= 3, "after publish #{i}: {n} entries > max_entries 3");
    }
    assert_eq!(
        list_str(&m.ns("cnt")),
        vec!["k2", "k3", "k4"],
        "the two oldest were evicted"
    );
    assert_eq!(m.ns_stat("cnt", "entries"), 3);
    assert_eq!(m.ns_stat("cnt", "evictions"), 2, "stats: {}", m.stats());
    // Overwriting one key many times does not grow the accounting.
    let p = m.path("cnt", "k4");
    for i in 0..5 {
        write_file(&p, &vec![i as u8; 10_000]).unwrap();
    }
    let per = stored(&p);
    let sum: u64 = list_str(&m.ns("cnt"))
        .iter()
        .map(|k| stored(&m.path("cnt", k)))
        .sum();
    assert_eq!(
        m.ns_stat("cnt", "bytes"),
        sum,
        "bytes after overwrites (one version counted, {per} each)"
    );
    assert_eq!(m.ns_stat("cnt", "entries"), 3);
    assert_eq!(
        list_str(&m.ns("cnt")),
        vec!["k2", "k3", "k4"],
        "overwrite of an existing key evicts nothing"
    );
}
