//! Start-up: load the index saved at the last clean stop, or rebuild it by
//! scanning the backing dir after a crash; and save it at a clean stop.
//!
//! The snapshot is removed as soon as it is loaded, so a crash later in
//! this run can never resurrect a stale index: no snapshot means "scan".
//! The scan reads only each file's trailer (one positioned read), never
//! its content; content checksums are checked lazily, before an entry's
//! bytes are first served. Anything that fails validation is moved to
//! quarantine and logged, never served, never a crash.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::backing::{BackingIo, FaultOp};
use super::entry::{self, EntryHeader};
use super::index::EntryMeta;
use super::layout::Layout;
use crate::names::KeyFormat;
use crate::names::{Key, Namespace};

/// Format 3: a table of the namespaces and their entry counts, then the
/// entries as in format 2 (so a start sizes each table once).
const SNAPSHOT_MAGIC: &[u8; 8] = b"CFSINDX3";
/// Entries only, each naming its namespace.
const SNAPSHOT_MAGIC_V2: &[u8; 8] = b"CFSINDX2";
/// The fewest bytes an entry takes (empty names): no count read from a
/// snapshot is believed beyond what its bytes can hold.
const MIN_ENTRY_BYTES: usize = 93;
/// Snapshots saved before entries had a ctime (entry format 1).
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"CFSINDX1";

#[derive(Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub namespace: Vec<u8>,
    pub key: Vec<u8>,
    pub file_id: u64,
    pub file_size: u64,
    pub mtime: i64,
    pub ttl_secs: Option<u64>,
    pub logical_size: u64,
    pub stored_bytes: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub last_access: i64,
    pub ctime: i64,
    pub atime: i64,
}

/// A snapshot entry as saved before `ctime` and `atime` (both are its
/// mtime).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct SnapshotEntryV1 {
    pub(super) namespace: Vec<u8>,
    pub(super) key: Vec<u8>,
    pub(super) file_id: u64,
    pub(super) file_size: u64,
    pub(super) mtime: i64,
    pub(super) ttl_secs: Option<u64>,
    pub(super) logical_size: u64,
    pub(super) stored_bytes: u64,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) last_access: i64,
}

impl From<SnapshotEntryV1> for SnapshotEntry {
    fn from(e: SnapshotEntryV1) -> SnapshotEntry {
        SnapshotEntry {
            namespace: e.namespace,
            key: e.key,
            file_id: e.file_id,
            file_size: e.file_size,
            mtime: e.mtime,
            ttl_secs: e.ttl_secs,
            logical_size: e.logical_size,
            stored_bytes: e.stored_bytes,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            last_access: e.last_access,
            ctime: e.mtime,
            atime: e.mtime,
        }
    }
}

impl SnapshotEntry {
    pub fn new(ns: &Namespace, key: &[u8], m: &EntryMeta) -> Self {
        SnapshotEntry {
            namespace: ns.as_bytes().to_vec(),
            key: key.to_vec(),
            file_id: m.file_id,
            file_size: m.file_size,
            mtime: m.mtime,
            ttl_secs: m.ttl_secs,
            logical_size: m.logical_size,
            stored_bytes: m.stored_bytes,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            last_access: m.last_access,
            ctime: m.ctime,
            atime: m.atime,
        }
    }

    pub fn meta(&self, version: u64) -> EntryMeta {
        EntryMeta {
            version,
            file_id: self.file_id,
            file_size: self.file_size,
            mtime: self.mtime,
            ctime: self.ctime,
            atime: self.atime,
            ttl_secs: self.ttl_secs,
            logical_size: self.logical_size,
            stored_bytes: self.stored_bytes,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            verified: false,
            // Not in a snapshot: the first open reads the trailer.
            compressed: false,
            last_access: self.last_access,
        }
    }
}

/// Format 3's table: each namespace's name and its number of entries.
pub type NamespaceCounts<N> = Vec<(Vec<u8>, N)>;

