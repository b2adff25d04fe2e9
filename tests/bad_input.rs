//! Acceptance 7: bad input. ENAMETOOLONG for a 256-byte name; names with spaces,
//! newlines and non-UTF-8 bytes round-trip and are listed; a `key_format = "sha256"`
//! namespace refuses other names with EINVAL; garbage, truncated, tampered, misplaced
//! and symlinked files planted in the backing dir neither crash the daemon nor get
//! served; bad configs, an uncreatable backing dir and a missing mountpoint give one
//! stderr line, exit 1 and no panic text; a missing backing dir whose parent exists is
//! created (mode 0700).

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const CFG: &str = r#"
[cache]
max_bytes = "64MiB"

[namespace.b]

[namespace.h]
key_format = "sha256"
"#;

#[test]
fn name_length_limit() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let n255 = "a".repeat(255);
    let n256 = "b".repeat(256);
    let p255 = m.path("b", &n255);
    write_file(&p255, b"max length name").unwrap();
    assert_eq!(fs::read(&p255).unwrap(), b"max length name");
    assert_eq!(list_str(&m.ns("b")), vec![n255.clone()]);
    let p256 = m.path("b", &n256);
    assert_errno(
        File::create(&p256),
        libc::ENAMETOOLONG,
        "create of a 256-byte name",
    );
    assert_errno(
        File::open(&p256),
        libc::ENAMETOOLONG,
        "open of a 256-byte name",
    );
    assert_errno(
        fs::metadata(&p256),
        libc::ENAMETOOLONG,
        "stat of a 256-byte name",
    );
    assert_errno(
        fs::rename(&p255, &p256),
        libc::ENAMETOOLONG,
        "rename to a 256-byte name",
    );
    assert_errno(
        fs::create_dir(m.ns(&n256)),
        libc::ENAMETOOLONG,
        "mkdir of a 256-byte namespace",
    );
    // Multi-byte UTF-8: 255 bytes is fine, 256 bytes is not.
    let e255 = format!("{}{}", "é".repeat(127), "x"); // 254 + 1 bytes
    assert_eq!(e255.len(), 255);
    write_file(&m.path("b", &e255), b"utf8").unwrap();
    assert_eq!(fs::read(m.path("b", &e255)).unwrap(), b"utf8");
    assert_errno(
        File::create(m.path("b", &"é".repeat(128))),
        libc::ENAMETOOLONG,
        "256-byte UTF-8 name",
    );
    assert_eq!(list(&m.ns("b")).len(), 2, "nothing else was created");
}

#[test]
fn odd_names_round_trip() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let names: Vec<&[u8]> = vec![
        b"with space",
        b" leading and trailing ",
        b"new\nline",
        b"tab\there",
        b"\xff\xfe\x80 not utf-8",
        b"\x01\x02\x7f controls",
        "ünïcødé ✓ 日本".as_bytes(),
        b".hidden",
        b"-dash",
        b"...",
        b"back\\slash",
        b"quote'\"",
        b"*?[glob]",
        b"x",
    ];
    for (i, n) in names.iter().enumerate() {
        let p = m.path_bytes("b", n);
        let data = format!("value {i}").repeat(i * 100 + 1);
        write_file(&p, data.as_bytes())
            .unwrap_or_else(|e| panic!("write {:?}: {e}", String::from_utf8_lossy(n)));
        assert_eq!(
            fs::read(&p).unwrap(),
            data.as_bytes(),
            "read {:?}",
            String::from_utf8_lossy(n)
        );
        assert_eq!(fs::metadata(&p).unwrap().len(), data.len() as u64);
    }
    let mut want: Vec<Vec<u8>> = names.iter().map(|n| n.to_vec()).collect();
    want.sort();
    assert_eq!(
        list(&m.ns("b")),
        want,
        "readdir returns the exact name bytes"
    );
    // Another process sees them too (ls -b escapes the odd bytes; -A shows dot names).
    let out = sh(&format!("ls -1bA {} | wc -l", q(&m.ns("b"))));
    assert_eq!(out.trim(), names.len().to_string());
    // rename between odd names, unlink each.
    fs::rename(
        m.path_bytes("b", names[2]),
        m.path_bytes("b", b"renamed\xff"),
    )
    .unwrap();
    assert!(fs::read(m.path_bytes("b", b"renamed\xff")).is_ok());
    assert_errno(
        fs::metadata(m.path_bytes("b", names[2])),
        libc::ENOENT,
        "old odd name after rename",
    );
    for n in names.iter().filter(|n| **n != names[2]) {
        fs::remove_file(m.path_bytes("b", n)).unwrap();
    }
    fs::remove_file(m.path_bytes("b", b"renamed\xff")).unwrap();
    assert!(list(&m.ns("b")).is_empty());
}

