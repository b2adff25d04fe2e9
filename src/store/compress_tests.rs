//! Store behaviour without FUSE: compressed namespaces (see compress.rs).
//! Entries round-trip at every size, stored compressed only when it pays;
//! a damaged compressed entry is never served; old entries stay readable
//! when the setting changes; the offline commands see plain bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::config::Config;

const T0: i64 = 1_800_000_000 * 1_000_000_000;
const ZSTD: &str = "[namespace.z]\ncompression = \"zstd\"\ncompression_level = 3\n";
const PLAIN: &str = "[namespace.z]\n";
const OWNER: Owner = Owner {
    uid: 0,
    gid: 0,
    mode: 0o644,
};

fn open(root: &Path, config: &str) -> Store {
    let clock = Arc::new(ManualClock::new(T0));
    Store::open(root, Config::parse(config).unwrap(), clock).unwrap()
}

fn ns() -> Namespace {
    Namespace::parse(b"z").unwrap()
}

fn key(k: &str) -> Key {
    Key::parse(k.as_bytes(), KeyFormat::Any).unwrap()
}

fn put(s: &Store, k: &str, data: &[u8]) -> EntryInfo {
    let mut st = s
        .begin_write(&ns(), &key(k), WriteFrom::Empty, OWNER)
        .unwrap();
    st.write_at(0, data).unwrap();
    s.publish(st).unwrap()
}

fn get(s: &Store, k: &str) -> Result<Vec<u8>, StoreError> {
    let h = s.open_read(&ns(), &key(k))?;
    h.read_at(0, usize::MAX >> 1).map_err(StoreError::Io)
}

/// JSON-like text: compresses several times, like the seeds' LLM outputs.
pub(crate) fn json_like(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        let r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        out.extend_from_slice(
            format!(
                "{{\"id\":{i},\"score\":{r},\"label\":\"item-{}\",\"ok\":true}},\n",
                r % 97
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The header of the entry file under `k`.
fn header(root: &Path, k: &str) -> (entry::EntryHeader, u64) {
    let layout = Layout::open(root).unwrap();
    let path = layout.entry_path(&ns(), &key(k));
    let f = std::fs::File::open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    (entry::read_header(&layout.io, &f, len).unwrap(), len)
}

fn entry_path(root: &Path, k: &str) -> PathBuf {
    Layout::open(root).unwrap().entry_path(&ns(), &key(k))
}

#[test]
fn every_size_round_trips_stored_compressed_only_when_it_pays() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let s = open(&root, ZSTD);
    let sizes = [0, 1, 255, 256, 4095, 4096, 128 * 1024 + 1, 1 << 20];
    for &n in &sizes {
        for (kind, body) in [("json", json_like(n)), ("random", random(n, n as u64 + 7))] {
            let k = format!("{kind}-{n}");
            let info = put(&s, &k, &body);
            assert_eq!(info.logical_size, n as u64, "{k}");
            assert!(get(&s, &k).unwrap() == body, "{k}: the plain bytes");
            let (h, file_len) = header(&root, &k);
            let want_packed = kind == "json" && n as u64 >= compress::MIN_SIZE;
            assert_eq!(h.compression == entry::COMPRESSION_ZSTD, want_packed, "{k}");
            assert_eq!(h.logical_size, n as u64);
            if want_packed {
                assert!(h.stored_content_size * 8 <= h.logical_size * 7, "{k}");
                assert_eq!(
                    file_len,
                    h.stored_content_size + h.encode_trailer().len() as u64
                );
            } else {
                assert_eq!(h.stored_content_size, n as u64, "{k}: stored plain");
            }
            let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&body).into();
            assert_eq!(
                h.content_sha256, digest,
                "{k}: the digest is of the plain bytes"
            );
            assert_eq!(s.content_sha256(&ns(), &key(&k)).unwrap(), digest);
        }
    }
    let big = json_like(1 << 20);
    let (h, _) = header(&root, "json-1048576");
    assert!(
        h.stored_content_size * 4 < big.len() as u64,
        "JSON compresses several times"
    );
    // The staging dir holds nothing once the publishes are done.
    let staging = Layout::open(&root).unwrap();
    let left = std::fs::read_dir(staging.staging_dir())
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|e| e.path().is_file())
        .count();
    assert_eq!(left, 0, "no plain or packed staging file left behind");

    // After a clean restart (snapshot) and after a crash (scan), the same.
    s.save_snapshot().unwrap();
    drop(s);
    for round in ["snapshot", "scan"] {
        let s = open(&root, ZSTD);
        for &n in &sizes {
            let body = json_like(n);
            let k = format!("json-{n}");
            assert!(get(&s, &k).unwrap() == body, "{round}: {k}");
            assert!(get(&s, &k).unwrap() == body, "{round}: {k}, hot");
        }
        drop(s);
    }
}

#[test]
fn random_reads_of_a_compressed_entry_are_the_plain_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let s = open(&root, ZSTD);
    let body = json_like(3 << 20);
    put(&s, "big", &body);
    let s = {
        drop(s);
        open(&root, ZSTD)
    };
    let h = s.open_read(&ns(), &key("big")).unwrap();
    let mut x = 12345u64;
    for _ in 0..500 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 20) % (body.len() as u64 + 10);
        let got = h.read_at(off, 4096).unwrap();
        let from = (off as usize).min(body.len());
        let to = (from + 4096).min(body.len());
        assert!(got == body[from..to], "at {off}");
    }
}

