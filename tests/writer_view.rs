//! PRODUCT.md section 4, the writer's view, and the POSIX details of issue
//! 12: to its writer a file being written is a file (fstat, ftruncate,
//! fchmod, futimens, mmap, reads, its own path operations), while every
//! other process sees the old version or nothing until close; `echo x >
//! key` never shows an empty version; times keep nanoseconds and 64-bit
//! seconds; ctime moves on metadata changes; an unlinked file stays a
//! file to the descriptors that hold it.
//!
//! "Another process" is always a separate process (`stat`, `cat`,
//! python3): this process's own opens see the pending version.

mod common;

use common::*;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CFG: &str = r#"
[cache]
max_bytes = "256MiB"
default_ttl = "2h"

[namespace.w]

[namespace.forever]
ttl = "0s"
"#;

/// What another process sees at `p`: its bytes, or the errno-like failure
/// of `cat`.
fn seen_by_other(p: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("cat").arg(p).output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[track_caller]
fn assert_absent_to_others(p: &Path, what: &str) {
    match seen_by_other(p) {
        Err(e) => assert!(e.contains("No such file"), "{what}: cat said {e}"),
        Ok(b) => panic!("{what}: another process read {} bytes", b.len()),
    }
}

fn fstat(f: &File) -> libc::stat {
    // SAFETY: an all-zero `stat` is a valid value, overwritten by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open for the call, `st` is a valid out pointer.
    let r = unsafe { libc::fstat(fd_of(f), &mut st) };
    assert_eq!(r, 0, "fstat: {}", std::io::Error::last_os_error());
    st
}

fn ftruncate(f: &File, len: i64) -> std::io::Result<()> {
    // SAFETY: plain syscall on an open fd.
    match unsafe { libc::ftruncate(fd_of(f), len) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// utimensat(AT_FDCWD, p, [atime, mtime], 0).
fn utimens_path(p: &Path, atime: libc::timespec, mtime: libc::timespec) -> std::io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let times = [atime, mtime];
    // SAFETY: `c` is a NUL-terminated path, `times` two valid timespecs.
    match unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn futimens(f: &File, atime: libc::timespec, mtime: libc::timespec) -> std::io::Result<()> {
    let times = [atime, mtime];
    // SAFETY: an open fd and two valid timespecs.
    match unsafe { libc::futimens(fd_of(f), times.as_ptr()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn omit() -> libc::timespec {
    ts(0, libc::UTIME_OMIT)
}

fn mtime_ns(st: &libc::stat) -> (i64, i64) {
    (st.st_mtime, st.st_mtime_nsec)
}

fn stat_path(p: &Path) -> std::io::Result<libc::stat> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: an all-zero `stat` is a valid value, overwritten by stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated, `st` a valid out pointer.
    match unsafe { libc::stat(c.as_ptr(), &mut st) } {
        0 => Ok(st),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn rw_create(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(p)
        .unwrap()
}

#[test]
fn fstat_ftruncate_fchmod_futimens_by_the_writer_only() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("forever", "fsx-like");
    let mut rng = Rng::new(12);
    let data = rng.bytes(0x28555);
    let f = rw_create(&p);
    f.write_all_at(&data, 0).unwrap();
    // fsx's second operation: fstat after a write of 0x28555 bytes.
    assert_eq!(fstat(&f).st_size, 0x28555);
    assert_absent_to_others(&p, "after the write");
    let mut back = vec![0u8; data.len()];
    f.read_exact_at(&mut back, 0).unwrap();
    assert!(back == data, "reads through the writer's fd");

    ftruncate(&f, 1000).unwrap();
    assert_eq!(fstat(&f).st_size, 1000);
    ftruncate(&f, 70_000).unwrap();
    let st = fstat(&f);
    assert_eq!(st.st_size, 70_000);
    let mut tail = vec![1u8; 100];
    f.read_exact_at(&mut tail, 69_900).unwrap();
    assert!(tail.iter().all(|&b| b == 0), "a grown file reads zeros");

    f.set_permissions(fs::Permissions::from_mode(0o600))
        .unwrap();
    assert_eq!(fstat(&f).st_mode & 0o7777, 0o600);
    futimens(&f, omit(), ts(1_700_000_000, 123_456_789)).unwrap();
    assert_eq!(mtime_ns(&fstat(&f)), (1_700_000_000, 123_456_789));
    // The writer's own process sees the pending version by its path too.
    let own = fs::metadata(&p).unwrap();
    assert_eq!((own.len(), own.mode() & 0o7777), (70_000, 0o600));
    assert_absent_to_others(&p, "after ftruncate, fchmod, futimens");
    let out = Command::new("stat").arg(&p).output().unwrap();
    assert!(!out.status.success(), "stat(1) of a file being written");
    let (uid, gid) = (fstat(&f).st_uid, fstat(&f).st_gid);
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).unwrap();
    assert_eq!((fstat(&f).st_uid, fstat(&f).st_gid), (uid, gid));
    // fsync and fdatasync publish what is written so far.
    // SAFETY: plain syscalls on an open fd.
    assert_eq!(unsafe { libc::fdatasync(fd_of(&f)) }, 0, "fdatasync");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fsync(fd_of(&f)) }, 0, "fsync");
    assert_eq!(fstat(&f).st_size, 70_000);

    close_file(f).unwrap();
    let mut want = data[..1000].to_vec();
    want.resize(70_000, 0);
    assert!(seen_by_other(&p).unwrap() == want, "published after close");
    let out = sh(&format!("stat -c '%s %a %Y' {}", q(&p)));
    assert_eq!(out.trim(), "70000 600 1700000000");
}

#[test]
fn an_existing_key_shows_its_old_version_to_others_while_rewritten() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("w", "old");
    write_file(&p, b"old version").unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.write_all_at(b"NEW", 0).unwrap();
    ftruncate(&f, 20).unwrap();
    assert_eq!(fstat(&f).st_size, 20);
    assert_eq!(fs::metadata(&p).unwrap().len(), 20, "the writer's own stat");
    let mut own = Vec::new();
    File::open(&p).unwrap().read_to_end(&mut own).unwrap();
    assert_eq!(
        own, b"NEW version\0\0\0\0\0\0\0\0\0",
        "the writer's own open"
    );
    assert_eq!(seen_by_other(&p).unwrap(), b"old version");
    close_file(f).unwrap();
    assert_eq!(seen_by_other(&p).unwrap(), b"NEW version\0\0\0\0\0\0\0\0\0");
}

/// mmap(2) of `len` bytes of `f`.
fn map(f: &File, len: usize, flags: i32) -> *mut u8 {
    // SAFETY: a fresh mapping of an open fd; the caller unmaps it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd_of(f),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

#[test]
fn mmap_shared_and_private_of_a_file_being_written() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("w", "mapped");
    let len = 3 * 4096 + 100;
    let f = rw_create(&p);
    f.write_all_at(&vec![b'a'; len], 0).unwrap();

    let shared = map(&f, len, libc::MAP_SHARED);
    // SAFETY: `shared` maps `len` bytes, unmapped below and not aliased.
    let s = unsafe { std::slice::from_raw_parts_mut(shared, len) };
    assert!(
        s.iter().all(|&b| b == b'a'),
        "a mapping reads the written bytes"
    );
    s[5000..5010].copy_from_slice(b"0123456789");
    // SAFETY: the mapping is live.
    assert_eq!(unsafe { libc::msync(shared.cast(), len, libc::MS_SYNC) }, 0);
    let mut got = [0u8; 10];
    f.read_exact_at(&mut got, 5000).unwrap();
    assert_eq!(&got, b"0123456789", "msync'ed bytes read through the fd");

    let private = map(&f, len, libc::MAP_PRIVATE);
    // SAFETY: as above, a distinct mapping.
    let v = unsafe { std::slice::from_raw_parts_mut(private, len) };
    assert_eq!(&v[5000..5010], b"0123456789");
    v[0] = b'P';
    f.read_exact_at(&mut got[..1], 0).unwrap();
    assert_eq!(got[0], b'a', "a private mapping's write stays private");
    // SAFETY: both mappings are live and unused from here.
    unsafe {
        libc::munmap(private.cast(), len);
        libc::munmap(shared.cast(), len);
    }
    close_file(f).unwrap();
    let mut want = vec![b'a'; len];
    want[5000..5010].copy_from_slice(b"0123456789");
    assert!(
        seen_by_other(&p).unwrap() == want,
        "the mapped write published"
    );
}

#[test]
fn the_writers_own_utime_chmod_truncate_and_rename_act_on_the_pending_version() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let d = m.ns("w");
    // Django's FileBasedCache, and a write-temp-then-rename done while the
    // temp file is still open (tempfile.NamedTemporaryFile's pattern).
    let script = r#"
import os, sys
d = sys.argv[1]
f = os.path.join(d, "django")
with open(f, "w") as fh:
    os.utime(f, None)
    fh.write("value")
    fh.flush()
    os.chmod(f, 0o640)
    os.truncate(f, 3)
    assert os.stat(f).st_size == 3, os.stat(f)
tmp, final = os.path.join(d, "tmp"), os.path.join(d, "final")
with open(tmp, "w") as fh:
    fh.write("renamed while open")
    fh.flush()
    os.replace(tmp, final)
    assert os.stat(final).st_size == 18
    assert not os.path.exists(tmp)
os.utime(f, ns=(1, 1_900_000_000_987_654_321))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(seen_by_other(&m.path("w", "django")).unwrap(), b"val");
    // (an mtime in 2030: the namespace's TTL of 2 h counts from it.)
    let st = stat_path(&m.path("w", "django")).unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o640);
    assert_eq!(mtime_ns(&st), (1_900_000_000, 987_654_321));
    assert_eq!(
        seen_by_other(&m.path("w", "final")).unwrap(),
        b"renamed while open"
    );
    assert_absent_to_others(&m.path("w", "tmp"), "the renamed temp name");
}

