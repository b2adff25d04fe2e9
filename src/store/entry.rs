//! The on-disk entry format: one file per entry, self-describing.
//!
//! ```text
//! [content: stored_content_size bytes][dead trailers][header: bincode EntryHeader][footer: 24 bytes]
//! footer = header_len u32 LE | format u32 LE | sha256(header)[..8] | b"CFSENTRY"
//! ```
//!
//! The trailer that counts is the one at the end of the file. A publish
//! writes one right after the content; a metadata change (rename, chmod,
//! touch, TTL, xattrs) appends a new one and leaves the old ones in place
//! as dead bytes (see `trailer.rs`), so every prefix of the file that once
//! was the whole file still reads as the entry it was then. Format 3
//! allows dead bytes between content and trailer; formats 1 and 2 do not.
//!
//! Content comes first so that a staging file *is* the content while it is
//! written (writes land at their own offsets, reads of a published entry
//! need no offset arithmetic) and publishing only appends the trailer.
//! Everything read back is untrusted: `read_header` validates sizes, magic,
//! format and the header's own check before decoding; the content checksum
//! is checked by `verify_content` before an entry's bytes are first served.

use std::fs::File;
use std::io;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::backing::BackingIo;
use super::clock::UnixNanos;
use super::entry_old::{EntryHeaderV1, EntryHeaderV2};

/// 2 added `ctime` and `atime`; 3 added `renamed_from`, user xattrs and
/// dead trailers. Formats 1 and 2 are still read (see `entry_old.rs`).
pub const ENTRY_FORMAT: u32 = 3;
const MAGIC: &[u8; 8] = b"CFSENTRY";
/// `EntryHeader::compression`: the content is the plain bytes.
pub const COMPRESSION_NONE: u8 = 0;
/// `EntryHeader::compression`: the content is one zstd frame.
pub const COMPRESSION_ZSTD: u8 = 1;
pub(super) const FOOTER_LEN: u64 = 24;
/// The longest key (4096 bytes: a path inside a namespace) twice (key and
/// renamed_from), a namespace, the xattrs at their limits (see
/// `xattrs.rs`: 64 KiB of names and values, 32 of them with their length
/// prefixes) and the fixed fields fit with room to spare. Bounded so a
/// damaged length never makes a reader allocate much.
pub(super) const MAX_HEADER_LEN: u64 = 80 * 1024;
/// What `read_header` reads first: the footer and most headers whole.
const FIRST_READ: u64 = 4096;

/// What travels with an entry's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryHeader {
    pub namespace: Vec<u8>,
    pub key: Vec<u8>,
    /// Publish time, or the last `touch`: the TTL clock starts here.
    pub mtime: UnixNanos,
    /// Per-entry TTL in seconds (`user.cachefs.ttl`); `None` = the namespace's.
    pub ttl_secs: Option<u64>,
    pub logical_size: u64,
    /// The content's length in the file: `logical_size` when stored
    /// plain, less when compressed.
    pub stored_content_size: u64,
    /// `COMPRESSION_NONE` or `COMPRESSION_ZSTD` (one zstd frame).
    pub compression: u8,
    /// Of the plain (logical) bytes, whatever the storage: what a reader
    /// and an export get, so `user.cachefs.sha256` is `sha256sum`'s.
    pub content_sha256: [u8; 32],
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// When this version or its metadata last changed (publish, chmod,
    /// chown, utime, truncate, TTL, rename).
    pub ctime: UnixNanos,
    /// Set by `utimensat` (and the create), never by a read: a read
    /// writes nothing (the cache is noatime-like).
    pub atime: UnixNanos,
    /// Set by a rename's trailer: the key the entry is moving from. A file
    /// found at that key's path is still that key's entry (the rename
    /// did not finish; see `trailer.rs`), at `key`'s path it is `key`'s.
    pub renamed_from: Option<Vec<u8>>,
    /// The entry's own `user.*` xattrs (name without the `user.` prefix
    /// is NOT stripped: the whole name), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
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

