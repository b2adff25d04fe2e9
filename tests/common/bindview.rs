//! A bindfs view of a directory: a second host's view of a network volume
//! (its FUSE clients get no inotify events for writes made beside them),
//! unmounted on drop (also on panic). Declare it before the `Mount` whose
//! backing dir it is, so the cache unmounts first. Locks are forwarded.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::common::{Mount, is_mounted, lazy_unmount, wait_until};

pub struct BindView {
    pub dir: tempfile::TempDir,
}

impl BindView {
    pub fn of(src: &Path) -> BindView {
        BindView::with_args(src, &[])
    }

    /// A view with more of bindfs's options, e.g. `-o direct_io`: bindfs
    /// names its nodes by path, so every file that was ever at a path
    /// shares one kernel page cache, which a network volume's client
    /// (an NFS file handle per file) does not; direct I/O keeps the view
    /// faithful where a test reads files replaced under open descriptors.
    pub fn with_args(src: &Path, args: &[&str]) -> BindView {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = Command::new("bindfs")
            .args(["--multithreaded", "--enable-lock-forwarding"])
            .args(args)
            .arg(src)
            .arg(dir.path())
            .status()
            .expect("bindfs (apt-get install bindfs)");
        assert!(st.success(), "bindfs failed");
        assert!(
            wait_until(Duration::from_secs(10), || is_mounted(dir.path())),
            "bindfs never mounted"
        );
        BindView { dir }
    }
}

impl Drop for BindView {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
        if is_mounted(self.dir.path()) {
            lazy_unmount(self.dir.path());
        }
    }
}

/// Two daemons with config `cfg` on one backing dir: `b` beside `a`
/// (notified), or through a bindfs view of `a`'s backing dir (`polled`:
/// no notifications, a second host on a network volume). Fields drop in
/// order: `b`, the view it is on, then `a`, whose temp dir holds the
/// backing dir.
pub struct MountPair {
    pub b: Mount,
    pub view: Option<BindView>,
    pub a: Mount,
}

impl MountPair {
    pub fn new(cfg: &str, polled: bool) -> MountPair {
        let a = Mount::new(cfg);
        let (b, view) = if polled {
            let view = BindView::of(&a.backing);
            (Mount::with_backing(cfg, view.dir.path()), Some(view))
        } else {
            (Mount::with_backing(cfg, &a.backing), None)
        };
        MountPair { b, view, a }
    }
}
