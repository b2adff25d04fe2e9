//! Which leaf shard directories (`data/ab/cd/`) are known to exist: a
//! bit each, so a publish into a known shard makes no `stat` of it. The
//! layout keeps the set; the stager, which makes new keys' shards while
//! they are written, marks what it made (the publish then finds it known).
//!
//! A bit set means "was there when last made or seen": whoever then finds
//! the directory gone (a link or rename into it fails with ENOENT) clears
//! it and makes the shard again.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// One bit per leaf shard directory (65 536) known to exist, by entry path.
pub(super) struct ShardsSeen(Box<[AtomicU64]>);

impl ShardsSeen {
    pub(super) fn new(shards: usize) -> ShardsSeen {
        ShardsSeen(
            (0..shards.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        )
    }

    pub(super) fn known(&self, entry_path: &Path) -> bool {
        shard_of(entry_path).is_some_and(|(w, bit)| self.0[w].load(Ordering::Relaxed) & bit != 0)
    }

    /// `entry_path`'s shard exists: made or seen.
    pub(super) fn saw(&self, entry_path: &Path) {
        if let Some((w, bit)) = shard_of(entry_path) {
            self.0[w].fetch_or(bit, Ordering::Relaxed);
        }
    }

    pub(super) fn forget(&self, entry_path: &Path) {
        if let Some((w, bit)) = shard_of(entry_path) {
            self.0[w].fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

/// The word and bit of an entry path's leaf shard in `ShardsSeen`: the
/// first four hex digits of its file name.
fn shard_of(entry_path: &Path) -> Option<(usize, u64)> {
    let name = entry_path.file_name()?.as_bytes().get(..4)?;
    let n = u16::from_str_radix(std::str::from_utf8(name).ok()?, 16).ok()? as usize;
    Some((n / 64, 1 << (n % 64)))
}
