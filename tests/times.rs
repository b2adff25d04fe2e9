//! Times as local files keep them (issue 12, the last pjdfstest cases):
//! an entry's atime is its own, set by `utimensat` and never by a read,
//! and kept across restarts; a file being written shows the times of its
//! last change, and is published with them (an unwritten file published
//! at its RELEASE included); a namespace directory's mtime and ctime move
//! when names come and go, its ctime when its mode changes.

mod common;

use common::*;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CFG: &str = r#"
[cache]
max_bytes = "64MiB"
sweep_interval = "1s"

[namespace.forever]
ttl = "0s"

[namespace.brief]
ttl = "1s"
"#;

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// utimensat(AT_FDCWD, p, [atime, mtime], 0).
fn utimens(p: &Path, atime: libc::timespec, mtime: libc::timespec) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let times = [atime, mtime];
    // SAFETY: `c` is a NUL-terminated path, `times` two valid timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat: {}", std::io::Error::last_os_error());
}

fn atime(p: &Path) -> (i64, i64) {
    let md = fs::metadata(p).unwrap();
    (md.atime(), md.atime_nsec())
}

fn mtime(p: &Path) -> (i64, i64) {
    let md = fs::metadata(p).unwrap();
    (md.mtime(), md.mtime_nsec())
}

fn ctime(p: &Path) -> (i64, i64) {
    let md = fs::metadata(p).unwrap();
    (md.ctime(), md.ctime_nsec())
}

/// mtime and ctime as another process (`stat`) sees them, nanoseconds
/// included; `None` while it sees no such file.
fn times_seen_by_other(p: &Path) -> Option<String> {
    let out = Command::new("stat")
        .args(["-c", "%.9Y %.9Z"])
        .arg(p)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn as_stat_text(mtime: (i64, i64), ctime: (i64, i64)) -> String {
    format!("{}.{:09} {}.{:09}", mtime.0, mtime.1, ctime.0, ctime.1)
}

/// Waits until the wall clock has passed `t` (seconds, nanoseconds), so
/// that a change made next has a later time than one made at `t`.
fn after(t: (i64, i64)) {
    let t = UNIX_EPOCH + Duration::new(t.0 as u64, t.1 as u32);
    assert!(wait_until(Duration::from_secs(2), || SystemTime::now() > t));
}

#[test]
fn atime_is_set_by_utimensat_never_by_a_read_and_kept_across_restarts() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new(CFG);
    let p = m.path("forever", "a");
    write_file(&p, b"value").unwrap();
    let written = mtime(&p);
    assert_eq!(atime(&p), written, "a new entry's atime is its mtime");

    // Past 2038, with nanoseconds; the mtime is left alone (UTIME_OMIT).
    let far = (1i64 << 33, 123_456_789);
    utimens(&p, ts(far.0, far.1), ts(0, libc::UTIME_OMIT));
    assert_eq!((atime(&p), mtime(&p)), (far, written));

    // `touch -a`: the atime only.
    sh(&format!("touch -a -d @1000000000.5 {}", q(&p)));
    assert_eq!(
        (atime(&p), mtime(&p)),
        ((1_000_000_000, 500_000_000), written)
    );

    // Reads write nothing: not the atime, not the backing file.
    let backing = m.backing_path("forever", b"a");
    let before = fs::metadata(&backing).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"value");
    assert_eq!(sh(&format!("cat {}", q(&p))), "value");
    let after_reads = fs::metadata(&backing).unwrap();
    assert_eq!(
        atime(&p),
        (1_000_000_000, 500_000_000),
        "a read set the atime"
    );
    assert_eq!(
        (
            after_reads.mtime(),
            after_reads.mtime_nsec(),
            after_reads.ino()
        ),
        (before.mtime(), before.mtime_nsec(), before.ino()),
        "a read changed the backing file"
    );

    // UTIME_NOW for the atime, an explicit mtime.
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    utimens(&p, ts(0, libc::UTIME_NOW), ts(1_000_000_007, 9));
    let (a, _) = atime(&p);
    assert!(
        (t0..=t0 + 5).contains(&a),
        "UTIME_NOW gave atime {a}, now {t0}"
    );
    assert_eq!(mtime(&p), (1_000_000_007, 9));

    // Kept by a clean stop (the snapshot) and by a crash (the trailers).
    utimens(&p, ts(far.0, far.1), ts(0, libc::UTIME_OMIT));
    m.stop();
    let mut m = Mount::with_backing(CFG, &m.backing);
    let p = m.path("forever", "a");
    assert_eq!(
        (atime(&p), mtime(&p)),
        (far, (1_000_000_007, 9)),
        "after a stop"
    );
    m.kill9();
    let m = Mount::with_backing(CFG, &m.backing);
    let p = m.path("forever", "a");
    assert_eq!(
        (atime(&p), mtime(&p)),
        (far, (1_000_000_007, 9)),
        "after a kill"
    );
}

