//! Acceptance 3: atomic publish. Writers and readers hammer one key with
//! self-checksummed payloads: no torn, mixed or short read, never ENOENT for an existing
//! key; a half-written file is invisible (ENOENT for a new key, the old bytes for an
//! existing one); read-your-writes across processes in a tight loop; O_EXCL claims;
//! the last writer to close wins; an fd keeps reading the version it opened.

mod common;

use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CFG: &str = r#"
[cache]
max_bytes = "512MiB"
default_ttl = "2h"

[namespace.h]
"#;

fn varied_len(rng: &mut Rng) -> usize {
    match rng.range(0, 10) {
        0 => rng.range(0, 64),
        1..=3 => rng.range(64, 5000),
        4 => 4096 - PAYLOAD_HEADER + rng.range(0, 3) - 1, // around a page boundary
        5..=8 => rng.range(5000, 80_000),
        _ => rng.range(100_000, 400_000),
    }
}

#[test]
fn hammer_one_key() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let key = m.path("h", "hot");
    let mut seed_rng = Rng::from_time("hammer_one_key");
    write_file(&key, &make_payload(&mut seed_rng, 1000, b"v0")).unwrap();

    let run_for = Duration::from_secs(3);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let reads = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let fail = |f: &Arc<Mutex<Vec<String>>>, s: String| {
        let mut v = f.lock().unwrap();
        if v.len() < 20 {
            v.push(s);
        }
    };

    std::thread::scope(|scope| {
        for w in 0..3u64 {
            let (stop, failures, writes) = (stop.clone(), failures.clone(), writes.clone());
            let key = key.clone();
            let ns = m.ns("h");
            let mut rng = Rng::new(seed_rng.next_u64());
            scope.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let tag = format!("w{w}-{n}");
                    let len = varied_len(&mut rng);
                    let data = make_payload(&mut rng, len, tag.as_bytes());
                    let via_rename = rng.range(0, 4) == 0;
                    let target = if via_rename {
                        ns.join(format!("tmp-{tag}"))
                    } else {
                        key.clone()
                    };
                    let chunk = rng.range(1, 70_000);
                    let r = write_file_chunked(&target, &data, chunk).and_then(|_| {
                        if via_rename {
                            fs::rename(&target, &key)
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(e) = r {
                        fail(
                            &failures,
                            format!("writer {w} write #{n} (rename={via_rename}): {e}"),
                        );
                        return;
                    }
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for r in 0..3u64 {
            let (stop, failures, reads) = (stop.clone(), failures.clone(), reads.clone());
            let key = key.clone();
            let mut rng = Rng::new(seed_rng.next_u64());
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let res: std::io::Result<Vec<u8>> = match r {
                        // Whole-file read.
                        0 => fs::read(&key),
                        // Small sequential reads with yields, so publishes land mid-read.
                        1 => (|| {
                            let mut f = File::open(&key)?;
                            let mut out = Vec::new();
                            let mut buf = vec![0u8; rng.range(1, 9000)];
                            loop {
                                let k = f.read(&mut buf)?;
                                if k == 0 {
                                    break;
                                }
                                out.extend_from_slice(&buf[..k]);
                                std::thread::yield_now();
                            }
                            Ok(out)
                        })(),
                        // Size from fstat, then preads back to front.
                        _ => (|| {
                            let f = File::open(&key)?;
                            let len = f.metadata()?.len() as usize;
                            let mut out = vec![0u8; len];
                            let step = 4096 * rng.range(1, 8);
                            let mut end = len;
                            while end > 0 {
                                let start = end.saturating_sub(step);
                                f.read_exact_at(&mut out[start..end], start as u64)?;
                                end = start;
                            }
                            // Nothing beyond the fstat size either.
                            let mut extra = [0u8; 1];
                            if f.read_at(&mut extra, len as u64)? != 0 {
                                return Err(std::io::Error::other("data beyond fstat size"));
                            }
                            Ok(out)
                        })(),
                    };
                    match res {
                        Ok(b) => {
                            if let Err(e) = check_payload(&b) {
                                fail(&failures, format!("reader {r}: {e}"));
                            }
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => fail(
                            &failures,
                            format!("reader {r}: read of an existing key failed: {e}"),
                        ),
                    }
                }
            });
        }
        let t0 = Instant::now();
        while t0.elapsed() < run_for && failures.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
    });

    let failures = failures.lock().unwrap().clone();
    let (nr, nw) = (
        reads.load(Ordering::Relaxed),
        writes.load(Ordering::Relaxed),
    );
    eprintln!("hammer: {nw} publishes, {nr} reads");
    assert!(
        failures.is_empty(),
        "{} failures ({nw} publishes, {nr} reads):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(nw >= 20, "too few publishes to mean anything: {nw}");
    assert!(nr >= 20, "too few reads to mean anything: {nr}");
    check_payload(&fs::read(&key).unwrap()).unwrap();
    assert_eq!(
        list_str(&m.ns("h")),
        vec!["hot"],
        "only the hammered key remains"
    );
    assert_eq!(m.ns_stat("h", "entries"), 1, "stats: {}", m.stats());
    let staging = m.backing.join("staging");
    assert!(
        wait_until(Duration::from_secs(2), || staged_files(&staging).is_empty()),
        "staging not empty after all writers closed: {:?}",
        staged_files(&staging)
    );
}

#[test]
fn half_written_new_key_is_invisible() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let mut rng = Rng::from_time("half_written_new_key_is_invisible");
    let p = m.path("h", "fresh");
    let data = make_payload(&mut rng, 200_000, b"new");
    let mut f = File::create(&p).unwrap();
    f.write_all(&data[..100_000]).unwrap();
    f.flush().unwrap();
    // Invisible to this process's other threads, to other processes and
    // to readdir; its writer's own thread sees the pending version
    // (PRODUCT.md section 4, the writer's view).
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        100_000,
        "the writer's stat"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_errno(
                fs::metadata(&p),
                libc::ENOENT,
                "stat of a half-written new key",
            );
            assert_errno(
                File::open(&p),
                libc::ENOENT,
                "open of a half-written new key",
            );
        });
    });
    let st = Command::new("test").arg("-e").arg(&p).status().unwrap();
    assert!(
        !st.success(),
        "`test -e` (another process) sees the half-written key"
    );
    let out = Command::new("cat").arg(&p).output().unwrap();
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "cat of a half-written key printed {} bytes",
        out.stdout.len()
    );
    assert!(
        !list_str(&m.ns("h")).contains(&"fresh".to_string()),
        "readdir lists a half-written key"
    );
    assert_eq!(m.ns_stat("h", "entries"), 0);
    // The writer's own fd still works (it may read back what it wrote).
    f.write_all(&data[100_000..]).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_errno(
                File::open(&p),
                libc::ENOENT,
                "open before close, all bytes written",
            );
        });
    });
    close_file(f).unwrap();
    // Read-your-writes: visible and whole right after close.
    let back = fs::read(&p).unwrap();
    assert!(
        back == data,
        "after close: {} bytes, want {}",
        back.len(),
        data.len()
    );
    let out = Command::new("sha256sum").arg(&p).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&sha256_hex(&data)));
    assert_eq!(list_str(&m.ns("h")), vec!["fresh"]);
}

