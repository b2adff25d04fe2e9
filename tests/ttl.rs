//! Acceptance 2: TTL. An entry in a 2 s namespace reads before and is ENOENT, unlisted
//! and uncounted by statfs after; a per-entry `user.cachefs.ttl` shortens life; `touch`
//! renews it. No read that starts after expiry returns the bytes (kernel caches
//! included); a file already open keeps reading.

mod common;

use common::*;
use std::fs::{self, File};
use std::io::Read;
use std::process::Command;
use std::time::{Duration, SystemTime};

const CFG: &str = r#"
[cache]
max_bytes = "64MiB"
default_ttl = "2h"
sweep_interval = "1s"

[namespace.short]
ttl = "2s"

[namespace.long]
ttl = "1h"
"#;

/// Slack after the computed expiry instant before a read must fail.
const AFTER: Duration = Duration::from_millis(100);

fn expiry_of(p: &std::path::Path, ttl: f64) -> SystemTime {
    let mt = mtime_of(&fs::metadata(p).unwrap());
    mt + Duration::from_secs_f64(ttl)
}

fn parse_expires(p: &std::path::Path) -> f64 {
    let v = getxattr_str(p, "user.cachefs.expires").unwrap();
    v.trim()
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("user.cachefs.expires not a number: {v:?}"))
}

#[test]
fn entry_expires_after_namespace_ttl() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("short", "k");
    let data: Vec<u8> = (0..30_000u32).map(|i| (i * 7) as u8).collect();
    let before_write = now_f64();
    write_file(&p, &data).unwrap();
    let ns_bytes = m.ns_stat("short", "bytes");
    // Before expiry: readable (warm the kernel caches with several reads), listed, counted.
    for _ in 0..5 {
        assert_eq!(fs::read(&p).unwrap(), data, "read before expiry");
    }
    let exp = expiry_of(&p, 2.0);
    let mtime = to_f64(exp) - 2.0;
    assert!(
        mtime >= before_write - 1.0 && mtime <= now_f64() + 1.0,
        "mtime {mtime} is the publish time"
    );
    let xexp = parse_expires(&p);
    assert!(
        (xexp - to_f64(exp)).abs() <= 1.0,
        "user.cachefs.expires {xexp} vs mtime+ttl {}",
        to_f64(exp)
    );
    assert_eq!(list_str(&m.ns("short")), vec!["k"]);
    let used = statfs_used(&m.mnt);
    assert!(used > 0, "statfs counts the live entry (used {used})");
    assert_eq!(m.ns_stat("short", "entries"), 1);
    assert!(ns_bytes > 0, "stats.json bytes of the live entry");
    // An fd opened before expiry keeps reading afterwards.
    let mut held = File::open(&p).unwrap();
    let mut first = vec![0u8; 1000];
    held.read_exact(&mut first).unwrap();

    // Keep reading until just before expiry (must succeed), then sleep past it.
    while SystemTime::now() + Duration::from_millis(300) < exp {
        assert_eq!(fs::read(&p).unwrap(), data, "read while live");
        std::thread::sleep(Duration::from_millis(100));
    }
    sleep_until_wall(exp + AFTER);
    // After expiry: every new open/stat is ENOENT at once, no kernel cache serves it.
    assert_errno(File::open(&p), libc::ENOENT, "open after expiry");
    assert_errno(fs::metadata(&p), libc::ENOENT, "stat after expiry");
    assert_errno(fs::read(&p), libc::ENOENT, "read after expiry");
    let out = Command::new("cat").arg(&p).output().unwrap();
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "cat after expiry printed {} bytes",
        out.stdout.len()
    );
    assert!(
        list(&m.ns("short")).is_empty(),
        "readdir after expiry lists {:?}",
        list_str(&m.ns("short"))
    );
    assert_eq!(
        statfs_used(&m.mnt),
        0,
        "statfs after expiry still counts the entry"
    );
    // The held fd keeps reading the whole old version.
    let mut rest = Vec::new();
    held.read_to_end(&mut rest)
        .expect("an fd opened before expiry keeps reading");
    first.extend_from_slice(&rest);
    assert!(
        first == data,
        "held fd read {} bytes, differs from the entry",
        first.len()
    );
    drop(held);
    // stats.json stops counting it and reports an expiration (background sweep, 1 s).
    assert!(
        wait_until(Duration::from_secs(4), || {
            let s = m.stats();
            s["namespaces"]["short"]["entries"] == 0
                && s["namespaces"]["short"]["bytes"] == 0
                && s["namespaces"]["short"]["expirations"]
                    .as_u64()
                    .unwrap_or(0)
                    >= 1
        }),
        "stats after expiry: {}",
        m.stats()
    );
    // Its space on the backing volume is reclaimed in the background.
    let bp = m.backing_path("short", b"k");
    assert!(
        wait_until(Duration::from_secs(4), || !bp.exists()),
        "backing file {} not reclaimed",
        bp.display()
    );
    // The key can be written again and is live again.
    write_file(&p, b"again").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"again");
}