#[derive(Debug, thiserror::Error)]
pub enum CorruptEntry {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("file too short for an entry ({0} bytes)")]
    TooShort(u64),
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported entry format {0}")]
    Format(u32),
    #[error("bad header length {0}")]
    HeaderLength(u64),
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("header does not decode: {0}")]
    Decode(String),
    #[error("sizes disagree: file {file}, content {content}, header {header}")]
    Sizes {
        file: u64,
        content: u64,
        header: u64,
    },
    #[error("content checksum mismatch")]
    ContentChecksum,
    /// A valid trailer naming other metadata than the index holds, or a
    /// file shorter than the length it was read at: another daemon's
    /// change (see `trailer.rs`, `read_entry_at`), not damage.
    #[error("trailer changed since it was indexed")]
    Changed,
    #[error("unknown compression {0}")]
    Compression(u8),
    #[error("compressed content does not decode: {0}")]
    Decompress(String),
}

impl EntryHeader {
    /// The bytes appended after the content at publish.
    pub fn encode_trailer(&self) -> Vec<u8> {
        let body = bincode::serialize(self).expect("EntryHeader always serializes");
        let mut out = Vec::with_capacity(body.len() + FOOTER_LEN as usize);
        out.extend_from_slice(&body);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&ENTRY_FORMAT.to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&body)[..8]);
        out.extend_from_slice(MAGIC);
        out
    }

    /// Size of the whole file this header describes.
    #[cfg(test)]
    pub fn file_size(&self) -> u64 {
        let body = bincode::serialized_size(self).unwrap_or(0);
        self.stored_content_size + body + FOOTER_LEN
    }
}

/// Reads of a trailer whose file keeps growing under them (appends by
/// another daemon) before it is called damaged.
const SETTLE_TRIES: u32 = 8;

/// Reads the trailer of an open entry file at its current length, with
/// the metadata that length came from. Another daemon may be appending a
/// trailer (an in-place metadata change, see `trailer.rs`): a trailer
/// read at a length the file no longer has is read again at the new one,
/// never taken for damage; only a file that stays put and reads bad is.
///
/// The same for a file read through a view whose attributes lag (a FUSE
/// client of another host's volume): a trailer that reads short or bad is
/// checked against the size the filesystem has now (`fstat_fresh`), not
/// the cached one. One that keeps reading short is `Changed`: replaced
/// again and again under the reader, no damage.
pub fn read_header_settled(
    io: &BackingIo,
    file: &File,
) -> io::Result<(std::fs::Metadata, Result<EntryHeader, CorruptEntry>)> {
    let mut md = file.metadata()?;
    let mut tries = 1;
    loop {
        let r = read_header(io, file, md.len());
        if let Err(CorruptEntry::Io(e)) = r {
            return Err(e);
        }
        if r.is_ok() || tries >= SETTLE_TRIES {
            return Ok((md, r));
        }
        // Refreshes the cached attributes `metadata` then reads.
        let (_, len) = io.fstat_fresh(file)?;
        let now = file.metadata()?;
        if len == md.len() && now.len() == md.len() && !matches!(r, Err(CorruptEntry::Changed)) {
            return Ok((md, r));
        }
        md = now;
        tries += 1;
    }
}

/// `read_exact_at` of an entry file's bytes, where running out of bytes
/// means the file is shorter than the length it is read at: replaced or
/// rewritten since that length was learned, so `Changed`, not damage.
fn read_entry_at(
    io: &BackingIo,
    file: &File,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), CorruptEntry> {
    io.read_exact_at(file, buf, offset)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => CorruptEntry::Changed,
            _ => CorruptEntry::Io(e),
        })
}

