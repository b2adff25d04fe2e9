//! Exclusive creates across daemons: `claims/<entry hash>` made with
//! `O_EXCL` is the claim every daemon on the backing dir honours; a dead
//! session's claim is reaped by whoever meets it, or at the next start.
//! Nothing here rests on `flock` (see `sessions.rs`).

use std::fs;
use std::io;
use std::path::Path;

use super::claim_file::{ClaimFile, abandoned, read_token};
use super::{Store, StoreError};
use crate::names::{Key, Namespace};

impl Store {
    /// Claims `key` for an exclusive create across every daemon on the
    /// backing dir; `Exists` while a live session holds it.
    pub(super) fn claim_across(&self, ns: &Namespace, key: &Key) -> Result<ClaimFile, StoreError> {
        let path = self.layout.claim_path(ns, key);
        let token = self.layout.token().to_owned();
        let io = &self.layout.io;
        // Twice: once more after reaping a dead session's claim.
        for _ in 0..2 {
            match io.create_new(&path) {
                Ok(file) => {
                    let claim = ClaimFile {
                        path: path.clone(),
                        token: token.clone(),
                    };
                    io.write_all_at(&file, format!("{token}\n").as_bytes(), 0)?;
                    return Ok(claim);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let dead = match read_token(&path) {
                        Some(holder) => !self.layout.session_lives(&holder),
                        None => abandoned(&path),
                    };
                    if !dead {
                        return Err(StoreError::Exists);
                    }
                    self.reap_claim(&path);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Exists)
    }

    /// Removes a dead session's claim. Moved aside first and judged again
    /// there: if another daemon reaped it and a live one claimed the key
    /// in between, that live claim is what was moved, and it goes back.
    fn reap_claim(&self, path: &Path) {
        let aside = self.layout.trash_path();
        if self.layout.io.rename(path, &aside).is_err() {
            return;
        }
        let lives = read_token(&aside).is_some_and(|t| self.layout.session_lives(&t));
        if lives {
            let _ = self.layout.io.hard_link(&aside, path);
        } else {
            log::info!(
                "removed the claim of a daemon that died: {}",
                path.display()
            );
        }
        let _ = self.layout.io.remove_file(&aside);
    }

    /// Removes the claims of sessions that died (a killed daemon's
    /// exclusive creates in flight); run at start. Returns how many.
    pub(super) fn reap_dead_claims(&self) -> usize {
        let Ok(rd) = fs::read_dir(self.layout.claims_dir()) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.flatten() {
            let path = e.path();
            let dead = match read_token(&path) {
                Some(holder) => !self.layout.session_lives(&holder),
                None => abandoned(&path),
            };
            if dead {
                self.reap_claim(&path);
                n += 1;
            }
        }
        n
    }
}
