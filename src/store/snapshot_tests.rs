//! The index snapshot as a start reads it (`rebuild.rs`): formats 3 (a
//! table of namespaces and counts first) and 2 decoded on a second thread
//! while their entries go in, format 1 still loaded whole, and a snapshot
//! cut short keeping what it held while a scan finds the rest. Each
//! checked against what the store held before its stop: every entry, its
//! metadata, each namespace's recency order.

use std::sync::Arc;

use super::*;
use crate::config::Config;

const T0: i64 = 1_800_000_000 * 1_000_000_000;
const CFG: &str = "[namespace.a]\n[namespace.b]\nttl = \"1h\"\n";
/// More than one batch of the rebuild (2,048), and than one chunk of the
/// decoding thread.
const ENTRIES: usize = 2_300;

fn ns(name: &str) -> Namespace {
    Namespace::parse(name.as_bytes()).unwrap()
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Store {
    Store::open(&dir.join("b"), Config::parse(CFG).unwrap(), clock.clone()).unwrap()
}

fn put(s: &Store, n: &str, k: &str, data: &[u8], mode: u32) {
    let owner = Owner {
        uid: 3,
        gid: 4,
        mode,
    };
    let key = Key::parse(k.as_bytes(), KeyFormat::Any).unwrap();
    let mut st = s
        .begin_write(&ns(n), &key, WriteFrom::Empty, owner)
        .unwrap();
    st.write_at(0, data).unwrap();
    s.publish(st).unwrap();
}

/// Per namespace, its keys least recent first with what `ls -l` shows
/// of each (size, mode, owner, mtime).
type Seen = Vec<(String, Vec<(Vec<u8>, u64, u32, u32, i64)>)>;

fn seen(s: &Store) -> Seen {
    ["a", "b"]
        .iter()
        .map(|n| {
            let keys = s.list(&ns(n)).unwrap();
            let lines = keys
                .into_iter()
                .map(|(k, _)| match s.lookup(&ns(n), &k) {
                    Lookup::Hit(i) => (
                        k.as_bytes().to_vec(),
                        i.logical_size,
                        i.mode,
                        i.uid,
                        i.mtime,
                    ),
                    _ => panic!(
                        "{n}/{} listed, not found",
                        String::from_utf8_lossy(k.as_bytes())
                    ),
                })
                .collect();
            (n.to_string(), lines)
        })
        .collect()
}

/// A store with entries of every key form in two namespaces, some read
/// (so recency is not publish order), stopped cleanly: its backing dir,
/// clock and what it showed.
fn stopped_store() -> (tempfile::TempDir, Arc<ManualClock>, Seen) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let s = open(dir.path(), &clock);
    for i in 0..ENTRIES {
        let k = match i % 4 {
            0 => format!("{:064x}", i * 7919),
            1 => format!("k{i}"),
            2 => format!("{}{i}", "long-".repeat(10)),
            _ => format!("d{}/e{i}", i % 5),
        };
        put(
            &s,
            "a",
            &k,
            &vec![b'x'; i % 300],
            0o600 + (i as u32 % 2) * 0o44,
        );
        if i % 100 == 0 {
            clock.advance(std::time::Duration::from_secs(1));
        }
    }
    for i in 0..10 {
        put(&s, "b", &format!("b{i}"), b"b", 0o640);
    }
    clock.advance(std::time::Duration::from_secs(1));
    for k in ["k1", "k5", &format!("{:064x}", 0)] {
        let key = Key::parse(k.as_bytes(), KeyFormat::Any).unwrap();
        s.open_read(&ns("a"), &key).unwrap();
    }
    let before = seen(&s);
    assert_eq!(before[0].1.len(), ENTRIES);
    assert_eq!(s.save_snapshot().unwrap(), Some(ENTRIES + 10));
    drop(s);
    (dir, clock, before)
}

#[test]
fn a_snapshot_gives_back_every_entry_in_each_namespaces_recency_order() {
    let (dir, clock, before) = stopped_store();
    let s = open(dir.path(), &clock);
    assert_eq!(s.index_status().source, "snapshot");
    assert_eq!(s.index_status().found_entries, (ENTRIES + 10) as u64);
    assert_eq!(seen(&s), before);
    assert!(!s.layout.snapshot_path().exists(), "taken");
    s.check_invariants();
}

