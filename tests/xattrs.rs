//! An entry's own `user.*` xattrs (PRODUCT.md section 7): set, get, list
//! and remove with the tools users use (`setfattr`, `getfattr`) and the
//! system calls; XATTR_CREATE/XATTR_REPLACE; the limits; and that they
//! belong to the version: kept across a rename, a restart and `kill -9`,
//! kept by an append (a copy-on-write open), gone after a rewrite.

mod common;

use common::*;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

const CFG: &str = "[namespace.web]\n";

fn set_flags(path: &Path, name: &str, value: &[u8], flags: i32) -> std::io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and live across the call;
    // the value pointer and length describe `value`.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn remove(path: &Path, name: &str) -> std::io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and live across the call.
    if unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) } < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `getfattr -d` of a file: its user xattrs as `name="value"` lines.
fn getfattr_d(path: &Path) -> String {
    let out = Command::new("getfattr")
        .arg("-d")
        .arg("--absolute-names")
        .arg(path)
        .output()
        .expect("getfattr (package attr) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("user.") && !l.starts_with("user.cachefs."))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn setfattr(path: &Path, name: &str, value: &str) {
    let st = Command::new("setfattr")
        .args(["-n", name, "-v", value])
        .arg(path)
        .status()
        .expect("setfattr (package attr) runs");
    assert!(st.success(), "setfattr -n {name} {}", path.display());
}

#[test]
fn set_get_list_remove_and_flags() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("web", "page");
    fs::write(&p, b"<html>").unwrap();
    setfattr(&p, "user.etag", "v1");
    setfattr(&p, "user.source", "https://example.com/");
    assert_eq!(
        getfattr_d(&p),
        "user.etag=\"v1\"\nuser.source=\"https://example.com/\"\n"
    );
    assert_eq!(getxattr(&p, "user.etag").unwrap(), b"v1");
    // Ours are listed beside them, read-only as before.
    let out = Command::new("getfattr")
        .args(["-m", "-", "--absolute-names"])
        .arg(&p)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        names.contains("user.cachefs.sha256") && names.contains("user.etag"),
        "{names}"
    );
    assert_errno(getxattr(&p, "user.none"), libc::ENODATA, "missing name");
    assert_errno(
        set_flags(&p, "user.etag", b"x", libc::XATTR_CREATE),
        libc::EEXIST,
        "XATTR_CREATE of a set name",
    );
    assert_errno(
        set_flags(&p, "user.new", b"x", libc::XATTR_REPLACE),
        libc::ENODATA,
        "XATTR_REPLACE of a missing name",
    );
    set_flags(&p, "user.etag", b"\"v2\"", libc::XATTR_REPLACE).unwrap();
    set_flags(&p, "user.new", b"", libc::XATTR_CREATE).unwrap();
    assert_eq!(getxattr(&p, "user.new").unwrap(), b"");
    remove(&p, "user.new").unwrap();
    assert_errno(remove(&p, "user.new"), libc::ENODATA, "second remove");
    assert_errno(getxattr(&p, "user.new"), libc::ENODATA, "removed");
    assert_eq!(getxattr(&p, "user.etag").unwrap(), b"\"v2\"");
    assert_eq!(fs::read(&p).unwrap(), b"<html>");
}

#[test]
fn limits_on_a_value_on_names_and_on_the_total() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("web", "k");
    fs::write(&p, b"x").unwrap();
    assert_errno(
        setxattr(&p, "user.big", &vec![b'v'; 16 * 1024 + 1]),
        libc::E2BIG,
        "a value over 16 KiB",
    );
    for i in 0..32 {
        setxattr(&p, &format!("user.n{i:02}"), b"v").unwrap();
    }
    assert_errno(setxattr(&p, "user.n32", b"v"), libc::ENOSPC, "a 33rd name");
    for i in 0..32 {
        remove(&p, &format!("user.n{i:02}")).unwrap();
    }
    let v = vec![b'v'; 16 * 1024];
    for i in 0..3 {
        setxattr(&p, &format!("user.v{i}"), &v).unwrap();
    }
    assert_errno(
        setxattr(&p, "user.v3", &v),
        libc::ENOSPC,
        "over 64 KiB in all",
    );
    assert!(
        m.log().contains("xattr user.v3 refused"),
        "a log line says why"
    );
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.v2"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.stdout, v, "a 16 KiB value reads back whole");
    assert_eq!(fs::read(&p).unwrap(), b"x");
}

#[test]
fn they_go_with_the_version_across_rename_restart_and_kill() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new(CFG);
    let tmp = m.path("web", "tmp");
    fs::write(&tmp, b"body").unwrap();
    setxattr(&tmp, "user.etag", b"e1").unwrap();
    fs::rename(&tmp, m.path("web", "page")).unwrap();
    let p = m.path("web", "page");
    assert_eq!(getxattr(&p, "user.etag").unwrap(), b"e1");
    // An append is a copy-on-write open: it keeps them.
    OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(b"+")
        .unwrap();
    assert_eq!(getxattr(&p, "user.etag").unwrap(), b"e1");
    // A rewrite is new content: it starts with none.
    let q = m.path("web", "rewritten");
    fs::write(&q, b"one").unwrap();
    setxattr(&q, "user.etag", b"old").unwrap();
    fs::write(&q, b"two").unwrap();
    assert_errno(
        getxattr(&q, "user.etag"),
        libc::ENODATA,
        "a rewrite starts clean",
    );
    let stored: u64 = getxattr_str(&p, "user.cachefs.stored_bytes")
        .unwrap()
        .parse()
        .unwrap();
    assert!(stored > 0);

    m.stop();
    let backing = m.backing.clone();
    let mut m2 = Mount::with_backing(CFG, &backing);
    let p2 = m2.path("web", "page");
    assert_eq!(
        getxattr(&p2, "user.etag").unwrap(),
        b"e1",
        "after a restart"
    );
    assert_eq!(fs::read(&p2).unwrap(), b"body+");
    setxattr(&p2, "user.etag", b"e2").unwrap();
    m2.kill9();
    let m3 = Mount::with_backing(CFG, &backing);
    let p3 = m3.path("web", "page");
    assert_eq!(getxattr(&p3, "user.etag").unwrap(), b"e2", "after kill -9");
    assert_eq!(fs::read(&p3).unwrap(), b"body+");
    drop(m);
}
