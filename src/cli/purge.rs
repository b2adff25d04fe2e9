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

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use cachefs::fs::{XATTR_PURGE, XATTR_PURGED};
use cachefs::store::offline::{Access, OfflineStore};
use cachefs::store::{Namespace, PurgeFilter, PurgeReport, PurgeSelect, SystemClock};

use super::{human_bytes, offline_config, progress};

pub enum Target<'a> {
    Mount(&'a Path),
    Backing {
        dir: &'a Path,
        config: Option<&'a Path>,
    },
}

pub fn run(
    target: Target,
    namespace: Option<&str>,
    select: PurgeSelect,
    json: bool,
) -> Result<ExitCode> {
    let ns = namespace
        .map(|n| {
            Namespace::parse(n.as_bytes()).map_err(|e| anyhow::anyhow!("bad namespace {n:?}: {e}"))
        })
        .transpose()?;
    let (report, how) = match target {
        Target::Mount(mnt) => (live(mnt, ns.as_ref(), select)?, "live"),
        Target::Backing { dir, config } => {
            let store = OfflineStore::open(
                dir,
                Access::Exclusive,
                offline_config(config)?,
                Arc::new(SystemClock),
            )?;
            let files = store.entry_files();
            let pb = progress(files.len() as u64, "purging");
            let filter = PurgeFilter {
                namespace: ns,
                select,
            };
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

fn live(mnt: &Path, ns: Option<&Namespace>, select: PurgeSelect) -> Result<PurgeReport> {
    if !super::cachefs_mounts()?.iter().any(|m| same_file(m, mnt)) {
        bail!(
            "{} is not a cachefs mount (for a backing dir with no daemon, use --backing DIR)",
            mnt.display()
        );
    }
    let dir = match ns {
        Some(ns) => mnt.join(std::ffi::OsStr::from_bytes(ns.as_bytes())),
        None => mnt.to_path_buf(),
    };
    let path = CString::new(dir.as_os_str().as_bytes()).context("path has a NUL byte")?;
    let value = select.to_string();
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
