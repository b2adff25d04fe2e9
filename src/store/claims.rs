//! Claims: the keys being written through this store right now.
//!
//! A writer's staged content claims its key from the moment its write
//! begins until it is published or dropped (`Claim` releases itself). What
//! a claim decides is checked under the index lock together with the act
//! it guards, so no check-then-act race is left to callers:
//! - an exclusive create (`O_EXCL`) of a live or claimed key is `Exists`,
//!   and the winner's claim is taken in the same critical section;
//! - a `RENAME_NOREPLACE` onto a live or claimed key is `Exists`;
//! - a lookup of a claimed key says so, for the kernel must not cache a
//!   name whose version is about to change.
//!
//! Lock order: the index lock, then the claims' own (a leaf). A claim is
//! released after its publish has put the new version in the index, so a
//! key is always live, claimed, or both while a publish is in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::claim_file::ClaimFile;
use crate::names::{Key, Namespace};

#[derive(Default)]
pub(super) struct Claims {
    held: Mutex<HashMap<(Namespace, Key), u32>>,
}

impl Claims {
    fn lock(&self) -> MutexGuard<'_, HashMap<(Namespace, Key), u32>> {
        crate::sync::lock(&self.held)
    }

    /// Claims `key` (several writers may hold claims on one key).
    pub(super) fn take(self: &Arc<Self>, ns: &Namespace, key: &Key) -> Claim {
        *self.lock().entry((ns.clone(), key.clone())).or_default() += 1;
        Claim {
            claims: Arc::clone(self),
            ns: ns.clone(),
            key: key.clone(),
            across: None,
        }
    }

    pub(super) fn is_claimed(&self, ns: &Namespace, key: &Key) -> bool {
        // Asked on every lookup hit: no key copies while nothing is claimed.
        let held = self.lock();
        !held.is_empty() && held.contains_key(&(ns.clone(), key.clone()))
    }
}

/// One writer's hold on a key; dropping it lets the key go.
pub struct Claim {
    claims: Arc<Claims>,
    ns: Namespace,
    key: Key,
    /// An exclusive create's claim, seen by the other daemons too.
    across: Option<ClaimFile>,
}

impl Claim {
    /// The claim holds `file` too, and removes it when it ends.
    pub(super) fn with_file(mut self, file: Option<ClaimFile>) -> Claim {
        self.across = file;
        self
    }

    /// The same writer now writes `key` (a rename of a file being written;
    /// the exclusive create it began as is over, so its claim file goes).
    pub(super) fn moved_to(self, key: &Key) -> Claim {
        let moved = self.claims.take(&self.ns, key);
        drop(self);
        moved
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self.claims.lock();
        let k = (self.ns.clone(), self.key.clone());
        if let Some(n) = held.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                held.remove(&k);
            }
        }
    }
}