#[test]
fn sha256_namespace_refuses_other_names() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let good = sha256_hex(b"some input text");
    let p = m.path("h", &good);
    write_file(&p, b"valid key").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"valid key");
    let bad = [
        "abc".to_string(),
        good.to_uppercase(),
        good[..63].to_string(),
        format!("{good}0"),
        format!("{}g", &good[..63]),
        format!("{good}.tmp"),
        " ".repeat(64),
    ];
    for b in &bad {
        assert_errno(
            File::create(m.path("h", b)),
            libc::EINVAL,
            &format!("create {b:?} in a sha256 namespace"),
        );
        assert_errno(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.path("h", b)),
            libc::EINVAL,
            &format!("O_EXCL create {b:?} in a sha256 namespace"),
        );
    }
    assert_errno(
        fs::rename(&p, m.path("h", "not-hex")),
        libc::EINVAL,
        "rename to a non-sha256 name",
    );
    assert_eq!(
        fs::read(&p).unwrap(),
        b"valid key",
        "refused rename kept the entry"
    );
    assert_eq!(list_str(&m.ns("h")), vec![good.clone()]);
    // Other namespaces take any name.
    write_file(&m.path("b", "abc"), b"fine").unwrap();
}

fn plant_and_mount(with_snapshot: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    let cfg = r#"
[namespace.g]
"#;
    let mut rng = Rng::from_time("planted files");
    let good = rng.bytes(12_345);
    let moved = rng.bytes(5000);
    let to_trunc = rng.bytes(20_000);
    let to_flip = rng.bytes(20_000);
    let to_flip_trailer = rng.bytes(9000);
    let to_replace = rng.bytes(7000);
    {
        let mut m = Mount::with_backing(cfg, &backing);
        write_file(&m.path("g", "good"), &good).unwrap();
        write_file(&m.path("g", "moved-src"), &moved).unwrap();
        write_file(&m.path("g", "trunc"), &to_trunc).unwrap();
        write_file(&m.path("g", "flip"), &to_flip).unwrap();
        write_file(&m.path("g", "flip-trailer"), &to_flip_trailer).unwrap();
        write_file(&m.path("g", "replaced"), &to_replace).unwrap();
        assert!(m.stop().success());
    }
    let bp = |k: &[u8]| backing_entry_path(&backing, "g", k);
    for k in [
        "good",
        "moved-src",
        "trunc",
        "flip",
        "flip-trailer",
        "replaced",
    ] {
        assert!(
            bp(k.as_bytes()).is_file(),
            "backing file of g/{k} not at {} (layout)",
            bp(k.as_bytes()).display()
        );
    }
    // Truncate one entry to half its length.
    let f = OpenOptions::new().write(true).open(bp(b"trunc")).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
    drop(f);
    // Flip a content byte of another (the content comes first in the file).
    let mut b = fs::read(bp(b"flip")).unwrap();
    b[10_000] ^= 0x40;
    fs::write(bp(b"flip"), &b).unwrap();
    // Flip a byte in the metadata trailer of a third.
    let mut b = fs::read(bp(b"flip-trailer")).unwrap();
    let i = 9000 + (b.len() - 9000) / 2;
    b[i] ^= 0x01;
    fs::write(bp(b"flip-trailer"), &b).unwrap();
    // Pure garbage over a published key's file (same length).
    let len = fs::metadata(bp(b"replaced")).unwrap().len() as usize;
    fs::write(bp(b"replaced"), rng.bytes(len)).unwrap();
    // A valid entry file copied to another key's path (its header names another key).
    let dst = bp(b"moved-dst");
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    fs::copy(bp(b"moved-src"), &dst).unwrap();
    // Garbage at the exact path of a key that was never written.
    let known = bp(b"known");
    fs::create_dir_all(known.parent().unwrap()).unwrap();
    fs::write(&known, rng.bytes(5000)).unwrap();
    // An empty file at another key's path.
    let empty = bp(b"empty");
    fs::create_dir_all(empty.parent().unwrap()).unwrap();
    fs::write(&empty, b"").unwrap();
    // A symlink at a key's path pointing to a valid entry file (never followed).
    let link = bp(b"link");
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(bp(b"good"), &link).unwrap();
    // A directory where an entry file would be.
    fs::create_dir_all(bp(b"dir")).unwrap();
    // Garbage at random shard paths, and a stray file in data/.
    for i in 0..20 {
        let h = hex(&rng.bytes(32));
        let p = backing.join("data").join(&h[0..2]).join(&h[2..4]).join(&h);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let n = if i == 0 { 0 } else { rng.range(1, 10_000) };
        fs::write(&p, rng.bytes(n)).unwrap();
    }
    fs::write(backing.join("data").join("stray-file"), b"not an entry").unwrap();
    // An orphan in staging.
    fs::create_dir_all(backing.join("staging")).unwrap();
    fs::write(
        backing.join("staging").join("orphan-from-a-crash"),
        rng.bytes(3000),
    )
    .unwrap();
    if !with_snapshot {
        fs::remove_file(backing.join("index.snapshot")).unwrap();
    } else {
        assert!(
            backing.join("index.snapshot").exists(),
            "no index.snapshot after a clean stop"
        );
    }

    let mut m = Mount::with_backing(cfg, &backing);
    let what = if with_snapshot {
        "with snapshot"
    } else {
        "after scan"
    };
    assert_eq!(
        fs::read(m.path("g", "good")).unwrap(),
        good,
        "{what}: intact entry"
    );
    assert_eq!(
        fs::read(m.path("g", "moved-src")).unwrap(),
        moved,
        "{what}: intact entry moved-src"
    );
    for k in ["known", "moved-dst", "empty", "link", "dir"] {
        assert_errno(
            File::open(m.path("g", k)),
            libc::ENOENT,
            &format!("{what}: planted file at g/{k}'s path"),
        );
    }
    for k in ["trunc", "flip", "flip-trailer", "replaced"] {
        let p = m.path("g", k);
        match fs::read(&p) {
            Ok(b) => panic!(
                "{what}: corrupted entry g/{k} was served ({} bytes)",
                b.len()
            ),
            Err(e) => assert!(
                matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EIO)),
                "{what}: read of corrupted g/{k}: {e} (want ENOENT or EIO)"
            ),
        }
        // Once detected it is a plain miss.
        assert_errno(
            File::open(&p),
            libc::ENOENT,
            &format!("{what}: corrupted g/{k} on the second try"),
        );
    }
    assert_eq!(
        list_str(&m.ns("g")),
        vec!["good", "moved-src"],
        "{what}: listing"
    );
    assert!(m.is_alive(), "{what}: daemon died\n{}", m.log());
    assert!(
        !m.log().contains("panicked"),
        "{what}: daemon panicked:\n{}",
        m.log()
    );
    assert!(
        wait_until(Duration::from_secs(3), || m.ns_stat("g", "entries") == 2),
        "{what}: stats entries: {}",
        m.stats()
    );
    let quarantine = backing.join("quarantine");
    assert!(
        wait_until(Duration::from_secs(3), || files_under(&quarantine).len()
            >= 4),
        "{what}: corrupted entries not quarantined: {:?}",
        files_under(&quarantine)
    );
    assert!(
        wait_until(Duration::from_secs(3), || !backing
            .join("staging/orphan-from-a-crash")
            .exists()),
        "{what}: staging orphan not removed at start"
    );
    // The planted paths can be written normally now.
    for k in ["known", "trunc", "moved-dst"] {
        write_file(&m.path("g", k), k.as_bytes()).unwrap();
        assert_eq!(
            fs::read(m.path("g", k)).unwrap(),
            k.as_bytes(),
            "{what}: rewrite g/{k}"
        );
    }
    let target = bp(b"good");
    assert!(
        fs::symlink_metadata(&target)
            .map(|md| md.is_file())
            .unwrap_or(false),
        "{what}: the symlink's target (g/good's own file) was replaced or removed"
    );
    assert_eq!(fs::read(m.path("g", "good")).unwrap(), good);
    let st = m.stop();
    assert!(st.success(), "{what}: clean stop after bad input: {st}");
}

