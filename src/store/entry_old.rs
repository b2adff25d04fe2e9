//! Headers of older entry formats, still read: format 1 (no ctime, atime)
//! and format 2 (no renamed_from, no user xattrs). `entry.rs` turns each
//! into the current `EntryHeader` with the missing fields filled as they
//! were meant: times from the mtime, no rename in progress, no xattrs.

use serde::Deserialize;

use super::clock::UnixNanos;

/// The header of format 1, read from entries written before `ctime`.
#[derive(Deserialize)]
pub(super) struct EntryHeaderV1 {
    pub(super) namespace: Vec<u8>,
    pub(super) key: Vec<u8>,
    pub(super) mtime: UnixNanos,
    pub(super) ttl_secs: Option<u64>,
    pub(super) logical_size: u64,
    pub(super) stored_content_size: u64,
    pub(super) compression: u8,
    pub(super) content_sha256: [u8; 32],
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// The header of format 2: format 3's without its last two fields.
#[derive(Deserialize)]
pub(super) struct EntryHeaderV2 {
    pub(super) namespace: Vec<u8>,
    pub(super) key: Vec<u8>,
    pub(super) mtime: UnixNanos,
    pub(super) ttl_secs: Option<u64>,
    pub(super) logical_size: u64,
    pub(super) stored_content_size: u64,
    pub(super) compression: u8,
    pub(super) content_sha256: [u8; 32],
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) ctime: UnixNanos,
    pub(super) atime: UnixNanos,
}