/// Writes the snapshot atomically (temp file, fsync, rename).
pub fn save_snapshot(layout: &Layout, entries: &[SnapshotEntry]) -> io::Result<()> {
    let tmp = layout.staging_path();
    let mut f = layout.io.create(&tmp)?;
    layout.io.check(FaultOp::Write)?;
    f.write_all(SNAPSHOT_MAGIC)?;
    let mut w = io::BufWriter::new(&mut f);
    bincode::serialize_into(&mut w, &namespace_counts(entries)).map_err(io::Error::other)?;
    bincode::serialize_into(&mut w, entries).map_err(io::Error::other)?;
    w.flush()?;
    drop(w);
    layout.io.sync_all(&f)?;
    layout.io.rename(&tmp, &layout.snapshot_path())
}

/// Each namespace named by `entries`, with how many entries it has, in
/// the order they first appear.
fn namespace_counts(entries: &[SnapshotEntry]) -> NamespaceCounts<u64> {
    let mut counts: NamespaceCounts<u64> = Vec::new();
    for e in entries {
        match counts.iter_mut().rev().find(|(n, _)| *n == e.namespace) {
            Some((_, c)) => *c += 1,
            None => counts.push((e.namespace.clone(), 1)),
        }
    }
    counts
}

/// Loads and removes the snapshot; `None` if absent or unreadable.
pub fn take_snapshot(layout: &Layout) -> Option<Vec<SnapshotEntry>> {
    match parse_snapshot(&take_snapshot_bytes(layout)?) {
        Ok(v) => Some(v),
        Err(e) => {
            log::warn!("index snapshot {e}; scanning instead");
            None
        }
    }
}

/// Reads and removes the snapshot file: its bytes, `None` if absent or
/// unreadable (or if it cannot be removed: a crash later in this run
/// must not find it).
pub fn take_snapshot_bytes(layout: &Layout) -> Option<Vec<u8>> {
    let path = layout.snapshot_path();
    layout.io.check(FaultOp::Read).ok()?;
    let bytes = fs::read(&path).ok()?;
    if let Err(e) = layout.io.remove_file(&path) {
        log::warn!("cannot remove {}: {e}; scanning instead", path.display());
        return None;
    }
    Some(bytes)
}

/// The entries part of a snapshot that `stream_snapshot` decodes (formats
/// 2 and 3), with format 3's entry count of each namespace (capped by
/// what the bytes can hold); `None` for an older format, or none, or a
/// table that does not decode (`parse_snapshot` then says why).
pub fn streamable(bytes: &[u8]) -> Option<(NamespaceCounts<usize>, &[u8])> {
    if let Some(body) = bytes.strip_prefix(SNAPSHOT_MAGIC_V2) {
        return Some((Vec::new(), body));
    }
    let (counts, body) = split_counts(bytes.strip_prefix(SNAPSHOT_MAGIC)?).ok()?;
    let mut room = body.len() / MIN_ENTRY_BYTES;
    let counts = counts
        .into_iter()
        .map(|(ns, n)| {
            let n = usize::try_from(n).unwrap_or(usize::MAX).min(room);
            room -= n;
            (ns, n)
        })
        .collect();
    Some((counts, body))
}

/// Format 3's namespace table, and the entries after it.
fn split_counts(mut body: &[u8]) -> Result<(NamespaceCounts<u64>, &[u8]), String> {
    use bincode::Options;
    let counts = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(body.len() as u64)
        .deserialize_from(&mut body)
        .map_err(|e| format!("namespace table does not decode ({e})"))?;
    Ok((counts, body))
}

/// Decodes a current-format snapshot's entries (`streamable`) one at a
/// time, handing each to `each` in file order until it says stop; returns
/// how many it handed. Untrusted bytes, as in `parse_snapshot`: no count
/// or length is believed beyond the bytes left, and nothing may follow
/// the entries. An error comes after the entries before it were handed.
pub fn stream_snapshot(
    body: &[u8],
    mut each: impl FnMut(SnapshotEntry) -> bool,
) -> Result<usize, String> {
    use bincode::Options;
    let mut rest = body;
    let count: u64 = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(rest.len() as u64)
        .deserialize_from(&mut rest)
        .map_err(|e| format!("does not decode ({e})"))?;
    for i in 0..count {
        let e: SnapshotEntry = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_limit(rest.len() as u64)
            .deserialize_from(&mut rest)
            .map_err(|e| format!("does not decode at entry {i} ({e})"))?;
        if !each(e) {
            return Ok(i as usize + 1);
        }
    }
    if !rest.is_empty() {
        return Err(format!("has {} bytes after its entries", rest.len()));
    }
    Ok(count as usize)
}