#[test]
fn planted_garbage_with_index_snapshot() {
    if skip_without_fuse() {
        return;
    }
    plant_and_mount(true);
}

#[test]
fn planted_garbage_with_scan() {
    if skip_without_fuse() {
        return;
    }
    plant_and_mount(false);
}

#[test]
fn startup_errors_are_one_line() {
    // Needs no FUSE: every case must fail before mounting.
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mnt = t.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let backing = t.join("backing");
    let a_file = t.join("a-file");
    fs::write(&a_file, b"x").unwrap();
    let cfg = |name: &str, text: &str| {
        let p = t.join(format!("{name}.toml"));
        fs::write(&p, text).unwrap();
        p
    };
    struct Case {
        what: &'static str,
        backing: std::path::PathBuf,
        mnt: std::path::PathBuf,
        config: Option<std::path::PathBuf>,
        mentions: Option<String>,
    }
    let c = |what, config: Option<std::path::PathBuf>, mentions: Option<&str>| Case {
        what,
        backing: backing.clone(),
        mnt: mnt.clone(),
        config,
        mentions: mentions.map(String::from),
    };
    let cases = vec![
        c(
            "TOML syntax error",
            Some(cfg("syntax", "[cache\nmax_bytes = 1\n")),
            None,
        ),
        c(
            "unknown [cache] field",
            Some(cfg("unknown", "[cache]\nbogus_field = 1\n")),
            Some("bogus_field"),
        ),
        c(
            "unknown top-level table",
            Some(cfg("table", "[bogus_table]\nx = 1\n")),
            Some("bogus_table"),
        ),
        c(
            "unknown namespace field",
            Some(cfg("nsfield", "[namespace.x]\nttll = \"2s\"\n")),
            Some("ttll"),
        ),
        c(
            "bad duration",
            Some(cfg("dur", "[cache]\ndefault_ttl = \"soon\"\n")),
            None,
        ),
        c(
            "bad size",
            Some(cfg("size", "[cache]\nmax_bytes = \"lots\"\n")),
            None,
        ),
        c(
            "negative size",
            Some(cfg("neg", "[cache]\nmax_bytes = -5\n")),
            None,
        ),
        c(
            "bad key_format",
            Some(cfg("kf", "[namespace.x]\nkey_format = \"md5\"\n")),
            None,
        ),
        c(
            "bad durability",
            Some(cfg("dura", "[namespace.x]\ndurability = \"maybe\"\n")),
            None,
        ),
        c(
            "wrong type",
            Some(cfg("type", "[cache]\nmax_entries = \"many\"\n")),
            None,
        ),
        c(
            "bad namespace name",
            Some(cfg("nsname", "[namespace.\"a/b\"]\n")),
            None,
        ),
        c(
            "missing config file",
            Some(t.join("does-not-exist.toml")),
            Some("does-not-exist.toml"),
        ),
        Case {
            what: "backing dir under a regular file",
            backing: a_file.join("backing"),
            mnt: mnt.clone(),
            config: None,
            mentions: None,
        },
        Case {
            what: "backing is a regular file",
            backing: a_file.clone(),
            mnt: mnt.clone(),
            config: None,
            mentions: None,
        },
        Case {
            what: "missing mountpoint",
            backing: backing.clone(),
            mnt: t.join("no-such-mnt"),
            config: None,
            mentions: Some("no-such-mnt".into()),
        },
    ];
    let mut problems = Vec::new();
    for case in &cases {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("mount"),
            case.backing.as_os_str(),
            case.mnt.as_os_str(),
        ];
        if let Some(c) = &case.config {
            args.push(OsStr::new("--config"));
            args.push(c.as_os_str());
        }
        let (st, stderr) = run_expect_exit(&args, Some(&case.mnt));
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut bad = Vec::new();
        if st.code() != Some(1) {
            bad.push(format!("exit {st}, want 1"));
        }
        if lines.len() != 1 {
            bad.push(format!("{} stderr lines, want 1", lines.len()));
        }
        if !lines
            .first()
            .map(|l| l.starts_with("cachefs: error: "))
            .unwrap_or(false)
        {
            bad.push("stderr does not start with `cachefs: error: `".into());
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            bad.push("panic text".into());
        }
        if let Some(word) = &case.mentions {
            if !stderr.contains(word.as_str()) {
                bad.push(format!("does not name `{word}`"));
            }
        }
        if !bad.is_empty() {
            problems.push(format!(
                "{}: {}; stderr: {stderr:?}",
                case.what,
                bad.join(", ")
            ));
        }
    }
    // The failed runs created nothing under a regular file and did not mount.
    assert!(!is_mounted(&mnt));
    assert!(
        problems.is_empty(),
        "{} of {} cases wrong:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
}