#[test]
fn a_damaged_compressed_entry_is_never_served_and_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let body = json_like(200_000);
    for at in [10usize, 5_000, 20_000] {
        let s = open(&root, ZSTD);
        put(&s, "k", &body);
        let (h, _) = header(&root, "k");
        assert_eq!(h.compression, entry::COMPRESSION_ZSTD);
        assert!((at as u64) < h.stored_content_size);
        drop(s);
        let path = entry_path(&root, "k");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let s = open(&root, ZSTD);
        let before = s.stats().corrupt_entries;
        assert!(
            matches!(get(&s, "k"), Err(StoreError::NotFound)),
            "flip at {at}: a miss, never bytes"
        );
        assert_eq!(s.stats().corrupt_entries, before + 1, "counted");
        assert!(!path.exists(), "moved out of data/");
        assert!(matches!(s.lookup(&ns(), &key("k")), Lookup::Miss));
    }
}

#[test]
fn a_setting_change_applies_to_new_writes_and_old_entries_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let body = json_like(50_000);
    let s = open(&root, PLAIN);
    put(&s, "old-plain", &body);
    drop(s);
    let s = open(&root, ZSTD);
    put(&s, "new-zstd", &body);
    assert!(get(&s, "old-plain").unwrap() == body);
    assert_eq!(
        header(&root, "old-plain").0.compression,
        0,
        "left as it was"
    );
    assert_eq!(header(&root, "new-zstd").0.compression, 1);
    drop(s);
    // The default in [cache] applies to a namespace without its own.
    let s = open(&root, "[cache]\ncompression = \"zstd\"\n[namespace.z]\n");
    put(&s, "by-default", &body);
    assert_eq!(header(&root, "by-default").0.compression, 1);
    drop(s);
    let s = open(
        &root,
        "[cache]\ncompression = \"zstd\"\n[namespace.z]\ncompression = \"none\"\n",
    );
    put(&s, "none-again", &body);
    assert_eq!(header(&root, "none-again").0.compression, 0);
    for k in ["old-plain", "new-zstd", "by-default", "none-again"] {
        assert!(get(&s, k).unwrap() == body, "{k}");
    }
}

#[test]
fn writes_from_a_compressed_version_start_from_its_plain_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let s = open(&root, ZSTD);
    let mut body = json_like(40_000);
    put(&s, "k", &body);
    let mut st = s
        .begin_write(&ns(), &key("k"), WriteFrom::Current, OWNER)
        .unwrap();
    assert_eq!(st.len(), body.len() as u64);
    let mut start = vec![0u8; 100];
    st.read_at(0, &mut start).unwrap();
    assert!(start == body[..100], "the staged copy is plain");
    st.write_at(body.len() as u64, b"tail").unwrap();
    s.publish(st).unwrap();
    body.extend_from_slice(b"tail");
    assert!(get(&s, "k").unwrap() == body);
    assert_eq!(header(&root, "k").0.compression, 1);
    // A metadata change (a copy republished) keeps it compressed and valid.
    s.rename(&ns(), &key("k"), &key("k2"), false).unwrap();
    assert!(get(&s, "k2").unwrap() == body);
    assert_eq!(header(&root, "k2").0.compression, 1);
}

#[test]
fn a_quota_counts_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let s = open(
        &root,
        "[namespace.z]\ncompression = \"zstd\"\nmax_bytes = \"1MiB\"\n",
    );
    let body = json_like(200_000);
    for i in 0..20 {
        put(&s, &format!("k{i}"), &body);
    }
    let usage = s.stats();
    let z = &usage.namespaces["z"];
    assert_eq!(
        z.entries, 20,
        "4 MB of content in a 1 MiB quota: none evicted"
    );
    assert!(z.bytes <= 1 << 20);
    assert!(z.logical_bytes > 3 << 20);
    assert!(
        z.compression_ratio.unwrap() > 3.0,
        "{:?}",
        z.compression_ratio
    );
}

#[test]
fn offline_verify_and_export_see_plain_bytes_and_catch_damage() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let s = open(&root, ZSTD);
    let body = json_like(300_000);
    put(&s, "k", &body);
    s.save_snapshot().unwrap();
    drop(s);
    let clock = Arc::new(ManualClock::new(T0));
    let off = offline::OfflineStore::open(
        &root,
        offline::Access::ReadOnly,
        Config::parse(ZSTD).unwrap(),
        clock,
    )
    .unwrap();
    let path = entry_path(&root, "k");
    let mut out = Vec::new();
    let (rec, digest) = off.copy_content(&path, &mut out).unwrap().unwrap();
    assert!(out == body, "an export carries the plain bytes");
    assert_eq!(rec.logical_size, body.len() as u64);
    assert_eq!(
        digest,
        <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(&body))
    );
    assert!(off.verify_entry(&path).unwrap().is_some());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        off.verify_entry(&path).is_err(),
        "verify decompresses and checks"
    );
    assert!(off.copy_content(&path, &mut Vec::new()).is_err());
}