/// Reads and validates the trailer of an entry file of `file_len` bytes.
pub fn read_header(
    io: &BackingIo,
    file: &File,
    file_len: u64,
) -> Result<EntryHeader, CorruptEntry> {
    if file_len < FOOTER_LEN {
        return Err(CorruptEntry::TooShort(file_len));
    }
    // Most trailers are a few hundred bytes: one read. A longer header
    // (xattrs, a long key) costs a second read of exactly its length.
    let first = file_len.min(FIRST_READ);
    let mut tail = vec![0u8; first as usize];
    read_entry_at(io, file, &mut tail, file_len - first)?;
    let footer = &tail[tail.len() - FOOTER_LEN as usize..];
    let header_len = u64::from(u32::from_le_bytes(word(&footer[0..4])));
    let want = header_len.saturating_add(FOOTER_LEN);
    if &footer[16..24] == MAGIC && want > first && want <= file_len && header_len <= MAX_HEADER_LEN
    {
        tail = vec![0u8; want as usize];
        read_entry_at(io, file, &mut tail, file_len - want)?;
    }
    parse_trailer(&tail, file_len)
}

/// Validates and decodes the trailer at the end of `tail`, the last bytes
/// (at most `MAX_HEADER_LEN + FOOTER_LEN`) of an entry file of `file_len`
/// bytes. Every byte is untrusted: lengths are checked against what is
/// there before use, and decoding is bounded by the bytes given.
pub fn parse_trailer(tail: &[u8], file_len: u64) -> Result<EntryHeader, CorruptEntry> {
    let tail_len = tail.len() as u64;
    if tail_len < FOOTER_LEN || tail_len > file_len || tail_len > MAX_HEADER_LEN + FOOTER_LEN {
        return Err(CorruptEntry::TooShort(tail_len.min(file_len)));
    }
    let footer = &tail[tail.len() - FOOTER_LEN as usize..];
    if &footer[16..24] != MAGIC {
        return Err(CorruptEntry::BadMagic);
    }
    let header_len = u64::from(u32::from_le_bytes(word(&footer[0..4])));
    let format = u32::from_le_bytes(word(&footer[4..8]));
    if !(1..=ENTRY_FORMAT).contains(&format) {
        return Err(CorruptEntry::Format(format));
    }
    if header_len > tail_len - FOOTER_LEN {
        return Err(CorruptEntry::HeaderLength(header_len));
    }
    let body_end = tail.len() - FOOTER_LEN as usize;
    let body = &tail[body_end - header_len as usize..body_end];
    if Sha256::digest(body)[..8] != footer[8..16] {
        return Err(CorruptEntry::HeaderChecksum);
    }
    let header: EntryHeader = match format {
        1 => decode_header::<EntryHeaderV1>(body)?.into(),
        2 => decode_header::<EntryHeaderV2>(body)?.into(),
        _ => decode_header::<EntryHeader>(body)?,
    };
    // Where this trailer starts; the content ends there, or before it
    // (format 3: dead trailers between).
    let start = file_len - FOOTER_LEN - header_len;
    let content = header.stored_content_size;
    let fits = if format < 3 {
        content == start
    } else {
        content <= start
    };
    // Stored plain, the content is the logical bytes; compressed (see
    // compress.rs), it is smaller than they are, or it would be plain.
    let logical_ok = match header.compression {
        COMPRESSION_NONE => header.logical_size == content,
        COMPRESSION_ZSTD => header.logical_size > content,
        other => return Err(CorruptEntry::Compression(other)),
    };
    if !fits || !logical_ok {
        return Err(CorruptEntry::Sizes {
            file: file_len,
            content: start,
            header: content,
        });
    }
    Ok(header)
}

/// Four bytes of a footer field (the caller slices exactly four).
fn word(b: &[u8]) -> [u8; 4] {
    let mut w = [0u8; 4];
    w.copy_from_slice(b);
    w
}

/// Decodes a header body: no allocation beyond the body's own size
/// (bincode's limit), and nothing may follow the header.
fn decode_header<H: serde::de::DeserializeOwned>(body: &[u8]) -> Result<H, CorruptEntry> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(body.len() as u64)
        .deserialize(body)
        .map_err(|e| CorruptEntry::Decode(e.to_string()))
}