#[test]
fn usage_errors_exit_2() {
    let (st, stderr) = run_expect_exit(&[OsStr::new("mount")], None);
    assert_eq!(
        st.code(),
        Some(2),
        "`cachefs mount` with no arguments: {stderr}"
    );
    let (st, _) = run_expect_exit(&[OsStr::new("no-such-subcommand")], None);
    assert_eq!(st.code(), Some(2), "unknown subcommand");
    let (st, _) = run_expect_exit(
        &[
            OsStr::new("mount"),
            OsStr::new("a"),
            OsStr::new("b"),
            OsStr::new("--bogus-flag"),
        ],
        None,
    );
    assert_eq!(st.code(), Some(2), "unknown flag");
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "--help exit {}", out.status);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mount"),
        "--help mentions mount"
    );
}

#[test]
fn missing_backing_dir_is_created() {
    if skip_without_fuse() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("fresh-backing");
    assert!(!backing.exists());
    let m = Mount::start(MountOpts {
        config: None,
        backing: Some(backing.clone()),
        ..Default::default()
    });
    let md = fs::metadata(&backing).expect("backing dir created");
    assert!(md.is_dir());
    assert_eq!(
        md.permissions().mode() & 0o777,
        0o700,
        "created backing dir mode"
    );
    // No config at all: namespaces on demand, default TTL 2 h.
    fs::create_dir(m.ns("ns")).unwrap();
    write_file(&m.path("ns", "k"), b"works").unwrap();
    assert_eq!(fs::read(m.path("ns", "k")).unwrap(), b"works");
    let exp: f64 = getxattr_str(&m.path("ns", "k"), "user.cachefs.expires")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mt = to_f64(mtime_of(&fs::metadata(m.path("ns", "k")).unwrap()));
    assert!(
        (exp - (mt + 7200.0)).abs() <= 1.0,
        "default TTL is 2 h: expires {exp}, mtime {mt}"
    );
}
