//! Compression: entries of a namespace with `compression = "zstd"` are
//! stored as one zstd frame, and read back plain.
//!
//! - A publish compresses the staged (plain) bytes into a second staging
//!   file, off the index lock, and publishes that one; the writer's own
//!   staging file holds plain bytes until then, so a write in progress and
//!   its writer's reads are as for any namespace. An uncompressed
//!   namespace's publish never comes here.
//! - The rule for incompressible content: an entry is stored compressed
//!   only when it is at least `MIN_SIZE` bytes and zstd saves at least an
//!   eighth of it; otherwise plain (and the compression stops as soon as
//!   its output passes that budget). A write of 128 KiB or more is first
//!   sampled: if its first 64 KiB do not shrink by an eighth at zstd's
//!   fastest level, it is stored plain without compressing the rest. So a compressed entry's file is
//!   always smaller than its logical size, which the trailer check holds.
//! - Readers read plain bytes: a version's first open decompresses it once
//!   into an unlinked file in this daemon's staging dir, which then stands
//!   for the version's file (shared by its readers, kept with the other
//!   shared files, see `Index::share_file`). Random reads are then `pread`s
//!   of plain bytes, and the kernel's page cache holds plain bytes.
//! - The checksum is of the plain bytes (what a reader and an export get,
//!   and `user.cachefs.sha256`), checked on every decompression: damage in
//!   the compressed bytes is caught whether zstd notices it or not.

use std::fs::File;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use super::backing::BackingIo;
use super::entry::{COMPRESSION_NONE, COMPRESSION_ZSTD, CorruptEntry, EntryHeader};
use super::staging::StagingFile;
use super::{Store, StoreError};

/// Below this, a frame's own overhead eats most of the gain.
pub const MIN_SIZE: u64 = 256;
const CHUNK: usize = 256 * 1024;
/// How much of a large write is tried first (see `head_compresses`).
const SAMPLE: usize = 64 * 1024;

/// A staged write's content, compressed into a file of its own.
pub(super) struct Packed {
    pub file: File,
    pub path: std::path::PathBuf,
    pub stored: u64,
}

/// Reads `end - off` bytes of a file from `off` (positioned reads).
struct StoredBytes<'a> {
    io: &'a BackingIo,
    file: &'a File,
    off: u64,
    end: u64,
}

impl Read for StoredBytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.end - self.off).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.io.read_at(self.file, &mut buf[..want], self.off)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "content shorter than its trailer says",
            ));
        }
        self.off += n as u64;
        Ok(n)
    }
}

/// Writes a file from offset 0 through the store's room-making writes
/// (see room.rs); stops with an error past `budget` bytes.
struct FileSink<'a> {
    store: &'a Store,
    file: &'a File,
    off: u64,
    budget: u64,
    /// A write would have passed the budget.
    over: bool,
    /// Why the last write failed, as the store said it.
    failed: Option<StoreError>,
}

impl<'a> FileSink<'a> {
    fn new(store: &'a Store, file: &'a File, budget: u64) -> Self {
        FileSink {
            store,
            file,
            off: 0,
            budget,
            over: false,
            failed: None,
        }
    }

    /// The store's error for a failed write, else `e` as it came.
    fn error(&mut self, e: io::Error) -> StoreError {
        self.failed.take().unwrap_or(StoreError::Io(e))
    }
}

impl Write for FileSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.off + buf.len() as u64;
        if end > self.budget {
            self.over = true;
            return Err(io::Error::new(io::ErrorKind::WriteZero, "over budget"));
        }
        let io = &self.store.layout.io;
        let (file, off) = (self.file, self.off);
        match self
            .store
            .with_room_io(buf.len() as u64, || io.write_all_at(file, buf, off))
        {
            Ok(()) => {
                self.off = end;
                Ok(buf.len())
            }
            Err(e) => {
                let shown = io::Error::other(e.to_string());
                self.failed = Some(e);
                Err(shown)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams an entry's plain content (of the file `header` describes) into
/// `out`, checking its length and digest; returns the digest. On `Err`
/// part of it may be in `out`.
pub fn copy_plain(
    io: &BackingIo,
    file: &File,
    header: &EntryHeader,
    out: &mut dyn Write,
) -> Result<[u8; 32], CorruptEntry> {
    let stored = StoredBytes {
        io,
        file,
        off: 0,
        end: header.stored_content_size,
    };
    let mut hashed = Hashing {
        out,
        hash: Sha256::new(),
        n: 0,
    };
    match header.compression {
        COMPRESSION_NONE => {
            copy(stored, &mut hashed)?;
        }
        COMPRESSION_ZSTD => {
            let dec = zstd::stream::read::Decoder::new(stored)
                .map_err(CorruptEntry::Io)?
                .single_frame();
            // One byte more than promised tells a frame that says too much,
            // without decoding all of it.
            copy(dec.take(header.logical_size + 1), &mut hashed).map_err(|e| {
                match e.kind() {
                    // zstd's complaints about its input come as these.
                    io::ErrorKind::Other | io::ErrorKind::InvalidData => {
                        CorruptEntry::Decompress(e.to_string())
                    }
                    _ => CorruptEntry::Io(e),
                }
            })?;
        }
        other => return Err(CorruptEntry::Compression(other)),
    }
    if hashed.n != header.logical_size {
        return Err(CorruptEntry::Decompress(format!(
            "{} bytes where the trailer says {}",
            hashed.n, header.logical_size
        )));
    }
    let digest: [u8; 32] = hashed.hash.finalize().into();
    if digest != header.content_sha256 {
        return Err(CorruptEntry::ContentChecksum);
    }
    Ok(digest)
}

fn copy(mut from: impl Read, to: &mut Hashing<'_>) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.hash.update(&buf[..n]);
        to.n += n as u64;
        to.out.write_all(&buf[..n])?;
    }
}

struct Hashing<'a> {
    out: &'a mut dyn Write,
    hash: Sha256,
    n: u64,
}

