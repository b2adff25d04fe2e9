//! Every parser of what is found in the backing dir, fed raw bytes: the
//! entry trailer, the index snapshot, FORMAT, and namespace markers. None
//! may panic, and none may allocate by a length field it has not checked
//! against the bytes it was given (a huge claimed length must fail fast).

use std::io::Write;

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::backing::BackingIo;
use super::entry::{self, EntryHeader};
use super::format;
use super::layout::{Layout, LayoutError};
use super::recover;
use crate::names::Namespace;

const FOOTER: usize = 24;

/// A footer that passes the magic, format and header-checksum checks for
/// `body`, so the decoder itself sees `body`.
fn valid_footer(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(FOOTER);
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(&entry::ENTRY_FORMAT.to_le_bytes());
    f.extend_from_slice(&Sha256::digest(body)[..8]);
    f.extend_from_slice(b"CFSENTRY");
    f
}

fn a_header() -> EntryHeader {
    EntryHeader {
        namespace: b"ns".to_vec(),
        key: b"key".to_vec(),
        mtime: 1,
        ctime: 2,
        atime: 4,
        ttl_secs: Some(5),
        logical_size: 10,
        stored_content_size: 10,
        compression: 0,
        content_sha256: [3; 32],
        mode: 0o644,
        uid: 1,
        gid: 2,
        renamed_from: Some(b"old".to_vec()),
        xattrs: vec![(b"user.a".to_vec(), b"1".to_vec())],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn trailer_of_raw_bytes(tail in proptest::collection::vec(any::<u8>(), 0..2100),
                            extra in 0u64..1 << 40) {
        let _ = entry::parse_trailer(&tail, tail.len() as u64 + extra);
    }

    /// Bodies that pass every check before decoding: the decoder meets
    /// arbitrary bytes, including length prefixes far beyond the body.
    #[test]
    fn trailer_body_of_raw_bytes(body in proptest::collection::vec(any::<u8>(), 0..600),
                                 content in 0u64..1 << 20) {
        let mut tail = body.clone();
        tail.extend(valid_footer(&body));
        if let Ok(h) = entry::parse_trailer(&tail, content + tail.len() as u64) {
            prop_assert_eq!(h.stored_content_size, content);
        }
    }

    /// A real header with bytes changed, through the file reader.
    #[test]
    fn trailer_mutated(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                       content in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut h = a_header();
        h.logical_size = content.len() as u64;
        h.stored_content_size = content.len() as u64;
        let mut bytes = content.clone();
        let trailer = h.encode_trailer();
        let body_len = trailer.len() - FOOTER;
        let mut body = trailer[..body_len].to_vec();
        for (at, v) in flips {
            let i = at % body.len();
            body[i] = v;
        }
        bytes.extend(&body);
        bytes.extend(valid_footer(&body));
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        let _ = entry::read_header(&BackingIo::default(), &f, bytes.len() as u64);
    }

    #[test]
    fn snapshot_of_raw_bytes(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut bytes = b"CFSINDX1".to_vec();
        bytes.extend(&body);
        let _ = recover::parse_snapshot(&bytes);
        let _ = recover::parse_snapshot(&body);
    }

    #[test]
    fn format_of_raw_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let r = format::check_format(&bytes);
        let known = (1..=3).any(|v| bytes == format!("cachefs backing format {v}\n").as_bytes());
        prop_assert_eq!(r.is_ok(), known);
        if let Err(shown) = r {
            prop_assert!(shown.len() <= 4 * 64 && !shown.chars().any(char::is_control));
        }
    }

    #[test]
    fn namespace_marker_names(name in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(ns) = Namespace::parse(&name) {
            prop_assert_eq!(ns.as_bytes(), &name[..]);
        }
    }
}

