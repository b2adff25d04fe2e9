//! The index's plain data: `EntryMeta` (what it knows of one entry, the
//! currency between the index, its compact slots and the store), what it
//! hands back when it removes entries, and the mount's limits. A leaf: it
//! imports nothing of the index.

use std::time::Duration;

use crate::config::Compression;
use crate::names::{Key, Namespace};
use crate::store::clock::UnixNanos;

/// What the index knows of one published entry. (The index keeps it in a
/// narrower form and hands out copies.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// The version's identity (the inode number the fs hands out). A new
    /// content is a new version; metadata-only updates keep it.
    pub version: u64,
    /// The backing file's inode number: tells a file replaced behind our back.
    pub file_id: u64,
    /// Size of the whole backing file (content and trailer).
    pub file_size: u64,
    pub mtime: UnixNanos,
    /// The last change of the version or its metadata (see `EntryHeader`).
    pub ctime: UnixNanos,
    /// Set by `utimensat`, never by a read (see `EntryHeader`).
    pub atime: UnixNanos,
    pub ttl_secs: Option<u64>,
    pub logical_size: u64,
    pub stored_bytes: u64,
    // The content's sha256 is not kept here (32 bytes an entry): it is in
    // the entry's trailer, read when needed.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The content checksum was checked (or computed) by this process.
    pub verified: bool,
    /// Stored compressed: readers read a plain copy (see `compress.rs`).
    /// Known for sure once `verified` (a snapshot does not keep it: an
    /// unverified entry's trailer decides).
    pub compressed: bool,
    pub last_access: UnixNanos,
}

/// An entry taken out of the index whose file must now be removed.
#[derive(Debug)]
pub struct Removed {
    pub ns: Namespace,
    pub key: Key,
    pub meta: EntryMeta,
    pub reason: RemoveReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    Expired,
    Evicted,
    Purged,
}

/// Limits on the whole mount.
#[derive(Debug, Clone, Copy)]
pub struct GlobalLimits {
    pub max_bytes: u64,
    pub max_entries: Option<u64>,
    pub default_ttl: Duration,
    /// Of namespaces that set none of their own (like `default_ttl`).
    pub compression: Compression,
}