/// Hashes the first `len` bytes of a file (positioned reads: the file's
/// shared offset is left alone).
pub fn content_sha256(io: &BackingIo, file: &File, len: u64) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; (len.min(256 * 1024) as usize).max(1)];
    let mut done = 0u64;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        let n = io.read_at(file, &mut buf[..want], done)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short entry"));
        }
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(h.finalize().into())
}

/// Checks a plain entry's content against its header's checksum (a
/// compressed one's is checked as it is decompressed: `compress.rs`).
pub fn verify_content(
    io: &BackingIo,
    file: &File,
    header: &EntryHeader,
) -> Result<(), CorruptEntry> {
    if content_sha256(io, file, header.stored_content_size)? == header.content_sha256 {
        Ok(())
    } else {
        Err(CorruptEntry::ContentChecksum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header(content: &[u8]) -> EntryHeader {
        EntryHeader {
            namespace: b"ns".to_vec(),
            key: b"k".to_vec(),
            mtime: 1,
            ttl_secs: Some(5),
            logical_size: content.len() as u64,
            stored_content_size: content.len() as u64,
            compression: 0,
            content_sha256: Sha256::digest(content).into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            ctime: 2,
            atime: -3,
            renamed_from: None,
            xattrs: vec![(b"user.etag".to_vec(), b"\"abc\"".to_vec())],
        }
    }

    fn entry_file(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn round_trip_and_content_check() {
        for content in [&b""[..], b"x", &[7u8; 70_000]] {
            let h = header(content);
            let mut bytes = content.to_vec();
            bytes.extend(h.encode_trailer());
            assert_eq!(h.file_size(), bytes.len() as u64);
            let f = entry_file(&bytes);
            let io = BackingIo::default();
            let back = read_header(&io, &f, bytes.len() as u64).unwrap();
            assert_eq!(back, h);
            verify_content(&io, &f, &back).unwrap();
        }
    }

    #[test]
    fn damage_is_detected_never_a_panic() {
        let content = b"hello world";
        let mut bytes = content.to_vec();
        bytes.extend(header(content).encode_trailer());
        // Every truncation and every single-byte flip is refused.
        for cut in 0..bytes.len() {
            let f = entry_file(&bytes[..cut]);
            let io = BackingIo::default();
            assert!(read_header(&io, &f, cut as u64).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            let f = entry_file(&bad);
            let io = BackingIo::default();
            let ok =
                read_header(&io, &f, bad.len() as u64).and_then(|h| verify_content(&io, &f, &h));
            assert!(ok.is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn format_1_entries_are_still_read_with_ctime_and_atime_from_mtime() {
        #[derive(Serialize)]
        struct V1 {
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
        let content = b"written by format 1";
        let h = header(content);
        let v1 = V1 {
            namespace: h.namespace.clone(),
            key: h.key.clone(),
            mtime: -7,
            ttl_secs: h.ttl_secs,
            logical_size: h.logical_size,
            stored_content_size: h.stored_content_size,
            compression: 0,
            content_sha256: h.content_sha256,
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
        };
        let body = bincode::serialize(&v1).unwrap();
        let mut bytes = content.to_vec();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&Sha256::digest(&body)[..8]);
        bytes.extend_from_slice(MAGIC);
        let f = entry_file(&bytes);
        let io = BackingIo::default();
        let back = read_header(&io, &f, bytes.len() as u64).unwrap();
        assert_eq!((back.mtime, back.ctime, back.atime), (-7, -7, -7));
        assert_eq!(back.key, h.key);
        assert!(back.xattrs.is_empty() && back.renamed_from.is_none());
        verify_content(&io, &f, &back).unwrap();
        // An unknown format is refused.
        let n = bytes.len();
        bytes[n - 20..n - 16].copy_from_slice(&4u32.to_le_bytes());
        let f = entry_file(&bytes);
        assert!(matches!(
            read_header(&io, &f, n as u64),
            Err(CorruptEntry::Format(4))
        ));
    }
}