/// Runs a reader process on `p` until `stop` exists; returns what it saw:
/// lines "empty", "missing" or "ok".
fn spawn_reader(p: &Path, stop: &Path) -> std::process::Child {
    let script = r#"
import os, sys
p, stop = sys.argv[1], sys.argv[2]
empty = missing = ok = 0
open(stop + ".ready", "w").close()
while not os.path.exists(stop):
    try:
        with open(p, "rb") as f:
            b = f.read()
        if b: ok += 1
        else: empty += 1
    except FileNotFoundError:
        missing += 1
print(empty, missing, ok)
"#;
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(p)
        .arg(stop)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn echo_rewrites_never_show_an_empty_version() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("w", "echoed");
    write_file(&p, b"first\n").unwrap();
    let stop = m.dir.path().join("stop");
    let reader = spawn_reader(&p, &stop);
    let ready = stop.with_extension("ready");
    assert!(
        wait_until(Duration::from_secs(20), || ready.exists()),
        "reader did not start"
    );
    sh(&format!(
        "for i in $(seq 1 200); do echo x$i > {}; done",
        q(&p)
    ));
    fs::write(&stop, b"").unwrap();
    let out = reader.wait_with_output().unwrap();
    let counts: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 3, "reader said {:?}", out);
    assert_eq!(
        (counts[0], counts[1]),
        (0, 0),
        "empty and missing reads among {} good ones",
        counts[2]
    );
    assert!(counts[2] > 0, "the reader read nothing");
    assert_eq!(seen_by_other(&p).unwrap(), b"x200\n");
}