#[test]
fn an_unwritten_file_is_published_with_the_times_its_creator_saw() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("forever", "empty");
    // open(O_CREAT|O_RDONLY), held: pjdfstest's ftruncate and
    // posix_fallocate cases.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CREAT)
        .open(&p)
        .unwrap();
    let seen = (mtime(&p), ctime(&p), atime(&p));
    after(seen.1);
    // SAFETY: plain syscall on an open fd.
    let r = unsafe { libc::ftruncate(fd_of(&f), 123) };
    assert_eq!(r, -1, "ftruncate of a read-only descriptor");
    assert_eq!((mtime(&p), ctime(&p), atime(&p)), seen, "a failed change");
    drop(f);
    // Published at its RELEASE, after close() returned.
    let mut other = None;
    assert!(wait_until(Duration::from_secs(5), || {
        other = times_seen_by_other(&p);
        other.is_some()
    }));
    assert_eq!(other.unwrap(), as_stat_text(seen.0, seen.1));
    assert_eq!(atime(&p), seen.2);
}

#[test]
fn a_version_is_published_with_the_time_of_its_last_write() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("forever", "w");
    let mut f = File::create(&p).unwrap();
    f.write_all(b"first").unwrap();
    let md = f.metadata().unwrap();
    let last_write = ((md.mtime(), md.mtime_nsec()), (md.ctime(), md.ctime_nsec()));
    // A slow writer: the publish at close comes well after the write.
    after(last_write.1);
    std::thread::sleep(Duration::from_millis(20));
    let md = f.metadata().unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), last_write.0, "fstat, idle");
    drop(f);
    assert_eq!(
        times_seen_by_other(&p).expect("published at close"),
        as_stat_text(last_write.0, last_write.1)
    );
}

#[test]
fn a_namespace_dir_times_move_when_names_come_and_go() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let ns = m.ns("forever");
    let k = m.path("forever", "k");
    let mut last = (mtime(&ns), ctime(&ns));
    let mut step = |what: &str, mtime_moves: bool, change: &dyn Fn()| {
        after(last.1);
        change();
        let now = (mtime(&ns), ctime(&ns));
        if mtime_moves {
            assert!(
                now.0 > last.0 && now.1 > last.1,
                "{what}: {now:?} vs {last:?}"
            );
        } else {
            assert_eq!(now.0, last.0, "{what} moved the mtime");
            assert!(now.1 > last.1, "{what}: ctime {now:?} vs {last:?}");
        }
        last = now;
    };
    step("create", true, &|| write_file(&k, b"1").unwrap());
    step("rename", true, &|| {
        fs::rename(&k, m.path("forever", "k2")).unwrap()
    });
    step("unlink", true, &|| {
        fs::remove_file(m.path("forever", "k2")).unwrap()
    });
    step("chmod", false, &|| {
        fs::set_permissions(&ns, fs::Permissions::from_mode(0o750)).unwrap()
    });
    // A rewrite of an existing name, and reads, change no name.
    write_file(&k, b"1").unwrap();
    let settled = (mtime(&ns), ctime(&ns));
    after(settled.1);
    write_file(&k, b"2").unwrap();
    assert_eq!(fs::read(&k).unwrap(), b"2");
    assert_eq!((mtime(&ns), ctime(&ns)), settled, "a rewrite");

    // An expiry removes a name too (seen once the kernel's cached
    // attributes of the dir lapse).
    let brief = m.ns("brief");
    write_file(&m.path("brief", "gone"), b"x").unwrap();
    let before = mtime(&brief);
    assert!(
        wait_until(Duration::from_secs(30), || mtime(&brief) > before),
        "the expiry never moved the namespace's mtime"
    );
    assert!(!m.path("brief", "gone").exists());
}
