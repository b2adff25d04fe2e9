//! The file that carries an exclusive create's claim to the other daemons
//! on the backing dir (see `claims.rs`, and `claims_across.rs` for how
//! it is taken and reaped).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::sessions::STALE;

/// An exclusive create's claim as every daemon on the backing dir sees it
/// (`claims/<entry hash>`, made with `O_EXCL`, holding its session's
/// token): another daemon's `O_EXCL` create of the key meets it and is
/// refused. Removed when the claim ends (publish, or the writer's last
/// close, killed or not); a dead session's claims are removed by the next
/// daemon that meets them or starts (`Store::reap_dead_claims`).
pub(super) struct ClaimFile {
    pub(super) path: PathBuf,
    pub(super) token: String,
}

impl Drop for ClaimFile {
    fn drop(&mut self) {
        // Only while it is still ours: a daemon that took this session for
        // dead may have reaped it and another claimed the key since.
        if read_token(&self.path).as_deref() == Some(self.token.as_str())
            && let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("cannot remove claim {}: {e}", self.path.display());
        }
    }
}

/// The token a claim file names; `None` if unreadable or not a token
/// (a claim being made, or garbage). A token names a file in staging/,
/// so anything that is not one (`../x`) is never used as a path.
pub(super) fn read_token(path: &Path) -> Option<String> {
    let mut text = String::new();
    fs::File::open(path)
        .ok()?
        .take(128)
        .read_to_string(&mut text)
        .ok()?;
    let token = text.trim_end();
    let valid = !token.is_empty()
        && token.len() <= 64
        && token.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then(|| token.to_owned())
}

/// Whether a claim file that names no token is old enough to be garbage
/// rather than a claim whose token is being written.
pub(super) fn abandoned(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > STALE)
}