#[test]
fn a_slow_command_redirected_into_a_key_does_not_stall_its_readers() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("w", "slow");
    write_file(&p, b"old\n").unwrap();
    let mark = m.dir.path().join("opened");
    // `slow > key`: the shell opens the key, dup2s it to stdout and closes
    // the descriptor it opened long before the command writes.
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec > {}; touch {}; sleep 5; echo new",
            q(&p),
            q(&mark)
        ))
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || mark.exists()),
        "sh did not start"
    );
    // 20 reads by another process: each sees the old version, and none
    // waits for a RELEASE that is not coming (20 x 100 ms if they did).
    let script = r#"
import sys, time
t = time.monotonic()
seen = [open(sys.argv[1], "rb").read() for _ in range(20)]
print(time.monotonic() - t)
print(sorted(set(seen)))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let secs: f64 = lines.next().unwrap_or("nan").parse().unwrap_or(f64::NAN);
    assert_eq!(
        lines.next(),
        Some("[b'old\\n']"),
        "reads while pending: {text}"
    );
    assert!(
        secs < 1.5,
        "20 reads took {secs} s: lookups waited for the held writer"
    );
    assert!(writer.wait().unwrap().success());
    assert_eq!(seen_by_other(&p).unwrap(), b"new\n");
}

