//! A dedicated volume for a test: a tmpfs of a given size mounted on a
//! temp dir, unmounted when the guard drops (also on panic). Declare it
//! before the `Mount` whose backing dir it holds, so the cache is
//! unmounted first.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Volume {
    dir: tempfile::TempDir,
}

impl Volume {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g.
    /// "32m"). Returns `None` (after saying why) where it cannot be
    /// mounted outside CI; under `CI=true` that is a failure.
    pub fn tmpfs(size: &str) -> Option<Volume> {
        let dir = tempfile::Builder::new()
            .prefix("cachefs-volume-")
            .tempdir()
            .unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("cachefs-test")
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Volume { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("cannot mount a tmpfs but CI=true, refusing to skip: {why}");
                }
                eprintln!("SKIP: cannot mount a tmpfs ({why}); set CI=true to make this a failure");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Bytes still free on the volume.
    pub fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(self.path()).unwrap();
        st.blocks_available() as u64 * st.fragment_size() as u64
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