/// Lengths that claim more than there is: each fails at once (an
/// allocation of the claimed size would abort the test process).
#[test]
fn huge_claimed_lengths_fail_fast() {
    // A snapshot claiming 2^64-1 entries, then one entry claiming a key
    // of 2^63 bytes.
    let mut snap = b"CFSINDX1".to_vec();
    snap.extend(u64::MAX.to_le_bytes());
    assert!(recover::parse_snapshot(&snap).is_err());
    let mut snap = b"CFSINDX1".to_vec();
    snap.extend(1u64.to_le_bytes());
    snap.extend(2u64.to_le_bytes());
    snap.extend(b"ns");
    snap.extend((1u64 << 63).to_le_bytes());
    assert!(recover::parse_snapshot(&snap).is_err());
    // A trailer whose namespace claims 2^62 bytes.
    let mut body = (1u64 << 62).to_le_bytes().to_vec();
    body.extend([0u8; 100]);
    let mut tail = body.clone();
    tail.extend(valid_footer(&body));
    assert!(entry::parse_trailer(&tail, tail.len() as u64).is_err());
    // Trailing bytes after a valid header are refused too.
    let mut body = bincode::serialize(&a_header()).unwrap();
    body.push(0);
    let mut tail = vec![0u8; 10];
    tail.extend(&body);
    tail.extend(valid_footer(&body));
    assert!(entry::parse_trailer(&tail, tail.len() as u64).is_err());
}

/// A FORMAT that is huge, a FIFO or a symlink is foreign, found without
/// reading it whole, blocking, or following it.
#[test]
fn a_strange_format_file_is_foreign_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge");
    std::fs::create_dir(&huge).unwrap();
    let f = std::fs::File::create(huge.join("FORMAT")).unwrap();
    f.set_len(1 << 40).unwrap();
    assert!(matches!(
        Layout::open(&huge),
        Err(LayoutError::Foreign { .. })
    ));

    let fifo = dir.path().join("fifo");
    std::fs::create_dir(&fifo).unwrap();
    nix::unistd::mkfifo(&fifo.join("FORMAT"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert!(matches!(
        Layout::open(&fifo),
        Err(LayoutError::Foreign { .. })
    ));

    let link = dir.path().join("link");
    std::fs::create_dir(&link).unwrap();
    let real = dir.path().join("real-format");
    std::fs::write(&real, "cachefs backing format 1\n").unwrap();
    std::os::unix::fs::symlink(&real, link.join("FORMAT")).unwrap();
    assert!(Layout::open(&link).is_err());
}

/// Namespace markers with any names and contents: ignored or loaded,
/// never a failed start or a panic.
#[test]
fn strange_namespace_markers_never_stop_a_start() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    drop(Layout::open(&root).unwrap());
    let markers = root.join("namespaces");
    for name in [
        &b"ok"[..],
        b".cachefs",
        b"\xff\xfe",
        b" ",
        b"-x",
        &[b'n'; 255],
    ] {
        let p = markers.join(std::ffi::OsStr::from_bytes(name));
        std::fs::write(&p, vec![0xffu8; 4096]).unwrap();
    }
    std::fs::create_dir(markers.join("a-dir")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", markers.join("dangling")).unwrap();
    let store = super::Store::open(
        &root,
        crate::config::Config::default(),
        std::sync::Arc::new(super::SystemClock),
    )
    .unwrap();
    let names: Vec<_> = store.namespaces().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&Namespace::parse(b"ok").unwrap()));
    assert!(!names.iter().any(|n| n.as_bytes() == b".cachefs"));
}

/// A dir of the previous format opens and is marked with this one, so a
/// daemon that cannot read this build's entries refuses it instead of
/// quarantining them; a read-only open marks nothing; a newer one is refused.
#[test]
fn an_older_format_is_upgraded_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("old");
    std::fs::create_dir(&root).unwrap();
    let format = root.join("FORMAT");
    std::fs::write(&format, "cachefs backing format 1\n").unwrap();
    drop(Layout::open_existing(&root).unwrap());
    assert_eq!(
        std::fs::read_to_string(&format).unwrap(),
        "cachefs backing format 1\n"
    );
    drop(Layout::open(&root).unwrap());
    assert_eq!(
        std::fs::read_to_string(&format).unwrap(),
        "cachefs backing format 3\n"
    );
    assert_eq!(
        std::fs::read_dir(&root)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("FORMAT.")
            })
            .count(),
        0,
        "no staged FORMAT left"
    );

    std::fs::write(&format, "cachefs backing format 4\n").unwrap();
    assert!(matches!(
        Layout::open(&root),
        Err(LayoutError::Foreign { .. })
    ));
    assert!(matches!(
        Layout::open_existing(&root),
        Err(LayoutError::Foreign { .. })
    ));
}