#[test]
fn a_file_empty_at_its_last_close_is_published_empty() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("w", "emptied");
    write_file(&p, b"something").unwrap();
    // Each shell's close returns before the next command's lookup.
    for i in 0..20 {
        let out = sh(&format!(": > {0}; wc -c < {0}", q(&p)));
        assert_eq!(out.trim(), "0", "round {i}: emptied file read back");
        write_file(&p, b"again").unwrap();
        sh(&format!(": > {}", q(&p)));
        let out = Command::new("stat")
            .args(["-c", "%s"])
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "round {i}: another process after `: > key`"
        );
    }
    // A new key made empty (touch, a lock file) exists at once.
    sh(&format!(
        "touch {0}-t; : > {0}-c; test -e {0}-t && test -e {0}-c",
        q(&p)
    ));
}

#[test]
fn times_keep_nanoseconds_64_bit_seconds_and_utime_omit() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("forever", "t");
    write_file(&p, b"timed").unwrap();
    for (sec, nsec) in [
        (1 << 32, 999_999_999),
        ((1 << 33) + 5, 1),
        (1_700_000_000, 123_456_789),
        (-1, 500_000_000),
        (-2_000_000_000, 7),
        (0, 0),
    ] {
        utimens_path(&p, omit(), ts(sec, nsec)).unwrap();
        assert_eq!(mtime_ns(&stat_path(&p).unwrap()), (sec, nsec), "utimensat");
        let out = Command::new("stat")
            .args(["-c", "%Y"])
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            sec.to_string(),
            "another process's stat"
        );
    }
    // UTIME_OMIT for the mtime leaves it, atime-only changes included.
    utimens_path(&p, omit(), ts(1_234_567_890, 42)).unwrap();
    utimens_path(&p, ts(5, 5), omit()).unwrap();
    assert_eq!(mtime_ns(&stat_path(&p).unwrap()), (1_234_567_890, 42));
    utimens_path(&p, omit(), omit()).unwrap();
    assert_eq!(mtime_ns(&stat_path(&p).unwrap()), (1_234_567_890, 42));
    // UTIME_NOW is now.
    let before = now_f64();
    utimens_path(&p, omit(), ts(0, libc::UTIME_NOW)).unwrap();
    let st = stat_path(&p).unwrap();
    let got = st.st_mtime as f64 + st.st_mtime_nsec as f64 / 1e9;
    assert!(
        got >= before - 1.0 && got <= now_f64() + 1.0,
        "UTIME_NOW gave {got}"
    );
    assert_eq!(read_file(&p).unwrap(), b"timed");
}

#[test]
fn an_explicit_past_mtime_makes_an_entry_older() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("w", "aged");
    write_file(&p, b"x").unwrap();
    // The namespace's TTL is 2 h: an mtime 3 h ago has expired it.
    let past = now_f64() as i64 - 3 * 3600;
    utimens_path(&p, omit(), ts(past, 0)).unwrap();
    assert_absent_to_others(&p, "an entry whose mtime is past its TTL");
}

/// A metadata change made by path.
type Change<'a> = Box<dyn Fn() + 'a>;

fn ctime_ns(st: &libc::stat) -> i128 {
    i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec)
}

