//! Redirects: writers sent off a published version's inode. Such an open
//! gets ESTALE, and the kernel's retry (a fresh lookup from the same
//! thread) is given the inode the writer's content will be published as;
//! its open then takes the redirect (see the module docs of `fs`).
//!
//! Invariant: a redirect lives at most `REDIRECT_LIFE` (a writer that never
//! came back); its key's name is not cached while one is pending.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::inodes::EntryAttr;
use super::types::Attr;
use crate::store::{Key, Namespace};

/// A writer whose open of a published version was refused with ESTALE:
/// the kernel looks the name up again for it, and gets `version`, the
/// inode its staged content will be published as.
pub(super) struct Redirect {
    pub ns: Namespace,
    pub key: Key,
    pub version: u64,
    /// The size the redirected inode starts with (0 for O_TRUNC).
    pub size: u64,
    /// The replaced version's owner and mode: an overwrite keeps them, as
    /// a local file's inode does (and the kernel's permission check on
    /// the retry is made against them).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub until: Instant,
}

/// A redirected writer's lookup and open follow within microseconds; a
/// redirect older than this belongs to a writer that gave up.
pub(super) const REDIRECT_LIFE: Duration = Duration::from_secs(5);

/// Pending redirects by the writing thread (a thread opens one file at a
/// time). A leaf lock.
#[derive(Default)]
pub(super) struct Redirects(Mutex<HashMap<u32, Redirect>>);

impl Redirects {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Redirect>> {
        crate::sync::lock(&self.0)
    }

    /// Whether thread `pid` was redirected and has not opened yet.
    pub(super) fn has(&self, pid: u32) -> bool {
        let r = self.lock();
        !r.is_empty() && r.contains_key(&pid)
    }

    /// The inode a redirected writer's lookup of `key` gets.
    pub(super) fn attr_for(&self, pid: u32, ns: &Namespace, key: &Key) -> Option<Attr> {
        let r = self.lock();
        let r = r
            .get(&pid)
            .filter(|r| &r.ns == ns && &r.key == key && r.until > Instant::now())?;
        Some(
            EntryAttr {
                ino: r.version,
                size: r.size,
                blocks: r.size.div_ceil(512),
                mtime: SystemTime::now(),
                perm: u32::from(r.perm),
                uid: r.uid,
                gid: r.gid,
            }
            .to_attr(),
        )
    }

    /// Whether no writer is on its way anywhere (a listing then asks
    /// nothing per name).
    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Whether a writer is on its way to `key`.
    pub(super) fn targets(&self, ns: &Namespace, key: &Key) -> bool {
        let r = self.lock();
        !r.is_empty() && r.values().any(|r| &r.ns == ns && &r.key == key)
    }

    /// Takes thread `pid`'s redirect to inode `ino`, if any.
    pub(super) fn take(&self, pid: u32, ino: u64) -> Option<Redirect> {
        let mut r = self.lock();
        if r.get(&pid).is_some_and(|r| r.version == ino) {
            r.remove(&pid)
        } else {
            None
        }
    }

    pub(super) fn insert(&self, pid: u32, redirect: Redirect) {
        let mut r = self.lock();
        // Redirects of writers that never came back go here, not on
        // every lookup.
        let now = Instant::now();
        r.retain(|_, r| r.until > now);
        r.insert(pid, redirect);
    }
}