impl Store {
    /// Compresses a staged write's content at `level`, if worth it (see
    /// the module docs); `None`: store it plain.
    pub(super) fn pack(
        &self,
        staging: &StagingFile,
        level: i32,
    ) -> Result<Option<Packed>, StoreError> {
        let len = staging.len;
        if len < MIN_SIZE || !self.head_compresses(staging)? {
            return Ok(None);
        }
        let io = &self.layout.io;
        let path = self.layout.staging_path();
        let file = self.with_room_io(0, || io.create_new(&path))?;
        let cleanup = |e| {
            let _ = io.remove_file(&path);
            e
        };
        let mut sink = FileSink::new(self, &file, len - len / 8);
        let mut enc = zstd::stream::write::Encoder::new(&mut sink, level)
            .map_err(|e| cleanup(StoreError::Io(e)))?;
        // The decoder learns the size up front (and a frame that lies about
        // it is refused: the trailer's logical size is checked too).
        let _ = enc.set_pledged_src_size(Some(len));
        let mut buf = vec![0u8; (len as usize).min(CHUNK)];
        let mut done = 0u64;
        let r = (|| {
            while done < len {
                let want = buf.len().min((len - done) as usize);
                let n = io.read_at(&staging.file, &mut buf[..want], done)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "staged file shorter than written",
                    ));
                }
                enc.write_all(&buf[..n])?;
                done += n as u64;
            }
            enc.finish().map(|_| ())
        })();
        match r {
            Ok(()) => Ok(Some(Packed {
                stored: sink.off,
                file,
                path,
            })),
            Err(_) if sink.over => {
                // Over budget: incompressible enough to stay plain.
                let _ = io.remove_file(&path);
                Ok(None)
            }
            Err(e) => Err(cleanup(sink.error(e))),
        }
    }

    /// Whether the first `SAMPLE` bytes of a large write shrink by an
    /// eighth at zstd's fastest level: random or already compressed
    /// content is then stored plain without compressing all of it. (A
    /// small write is compressed whole: its sample would be all of it.)
    fn head_compresses(&self, staging: &StagingFile) -> Result<bool, StoreError> {
        if staging.len < 2 * SAMPLE as u64 {
            return Ok(true);
        }
        let mut head = vec![0u8; SAMPLE];
        let n = self.layout.io.read_at(&staging.file, &mut head, 0)?;
        let packed = zstd::bulk::compress(&head[..n], 1)?;
        Ok(packed.len() * 8 <= n * 7)
    }

    /// The plain bytes of a compressed entry, decompressed into an
    /// unlinked file of this daemon's staging dir and checked against the
    /// trailer's digest. The inner `Err`: the entry is damaged; the outer:
    /// the volume failed.
    pub(super) fn unpack(
        &self,
        file: &File,
        header: &EntryHeader,
    ) -> Result<Result<File, CorruptEntry>, StoreError> {
        let io = &self.layout.io;
        let path = self.layout.staging_path();
        let plain = self.with_room_io(0, || io.create_new(&path))?;
        // Unlinked at once: it lives as long as its readers, and a crash
        // leaves nothing behind.
        let _ = io.remove_file(&path);
        let mut sink = FileSink::new(self, &plain, u64::MAX);
        match copy_plain(io, file, header, &mut sink) {
            Ok(_) => Ok(Ok(plain)),
            Err(CorruptEntry::Io(e)) => Err(sink.error(e)),
            Err(why) => Ok(Err(why)),
        }
    }

    /// Copies a published entry's plain content into a staged write (an
    /// in-place write or append starts from it).
    pub(super) fn copy_plain_into(
        &self,
        src: &File,
        header: &EntryHeader,
        staging: &mut StagingFile,
    ) -> Result<(), StoreError> {
        let mut sink = FileSink::new(self, &staging.file, u64::MAX);
        match copy_plain(&self.layout.io, src, header, &mut sink) {
            Ok(_) => Ok(()),
            Err(CorruptEntry::Io(e)) => Err(sink.error(e)),
            Err(why) => Err(StoreError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                why.to_string(),
            ))),
        }
    }
}

impl Store {
    /// Stores a staged write compressed, if worth it: its file becomes
    /// the packed one (the plain one goes) and `header` says so.
    pub(super) fn compress_staged(
        &self,
        staging: &mut StagingFile,
        header: &mut EntryHeader,
        level: i32,
    ) -> Result<(), StoreError> {
        if let Some(packed) = self.pack(staging, level)? {
            header.compression = COMPRESSION_ZSTD;
            header.stored_content_size = packed.stored;
            // The packed file is named: it is renamed into place. The
            // plain one goes: by name, or (unnamed) with its descriptor.
            let plain = staging.path.replace(packed.path);
            staging.file = packed.file;
            if let Some(plain) = plain {
                let _ = self.layout.io.remove_file(&plain);
            }
        }
        Ok(())
    }
}