#[test]
fn ctime_advances_on_every_metadata_change_and_survives_a_restart() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new(CFG);
    let p = m.path("forever", "c");
    write_file(&p, b"content").unwrap();
    let mut last = ctime_ns(&stat_path(&p).unwrap());
    let changes: Vec<(&str, Change)> = vec![
        (
            "chmod",
            Box::new(|| fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap()),
        ),
        (
            "truncate",
            Box::new(|| {
                OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_len(3)
                    .unwrap()
            }),
        ),
        (
            "a TTL xattr",
            Box::new(|| setxattr(&p, "user.cachefs.ttl", b"0").unwrap()),
        ),
        (
            "chown to itself",
            Box::new(|| sh(&format!("chown $(id -u):$(id -g) {}", q(&p))).clear()),
        ),
        (
            "utime to the past",
            Box::new(|| utimens_path(&p, omit(), ts(1_000_000_000, 0)).unwrap()),
        ),
    ];
    for (what, change) in &changes {
        // ctime has nanoseconds; wait until the clock has moved on.
        std::thread::sleep(Duration::from_millis(2));
        change();
        let st = stat_path(&p).unwrap();
        let now = ctime_ns(&st);
        assert!(now > last, "{what}: ctime {now} did not pass {last}");
        last = now;
    }
    let st = stat_path(&p).unwrap();
    assert_eq!(mtime_ns(&st), (1_000_000_000, 0), "mtime stays as set");
    assert!(
        st.st_ctime > st.st_mtime,
        "ctime is the change's time, not the mtime"
    );
    m.stop();
    let m = Mount::with_backing(CFG, &m.backing);
    let st = stat_path(&m.path("forever", "c")).unwrap();
    assert_eq!(ctime_ns(&st), last, "ctime after a restart");
}

#[test]
fn an_unlinked_file_stays_a_file_to_its_descriptors() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    // A published entry held by a reader and by a read-write descriptor.
    let p = m.path("w", "held");
    write_file(&p, b"published bytes").unwrap();
    let mut reader = File::open(&p).unwrap();
    let rw = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert_absent_to_others(&p, "after unlink");
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"published bytes", "a reader's fd after unlink");
    let st = fstat(&reader);
    assert_eq!(
        (st.st_size, st.st_nlink),
        (15, 0),
        "a reader's fstat after unlink"
    );
    let mut got = [0u8; 9];
    rw.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(&got, b"published");
    ftruncate(&rw, 4).unwrap();
    let st = fstat(&rw);
    assert_eq!((st.st_size, st.st_nlink), (4, 0));
    rw.write_all_at(b"XY", 10).unwrap();
    assert_eq!(fstat(&rw).st_size, 12);
    close_file(rw).unwrap();
    assert_absent_to_others(&p, "after its last descriptor closed");

    // A published entry held read-write while another process replaces it.
    let r = m.path("w", "replaced");
    write_file(&r, b"first version").unwrap();
    let rw = OpenOptions::new().read(true).write(true).open(&r).unwrap();
    sh(&format!("echo second > {0}.new && mv {0}.new {0}", q(&r)));
    assert_eq!(seen_by_other(&r).unwrap(), b"second\n");
    let mut got = [0u8; 5];
    rw.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(&got, b"first", "the held descriptor reads what it opened");
    ftruncate(&rw, 2).unwrap();
    assert_eq!(fstat(&rw).st_size, 2);
    close_file(rw).unwrap();
    // Its close is a later close: it wins, as any writer's would.
    assert_eq!(seen_by_other(&r).unwrap(), b"fi");

    // A new file being written, unlinked by its writer.
    let q2 = m.path("w", "fresh");
    let f = rw_create(&q2);
    f.write_all_at(b"pending", 0).unwrap();
    fs::remove_file(&q2).unwrap();
    ftruncate(&f, 3).unwrap();
    let mut got = Vec::new();
    (&f).read_to_end(&mut got).unwrap();
    assert_eq!(got, b"pen");
    // The name is free again for others at once.
    write_file(&q2, b"someone else").unwrap();
    close_file(f).unwrap();
    assert_eq!(seen_by_other(&q2).unwrap(), b"someone else");
}
