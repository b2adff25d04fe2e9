//! Issue 16, export/import: `cachefs export` writes the live entries into a
//! zstd-compressed tar that `tar` reads; `cachefs import` loads it into a
//! live mount or a backing dir by the rules of any write, skipping what is
//! there, and a rerun after an interruption finishes the job.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CFG: &str = r#"
[namespace.a]
ttl = "1d"

[namespace.b]
ttl = "1d"
"#;

fn cachefs<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[track_caller]
fn cachefs_ok<S: AsRef<OsStr>>(args: &[S]) -> Value {
    let out = cachefs(args);
    let words: Vec<_> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    assert!(
        out.status.success(),
        "cachefs {words:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing on stderr"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{words:?} --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn s(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// One `cachefs: error: ...` line on stderr naming `needle`.
#[track_caller]
fn assert_one_error_line(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(
        err.starts_with("cachefs: error: ") && err.contains(needle),
        "stderr names {needle:?}: {err}"
    );
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sets an entry's mtime `secs_ago` seconds back, with a nanosecond part
/// (by path, as `touch -d` does: the TTL clock's new start).
fn set_age(p: &Path, secs_ago: u64, nanos: u32) {
    let t = UNIX_EPOCH + Duration::new(now_secs() - secs_ago, nanos);
    filetime_by_path(p, t).unwrap_or_else(|e| panic!("set mtime of {}: {e}", p.display()));
}

fn filetime_by_path(p: &Path, t: SystemTime) -> std::io::Result<()> {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        },
    ];
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string and an array of two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What a mount shows of one entry.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    sha256: String,
    len: u64,
    mtime_ns: i128,
    mode: u32,
    /// `user.cachefs.expires`: unix seconds, or "never".
    expires: String,
}

/// Every entry of every namespace of a mount, read through it.
fn entries(mnt: &Path) -> BTreeMap<(Vec<u8>, Vec<u8>), Seen> {
    let mut out = BTreeMap::new();
    for ns in list(mnt) {
        if ns == b".cachefs" {
            continue;
        }
        let dir = mnt.join(OsStr::from_bytes(&ns));
        for key in list(&dir) {
            let p = dir.join(OsStr::from_bytes(&key));
            let md = fs::metadata(&p).unwrap();
            let bytes = read_file(&p).unwrap();
            assert_eq!(bytes.len() as u64, md.len());
            let seen = Seen {
                sha256: sha256_hex(&bytes),
                len: md.len(),
                mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
                mode: md.mode() & 0o7777,
                expires: getxattr_str(&p, "user.cachefs.expires").unwrap(),
            };
            assert_eq!(
                getxattr_str(&p, "user.cachefs.sha256").unwrap(),
                seen.sha256,
                "the digest the mount gives is the content's"
            );
            out.insert((ns.clone(), key), seen);
        }
    }
    out
}

/// `entries`, with expiry compared within a few seconds (the archive
/// carries TTLs in whole seconds from the mtime).
#[track_caller]
fn assert_same_entries(
    got: &BTreeMap<(Vec<u8>, Vec<u8>), Seen>,
    want: &BTreeMap<(Vec<u8>, Vec<u8>), Seen>,
) {
    let keys = |m: &BTreeMap<(Vec<u8>, Vec<u8>), Seen>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(got), keys(want), "the same keys");
    for (k, w) in want {
        let g = &got[k];
        let name = format!(
            "{:?}",
            (String::from_utf8_lossy(&k.0), String::from_utf8_lossy(&k.1))
        );
        assert_eq!(
            (&g.sha256, g.len, g.mtime_ns, g.mode),
            (&w.sha256, w.len, w.mtime_ns, w.mode),
            "{name}: bytes, mtime and mode"
        );
        match (g.expires.parse::<i64>(), w.expires.parse::<i64>()) {
            (Ok(a), Ok(b)) => assert!((a - b).abs() <= 2, "{name}: expires {a} vs {b}"),
            _ => assert_eq!(g.expires, w.expires, "{name}: never expires"),
        }
    }
}

/// Names `tar --zstd -tf` lists.
fn tar_list(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("--zstd")
        .arg("-tf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "tar has no warning"
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// A mount of a few namespaces whose entries stretch the format: empty
/// and 1 MB contents, keys with a backslash, a newline, a non-UTF-8 byte
/// and 255 bytes, own TTLs, set mtimes and modes.
fn populated() -> Mount {
    let m = Mount::new(CFG);
    let mut rng = Rng::new(16);
    let keys: Vec<Vec<u8>> = vec![
        b"plain".to_vec(),
        b"empty".to_vec(),
        b"big".to_vec(),
        b"back\\slash and space".to_vec(),
        b"new\nline".to_vec(),
        vec![b'k', 0xff, 0xfe, b'.'],
        vec![b'x'; 255],
    ];
    for (i, key) in keys.iter().enumerate() {
        let len = match key.as_slice() {
            b"empty" => 0,
            b"big" => 1 << 20,
            _ => 100 + i * 5000,
        };
        let ns = if i % 2 == 0 { "a" } else { "b" };
        let p = m.path_bytes(ns, key);
        write_file(&p, &rng.bytes(len)).unwrap();
        if i % 3 == 0 {
            setxattr(
                &p,
                "user.cachefs.ttl",
                format!("{}", 3600 * (i + 1)).as_bytes(),
            )
            .unwrap();
        }
        if i % 2 == 1 {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        }
        set_age(&p, 60 * i as u64, 123_456_789);
    }
    fs::create_dir(m.ns("c")).unwrap();
    write_file(&m.path("c", "on-default-ttl"), b"c's entry").unwrap();
    m
}

#[test]
fn export_then_import_gives_the_same_keys_bytes_ttls_mtimes_and_modes() {
    if skip_without_fuse() {
        return;
    }
    let src = populated();
    let want = entries(&src.mnt);
    assert_eq!(want.len(), 8);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("cache.tar.zst");

    let out = cachefs_ok(&[
        OsStr::new("export"),
        OsStr::new("--mount"),
        s(&src.mnt),
        OsStr::new("--json"),
        s(&archive),
    ]);
    assert_eq!(out["entries"], 8, "{out}");
    assert_eq!(out["unreadable"], 0, "{out}");
    assert!(!work.path().join("cache.tar.zst.partial").exists());

    // Plain tar lists it (the pax path: every key whole) without a warning.
    let names = tar_list(&archive);
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(names.contains(&"a/plain".to_string()), "{names:?}");
    assert!(names.contains(&"c/on-default-ttl".to_string()), "{names:?}");
    assert!(
        names.contains(&format!("a/{}", "x".repeat(255))),
        "{names:?}"
    );

    // Plain `tar -x` gives one readable file per entry, under its exact name.
    let x = work.path().join("x");
    fs::create_dir(&x).unwrap();
    sh(&format!("tar --zstd -xf {} -C {}", q(&archive), q(&x)));
    for ((ns, key), seen) in &want {
        let p = x.join(OsStr::from_bytes(ns)).join(OsStr::from_bytes(key));
        assert_eq!(
            sha256_hex(&fs::read(&p).unwrap()),
            seen.sha256,
            "{}",
            p.display()
        );
    }

    // Offline into a fresh backing dir, then mounted.
    let fresh = work.path().join("fresh");
    let out = cachefs_ok(&[
        OsStr::new("import"),
        OsStr::new("--backing"),
        s(&fresh),
        OsStr::new("--json"),
        s(&archive),
    ]);
    assert_eq!(
        (out["imported"].as_u64(), out["refused"].as_u64()),
        (Some(8), Some(0)),
        "{out}"
    );
    let offline = Mount::with_backing(CFG, &fresh);
    assert_same_entries(&entries(&offline.mnt), &want);

    // Into a live mount of the embedded defaults (namespaces made on demand).
    let live = Mount::start(MountOpts::default());
    let out = cachefs_ok(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        s(&live.mnt),
        OsStr::new("--json"),
        s(&archive),
    ]);
    assert_eq!(out["imported"], 8, "{out}");
    assert_same_entries(&entries(&live.mnt), &want);
    assert_eq!(live.total_stat("entries"), 8);

    // A rerun finds every entry there: nothing written.
    let publishes = live.total_stat("publishes");
    let out = cachefs_ok(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        s(&live.mnt),
        OsStr::new("--json"),
        s(&archive),
    ]);
    assert_eq!(
        (out["imported"].as_u64(), out["present"].as_u64()),
        (Some(0), Some(8)),
        "{out}"
    );
    assert_eq!(
        live.total_stat("publishes"),
        publishes,
        "a rerun publishes nothing"
    );

    // Offline export of a backing dir beside its live daemon (read only),
    // with the daemon's config for the namespace TTLs, imported offline.
    let archive2 = work.path().join("offline.tar.zst");
    let out = cachefs_ok(&[
        OsStr::new("export"),
        OsStr::new("--backing"),
        s(&src.backing),
        OsStr::new("--config"),
        s(src.config_path.as_ref().unwrap()),
        OsStr::new("--json"),
        s(&archive2),
    ]);
    assert_eq!(out["entries"], 8, "{out}");
    let fresh2 = work.path().join("fresh2");
    let out = cachefs_ok(&[
        OsStr::new("import"),
        OsStr::new("--backing"),
        s(&fresh2),
        OsStr::new("--json"),
        s(&archive2),
    ]);
    assert_eq!(out["imported"], 8, "{out}");
    let offline2 = Mount::with_backing(CFG, &fresh2);
    assert_same_entries(&entries(&offline2.mnt), &want);
}

#[test]
fn filters_pick_by_namespace_prefix_and_age() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    for ns in ["a", "b"] {
        for key in ["p-old", "p-new", "q-old", "q-new"] {
            let p = m.path(ns, key);
            write_file(&p, key.as_bytes()).unwrap();
            if key.ends_with("old") {
                set_age(&p, 3 * 3600, 0);
            }
        }
    }
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("x.tar.zst");
    let cfg = m.config_path.clone().unwrap();
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["--namespace", "a"],
            &["a/p-new", "a/p-old", "a/q-new", "a/q-old"],
        ),
        (
            &["--prefix", "p-"],
            &["a/p-new", "a/p-old", "b/p-new", "b/p-old"],
        ),
        (
            &["--older-than", "1h"],
            &["a/p-old", "a/q-old", "b/p-old", "b/q-old"],
        ),
        (
            &["--newer-than", "1h", "--namespace", "b"],
            &["b/p-new", "b/q-new"],
        ),
        (
            &["--prefix", "q-", "--older-than", "2h"],
            &["a/q-old", "b/q-old"],
        ),
    ];
    for (filter, want) in cases {
        for source in [
            vec![OsStr::new("--mount"), s(&m.mnt)],
            vec![
                OsStr::new("--backing"),
                s(&m.backing),
                OsStr::new("--config"),
                s(&cfg),
            ],
        ] {
            let _ = fs::remove_file(&archive);
            let mut args = vec![OsStr::new("export"), OsStr::new("--json")];
            args.extend(source.iter().copied());
            args.extend(filter.iter().map(OsStr::new));
            args.push(s(&archive));
            let out = cachefs_ok(&args);
            assert_eq!(
                out["entries"],
                want.len(),
                "{filter:?} from {source:?}: {out}"
            );
            assert_eq!(
                tar_list(&archive),
                want.to_vec(),
                "{filter:?} from {source:?}"
            );
        }
    }
    let out = cachefs(&["export", "--older-than", "1h", "--newer-than", "2h", "x"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the two ages exclude each other"
    );
    // A failed export leaves no file, partial or whole.
    let _ = fs::remove_file(&archive);
    let out = cachefs(&[
        OsStr::new("export"),
        OsStr::new("--mount"),
        work.path().as_os_str(),
        s(&archive),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&out, "is not a cachefs mount");
    assert_eq!(
        fs::read_dir(work.path()).unwrap().count(),
        0,
        "nothing left in {work:?}"
    );
}

/// An archive of `n` entries in namespace "a", each `len` bytes.
fn archive_of(m: &Mount, n: usize, len: usize, to: &Path) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(7);
    let mut all = Vec::new();
    for i in 0..n {
        let key = format!("k{i:04}");
        let body = rng.bytes(len);
        write_file(&m.path("a", &key), &body).unwrap();
        all.push((key, body));
    }
    let out = cachefs_ok(&[
        OsStr::new("export"),
        OsStr::new("--mount"),
        s(&m.mnt),
        OsStr::new("--json"),
        s(to),
    ]);
    assert_eq!(out["entries"], n);
    all
}