/// Decodes a snapshot file's bytes. Untrusted: a count or length in them
/// is never believed beyond the bytes that are there (bincode's limit),
/// and nothing may follow the entries.
pub(super) fn parse_snapshot(bytes: &[u8]) -> Result<Vec<SnapshotEntry>, String> {
    if let Some(body) = bytes.strip_prefix(SNAPSHOT_MAGIC) {
        decode_snapshot(split_counts(body)?.1)
    } else if let Some(body) = bytes.strip_prefix(SNAPSHOT_MAGIC_V2) {
        decode_snapshot(body)
    } else if let Some(body) = bytes.strip_prefix(SNAPSHOT_MAGIC_V1) {
        decode_snapshot::<Vec<SnapshotEntryV1>>(body)
            .map(|v| v.into_iter().map(SnapshotEntry::from).collect())
    } else {
        Err("is not readable".into())
    }
}

fn decode_snapshot<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(body.len() as u64)
        .deserialize(body)
        .map_err(|e| format!("does not decode ({e})"))
}

/// One valid entry found by a scan.
pub struct Found {
    pub header: EntryHeader,
    pub file_id: u64,
    pub file_size: u64,
    pub stored_bytes: u64,
}

#[derive(Debug, Default)]
pub struct ScanReport {
    pub entries: u64,
    pub quarantined: u64,
}

/// Walks `data/` and calls `found` for every valid entry file; invalid
/// files are quarantined. A directory that cannot be listed fails the
/// scan: an index missing what is on disk must not be served.
#[cfg(test)]
pub fn scan(layout: &Layout, found: impl FnMut(Found)) -> io::Result<ScanReport> {
    scan_until(layout, || false, found)
}

/// `scan`, given up (`Interrupted`) as soon as `stop` says so, checked
/// between shard directories: a daemon asked to stop does not wait for a
/// scan of 10^6 entries to end.
pub fn scan_until(
    layout: &Layout,
    stop: impl Fn() -> bool,
    mut found: impl FnMut(Found),
) -> io::Result<ScanReport> {
    let mut report = ScanReport::default();
    let io = &layout.io;
    for l1 in read_dir_sorted(io, layout.data_dir())? {
        for l2 in read_dir_sorted(io, &l1)? {
            if stop() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
            }
            for path in read_dir_sorted(io, &l2)? {
                match inspect_checked(io, &path) {
                    Ok(Ok(f)) => {
                        report.entries += 1;
                        found(f);
                    }
                    Ok(Err(why)) => {
                        report.quarantined += 1;
                        quarantine(layout, &path, &why);
                    }
                    // The volume failed, not the file: left in place for
                    // the next start, never quarantined.
                    Err(e) => log::warn!("cannot read {}: {e}; skipped", path.display()),
                }
            }
        }
    }
    Ok(report)
}

/// Validates one file found at `path` (its trailer, and that it sits where
/// its own namespace and key say it should).
pub fn inspect(io: &BackingIo, path: &Path) -> Result<Found, String> {
    inspect_checked(io, path).unwrap_or_else(|e| Err(e.to_string()))
}

/// Like `inspect`, but a failure to read (the volume's, not the file's
/// fault) is the outer error: it says nothing about the file.
pub fn inspect_checked(io: &BackingIo, path: &Path) -> io::Result<Result<Found, String>> {
    let md = fs::symlink_metadata(path)?;
    if !md.file_type().is_file() {
        return Ok(Err("not a regular file".into()));
    }
    let file = match io.open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Err("a symlink".into())),
        Err(e) => return Err(e),
    };
    // The file opened, which may have grown (or replaced the one
    // stat'ed) meanwhile: its own length counts.
    let (md, header) = match entry::read_header_settled(io, &file)? {
        (md, Ok(h)) => (md, h),
        // Replaced under the read again and again (another daemon, seen
        // through a view whose sizes lag): not damage, left in place.
        (_, Err(entry::CorruptEntry::Changed)) => {
            return Err(io::Error::other("changed while it was read"));
        }
        (_, Err(e)) => return Ok(Err(e.to_string())),
    };
    if !md.file_type().is_file() {
        return Ok(Err("not a regular file".into()));
    }
    Ok(check_placement(header, path, &md))
}

