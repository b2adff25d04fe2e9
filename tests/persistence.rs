//! Acceptance 6: persistence. A clean unmount/remount keeps every entry byte-identical
//! (names, mtimes, xattr TTLs, mkdir'd namespaces) and TTL clocks keep running; a
//! remount without the index snapshot (the crash path: rebuild by scan) does too and
//! does not resurrect expired entries. Crash loop: writers log each key only after
//! close() succeeded, the daemon is `kill -9`ed mid-stream, the dead mount is lazily
//! unmounted, the same backing dir is remounted: every logged key is present and
//! intact, nothing corrupt is visible. Repeated.

mod common;

use common::*;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CFG: &str = r#"
[cache]
max_bytes = "512MiB"
sweep_interval = "1s"

[namespace.p]
ttl = "1h"

[namespace.t]
ttl = "3s"
"#;

struct Snapshot {
    entries: Vec<(String, Vec<u8>, Vec<u8>, SystemTime)>, // (ns, key, content, mtime)
}

fn take_snapshot(m: &Mount, nss: &[&str]) -> Snapshot {
    let mut entries = Vec::new();
    for ns in nss {
        for k in list(&m.ns(ns)) {
            let p = m.path_bytes(ns, &k);
            let content = fs::read(&p).unwrap();
            let mt = fs::metadata(&p).unwrap().modified().unwrap();
            entries.push((ns.to_string(), k, content, mt));
        }
    }
    Snapshot { entries }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[track_caller]
fn assert_same(m: &Mount, snap: &Snapshot, what: &str) {
    for (ns, k, content, mt) in &snap.entries {
        let p = m.path_bytes(ns, k);
        let name = String::from_utf8_lossy(k);
        let got = fs::read(&p).unwrap_or_else(|e| panic!("{what}: {ns}/{name:?}: {e}"));
        assert!(
            got == *content,
            "{what}: {ns}/{name:?}: {} bytes, want {} (content differs)",
            got.len(),
            content.len()
        );
        let mt2 = fs::metadata(&p).unwrap().modified().unwrap();
        assert_eq!(secs(mt2), secs(*mt), "{what}: {ns}/{name:?}: mtime changed");
    }
}

#[test]
fn remount_keeps_entries_and_ttl_clocks() {
    if skip_without_fuse() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    let mut rng = Rng::from_time("remount_keeps_entries_and_ttl_clocks");

    let mut m1 = Mount::with_backing(CFG, &backing);
    let mut keys: Vec<Vec<u8>> = (0..20).map(|i| format!("k{i}").into_bytes()).collect();
    keys.push(b"with space".to_vec());
    keys.push(b"new\nline".to_vec());
    keys.push(b"bin\xff\xfe".to_vec());
    for (i, k) in keys.iter().enumerate() {
        let n = match i % 4 {
            0 => 0,
            1 => rng.range(1, 100),
            2 => rng.range(100, 20_000),
            _ => rng.range(20_000, 300_000),
        };
        write_file(&m1.path_bytes("p", k), &rng.bytes(n)).unwrap();
    }
    setxattr(&m1.path("p", "k1"), "user.cachefs.ttl", b"7200").unwrap();
    fs::create_dir(m1.ns("made")).unwrap();
    write_file(&m1.path("made", "x"), b"in a mkdir namespace").unwrap();
    let short = m1.path("t", "short");
    write_file(&short, b"three seconds").unwrap();
    let short_exp = mtime_of(&fs::metadata(&short).unwrap()) + Duration::from_secs(3);
    let expires_k0 = getxattr_str(&m1.path("p", "k0"), "user.cachefs.expires").unwrap();
    let expires_k1 = getxattr_str(&m1.path("p", "k1"), "user.cachefs.expires").unwrap();
    let snap = take_snapshot(&m1, &["p", "made"]);
    assert_eq!(snap.entries.len(), keys.len() + 1);
    let (entries, bytes) = (m1.total_stat("entries"), m1.total_stat("bytes"));
    let (short_entries, short_bytes) = (m1.ns_stat("t", "entries"), m1.ns_stat("t", "bytes"));
    assert_eq!(short_entries, 1);

    let st = m1.stop();
    assert!(st.success(), "clean stop exit status {st}\n{}", m1.log());
    assert!(
        backing.join("index.snapshot").exists(),
        "no index.snapshot after a clean stop"
    );
    drop(m1);

    // Clean remount.
    let mut m2 = Mount::with_backing(CFG, &backing);
    assert_same(&m2, &snap, "after clean remount");
    let mut want_names = keys.clone();
    want_names.sort();
    assert_eq!(list(&m2.ns("p")), want_names, "listing after clean remount");
    assert!(
        fs::metadata(m2.ns("made")).unwrap().is_dir(),
        "mkdir'd namespace after remount"
    );
    assert_eq!(
        getxattr_str(&m2.path("p", "k1"), "user.cachefs.ttl")
            .unwrap()
            .trim(),
        "7200"
    );
    assert_eq!(
        getxattr_str(&m2.path("p", "k0"), "user.cachefs.expires").unwrap(),
        expires_k0,
        "expires of k0"
    );
    assert_eq!(
        getxattr_str(&m2.path("p", "k1"), "user.cachefs.expires").unwrap(),
        expires_k1,
        "expires of k1"
    );
    // Counts include t/short unless it has already expired (a slow machine).
    let s2 = m2.stats();
    if SystemTime::now() + Duration::from_millis(300) < short_exp {
        assert_eq!(
            s2["total"]["entries"], entries,
            "entries after remount: {s2}"
        );
        assert_eq!(s2["total"]["bytes"], bytes, "bytes after remount: {s2}");
    }
    assert_eq!(
        s2["namespaces"]["p"]["entries"],
        keys.len() as u64,
        "p entries after remount: {s2}"
    );
    // The 3 s entry expires at its original deadline, not 3 s after the remount.
    let short = m2.path("t", "short");
    if SystemTime::now() + Duration::from_millis(300) < short_exp {
        assert_eq!(
            fs::read(&short).unwrap(),
            b"three seconds",
            "short-lived entry before its deadline"
        );
    }
    sleep_until_wall(short_exp + Duration::from_millis(100));
    assert_errno(
        File::open(&short),
        libc::ENOENT,
        "short-lived entry after its original deadline",
    );
    let st = m2.stop();
    assert!(st.success());
    drop(m2);

    // Remount without the snapshot: the index is rebuilt by a scan.
    fs::remove_file(backing.join("index.snapshot")).unwrap();
    let m3 = Mount::with_backing(CFG, &backing);
    assert_same(&m3, &snap, "after remount without index.snapshot");
    assert_eq!(list(&m3.ns("p")), want_names, "listing after scan");
    assert!(
        list(&m3.ns("t")).is_empty(),
        "expired entry resurrected by the scan: {:?}",
        list_str(&m3.ns("t"))
    );
    assert_errno(
        File::open(m3.path("t", "short")),
        libc::ENOENT,
        "expired entry after scan",
    );
    assert!(
        fs::metadata(m3.ns("made")).unwrap().is_dir(),
        "mkdir'd namespace after scan"
    );
    assert_eq!(
        getxattr_str(&m3.path("p", "k1"), "user.cachefs.ttl")
            .unwrap()
            .trim(),
        "7200"
    );
    // Everything but the expired t/short: statfs sweeps before answering; stats.json
    // may wait for the background sweep (1 s).
    assert_eq!(
        statfs_used(&m3.mnt),
        bytes - short_bytes,
        "statfs used after scan"
    );
    assert!(
        wait_until(Duration::from_secs(3), || m3.total_stat("entries")
            == entries - 1
            && m3.total_stat("bytes") == bytes - short_bytes),
        "stats after scan: want {} entries, {} bytes: {}",
        entries - 1,
        bytes - short_bytes,
        m3.stats()
    );
}

const CRASH_CFG: &str = r#"
[cache]
max_bytes = "1GiB"

[namespace.c]
durability = "rename"

[namespace.f]
durability = "fsync"
"#;

/// What the writers know: versions whose close() succeeded, and the versions whose
/// close() was in flight when the daemon died (either old or new may survive).
#[derive(Default)]
struct Ledger {
    committed: HashMap<(String, String), String>, // (ns, key) -> sha256 of the whole file
    in_flight: HashMap<(String, String), String>,
}

const PY_WRITER: &str = r#"
import os, sys, hashlib, struct
d, prefix = sys.argv[1], sys.argv[2]
n = 0
while True:
    n += 1
    body = os.urandom((n * 7919) % 50000)
    payload = b"CFT1" + struct.pack("<Q", len(body)) + hashlib.sha256(body).digest() + body
    key = "%s-%d" % (prefix, n)
    sys.stdout.write("try %s %s\n" % (key, hashlib.sha256(payload).hexdigest()))
    sys.stdout.flush()
    try:
        with open(os.path.join(d, key), "wb") as f:
            f.write(payload)
    except OSError:
        sys.exit(0)
    sys.stdout.write("ok %s\n" % key)
    sys.stdout.flush()
"#;

fn verify_ledger(m: &Mount, ledger: &Ledger, what: &str) {
    let mut errors = Vec::new();
    for ((ns, key), sha) in &ledger.committed {
        let alt = ledger.in_flight.get(&(ns.clone(), key.clone()));
        match fs::read(m.path(ns, key)) {
            Ok(b) => {
                let got = sha256_hex(&b);
                if got != *sha && Some(&got) != alt {
                    errors.push(format!(
                        "{ns}/{key}: content differs from the committed version ({} bytes)",
                        b.len()
                    ));
                }
            }
            Err(e) => errors.push(format!("{ns}/{key}: committed (close succeeded) but {e}")),
        }
    }
    // Nothing corrupt visible: every listed entry is a whole payload, and an entry that
    // was never committed may only be a version that was being written.
    for ns in ["c", "f"] {
        for k in list_str(&m.ns(ns)) {
            match fs::read(m.path(ns, &k)) {
                Ok(b) => {
                    if let Err(e) = check_payload(&b) {
                        errors.push(format!("{ns}/{k}: corrupt entry visible: {e}"));
                    }
                    let id = (ns.to_string(), k.clone());
                    if !ledger.committed.contains_key(&id)
                        && ledger.in_flight.get(&id) != Some(&sha256_hex(&b))
                    {
                        errors.push(format!("{ns}/{k}: listed but never written"));
                    }
                }
                Err(e) => errors.push(format!("{ns}/{k}: listed but unreadable: {e}")),
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{what}: {} problems ({} committed keys):\n{}",
        errors.len(),
        ledger.committed.len(),
        errors
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn kill9_crash_loop() {
    if skip_without_fuse() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    let mut rng = Rng::from_time("kill9_crash_loop");
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    for round in 0..3 {
        let mut m = Mount::with_backing(CRASH_CFG, &backing);
        verify_ledger(
            &m,
            &ledger.lock().unwrap(),
            &format!("round {round}: after remount"),
        );
        let staging = backing.join("staging");
        assert!(
            wait_until(Duration::from_secs(5), || staged_files(&staging).is_empty()),
            "round {round}: orphans left in staging after start: {:?}",
            staged_files(&staging)
        );
        let listed: usize = ["c", "f"].iter().map(|ns| list(&m.ns(ns)).len()).sum();
        assert_eq!(
            m.total_stat("entries") as usize,
            listed,
            "round {round}: stats entries vs listing: {}",
            m.stats()
        );

        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let mut py = Command::new("python3")
            .arg("-c")
            .arg(PY_WRITER)
            .arg(m.ns("c"))
            .arg(format!("py{round}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let py_out = py.stdout.take().unwrap();
        std::thread::scope(|scope| {
            // Python writer's log reader.
            {
                let (ledger, commits) = (ledger.clone(), commits.clone());
                scope.spawn(move || {
                    let mut last_try: Option<(String, String)> = None;
                    for line in BufReader::new(py_out).lines() {
                        let line = line.unwrap();
                        let f: Vec<&str> = line.split(' ').collect();
                        let mut l = ledger.lock().unwrap();
                        match f[0] {
                            "try" => {
                                l.in_flight.insert(("c".into(), f[1].into()), f[2].into());
                                last_try = Some((f[1].into(), f[2].into()));
                            }
                            "ok" => {
                                let (k, sha) = last_try.take().unwrap();
                                assert_eq!(k, f[1]);
                                l.in_flight.remove(&("c".to_string(), k.clone()));
                                l.committed.insert(("c".into(), k), sha);
                                commits.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => panic!("python writer said {line}"),
                        }
                    }
                });
            }
            for w in 0..3 {
                let (ledger, stop, commits) = (ledger.clone(), stop.clone(), commits.clone());
                let mut rng = Rng::new(rng.next_u64());
                let mnt = m.mnt.clone();
                scope.spawn(move || {
                    let mut mine: Vec<(String, String)> = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let ns = if rng.range(0, 3) == 0 { "f" } else { "c" };
                        let id = if !mine.is_empty() && rng.range(0, 5) == 0 {
                            mine[rng.range(0, mine.len())].clone()
                        } else {
                            (ns.to_string(), format!("r{round}-w{w}-{n}"))
                        };
                        let body_len = match rng.range(0, 4) {
                            0 => rng.range(0, 100),
                            1 | 2 => rng.range(100, 20_000),
                            _ => rng.range(20_000, 150_000),
                        };
                        let data = make_payload(&mut rng, body_len, id.1.as_bytes());
                        let sha = sha256_hex(&data);
                        ledger
                            .lock()
                            .unwrap()
                            .in_flight
                            .insert(id.clone(), sha.clone());
                        let p = mnt.join(&id.0).join(&id.1);
                        match write_file_chunked(&p, &data, rng.range(1000, 70_000)) {
                            Ok(()) => {
                                let mut l = ledger.lock().unwrap();
                                l.in_flight.remove(&id);
                                l.committed.insert(id.clone(), sha);
                                drop(l);
                                commits.fetch_add(1, Ordering::Relaxed);
                                if !mine.contains(&id) {
                                    mine.push(id);
                                }
                            }
                            Err(_) => return, // the daemon is gone
                        }
                    }
                });
            }
            // Let the stream get going, then kill -9 at a random instant.
            let started = wait_until(Duration::from_secs(10), || {
                commits.load(Ordering::Relaxed) >= 20
            });
            std::thread::sleep(Duration::from_millis(rng.range(100, 700) as u64));
            m.kill9();
            stop.store(true, Ordering::Relaxed);
            assert!(
                started,
                "round {round}: writers made no progress before the kill\n{}",
                m.log()
            );
        });
        let _ = py.wait();
        let l = ledger.lock().unwrap();
        eprintln!(
            "round {round}: {} committed, {} in flight at the kill",
            l.committed.len(),
            l.in_flight.len()
        );
        assert!(
            !m.log().contains("panicked"),
            "round {round}: daemon panicked:\n{}",
            m.log()
        );
    }
    let m = Mount::with_backing(CRASH_CFG, &backing);
    verify_ledger(&m, &ledger.lock().unwrap(), "final remount");
    // A clean stop after crash recovery still works and keeps everything.
    drop(m);
    let m = Mount::with_backing(CRASH_CFG, &backing);
    verify_ledger(
        &m,
        &ledger.lock().unwrap(),
        "remount after a clean stop following recovery",
    );
    // The store is writable after recovery.
    write_file(&m.path("c", "after"), b"still works").unwrap();
    assert_eq!(fs::read(m.path("c", "after")).unwrap(), b"still works");
    let _ = std::io::stderr().flush();
}