#[test]
fn an_interrupted_import_rerun_completes_and_skips_what_is_there() {
    if skip_without_fuse() {
        return;
    }
    let src = Mount::new(CFG);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("all.tar.zst");
    let all = archive_of(&src, 300, 20_000, &archive);
    // Cut the archive in the middle: the import stops there with one line.
    let bytes = fs::read(&archive).unwrap();
    let cut = work.path().join("cut.tar.zst");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

    let dst = Mount::new(CFG);
    let out = cachefs(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        s(&dst.mnt),
        s(&cut),
    ]);
    assert_eq!(out.status.code(), Some(2), "a cut archive is an error");
    assert_one_error_line(&out, "damaged or cut short");
    let first = list_str(&dst.ns("a"));
    assert!(
        !first.is_empty() && first.len() < all.len(),
        "part of it went in: {} of {}",
        first.len(),
        all.len()
    );
    // What went in is whole.
    for (key, body) in &all {
        if let Ok(got) = read_file(&dst.path("a", key)) {
            assert!(got == *body, "{key} is whole or absent");
        }
    }
    let out = cachefs_ok(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        s(&dst.mnt),
        OsStr::new("--json"),
        s(&archive),
    ]);
    assert_eq!(
        (out["imported"].as_u64(), out["present"].as_u64()),
        (
            Some((all.len() - first.len()) as u64),
            Some(first.len() as u64)
        ),
        "the rerun does what is left: {out}"
    );
    for (key, body) in &all {
        assert!(read_file(&dst.path("a", key)).unwrap() == *body, "{key}");
    }

    // Offline, the same (a cut into a fresh backing dir, then the whole).
    let fresh = work.path().join("fresh");
    let out = cachefs(&[
        OsStr::new("import"),
        OsStr::new("--backing"),
        s(&fresh),
        s(&cut),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&out, "damaged or cut short");
    let out = cachefs_ok(&[
        OsStr::new("import"),
        OsStr::new("--backing"),
        s(&fresh),
        OsStr::new("--json"),
        s(&archive),
    ]);
    assert_eq!(
        out["imported"].as_u64().unwrap() + out["present"].as_u64().unwrap(),
        all.len() as u64,
        "{out}"
    );
    assert!(out["present"].as_u64().unwrap() > 0, "{out}");
    let m = Mount::with_backing(CFG, &fresh);
    for (key, body) in &all {
        assert!(read_file(&m.path("a", key)).unwrap() == *body, "{key}");
    }
}

