//! `cachefs purge`: remove entries by namespace, age or expiry.
//!
//! Through a live mount the daemon does the work: the command sets the
//! `user.cachefs.purge` xattr on the mount root (or the namespace dir) to
//! `all`, `expired` or `older-than=SECONDS`; the daemon purges in one store
//! call (its counters and `df` change at once) and the command reads the
//! result back from `user.cachefs.purged` (same dir, same process).
//! Listing and unlinking through the mount would cost a FUSE round trip per
//! entry at 10^5 entries and race with new publishes.
//!
//! Offline (`--backing DIR`) it works on the files, holding the backing
//! dir's lock exclusively: it refuses when a live daemon holds the dir.
//!
//! `--prefix NS/DIR` narrows either to the keys under a directory; the
//! live request is the same xattr on `MOUNT/NS`, its value followed by
//! ` under=DIR` (on the namespace, not on the directory: with `--all` the
//! directory itself goes, and the result is read back where it was set).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use cachefs::fs::{XATTR_PURGE, XATTR_PURGED};
use cachefs::store::offline::{Access, OfflineStore};
use cachefs::store::{
    Key, KeyFormat, Namespace, PurgeFilter, PurgeReport, PurgeSelect, SystemClock,
};

use super::{human_bytes, offline_config, progress};

pub enum Target<'a> {
    Mount(&'a Path),
    Backing {
        dir: &'a Path,
        config: Option<&'a Path>,
    },
}

/// Where a purge looks.
pub enum Place<'a> {
    All,
    Namespace(&'a str),
    /// `NS/DIR`: a directory of a namespace (or just `NS`).
    Prefix(&'a str),
}

impl Place<'_> {
    fn filter(&self, select: PurgeSelect) -> Result<PurgeFilter> {
        let parse_ns = |n: &str| {
            Namespace::parse(n.as_bytes()).map_err(|e| anyhow::anyhow!("bad namespace {n:?}: {e}"))
        };
        let (namespace, prefix) = match self {
            Place::All => (None, None),
            Place::Namespace(n) => (Some(parse_ns(n)?), None),
            Place::Prefix(p) => {
                // `ns/a/b/` is `ns/a/b`, as for `rm -r`.
                let p = p.trim_end_matches('/');
                match p.split_once('/') {
                    None => (Some(parse_ns(p)?), None),
                    Some((n, dir)) => {
                        let key = Key::parse(dir.as_bytes(), KeyFormat::Any)
                            .map_err(|e| anyhow::anyhow!("bad prefix {p:?}: {e}"))?;
                        (Some(parse_ns(n)?), Some(key))
                    }
                }
            }
        };
        Ok(PurgeFilter {
            namespace,
            prefix,
            select,
        })
    }
}

pub fn run(target: Target, place: Place, select: PurgeSelect, json: bool) -> Result<ExitCode> {
    let filter = place.filter(select)?;
    let (report, how) = match target {
        Target::Mount(mnt) => (live(mnt, &filter)?, "live"),
        Target::Backing { dir, config } => {
            let store = OfflineStore::open(
                dir,
                Access::Exclusive,
                offline_config(config)?,
                Arc::new(SystemClock),
            )?;
            let files = store.entry_files();
            let pb = progress(files.len() as u64, "purging");
            let r = store
                .purge(&files, &filter, || pb.inc(1))
                .context("purge failed")?;
            pb.finish_and_clear();
            (r, "offline")
        }
    };
    if json {
        outln!(
            "{}",
            serde_json::json!({"entries": report.entries, "bytes": report.bytes, "mode": how})
        )?;
    } else {
        outln!(
            "purged {} entries ({})",
            report.entries,
            human_bytes(report.bytes)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn live(mnt: &Path, filter: &PurgeFilter) -> Result<PurgeReport> {
    if !super::cachefs_mounts()?.iter().any(|m| same_file(m, mnt)) {
        bail!(
            "{} is not a cachefs mount (for a backing dir with no daemon, use --backing DIR)",
            mnt.display()
        );
    }
    let dir = match &filter.namespace {
        Some(ns) => mnt.join(std::ffi::OsStr::from_bytes(ns.as_bytes())),
        None => mnt.to_path_buf(),
    };
    let path = CString::new(dir.as_os_str().as_bytes()).context("path has a NUL byte")?;
    let value = filter.wire_value();
    let set = CString::new(XATTR_PURGE).expect("no NUL");
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            set.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINVAL) && filter.prefix.is_some() {
            bail!(
                "cannot purge {}: the daemon does not take --prefix (an older cachefs?)",
                dir.display()
            );
        }
        bail!("cannot purge {}: {e}", dir.display());
    }
    let get = CString::new(XATTR_PURGED).expect("no NUL");
    let mut buf = [0u8; 64];
    // SAFETY: as above.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            get.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "purged, but cannot read the result from {}: {e}",
            dir.display()
        );
    }
    let text = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>());
    match (it.next(), it.next()) {
        (Some(Ok(entries)), Some(Ok(bytes))) => Ok(PurgeReport { entries, bytes }),
        _ => bail!("purged, but the daemon answered {text:?}"),
    }
}

/// `listed` comes from /proc/mounts (already absolute and resolved).
fn same_file(listed: &Path, given: &Path) -> bool {
    given.canonicalize().is_ok_and(|g| g == listed)
}