/// A decoded entry file is valid only under its own names' path. A
/// rename's trailer names two keys (see `trailer.rs`): at the old key's
/// path the rename did not finish and the file is still the old key's
/// entry (its header is returned naming that key), at the new key's path
/// it is the new key's.
pub(super) fn check_placement(
    mut header: EntryHeader,
    path: &Path,
    md: &fs::Metadata,
) -> Result<Found, String> {
    let (Ok(ns), Ok(key)) = (
        Namespace::parse(&header.namespace),
        Key::parse(&header.key, KeyFormat::Any),
    ) else {
        return Err("header names are not valid names".into());
    };
    let here = path.file_name().and_then(|n| n.to_str());
    let expected = Layout::entry_hash(&ns, &key);
    if here != Some(expected.as_str()) {
        let from = header
            .renamed_from
            .as_deref()
            .and_then(|f| Key::parse(f, KeyFormat::Any).ok())
            .filter(|f| here == Some(Layout::entry_hash(&ns, f).as_str()));
        let Some(from) = from else {
            return Err(format!("misplaced: belongs at {expected}"));
        };
        header.key = from.as_bytes().to_vec();
    }
    Ok(Found {
        header,
        file_id: md.ino(),
        file_size: md.len(),
        stored_bytes: md.blocks() * 512,
    })
}

/// Moves a bad file aside, with a log line saying why.
pub fn quarantine(layout: &Layout, path: &Path, why: &str) {
    let to = layout.quarantine_path(path);
    match layout.io.rename(path, &to) {
        Ok(()) => log::warn!("quarantined {} ({why}) -> {}", path.display(), to.display()),
        Err(e) => log::warn!(
            "bad entry {} ({why}); cannot quarantine: {e}",
            path.display()
        ),
    }
}

/// The paths in a directory, sorted; none if it does not exist (or is
/// not a directory: a stray file where a shard should be).
pub(super) fn read_dir_sorted(io: &BackingIo, dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut v: Vec<_> = match io.read_dir(dir) {
        Ok(rd) => rd
            .collect::<io::Result<Vec<_>>>()?
            .into_iter()
            .map(|e| e.path())
            .collect(),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Vec::new(),
        Err(e) => return Err(e),
    };
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_saved_before_ctime_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(&dir.path().join("b")).unwrap();
        let old = vec![SnapshotEntryV1 {
            namespace: b"ns".to_vec(),
            key: b"k".to_vec(),
            file_id: 9,
            file_size: 120,
            mtime: -3,
            ttl_secs: Some(60),
            logical_size: 20,
            stored_bytes: 4096,
            mode: 0o644,
            uid: 1,
            gid: 2,
            last_access: 5,
        }];
        let mut bytes = SNAPSHOT_MAGIC_V1.to_vec();
        bytes.extend(bincode::serialize(&old).unwrap());
        fs::write(layout.snapshot_path(), bytes).unwrap();
        let got = take_snapshot(&layout).expect("a format 1 snapshot loads");
        assert_eq!(got.len(), 1);
        let m = got[0].meta(77);
        assert_eq!(
            (m.version, m.mtime, m.ctime, m.atime, m.last_access),
            (77, -3, -3, -3, 5)
        );
        assert_eq!((got[0].key.as_slice(), m.file_size), (&b"k"[..], 120));
        // Saved again, it is the current format, ctime included.
        let now = SnapshotEntry {
            ctime: 8,
            atime: (1 << 33) * 1_000_000_000 + 9,
            ..SnapshotEntry::new(&Namespace::parse(b"ns").unwrap(), b"k", &m)
        };
        save_snapshot(&layout, &[now]).unwrap();
        let back = &take_snapshot(&layout).unwrap()[0];
        assert_eq!((back.ctime, back.atime), (8, (1 << 33) * 1_000_000_000 + 9));
    }
}