#[test]
fn a_snapshot_cut_short_keeps_what_it_held_and_a_scan_finds_the_rest() {
    let (dir, clock, before) = stopped_store();
    let path = dir.path().join("b/index.snapshot");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 3 / 5]).unwrap();
    let s = open(dir.path(), &clock);
    assert_eq!(s.index_status().source, "scan");
    let after = seen(&s);
    // The same entries with the same metadata; the order of the part the
    // scan found is by publish time, not recency.
    let sorted = |v: &Seen| {
        let mut v = v.clone();
        v.iter_mut().for_each(|(_, l)| l.sort());
        v
    };
    assert_eq!(sorted(&after), sorted(&before));
    s.check_invariants();
}

#[test]
fn a_format_2_snapshot_without_the_namespace_table_still_streams_back() {
    let (dir, clock, before) = stopped_store();
    let path = dir.path().join("b/index.snapshot");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"CFSINDX3");
    let (mut counts, body) = recover::streamable(&bytes).unwrap();
    // Saved in the index's order of namespaces, which is a hash map's.
    counts.sort();
    assert_eq!(
        counts,
        [(b"a".to_vec(), ENTRIES), (b"b".to_vec(), 10)],
        "each namespace's entry count"
    );
    let mut v2 = b"CFSINDX2".to_vec();
    v2.extend(body);
    std::fs::write(&path, v2).unwrap();
    let s = open(dir.path(), &clock);
    assert_eq!(s.index_status().source, "snapshot");
    assert_eq!(seen(&s), before);
    s.check_invariants();
}

#[test]
fn counts_in_the_namespace_table_are_believed_only_as_far_as_the_bytes_go() {
    let table: Vec<(Vec<u8>, u64)> = vec![(b"a".to_vec(), u64::MAX), (b"b".to_vec(), 5)];
    let mut bytes = b"CFSINDX3".to_vec();
    bytes.extend(bincode::serialize(&table).unwrap());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend([0u8; 1000]);
    let (counts, body) = recover::streamable(&bytes).unwrap();
    assert_eq!(body.len(), 1008);
    let total: usize = counts.iter().map(|c| c.1).sum();
    assert!(total <= 1008 / 90, "{counts:?}");
    // A table claiming more bytes than there are: no table, no stream.
    let mut bad = b"CFSINDX3".to_vec();
    bad.extend(u64::MAX.to_le_bytes());
    assert!(recover::streamable(&bad).is_none());
    assert!(recover::parse_snapshot(&bad).is_err());
}

#[test]
fn an_older_format_snapshot_still_loads_whole() {
    let (dir, clock, before) = stopped_store();
    let path = dir.path().join("b/index.snapshot");
    let now = recover::parse_snapshot(&std::fs::read(&path).unwrap()).unwrap();
    let old: Vec<recover::SnapshotEntryV1> = now
        .into_iter()
        .map(|e| recover::SnapshotEntryV1 {
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
        })
        .collect();
    let mut bytes = b"CFSINDX1".to_vec();
    bytes.extend(bincode::serialize(&old).unwrap());
    std::fs::write(&path, bytes).unwrap();
    let s = open(dir.path(), &clock);
    assert_eq!(s.index_status().source, "snapshot");
    assert_eq!(seen(&s), before);
    s.check_invariants();
}

#[test]
fn bytes_after_the_entries_or_a_count_past_them_are_refused() {
    let one = recover::SnapshotEntry {
        namespace: b"a".to_vec(),
        key: b"k".to_vec(),
        file_id: 1,
        file_size: 2,
        mtime: 3,
        ttl_secs: None,
        logical_size: 4,
        stored_bytes: 5,
        mode: 0o644,
        uid: 6,
        gid: 7,
        last_access: 8,
        ctime: 9,
        atime: 10,
    };
    let body = bincode::serialize(&vec![one]).unwrap();
    let mut got = Vec::new();
    assert_eq!(
        recover::stream_snapshot(&body, |e| {
            got.push(e.key);
            true
        }),
        Ok(1)
    );
    assert_eq!(got, [b"k".to_vec()]);
    let mut trailing = body.clone();
    trailing.push(0);
    assert!(recover::stream_snapshot(&trailing, |_| true).is_err());
    let mut more = body.clone();
    more[..8].copy_from_slice(&2u64.to_le_bytes());
    let mut handed = 0;
    assert!(
        recover::stream_snapshot(&more, |_| {
            handed += 1;
            true
        })
        .is_err()
    );
    assert_eq!(handed, 1, "the entry before the error was handed");
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend((1u64 << 62).to_le_bytes());
    assert!(recover::stream_snapshot(&huge, |_| true).is_err());
}
