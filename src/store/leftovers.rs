//! What daemons that died left in the backing dir (their staging and
//! trash dirs: writes that never closed, old versions an eviction or a
//! purge had moved aside), and what an offline command left directly in
//! `staging/` and `trash/`: removed behind a serving daemon, on the
//! rebuild's thread once the index is complete, not before the mount.
//!
//! Why not at start: a daemon killed during a purge leaves every entry it
//! had moved aside in its trash, and the next start unlinked them all
//! before it mounted: 200,000 files took 177 s on this VM's loaded disk,
//! and the mount served nothing meanwhile (PRODUCT.md section 6: the first
//! hit within 1 s of the start).
//!
//! Invariants:
//! - A dead session's lock file goes last, once its dirs are gone: a
//!   daemon that stops (or dies) midway leaves it, so the next start finds
//!   the session dead again and finishes. Two daemons removing one
//!   session's files at once only find some already gone.
//! - Files directly in `staging/` and `trash/` are an offline command's:
//!   orphans only while none can run, that is while this daemon holds the
//!   backing dir's lock. It found itself alone at its start (else it is
//!   not asked to remove them), and the lock lives as long as the store,
//!   which the rebuild thread holds until it is done or asked to stop.
//! - Nothing here is counted: trash left the index (and the usage) when it
//!   was moved there, and staging never entered it. Only the volume's free
//!   room waits for the removal.
//! - It stops between two files when the store stops.

use std::fs;
use std::path::Path;

use super::Store;

impl Store {
    /// Removes what `open` found left by dead daemons and offline
    /// commands (`Leftovers`), unless the store stops first.
    pub(super) fn remove_leftovers(&self) {
        // A test's hold (debug builds: see backing.rs).
        while self.layout.io.held("leftovers") && !self.stopping() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let left = std::mem::take(&mut *crate::sync::lock(&self.rebuild.leftovers));
        let (staging, trash) = self.layout.session_parents();
        let stop = || self.stopping();
        let mut removed = 0;
        for token in &left.sessions {
            for dir in [staging.join(token), trash.join(token)] {
                let Some(n) = remove_files(&dir, |_, _| false, stop) else {
                    return;
                };
                removed += n;
                let _ = fs::remove_dir(&dir);
            }
            let _ = fs::remove_file(staging.join(format!("{token}.lock")));
        }
        if left.offline {
            for (dir, is_session) in [(staging, true), (trash, false)] {
                // Sessions' own files and dirs are judged above, not here.
                let keep =
                    |name: &[u8], is_dir: bool| is_dir || (is_session && name.ends_with(b".lock"));
                let Some(n) = remove_files(dir, keep, stop) else {
                    return;
                };
                removed += n;
            }
        }
        if removed > 0 {
            log::info!(
                "removed {removed} files left by daemons that died or by offline commands ({} sessions)",
                left.sessions.len()
            );
        }
    }
}

/// Removes the files directly in `dir` but those `keep` names (by name
/// and whether it is a dir); `None` if `stop` said to stop first.
fn remove_files(
    dir: &Path,
    keep: impl Fn(&[u8], bool) -> bool,
    stop: impl Fn() -> bool,
) -> Option<usize> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(rd) = fs::read_dir(dir) else {
        return Some(0);
    };
    let mut n = 0;
    for e in rd.flatten() {
        if stop() {
            return None;
        }
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if keep(e.file_name().as_bytes(), is_dir) {
            continue;
        }
        if fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    Some(n)
}