#[test]
fn ttl_xattr_shortens_and_zero_never_expires() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let short = m.path("long", "short-lived");
    let never = m.path("short", "immortal");
    let normal = m.path("long", "normal");
    write_file(&short, b"one second").unwrap();
    write_file(&never, b"forever").unwrap();
    write_file(&normal, b"an hour").unwrap();
    // Without the xattr the namespace TTL applies (1 h).
    let e = parse_expires(&normal);
    let mt = to_f64(mtime_of(&fs::metadata(&normal).unwrap()));
    assert!(
        (e - (mt + 3600.0)).abs() <= 1.0,
        "expires {e} for a 1 h namespace, mtime {mt}"
    );
    assert_errno(
        getxattr(&normal, "user.cachefs.nonexistent"),
        libc::ENODATA,
        "getxattr of an unknown user attr",
    );

    setxattr(&short, "user.cachefs.ttl", b"1").unwrap();
    let exp_short = expiry_of(&short, 1.0);
    if SystemTime::now() + Duration::from_millis(200) < exp_short {
        assert_eq!(
            fs::read(&short).unwrap(),
            b"one second",
            "still live before 1 s"
        );
    }
    assert_eq!(
        getxattr_str(&short, "user.cachefs.ttl").unwrap().trim(),
        "1"
    );
    let x = parse_expires(&short);
    assert!(
        (x - to_f64(exp_short)).abs() <= 1.0,
        "expires after ttl=1: {x} vs {}",
        to_f64(exp_short)
    );
    // getfattr (the attr tool) sees it too.
    let out = Command::new("getfattr")
        .args(["-n", "user.cachefs.ttl", "--only-values"])
        .arg(&short)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "getfattr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");

    // setfattr of ttl=0 on an entry in the 2 s namespace: never expires.
    let st = Command::new("setfattr")
        .args(["-n", "user.cachefs.ttl", "-v", "0"])
        .arg(&never)
        .status()
        .unwrap();
    assert!(st.success(), "setfattr user.cachefs.ttl=0");
    assert_eq!(
        getxattr_str(&never, "user.cachefs.expires").unwrap().trim(),
        "never"
    );
    let never_nominal = expiry_of(&never, 2.0);

    // Bad ttl values are refused.
    assert!(
        setxattr(&normal, "user.cachefs.ttl", b"soon").is_err(),
        "ttl 'soon' must be refused"
    );
    assert!(
        setxattr(&normal, "user.cachefs.ttl", b"-5").is_err(),
        "ttl '-5' must be refused"
    );
    assert!(
        (parse_expires(&normal) - e).abs() < 0.001,
        "refused ttl changed expires"
    );

    sleep_until_wall(exp_short + AFTER);
    assert_errno(File::open(&short), libc::ENOENT, "open after the xattr TTL");
    assert_eq!(
        list_str(&m.ns("long")),
        vec!["normal"],
        "only the 1 h entry is listed"
    );
    assert_eq!(fs::read(&normal).unwrap(), b"an hour");

    sleep_until_wall(never_nominal + Duration::from_millis(500));
    assert_eq!(
        fs::read(&never).unwrap(),
        b"forever",
        "ttl=0 entry past its namespace TTL"
    );
    assert_eq!(list_str(&m.ns("short")), vec!["immortal"]);
}

#[test]
fn touch_renews() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("short", "renewed");
    let q_ = m.path("short", "not-renewed");
    write_file(&p, b"renew me").unwrap();
    write_file(&q_, b"let me go").unwrap();
    let first_exp = expiry_of(&p, 2.0);
    let q_exp = expiry_of(&q_, 2.0);
    let mt0 = mtime_of(&fs::metadata(&p).unwrap());
    // Touch 1.2 s later (past half the TTL).
    sleep_until_wall(mt0 + Duration::from_millis(1200));
    let st = Command::new("touch").arg(&p).status().unwrap();
    assert!(st.success(), "touch failed");
    let mt1 = mtime_of(&fs::metadata(&p).unwrap());
    assert!(
        mt1 >= mt0 + Duration::from_millis(1000),
        "touch moved mtime from {mt0:?} to {mt1:?}"
    );
    let new_exp = expiry_of(&p, 2.0);
    let x = parse_expires(&p);
    assert!(
        (x - to_f64(new_exp)).abs() <= 1.0,
        "expires after touch: {x} vs {}",
        to_f64(new_exp)
    );
    // Past the original expiry: the touched entry lives, the other is gone.
    sleep_until_wall(first_exp.max(q_exp) + AFTER);
    assert_eq!(
        fs::read(&p).unwrap(),
        b"renew me",
        "touched entry expired at its old deadline"
    );
    assert_errno(
        File::open(&q_),
        libc::ENOENT,
        "untouched entry after expiry",
    );
    // And it expires at the renewed deadline.
    sleep_until_wall(new_exp + AFTER);
    assert_errno(
        File::open(&p),
        libc::ENOENT,
        "touched entry after its renewed expiry",
    );
    assert!(list(&m.ns("short")).is_empty());
    assert_eq!(statfs_used(&m.mnt), 0, "statfs after both expired");
}

#[test]
fn default_ttl_applies_to_mkdir_namespaces() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(
        r#"
[cache]
default_ttl = "1s"
sweep_interval = "1s"
"#,
    );
    fs::create_dir(m.ns("dyn")).unwrap();
    let p = m.path("dyn", "k");
    write_file(&p, b"short default").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"short default");
    let exp = expiry_of(&p, 1.0);
    sleep_until_wall(exp + AFTER);
    assert_errno(File::open(&p), libc::ENOENT, "entry after default_ttl");
    assert!(
        fs::metadata(m.ns("dyn")).unwrap().is_dir(),
        "namespace outlives its entries"
    );
}
