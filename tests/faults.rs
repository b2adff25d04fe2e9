//! PRODUCT.md section 4: close() reports a failed publish. Faults are
//! injected into a real daemon (a debug build, as `cargo test` builds it)
//! through its `CACHEFS_FAULTS` control file: each line `OP ERRNO` fails
//! every such backing operation while the file exists. Each test checks
//! the errno close() reports, that the old version is untouched, that the
//! metrics count it, and that the mount serves again once it is lifted.
//! A release build has no faults to inject (`cargo test --release` builds
//! this file empty).
#![cfg(debug_assertions)]

mod common;

use common::*;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

struct Faulty {
    m: Mount,
    control: PathBuf,
    _dir: tempfile::TempDir,
}

impl Faulty {
    fn new(config: &str) -> Faulty {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("faults");
        let m = Mount::start(MountOpts {
            config: Some(config.to_string()),
            env: vec![(
                "CACHEFS_FAULTS".into(),
                control.to_string_lossy().into_owned(),
            )],
            ..Default::default()
        });
        Faulty {
            m,
            control,
            _dir: dir,
        }
    }

    /// Faults take effect at the daemon's next backing operation.
    fn inject(&self, lines: &str) {
        let tmp = self.control.with_extension("tmp");
        fs::write(&tmp, lines).unwrap();
        fs::rename(&tmp, &self.control).unwrap();
    }

    fn lift(&self) {
        fs::remove_file(&self.control).unwrap();
    }

    fn mount_stat(&self, field: &str) -> u64 {
        self.m.stats()[field].as_u64().unwrap()
    }

    fn enospc(&self) -> u64 {
        self.m.stats()["total"]["rejected_writes"]["enospc"]
            .as_u64()
            .unwrap()
    }
}

/// Writes `data` through an open file and returns what close() said
/// (a failed write() is sticky: close() must report it too).
fn write_and_close(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    let wrote = f.write_all(data);
    let closed = close_file(f);
    if let Err(e) = wrote {
        assert_eq!(
            Some(e.raw_os_error()),
            Some(closed.as_ref().err().and_then(|c| c.raw_os_error())),
            "write() said {e} but close() said {closed:?}"
        );
    }
    closed
}

/// The old version is there, whole, and nothing was left in staging.
fn untouched(f: &Faulty, key: &str, old: &[u8]) {
    assert_eq!(read_file(&f.m.path("ns", key)).unwrap(), old, "{key}");
    assert!(
        staged_files(&f.m.backing.join("staging")).is_empty(),
        "a failed write left staging behind"
    );
}

#[test]
fn a_publish_whose_rename_fails_is_eio_at_close() {
    if skip_without_fuse() {
        return;
    }
    let f = Faulty::new("[namespace.ns]\n");
    write_file(&f.m.path("ns", "k"), b"old").unwrap();
    // A new key's publish links its unnamed staging file into place (a
    // rename where the filesystem has no O_TMPFILE): both fail.
    f.inject("rename EIO\nlink EIO\n");
    let r = write_and_close(&f.m.path("ns", "k"), b"new version");
    assert_errno(r, libc::EIO, "close() of a publish the volume failed");
    let r = write_and_close(&f.m.path("ns", "fresh"), b"never seen");
    assert_errno(r, libc::EIO, "close() of a new key");
    f.lift();
    untouched(&f, "k", b"old");
    assert_errno(fs::metadata(f.m.path("ns", "fresh")), libc::ENOENT, "fresh");
    assert_eq!(f.mount_stat("backing_io_errors"), 2);
    write_file(&f.m.path("ns", "k"), b"after").unwrap();
    assert_eq!(read_file(&f.m.path("ns", "k")).unwrap(), b"after");
}

#[test]
fn a_write_the_volume_refuses_is_enospc_at_close() {
    if skip_without_fuse() {
        return;
    }
    for errno in ["ENOSPC", "EDQUOT"] {
        let f = Faulty::new("[namespace.ns]\n");
        write_file(&f.m.path("ns", "k"), b"old").unwrap();
        // Far more than the cache holds: evicting it all would not help,
        // so nothing is evicted.
        f.inject(&format!("write {errno}\n"));
        let r = write_and_close(&f.m.path("ns", "k"), &vec![7u8; 256 << 10]);
        assert_errno(r, libc::ENOSPC, &format!("close() under write {errno}"));
        f.lift();
        untouched(&f, "k", b"old");
        assert_eq!(f.enospc(), 1, "{errno}");
        assert!(f.mount_stat("backing_full") >= 1, "{errno}");
        assert_eq!(f.m.total_stat("evictions"), 0, "{errno}");
        write_file(&f.m.path("ns", "k"), &vec![8u8; 256 << 10]).unwrap();
        assert_eq!(
            read_file(&f.m.path("ns", "k")).unwrap(),
            vec![8u8; 256 << 10]
        );
    }
}

#[test]
fn a_failed_fsync_before_publish_is_eio_at_close() {
    if skip_without_fuse() {
        return;
    }
    let f = Faulty::new("[namespace.ns]\ndurability = \"fsync\"\n");
    write_file(&f.m.path("ns", "k"), b"old").unwrap();
    f.inject("fsync EIO\n");
    let r = write_and_close(&f.m.path("ns", "k"), b"new version");
    assert_errno(r, libc::EIO, "close() when fsync fails");
    f.lift();
    untouched(&f, "k", b"old");
    assert_eq!(f.mount_stat("backing_io_errors"), 1);
    write_file(&f.m.path("ns", "k"), b"after").unwrap();
    assert_eq!(read_file(&f.m.path("ns", "k")).unwrap(), b"after");
}

#[test]
fn an_append_whose_copy_cannot_be_read_is_eio_and_the_entry_stays() {
    if skip_without_fuse() {
        return;
    }
    let f = Faulty::new("[namespace.ns]\n");
    write_file(&f.m.path("ns", "k"), b"old").unwrap();
    f.inject("open EIO\nread EIO\n");
    let r = fs::OpenOptions::new()
        .append(true)
        .open(f.m.path("ns", "k"))
        .and_then(|mut w| {
            w.write_all(b"+more")?;
            close_file(w)
        });
    assert_errno(r, libc::EIO, "an append when the volume cannot be read");
    f.lift();
    untouched(&f, "k", b"old");
    assert!(f.mount_stat("backing_io_errors") >= 1);
    assert_eq!(
        f.mount_stat("corrupt_entries"),
        0,
        "a read error is no corruption"
    );
}