#[test]
fn half_written_existing_key_shows_old_version() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let mut rng = Rng::from_time("half_written_existing_key_shows_old_version");
    let p = m.path("h", "existing");
    let v1 = make_payload(&mut rng, 50_000, b"v1");
    let v2 = make_payload(&mut rng, 120_000, b"v2");
    write_file(&p, &v1).unwrap();
    let old_fd = File::open(&p).unwrap();

    // O_TRUNC rewrite, half written and held open.
    let mut w = File::create(&p).unwrap();
    w.write_all(&v2[..60_000]).unwrap();
    // Another thread of this process (the writer's own thread sees the
    // pending version, PRODUCT.md section 4) and another process.
    let check_old = |what: &str| {
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(
                    fs::metadata(&p)
                        .unwrap_or_else(|e| panic!("{what}: stat: {e}"))
                        .len(),
                    v1.len() as u64,
                    "{what}: st_size"
                );
                let b = fs::read(&p).unwrap_or_else(|e| {
                    panic!("{what}: read of an existing key while rewritten: {e}")
                });
                assert!(
                    b == v1,
                    "{what}: this process read {}, want the old version",
                    describe(&b, &[("v1", &v1), ("v2", &v2)])
                );
            });
        });
        let out = Command::new("cat").arg(&p).output().unwrap();
        assert!(
            out.stdout == v1,
            "{what}: another process (cat) read {}, want the old version; stderr {}",
            describe(&out.stdout, &[("v1", &v1), ("v2", &v2)]),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check_old("during O_TRUNC rewrite");
    let mut b = vec![0u8; v1.len()];
    old_fd.read_exact_at(&mut b, 0).unwrap();
    assert!(b == v1, "fd opened before the rewrite");
    w.write_all(&v2[60_000..]).unwrap();
    check_old("all new bytes written, not closed");
    close_file(w).unwrap();
    let b = fs::read(&p).unwrap();
    assert!(
        b == v2,
        "after close: {} bytes, want the new {}",
        b.len(),
        v2.len()
    );
    // The fd opened before the publish still reads v1.
    let mut b = vec![0u8; v1.len()];
    old_fd.read_exact_at(&mut b, 0).unwrap();
    assert!(b == v1, "fd opened before the publish changed its bytes");

    // In-place (no O_TRUNC) write held open: readers keep seeing v2.
    let mut w = OpenOptions::new().write(true).open(&p).unwrap();
    w.seek(SeekFrom::Start(10)).unwrap();
    w.write_all(b"PATCHED").unwrap();
    let b = std::thread::scope(|s| s.spawn(|| fs::read(&p).unwrap()).join().unwrap());
    assert!(b == v2, "in-place write visible before close");
    close_file(w).unwrap();
    let mut want = v2.clone();
    want[10..17].copy_from_slice(b"PATCHED");
    assert!(fs::read(&p).unwrap() == want, "in-place write after close");
}

