//! What a namespace holds besides files made by open(2): `mknod(2)` of a
//! regular file (Python's `os.mknod`) makes an empty entry at once, with the
//! caller's mode less its umask, and is exclusive like `O_EXCL`; fifos,
//! device nodes and sockets are not cache entries and are refused with
//! EPERM (as symlinks and hard links are), never ENOSYS. Found by
//! pjdfstest's mkfifo and mknod tests (scripts/peer-suites).

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::mkfifo;

const CFG: &str = r#"
[namespace.n]
"#;

fn errno_of(r: nix::Result<()>, what: &str) -> i32 {
    match r {
        Ok(()) => panic!("{what}: succeeded"),
        Err(e) => e as i32,
    }
}

#[test]
fn special_files_are_eperm() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let mode = Mode::from_bits_truncate(0o644);
    let cases = [
        ("fifo", mkfifo(&m.path("n", "fifo"), mode)),
        (
            "char",
            mknod(&m.path("n", "char"), SFlag::S_IFCHR, mode, makedev(1, 3)),
        ),
        (
            "block",
            mknod(&m.path("n", "block"), SFlag::S_IFBLK, mode, makedev(7, 0)),
        ),
        (
            "socket",
            mknod(&m.path("n", "socket"), SFlag::S_IFSOCK, mode, 0),
        ),
    ];
    for (name, r) in cases {
        assert_eq!(errno_of(r, name), libc::EPERM, "mknod of a {name}");
    }
    // The shell tool's own message, as a user reads it.
    let out = Command::new("mkfifo")
        .env("LC_ALL", "C")
        .arg(m.path("n", "fifo2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Operation not permitted"),
        "mkfifo said: {err}"
    );
    assert!(list_str(&m.ns("n")).is_empty(), "nothing was made");
}

#[test]
fn mknod_of_a_regular_file_makes_an_empty_entry() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("n", "made");
    let mknod_py = |path: &std::path::Path| {
        Command::new("python3")
            .arg("-c")
            .arg("import os, sys; os.umask(0o022); os.mknod(sys.argv[1], 0o666)")
            .arg(path)
            .output()
            .unwrap()
    };
    let out = mknod_py(&p);
    assert!(
        out.status.success(),
        "os.mknod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = fs::metadata(&p).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 0);
    assert_eq!(md.permissions().mode() & 0o7777, 0o644, "umask applied");
    assert_eq!(md.uid(), unsafe { libc::geteuid() });
    assert_eq!(fs::read(&p).unwrap(), b"");
    assert_eq!(list_str(&m.ns("n")), vec!["made".to_string()]);

    // Exclusive, like O_CREAT|O_EXCL: the live entry stays as it was.
    let out = mknod_py(&p);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FileExistsError"), "second os.mknod: {err}");
    assert_eq!(
        errno_of(
            mknod(&p, SFlag::S_IFREG, Mode::from_bits_truncate(0o600), 0),
            "second mknod"
        ),
        libc::EEXIST
    );

    // An ordinary entry from then on: rewritten and read back.
    fs::write(&p, b"value").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"value");

    // Outside a namespace, as for open(O_CREAT): a missing namespace is
    // ENOENT, the root and the control dir are no place for entries.
    let mode = Mode::from_bits_truncate(0o644);
    let at = |p: std::path::PathBuf| errno_of(mknod(&p, SFlag::S_IFREG, mode, 0), "mknod");
    assert_eq!(at(m.path("nons", "k")), libc::ENOENT);
    assert_eq!(at(m.mnt.join("k")), libc::EACCES);
    assert_eq!(at(m.mnt.join(".cachefs").join("k")), libc::EACCES);
}