#[test]
fn a_killed_import_rerun_completes() {
    if skip_without_fuse() {
        return;
    }
    let src = Mount::new(CFG);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("all.tar.zst");
    let all = archive_of(&src, 400, 30_000, &archive);
    let dst = Mount::new(CFG);
    // Killed four times at growing progress, each rerun going further.
    for at_least in [10, 80, 160, 240] {
        let mut child = Command::new(BIN)
            .args([
                OsStr::new("import"),
                OsStr::new("--mount"),
                s(&dst.mnt),
                s(&archive),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = wait_until(Duration::from_secs(30), || {
            list(&dst.ns("a")).len() >= at_least
        });
        // SAFETY: kill of the child this test spawned, by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        assert!(started, "the import got to {at_least} entries");
        for (key, body) in &all {
            let p = dst.path("a", key);
            if let Ok(got) = read_file(&p) {
                // The one gap a death can leave (between the create and the
                // expired-at-birth guard): empty, with a mode no value has.
                let gap = got.is_empty() && fs::metadata(&p).unwrap().mode() & 0o7777 == 0o200;
                assert!(
                    got == *body || gap,
                    "{key} is whole or absent ({} bytes)",
                    got.len()
                );
            }
        }
    }
    // Finished: whole and past the 1 s guard a death may leave a whole
    // entry behind (killed after its last write, before its real TTL).
    let finished = all
        .iter()
        .filter(|(key, body)| {
            let p = dst.path("a", key);
            read_file(&p).is_ok_and(|got| got == *body)
                && getxattr_str(&p, "user.cachefs.ttl").is_ok_and(|t| t != "1")
        })
        .count();
    let out = cachefs_ok(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        s(&dst.mnt),
        OsStr::new("--json"),
        s(&archive),
    ]);
    assert_eq!(
        out["present"].as_u64().unwrap() + out["imported"].as_u64().unwrap(),
        all.len() as u64,
        "{out}"
    );
    // Every finished entry is skipped; the others are written again.
    assert!(
        out["present"].as_u64().unwrap() >= finished as u64,
        "{out}, {finished} finished"
    );
    assert_eq!(list(&dst.ns("a")).len(), all.len());
}

/// Rewrites the one member whose content holds `needle`: one byte of it
/// flipped, so the stream is sound but the member fails its checksum.
fn corrupt_member(archive: &Path, needle: &[u8], to: &Path) {
    let tar = zstd::decode_all(fs::File::open(archive).unwrap()).unwrap();
    let at = tar
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the member's content is in the tar");
    let mut bad = tar.clone();
    bad[at + needle.len() / 2] ^= 0x20;
    fs::write(to, zstd::encode_all(&bad[..], 3).unwrap()).unwrap();
}

#[test]
fn bad_input_is_one_error_line_and_loses_nothing_imported() {
    if skip_without_fuse() {
        return;
    }
    let src = Mount::new(CFG);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("all.tar.zst");
    let all = archive_of(&src, 20, 5000, &archive);
    let dst = Mount::new(CFG);

    let junk = work.path().join("junk");
    fs::write(&junk, b"this is not an archive\n").unwrap();
    let out = cachefs(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        s(&dst.mnt),
        s(&junk),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&out, "not a cachefs archive");
    let out = cachefs(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        s(&dst.mnt),
        s(&work.path().join("missing")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&out, "cannot open");

    // The 11th member (k0010) is damaged: the 10 before it go in, it does
    // not, and nothing after it is tried.
    let bad = work.path().join("bad.tar.zst");
    corrupt_member(&archive, &all[10].1[100..164], &bad);
    let out = cachefs(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        s(&dst.mnt),
        s(&bad),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&out, "k0010 fails its checksum");
    let got = list_str(&dst.ns("a"));
    let want: Vec<String> = all[..10].iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(got, want);
    for (key, body) in &all[..10] {
        assert!(read_file(&dst.path("a", key)).unwrap() == *body, "{key}");
    }
    // Offline: the same refusal, and what went in is kept.
    let fresh = work.path().join("fresh");
    let out = cachefs(&[
        OsStr::new("import"),
        OsStr::new("--backing"),
        s(&fresh),
        s(&bad),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&out, "k0010 fails its checksum");
    let m = Mount::with_backing(CFG, &fresh);
    assert_eq!(list_str(&m.ns("a")), want);
}

#[test]
fn import_follows_the_targets_rules() {
    if skip_without_fuse() {
        return;
    }
    let src = Mount::new(CFG);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("x.tar.zst");
    let hex_key = sha256_hex(b"x");
    write_file(&src.path("a", "small"), &[1; 1000]).unwrap();
    write_file(&src.path("a", "large"), &[2; 200_000]).unwrap();
    write_file(&src.path("b", &hex_key), b"hex").unwrap();
    write_file(&src.path("b", "not-hex"), b"plain").unwrap();
    cachefs_ok(&[
        OsStr::new("export"),
        OsStr::new("--mount"),
        s(&src.mnt),
        OsStr::new("--json"),
        s(&archive),
    ]);
    let strict = r#"
[namespace.a]
max_entry_bytes = "100KiB"

[namespace.b]
key_format = "sha256"
"#;
    // Live: the daemon refuses (EFBIG, EINVAL); each refusal is one line,
    // the rest goes in, the exit status is 1.
    let dst = Mount::new(strict);
    let out = cachefs(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        s(&dst.mnt),
        OsStr::new("--json"),
        s(&archive),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.contains("a/large") && err.contains("b/not-hex"),
        "{err}"
    );
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (sum["imported"].as_u64(), sum["refused"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(list_str(&dst.ns("a")), vec!["small"]);
    assert_eq!(list_str(&dst.ns("b")), vec![hex_key.clone()]);

    // Offline, the same rules from --config.
    let cfg = work.path().join("strict.toml");
    fs::write(&cfg, strict).unwrap();
    let fresh = work.path().join("fresh");
    let out = cachefs(&[
        OsStr::new("import"),
        OsStr::new("--backing"),
        s(&fresh),
        OsStr::new("--config"),
        s(&cfg),
        OsStr::new("--json"),
        s(&archive),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (sum["imported"].as_u64(), sum["refused"].as_u64()),
        (Some(2), Some(2))
    );
    let m = Mount::with_backing(strict, &fresh);
    assert_eq!(list_str(&m.ns("a")), vec!["small"]);
    assert_eq!(list_str(&m.ns("b")), vec![hex_key]);

    // A backing dir a live daemon holds is refused offline: use its mount.
    let out = cachefs(&[
        OsStr::new("import"),
        OsStr::new("--backing"),
        s(&m.backing),
        s(&archive),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&out, "import through its mount");
}

#[test]
fn an_entry_that_expires_on_the_way_is_skipped_and_counted() {
    if skip_without_fuse() {
        return;
    }
    let src = Mount::new(CFG);
    let p = src.path("a", "short");
    write_file(&p, b"soon gone").unwrap();
    write_file(&src.path("a", "long"), b"stays").unwrap();
    // Published an hour ago with a TTL that ends 2 s from now.
    set_age(&p, 3600, 0);
    setxattr(&p, "user.cachefs.ttl", b"3602").unwrap();
    let expires: u64 = getxattr_str(&p, "user.cachefs.expires")
        .unwrap()
        .parse()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("x.tar.zst");
    let out = cachefs_ok(&[
        OsStr::new("export"),
        OsStr::new("--mount"),
        s(&src.mnt),
        OsStr::new("--json"),
        s(&archive),
    ]);
    assert_eq!(out["entries"], 2, "both live at export");
    sleep_until_wall(UNIX_EPOCH + Duration::from_secs(expires + 1));
    let dst = Mount::new(CFG);
    let out = cachefs_ok(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        s(&dst.mnt),
        OsStr::new("--json"),
        s(&archive),
    ]);
    assert_eq!(
        (out["imported"].as_u64(), out["expired"].as_u64()),
        (Some(1), Some(1)),
        "{out}"
    );
    assert_eq!(list_str(&dst.ns("a")), vec!["long"]);
}

#[test]
fn export_to_stdout_and_import_from_stdin() {
    if skip_without_fuse() {
        return;
    }
    let src = Mount::new(CFG);
    write_file(&src.path("a", "k"), b"through a pipe").unwrap();
    let dst = Mount::new(CFG);
    let line = format!(
        "{} export --mount {} - | {} import --mount {} --json -",
        BIN,
        q(&src.mnt),
        BIN,
        q(&dst.mnt)
    );
    let out = sh(&line);
    let sum: Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap();
    assert_eq!(sum["imported"], 1, "{out}");
    assert_eq!(read_file(&dst.path("a", "k")).unwrap(), b"through a pipe");
}

#[test]
fn a_tar_made_by_hand_imports_with_its_user_xattrs() {
    if skip_without_fuse() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("src");
    fs::create_dir_all(dir.join("web")).unwrap();
    let file = dir.join("web/page");
    fs::write(&file, b"<html>").unwrap();
    if sh(&format!(
        "setfattr -n user.etag -v '\"v1\"' {} 2>/dev/null && echo ok || true",
        q(&file)
    ))
    .trim()
        != "ok"
    {
        eprintln!("SKIP: {} takes no user xattrs", work.path().display());
        return;
    }
    let archive = work.path().join("hand.tar.zst");
    sh(&format!(
        "tar --zstd --xattrs -cf {} -C {} web",
        q(&archive),
        q(&dir)
    ));
    let dst = Mount::new(CFG);
    let sum = cachefs_ok(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        s(&dst.mnt),
        OsStr::new("--json"),
        s(&archive),
    ]);
    // The directory member is no entry; the file is, on web's default TTL.
    assert_eq!(
        (sum["imported"].as_u64(), sum["not_entries"].as_u64()),
        (Some(1), Some(1)),
        "{sum}"
    );
    let p = dst.path("web", "page");
    assert_eq!(read_file(&p).unwrap(), b"<html>");
    // The entry keeps its xattr (setfattr takes the quotes of `-v "v1"`
    // as marking text: the value is `v1`), and none is counted dropped.
    assert_eq!(getxattr(&p, "user.etag").unwrap(), b"v1", "{sum}");
    assert_eq!(sum["xattrs_dropped"], 0, "{sum}");
}