#[test]
fn fd_keeps_the_version_it_opened() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let mut rng = Rng::from_time("fd_keeps_the_version_it_opened");
    let p = m.path("h", "k");
    let v1 = make_payload(&mut rng, 300_000, b"v1");
    let v2 = make_payload(&mut rng, 300_000, b"v2");
    write_file(&p, &v1).unwrap();
    let mut f1 = File::open(&p).unwrap();
    let mut got = vec![0u8; 8192];
    f1.read_exact(&mut got).unwrap();
    write_file(&p, &v2).unwrap();
    f1.read_to_end(&mut got).unwrap();
    assert!(
        got == v1,
        "fd opened on v1 read a mix after v2 was published ({} bytes)",
        got.len()
    );
    assert!(fs::read(&p).unwrap() == v2, "new open sees v2");
    let f2 = File::open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert_errno(File::open(&p), libc::ENOENT, "open after unlink");
    let mut b = vec![0u8; v2.len()];
    f2.read_exact_at(&mut b, 0)
        .expect("fd opened before unlink keeps reading");
    assert!(b == v2);
}

#[test]
fn read_your_writes_across_processes() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let dir = m.ns("h");
    const N: usize = 300;
    // The writer process: at each "go <i>" it checks the key this process wrote last
    // round, then overwrites "hot" and creates "new-<i>", and prints the sha256s.
    let script = r#"
import os, sys, hashlib
d = sys.argv[1]
sizes = [0, 1, 100, 4096, 4097, 10000, 65536]
i = 0
for line in sys.stdin:
    i = int(line.split()[1])
    back = "-"
    if i > 0:
        try:
            with open(os.path.join(d, "back-%d" % (i - 1)), "rb") as f:
                back = hashlib.sha256(f.read()).hexdigest()
        except OSError as e:
            back = "ERR:%s" % e.errno
    body = (b"%d:" % i) + os.urandom(sizes[i % len(sizes)])
    with open(os.path.join(d, "hot"), "wb") as f:
        f.write(body)
    with open(os.path.join(d, "new-%d" % i), "wb") as f:
        f.write(body)
    sys.stdout.write("%s %s\n" % (hashlib.sha256(body).hexdigest(), back))
    sys.stdout.flush()
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    let mut from = BufReader::new(child.stdout.take().unwrap());
    let mut rng = Rng::from_time("read_your_writes_across_processes");
    let mut last_back = String::new();
    let mut errors = Vec::new();
    for i in 0..N {
        // Prime the kernel caches: a negative lookup of the key about to be created,
        // and a cached read of the current "hot".
        let newp = dir.join(format!("new-{i}"));
        if let Ok(b) = fs::read(&newp) {
            errors.push(format!(
                "round {i}: new-{i} exists before it was written ({} bytes)",
                b.len()
            ));
        }
        let _ = fs::read(dir.join("hot"));
        writeln!(to, "go {i}").unwrap();
        to.flush().unwrap();
        let mut line = String::new();
        if from.read_line(&mut line).unwrap() == 0 {
            panic!("writer process died at round {i}: {:?}", child.wait());
        }
        let mut parts = line.split_whitespace();
        let sha = parts.next().unwrap().to_string();
        let back = parts.next().unwrap().to_string();
        for name in ["hot".to_string(), format!("new-{i}")] {
            match fs::read(dir.join(&name)) {
                Ok(b) => {
                    if sha256_hex(&b) != sha {
                        errors.push(format!("round {i}: {name} right after the writer's close: stale/other bytes ({} bytes)", b.len()));
                    }
                }
                Err(e) => errors.push(format!(
                    "round {i}: {name} right after the writer's close: {e}"
                )),
            }
        }
        if i > 0 && back != last_back {
            errors.push(format!(
                "round {i}: the other process read back-{} as {back}, want {last_back}",
                i - 1
            ));
        }
        // This process writes; the other one reads it at the start of the next round.
        let n = rng.range(0, 20_000);
        let data = rng.bytes(n);
        write_file(&dir.join(format!("back-{i}")), &data).unwrap();
        last_back = sha256_hex(&data);
        if errors.len() > 10 {
            break;
        }
    }
    drop(to);
    let st = child.wait().unwrap();
    assert!(
        errors.is_empty(),
        "{} read-your-writes violations:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert!(st.success(), "writer process failed: {st}");
}

