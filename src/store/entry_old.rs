//! Headers of older entry formats, still read: format 1 (no ctime, atime)
//! and format 2 (no renamed_from, no user xattrs). Each decodes to the
//! current `EntryHeader` with the missing fields filled as they were
//! meant: times from the mtime, no rename in progress, no xattrs.

use serde::Deserialize;

use super::clock::UnixNanos;
use super::entry::EntryHeader;

/// The header of format 1, read from entries written before `ctime`.
#[derive(Deserialize)]
pub(super) struct EntryHeaderV1 {
    namespace: Vec<u8>,
    key: Vec<u8>,
    mtime: UnixNanos,
    ttl_secs: Option<u64>,
    logical_size: u64,
    stored_content_size: u64,
    compression: u8,
    content_sha256: [u8; 32],
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The header of format 2: format 3's without its last two fields.
#[derive(Deserialize)]
pub(super) struct EntryHeaderV2 {
    namespace: Vec<u8>,
    key: Vec<u8>,
    mtime: UnixNanos,
    ttl_secs: Option<u64>,
    logical_size: u64,
    stored_content_size: u64,
    compression: u8,
    content_sha256: [u8; 32],
    mode: u32,
    uid: u32,
    gid: u32,
    ctime: UnixNanos,
    atime: UnixNanos,
}

impl From<EntryHeaderV1> for EntryHeader {
    fn from(h: EntryHeaderV1) -> EntryHeader {
        EntryHeaderV2 {
            namespace: h.namespace,
            key: h.key,
            mtime: h.mtime,
            ttl_secs: h.ttl_secs,
            logical_size: h.logical_size,
            stored_content_size: h.stored_content_size,
            compression: h.compression,
            content_sha256: h.content_sha256,
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
            ctime: h.mtime,
            atime: h.mtime,
        }
        .into()
    }
}

impl From<EntryHeaderV2> for EntryHeader {
    fn from(h: EntryHeaderV2) -> EntryHeader {
        EntryHeader {
            namespace: h.namespace,
            key: h.key,
            mtime: h.mtime,
            ttl_secs: h.ttl_secs,
            logical_size: h.logical_size,
            stored_content_size: h.stored_content_size,
            compression: h.compression,
            content_sha256: h.content_sha256,
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
            ctime: h.ctime,
            atime: h.atime,
            renamed_from: None,
            xattrs: Vec::new(),
        }
    }
}