#[test]
fn exclusive_create_claims_a_key() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let published = m.path("h", "published");
    write_file(&published, b"v1").unwrap();
    assert_errno(
        create_excl(&published),
        libc::EEXIST,
        "O_EXCL on a published key",
    );
    assert_eq!(
        fs::read(&published).unwrap(),
        b"v1",
        "failed O_EXCL changed the entry"
    );

    let claimed = m.path("h", "claimed");
    let mut w = create_excl(&claimed).expect("O_EXCL on a free key");
    w.write_all(b"computing...").unwrap();
    assert_errno(
        create_excl(&claimed),
        libc::EEXIST,
        "O_EXCL on a key being written (same process)",
    );
    let py = Command::new("python3")
        .arg("-c")
        .arg("import os,sys\ntry:\n os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT|os.O_EXCL)\n print('created')\nexcept OSError as e:\n print(e.errno)")
        .arg(&claimed)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        libc::EEXIST.to_string(),
        "O_EXCL from another process on a key being written"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_errno(
                File::open(&claimed),
                libc::ENOENT,
                "the claimed key is still invisible",
            );
        });
    });
    close_file(w).unwrap();
    assert_eq!(fs::read(&claimed).unwrap(), b"computing...");
    assert_errno(
        create_excl(&claimed),
        libc::EEXIST,
        "O_EXCL after the claim was published",
    );
    // Once deleted, the key can be claimed again.
    fs::remove_file(&claimed).unwrap();
    let w = create_excl(&claimed).expect("O_EXCL after unlink");
    close_file(w).unwrap();
    assert_eq!(fs::read(&claimed).unwrap(), b"", "empty publish");
}

#[test]
fn last_close_wins() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let mut rng = Rng::from_time("last_close_wins");
    let p = m.path("h", "contested");
    for order in [[0usize, 1], [1, 0]] {
        let data = [
            make_payload(&mut rng, 30_000, b"A"),
            make_payload(&mut rng, 70_000, b"B"),
        ];
        let mut a = File::create(&p).unwrap();
        let mut b = File::create(&p).unwrap();
        a.write_all(&data[0][..10_000]).unwrap();
        b.write_all(&data[1][..10_000]).unwrap();
        a.write_all(&data[0][10_000..]).unwrap();
        b.write_all(&data[1][10_000..]).unwrap();
        let mut files = [Some(a), Some(b)];
        close_file(files[order[0]].take().unwrap()).unwrap();
        let cands: [(&str, &[u8]); 2] = [("A", &data[0]), ("B", &data[1])];
        let first = cands[order[0]].0;
        // Read from another thread: this one still writes the other and
        // would see its pending version.
        let mid = std::thread::scope(|s| s.spawn(|| fs::read(&p).unwrap()).join().unwrap());
        assert!(
            mid == data[order[0]],
            "after {first} closed first: read {}, want {first}",
            describe(&mid, &cands)
        );
        close_file(files[order[1]].take().unwrap()).unwrap();
        let last = cands[order[1]].0;
        let end = fs::read(&p).unwrap();
        assert!(
            end == data[order[1]],
            "after {last} closed last: read {}, want {last}",
            describe(&end, &cands)
        );
    }
    assert_eq!(m.ns_stat("h", "entries"), 1);
}
