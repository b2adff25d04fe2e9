//! Store behaviour without FUSE: a temp backing dir and a manual clock.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::Config;

const T0: i64 = 1_800_000_000 * 1_000_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Store,
}

fn fixture(config: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(
        &dir.path().join("b"),
        Config::parse(config).unwrap(),
        clock.clone(),
    )
    .unwrap();
    Fixture { dir, clock, store }
}

impl Fixture {
    fn reopen(self, config: &str) -> Fixture {
        let Fixture { dir, clock, store } = self;
        drop(store);
        let store = Store::open(
            &dir.path().join("b"),
            Config::parse(config).unwrap(),
            clock.clone(),
        )
        .unwrap();
        Fixture { dir, clock, store }
    }
}

impl Fixture {
    /// Stops the store cleanly (index snapshot saved) and keeps it closed.
    fn reopen_stopped(self) -> Stopped {
        self.store.save_snapshot().unwrap();
        Stopped {
            dir: self.dir,
            clock: self.clock,
        }
    }
}

/// A backing dir with no store open on it.
struct Stopped {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
}

impl Stopped {
    fn reopen(self, config: &str) -> Fixture {
        let store = Store::open(
            &self.dir.path().join("b"),
            Config::parse(config).unwrap(),
            self.clock.clone(),
        )
        .unwrap();
        Fixture {
            dir: self.dir,
            clock: self.clock,
            store,
        }
    }
}

fn ns(name: &str) -> Namespace {
    Namespace::parse(name.as_bytes()).unwrap()
}

fn key(name: &str) -> Key {
    Key::parse(name.as_bytes(), KeyFormat::Any).unwrap()
}

const OWNER: Owner = Owner {
    uid: 0,
    gid: 0,
    mode: 0o644,
};

fn put(s: &Store, n: &str, k: &str, data: &[u8]) -> Result<EntryInfo, StoreError> {
    let mut st = s.begin_write(&ns(n), &key(k), WriteFrom::Empty, OWNER)?;
    st.write_at(0, data)?;
    s.publish(st)
}

fn get(s: &Store, n: &str, k: &str) -> Option<Vec<u8>> {
    match s.lookup(&ns(n), &key(k)) {
        Lookup::Hit(_) => {
            let h = s.open_read(&ns(n), &key(k)).ok()?;
            Some(h.read_at(0, usize::MAX >> 1).unwrap())
        }
        Lookup::Miss | Lookup::Expired => None,
    }
}

#[test]
fn round_trip_and_miss() {
    let f = fixture("[namespace.a]\n");
    for (i, size) in [0usize, 1, 10_000, 1 << 20].into_iter().enumerate() {
        let data: Vec<u8> = (0..size).map(|j| (j * 7 + i) as u8).collect();
        put(&f.store, "a", &format!("k{i}"), &data).unwrap();
        assert_eq!(get(&f.store, "a", &format!("k{i}")).unwrap(), data);
    }
    assert!(get(&f.store, "a", "missing").is_none());
    f.store.check_invariants();
}

#[test]
fn staged_content_is_invisible_until_published() {
    let f = fixture("[namespace.a]\n");
    put(&f.store, "a", "k", b"old").unwrap();
    let mut st = f
        .store
        .begin_write(&ns("a"), &key("k"), WriteFrom::Empty, OWNER)
        .unwrap();
    st.write_at(0, b"new and longer").unwrap();
    assert_eq!(get(&f.store, "a", "k").unwrap(), b"old");
    f.store.publish(st).unwrap();
    assert_eq!(get(&f.store, "a", "k").unwrap(), b"new and longer");
    // Abandoned writes leave nothing in staging.
    let st = f
        .store
        .begin_write(&ns("a"), &key("k2"), WriteFrom::Empty, OWNER)
        .unwrap();
    drop(st);
    assert_eq!(work_files(&f.dir.path().join("b/staging")), 0);
}

#[test]
fn ttl_expires_and_touch_renews() {
    let f = fixture("[namespace.a]\nttl = \"10s\"\n");
    put(&f.store, "a", "k", b"v").unwrap();
    f.clock.advance(Duration::from_secs(9));
    assert!(get(&f.store, "a", "k").is_some());
    f.store
        .update(
            &ns("a"),
            &key("k"),
            MetaUpdate {
                mtime: Some(f.clock.now()),
                ..Default::default()
            },
        )
        .unwrap();
    f.clock.advance(Duration::from_secs(9));
    assert!(get(&f.store, "a", "k").is_some(), "touch renewed the TTL");
    f.clock.advance(Duration::from_secs(2));
    assert!(matches!(
        f.store.lookup(&ns("a"), &key("k")),
        Lookup::Expired
    ));
    assert!(f.store.list(&ns("a")).unwrap().is_empty());
    assert_eq!(f.store.sweep_expired(), 1);
    assert_eq!(f.store.usage().used_bytes, 0);
    f.store.check_invariants();
}

#[test]
fn per_entry_ttl_shortens_life() {
    let f = fixture("[namespace.a]\nttl = \"1h\"\n");
    put(&f.store, "a", "k", b"v").unwrap();
    f.store
        .update(
            &ns("a"),
            &key("k"),
            MetaUpdate {
                ttl_secs: Some(Some(5)),
                ..Default::default()
            },
        )
        .unwrap();
    f.clock.advance(Duration::from_secs(6));
    assert!(get(&f.store, "a", "k").is_none());
}

#[test]
fn quota_evicts_least_recently_used() {
    // 4 KiB blocks: each 3000-byte entry occupies 4096 bytes.
    let f = fixture("[namespace.a]\nmax_bytes = \"16KiB\"\n");
    for k in ["k1", "k2", "k3", "k4"] {
        put(&f.store, "a", k, &[1; 3000]).unwrap();
    }
    assert!(get(&f.store, "a", "k1").is_some()); // k1 is now the most recent
    put(&f.store, "a", "k5", &[2; 3000]).unwrap();
    assert!(
        get(&f.store, "a", "k2").is_none(),
        "k2 was least recently used"
    );
    for k in ["k1", "k3", "k4", "k5"] {
        assert!(get(&f.store, "a", k).is_some(), "{k} survives");
    }
    let stats = f.store.stats();
    assert_eq!(stats.namespaces["a"].evictions, 1);
    assert!(stats.namespaces["a"].bytes <= 16 * 1024);
    f.store.check_invariants();
}

#[test]
fn too_big_fails_early_and_leaves_nothing() {
    let f = fixture("[namespace.a]\nmax_entry_bytes = 100\n");
    let mut st = f
        .store
        .begin_write(&ns("a"), &key("k"), WriteFrom::Empty, OWNER)
        .unwrap();
    st.write_at(0, &[0; 100]).unwrap();
    assert!(matches!(st.write_at(100, &[0]), Err(StoreError::TooBig)));
    drop(st);
    assert!(get(&f.store, "a", "k").is_none());
    assert_eq!(work_files(&f.dir.path().join("b/staging")), 0);
}

#[test]
fn clean_restart_keeps_entries_and_recency() {
    let f = fixture("[namespace.a]\nmax_bytes = \"12KiB\"\n");
    for k in ["k1", "k2", "k3"] {
        put(&f.store, "a", k, k.as_bytes()).unwrap();
        f.clock.advance(Duration::from_secs(1));
    }
    get(&f.store, "a", "k1");
    f.store.save_snapshot().unwrap();
    let f = f.reopen("[namespace.a]\nmax_bytes = \"12KiB\"\n");
    assert!(
        !f.dir.path().join("b/index.snapshot").exists(),
        "snapshot is consumed"
    );
    for k in ["k1", "k2", "k3"] {
        assert_eq!(get(&f.store, "a", k).unwrap(), k.as_bytes());
    }
    f.store.check_invariants();
}

#[test]
fn a_change_after_the_snapshot_deletes_it_so_nothing_is_lost() {
    let f = fixture("[namespace.a]\n");
    put(&f.store, "a", "before", b"1").unwrap();
    f.store.save_snapshot().unwrap();
    let snapshot = f.dir.path().join("b/index.snapshot");
    assert!(snapshot.exists());
    // A publish racing a stop: its close() succeeds after the snapshot.
    put(&f.store, "a", "after", b"2").unwrap();
    assert!(!snapshot.exists(), "a stale snapshot would hide 'after'");
    f.store.save_snapshot().unwrap();
    f.store.remove(&ns("a"), &key("before")).unwrap();
    assert!(
        !snapshot.exists(),
        "a stale snapshot would resurrect 'before'"
    );
    let f = f.reopen("[namespace.a]\n");
    assert_eq!(get(&f.store, "a", "after").unwrap(), b"2");
    assert!(get(&f.store, "a", "before").is_none());
    f.store.check_invariants();
}

#[test]
fn reload_with_a_lower_quota_evicts_down_to_it_at_once() {
    let f = fixture("[namespace.a]\n[namespace.b]\n");
    for k in ["k1", "k2", "k3", "k4"] {
        put(&f.store, "a", k, &[1; 3000]).unwrap();
        f.clock.advance(Duration::from_secs(1));
    }
    put(&f.store, "b", "k1", &[1; 3000]).unwrap();
    get(&f.store, "a", "k1"); // most recent in a
    let evicted = f.store.reload(
        Config::parse("[namespace.a]\nmax_bytes = \"8KiB\"\n[namespace.b]\nmax_entries = 0\n")
            .unwrap(),
    );
    assert_eq!(evicted, 3);
    assert!(get(&f.store, "a", "k1").is_some(), "most recent survives");
    assert!(
        get(&f.store, "a", "k4").is_some(),
        "second most recent survives"
    );
    for (n, k) in [("a", "k2"), ("a", "k3"), ("b", "k1")] {
        assert!(get(&f.store, n, k).is_none(), "{n}/{k} evicted");
    }
    let stats = f.store.stats();
    assert!(stats.namespaces["a"].bytes <= 8 * 1024);
    assert_eq!(stats.namespaces["a"].evictions, 2);
    f.store.check_invariants();
}

#[test]
fn reload_with_a_longer_default_ttl_still_sweeps_at_the_new_expiry() {
    let f = fixture("[cache]\ndefault_ttl = \"10s\"\n[namespace.a]\n");
    put(&f.store, "a", "k", b"v").unwrap();
    f.store
        .reload(Config::parse("[cache]\ndefault_ttl = \"100s\"\n[namespace.a]\n").unwrap());
    f.store.check_invariants();
    f.clock.advance(Duration::from_secs(50));
    assert!(get(&f.store, "a", "k").is_some(), "lives by the new TTL");
    assert_eq!(f.store.sweep_expired(), 0);
    f.clock.advance(Duration::from_secs(51));
    assert!(matches!(
        f.store.lookup(&ns("a"), &key("k")),
        Lookup::Expired
    ));
    assert_eq!(f.store.sweep_expired(), 1, "swept at the new expiry");
    assert_eq!(f.store.usage().entries, 0);
}

#[test]
fn crash_restart_rebuilds_by_scan_and_quarantines_garbage() {
    let f = fixture("[namespace.a]\n");
    put(&f.store, "a", "good", b"good bytes").unwrap();
    put(&f.store, "a", "flipped", b"will be damaged").unwrap();
    let flipped = f.store.layout.entry_path(&ns("a"), &key("flipped"));
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&flipped, &bytes).unwrap();
    let shard = f.dir.path().join("b/data/00/00");
    std::fs::create_dir_all(&shard).unwrap();
    std::fs::write(shard.join("garbage"), b"not an entry").unwrap();
    std::fs::write(f.dir.path().join("b/staging/orphan"), b"half").unwrap();
    // No snapshot: as after kill -9.
    let f = f.reopen("[namespace.a]\n");
    assert_eq!(get(&f.store, "a", "good").unwrap(), b"good bytes");
    assert!(
        get(&f.store, "a", "flipped").is_none(),
        "content checksum caught it"
    );
    assert!(!shard.join("garbage").exists());
    assert!(!f.dir.path().join("b/staging/orphan").exists());
    let quarantined = std::fs::read_dir(f.dir.path().join("b/quarantine"))
        .unwrap()
        .count();
    assert_eq!(quarantined, 2);
    f.store.check_invariants();
}

#[test]
fn rename_moves_content_and_replaces_target() {
    let f = fixture("[namespace.a]\n");
    put(&f.store, "a", "src", b"payload").unwrap();
    put(&f.store, "a", "dst", b"old").unwrap();
    f.store
        .rename(&ns("a"), &key("src"), &key("dst"), false)
        .unwrap();
    assert!(get(&f.store, "a", "src").is_none());
    assert_eq!(get(&f.store, "a", "dst").unwrap(), b"payload");
    f.store.check_invariants();
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u16),
    Get(u8),
    Remove(u8),
    Advance(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..8, 0u16..9000).prop_map(|(k, n)| Op::Put(k, n)),
        (0u8..8).prop_map(Op::Get),
        (0u8..8).prop_map(Op::Remove),
        (0u8..20).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Against a model map: a read returns the last published bytes or
    /// nothing (evicted/expired), never other bytes; usage stays within
    /// the quota; accounting matches the entries.
    #[test]
    fn model(ops in proptest::collection::vec(op(), 1..40)) {
        let f = fixture("[namespace.a]\nmax_bytes = \"20KiB\"\nttl = \"30s\"\n");
        let mut model: std::collections::HashMap<u8, Vec<u8>> = Default::default();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Put(k, n) => {
                    let data = vec![(i % 251) as u8; n as usize];
                    put(&f.store, "a", &format!("k{k}"), &data).unwrap();
                    model.insert(k, data);
                }
                Op::Get(k) => {
                    if let Some(got) = get(&f.store, "a", &format!("k{k}")) {
                        prop_assert_eq!(Some(&got), model.get(&k));
                    }
                }
                Op::Remove(k) => {
                    let _ = f.store.remove(&ns("a"), &key(&format!("k{k}")));
                    model.remove(&k);
                }
                Op::Advance(s) => f.clock.advance(Duration::from_secs(u64::from(s))),
            }
            prop_assert!(f.store.usage().used_bytes <= 20 * 1024);
            f.store.check_invariants();
        }
    }
}

// ----- observability: counters, purge, offline commands -----

fn offline(f: &Stopped, access: offline::Access, config: &str) -> offline::OfflineStore {
    offline::OfflineStore::open(
        &f.dir.path().join("b"),
        access,
        Config::parse(config).unwrap(),
        f.clock.clone(),
    )
    .unwrap_or_else(|e| panic!("offline open: {e}"))
}

#[test]
fn counters_follow_a_known_sequence() {
    let f = fixture("[namespace.a]\nttl = \"10s\"\nmax_bytes = \"12KiB\"\n");
    put(&f.store, "a", "k1", &[1; 3000]).unwrap();
    put(&f.store, "a", "k2", &[2; 100]).unwrap();
    assert!(get(&f.store, "a", "k1").is_some()); // hit
    assert!(get(&f.store, "a", "k1").is_some()); // hit
    assert!(get(&f.store, "a", "nope").is_none()); // miss
    f.clock.advance(Duration::from_secs(11));
    assert!(get(&f.store, "a", "k2").is_none()); // expired miss
    put(&f.store, "a", "k3", &[3; 5000]).unwrap();
    let s = &f.store.stats().namespaces["a"];
    assert_eq!((s.hits, s.misses, s.expired_misses), (2, 2, 1));
    assert_eq!(s.hit_ratio, Some(0.5));
    assert_eq!((s.publishes, s.published_bytes), (3, 8100));
    assert_eq!(s.read_bytes, 6000);
    // The publish of k3 reclaimed both expired entries first.
    assert_eq!((s.expirations, s.evictions), (2, 0));
    assert_eq!((s.entries, s.logical_bytes), (1, 5000));
    assert_eq!(s.max_bytes, Some(12 * 1024));
    assert_eq!(s.latency.lookup.count, 4);
    assert_eq!(s.latency.open.count, 2);
    assert_eq!(s.latency.publish.count, 3);
    assert!(s.latency.read.count >= 2);
    // A lookup that misses is counted once however often the same thread
    // repeats it at once, and taken back when that thread then writes the
    // key (the kernel's lookup before a create).
    let id = f.store.namespace_id(&ns("a")).unwrap();
    for _ in 0..2 {
        let found = f.store.lookup_name(id, b"", b"fresh", 7).unwrap();
        assert!(matches!(found.lookup, Lookup::Miss));
    }
    assert_eq!(f.store.stats().namespaces["a"].misses, 3);
    f.store.lookup_name(id, b"", b"other", 8).unwrap();
    assert_eq!(f.store.stats().namespaces["a"].misses, 4);
    let w = NewWrite::by(8, WriteFrom::Empty, OWNER);
    let mut st = f.store.start_write(&ns("a"), &key("other"), w).unwrap();
    assert_eq!(f.store.stats().namespaces["a"].misses, 3);
    // A refused write is counted where the store refuses it.
    assert!(matches!(
        st.write_at(0, &[0; 13 * 1024]),
        Err(StoreError::TooBig)
    ));
    assert_eq!(f.store.stats().total.rejected_writes.efbig, 1);
    f.store.check_invariants();
}

#[test]
fn purge_removes_exactly_what_it_selects() {
    let f = fixture("[namespace.a]\n[namespace.b]\nttl = \"1h\"\n");
    put(&f.store, "a", "old", b"1").unwrap();
    put(&f.store, "b", "old", b"1").unwrap();
    f.clock.advance(Duration::from_secs(100));
    put(&f.store, "a", "new", b"22").unwrap();
    put(&f.store, "b", "new", b"22").unwrap();
    let used = f.store.usage().used_bytes;
    let older = |secs| PurgeFilter {
        namespace: None,
        prefix: None,
        select: PurgeSelect::OlderThan(Duration::from_secs(secs)),
    };
    assert_eq!(f.store.purge(&older(101)).unwrap().entries, 0);
    let r = f
        .store
        .purge(&PurgeFilter {
            namespace: Some(ns("a")),
            ..older(50)
        })
        .unwrap();
    assert_eq!(r.entries, 1);
    assert!(get(&f.store, "a", "old").is_none());
    assert!(get(&f.store, "b", "old").is_some(), "other namespace kept");
    assert!(get(&f.store, "a", "new").is_some());
    assert_eq!(f.store.usage().used_bytes, used - r.bytes);
    assert_eq!(f.store.stats().namespaces["a"].purged, 1);
    assert_eq!(f.store.stats().namespaces["a"].purged_bytes, r.bytes);
    // Expired: only b's entries have a TTL that ran out.
    f.clock.advance(Duration::from_secs(3550));
    let r = f
        .store
        .purge(&PurgeFilter {
            namespace: None,
            prefix: None,
            select: PurgeSelect::Expired,
        })
        .unwrap();
    assert_eq!(r.entries, 1, "b/old expired, b/new not yet");
    assert_eq!(f.store.purge(&older(0)).unwrap().entries, 2);
    assert_eq!(f.store.usage().entries, 0);
    assert_eq!(f.store.usage().used_bytes, 0);
    f.store.check_invariants();
}

#[test]
fn purge_select_wire_form_round_trips() {
    for s in [
        PurgeSelect::All,
        PurgeSelect::Expired,
        PurgeSelect::OlderThan(Duration::from_secs(3600)),
    ] {
        assert_eq!(s.to_string().parse::<PurgeSelect>().unwrap(), s);
    }
    assert!("older-than=x".parse::<PurgeSelect>().is_err());
    assert!("everything".parse::<PurgeSelect>().is_err());
}

#[test]
fn offline_commands_refuse_a_live_backing_dir_and_vice_versa() {
    let f = fixture("[namespace.a]\n");
    let e = offline::OfflineStore::open(
        &f.dir.path().join("b"),
        offline::Access::Exclusive,
        Config::default(),
        f.clock.clone(),
    )
    .err()
    .expect("exclusive while a store is open");
    assert!(matches!(e, LayoutError::LockedLive { .. }), "{e}");
    // Read-only work is fine beside a live store.
    offline::OfflineStore::open(
        &f.dir.path().join("b"),
        offline::Access::ReadOnly,
        Config::default(),
        f.clock.clone(),
    )
    .unwrap();
    let clock = f.clock.clone();
    let dir = f.dir;
    drop(f.store);
    let off = offline::OfflineStore::open(
        &dir.path().join("b"),
        offline::Access::Exclusive,
        Config::default(),
        clock.clone(),
    )
    .unwrap();
    let e = Store::open(&dir.path().join("b"), Config::default(), clock.clone())
        .err()
        .expect("a store cannot open during an offline purge");
    assert!(e.to_string().contains("offline"), "{e}");
    drop(off);
    Store::open(&dir.path().join("b"), Config::default(), clock).unwrap();
    // A missing dir is an error, never created.
    let missing = dir.path().join("nope");
    assert!(
        offline::OfflineStore::open(
            &missing,
            offline::Access::ReadOnly,
            Config::default(),
            Arc::new(ManualClock::new(T0))
        )
        .is_err()
    );
    assert!(!missing.exists());
}

#[test]
fn verify_finds_a_flipped_bit_and_a_truncation_and_quarantines_them() {
    let f = fixture("[namespace.a]\n");
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
    put(&f.store, "a", "big", &big).unwrap();
    put(&f.store, "a", "cut", &[5; 10_000]).unwrap();
    put(&f.store, "a", "good", b"fine").unwrap();
    let f = f.reopen_stopped();
    let layout = Layout::open(&f.dir.path().join("b")).unwrap();
    let big_path = layout.entry_path(&ns("a"), &key("big"));
    let mut bytes = std::fs::read(&big_path).unwrap();
    bytes[123_456] ^= 0x10;
    std::fs::write(&big_path, &bytes).unwrap();
    let cut_path = layout.entry_path(&ns("a"), &key("cut"));
    let len = std::fs::metadata(&cut_path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut_path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    let off = offline(&f, offline::Access::ReadOnly, "");
    let files = off.entry_files();
    let report = off.verify(&files, false, |_| {});
    assert_eq!(report.checked, 3);
    let mut bad: Vec<String> = report.bad.iter().map(|b| b.why.clone()).collect();
    bad.sort();
    assert_eq!(report.bad.len(), 2, "{bad:?}");
    assert!(
        report
            .bad
            .iter()
            .any(|b| b.path == big_path && b.why.contains("checksum")),
        "{bad:?}"
    );
    assert!(report.bad.iter().any(|b| b.path == cut_path), "{bad:?}");
    assert!(big_path.exists(), "nothing moved without --quarantine");
    drop(off);

    let off = offline(&f, offline::Access::Exclusive, "");
    let report = off.verify(&off.entry_files(), true, |_| {});
    assert_eq!(report.bad.len(), 2);
    assert!(report.bad.iter().all(|b| b.quarantined_to.is_some()));
    assert!(!big_path.exists() && !cut_path.exists());
    assert_eq!(
        std::fs::read_dir(f.dir.path().join("b/quarantine"))
            .unwrap()
            .count(),
        2
    );
    assert!(off.verify(&off.entry_files(), false, |_| {}).bad.is_empty());
    drop(off);
    // The snapshot no longer lists them: the next start does not serve,
    // list or count them.
    let f = f.reopen("[namespace.a]\n");
    let keys: Vec<Key> = f
        .store
        .list(&ns("a"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![key("good")]);
    assert_eq!(f.store.usage().entries, 1);
    f.store.check_invariants();
}

#[test]
fn offline_purge_and_inspect() {
    let f = fixture("[namespace.a]\nttl = \"1h\"\n[namespace.b]\n");
    put(&f.store, "a", "old", b"1").unwrap();
    put(&f.store, "b", "old", b"1").unwrap();
    f.clock.advance(Duration::from_secs(100));
    put(&f.store, "a", "new", b"22").unwrap();
    let f = f.reopen_stopped();
    let cfg = "[namespace.a]\nttl = \"1h\"\n";
    let off = offline(&f, offline::Access::ReadOnly, cfg);
    let files = off.entry_files();
    let listed = off.list(&files, Some(b"a"));
    assert_eq!(
        listed.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        vec![b"new".to_vec(), b"old".to_vec()]
    );
    assert_eq!(listed[0].logical_size, 2);
    assert_eq!(
        listed[0].expires,
        Some(T0 + 100 * 1_000_000_000 + 3600 * 1_000_000_000)
    );
    assert_eq!(off.list(&files, None).len(), 3);
    drop(off);
    let off = offline(&f, offline::Access::Exclusive, cfg);
    let mut ticks = 0;
    let r = off
        .purge(
            &files,
            &PurgeFilter {
                namespace: None,
                prefix: None,
                select: PurgeSelect::OlderThan(Duration::from_secs(50)),
            },
            || ticks += 1,
        )
        .unwrap();
    assert_eq!((r.entries, ticks), (2, 3));
    drop(off);
    let f = f.reopen("[namespace.a]\nttl = \"1h\"\n[namespace.b]\n");
    assert_eq!(f.store.usage().entries, 1);
    assert!(get(&f.store, "a", "new").is_some());
    f.store.check_invariants();
}

/// Readers share one open file per hot version; once the version leaves
/// the index (replaced, removed, evicted) that file must be closed, or its
/// disk space would stay in use behind the quota's back.
#[test]
fn versions_gone_from_the_index_keep_no_file_open() {
    let f = fixture("[namespace.a]\nmax_bytes = \"8KiB\"\n");
    let root = f.dir.path().canonicalize().unwrap();
    let open_in_backing = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| t.starts_with(&root))
            // data/ itself, held open for lookups, holds no entry's space.
            .filter(|t| !t.is_dir())
            .count()
    };
    for k in ["k1", "k2"] {
        put(&f.store, "a", k, &[1; 3000]).unwrap();
        assert!(get(&f.store, "a", k).is_some());
        assert!(
            get(&f.store, "a", k).is_some(),
            "a second open shares the file"
        );
    }
    assert_eq!(
        open_in_backing(),
        4,
        "one shared file per read version, the backing dir's lock and the session's"
    );
    put(&f.store, "a", "k1", &[2; 3000]).unwrap(); // replaced
    put(&f.store, "a", "k3", &[3; 3000]).unwrap(); // evicts k2
    assert!(get(&f.store, "a", "k2").is_none(), "k2 was evicted");
    assert_eq!(open_in_backing(), 2, "only the two locks");
    assert!(get(&f.store, "a", "k1").is_some());
    f.store.remove(&ns("a"), &key("k1")).unwrap();
    assert_eq!(open_in_backing(), 2);
}

#[test]
fn a_second_daemon_leaves_the_first_ones_writes_in_progress_alone() {
    let f = fixture("[namespace.a]\n");
    let mut st = f
        .store
        .begin_write(&ns("a"), &key("k"), WriteFrom::Empty, OWNER)
        .unwrap();
    st.write_at(0, b"being written").unwrap();
    let second = Store::open(
        &f.dir.path().join("b"),
        Config::parse("[namespace.a]\n").unwrap(),
        f.clock.clone(),
    )
    .unwrap();
    f.store.publish(st).expect("the first daemon's publish");
    assert_eq!(get(&f.store, "a", "k").unwrap(), b"being written");
    drop(second);
}

#[test]
fn a_daemon_alone_removes_orphaned_staging_and_trash_files() {
    let f = fixture("[namespace.a]\n");
    let b = f.dir.path().join("b");
    std::fs::write(b.join("staging/tmp.crashed"), b"x").unwrap();
    std::fs::write(b.join("trash/old.crashed"), b"x").unwrap();
    let f = f.reopen("[namespace.a]\n");
    assert!(!b.join("staging/tmp.crashed").exists());
    assert!(!b.join("trash/old.crashed").exists());
    put(&f.store, "a", "k", b"v").expect("the lock is shared again after cleaning");
    let second = Store::open(
        &b,
        Config::parse("[namespace.a]\n").unwrap(),
        f.clock.clone(),
    );
    assert!(second.is_ok(), "a second daemon may join");
}

#[test]
fn a_shard_directory_removed_behind_the_store_is_made_again() {
    let f = fixture("[namespace.a]\n");
    put(&f.store, "a", "k", b"one").unwrap();
    let path = f.store.layout.entry_path(&ns("a"), &key("k"));
    f.store.remove(&ns("a"), &key("k")).unwrap();
    std::fs::remove_dir(path.parent().unwrap()).unwrap();
    put(&f.store, "a", "k", b"two").expect("publish into a vanished shard");
    assert_eq!(get(&f.store, "a", "k").unwrap(), b"two");
    assert!(path.exists());
}

#[test]
fn evicted_files_are_unlinked_by_the_time_the_index_is_saved() {
    let f = fixture("[namespace.a]\nmax_bytes = \"8KiB\"\n");
    for i in 0..20 {
        put(&f.store, "a", &format!("k{i}"), &[1; 3000]).unwrap();
    }
    assert_eq!(f.store.stats().namespaces["a"].evictions, 18);
    f.store.save_snapshot().unwrap();
    assert_eq!(work_files(&f.dir.path().join("b/trash")), 0);
    let data_files = files_under(&f.dir.path().join("b/data")).len();
    assert_eq!(data_files, 2, "only the two live entries are on disk");
}

/// Files under staging/ or trash/ (a daemon's session lock aside).
fn work_files(dir: &std::path::Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|p| p.extension().is_none_or(|e| e != "lock"))
        .count()
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn a_daemon_starting_while_another_cleans_up_waits_for_it() {
    let Fixture { dir, store, .. } = fixture("[namespace.a]\n");
    drop(store);
    let root = dir.path().join("b");
    // Another daemon starting holds the lock exclusive while it cleans up.
    let starting = Layout::open_existing(&root)
        .unwrap()
        .lock(LockMode::Exclusive)
        .unwrap();
    let opener = {
        let root = root.clone();
        std::thread::spawn(move || {
            Store::open(
                &root,
                Config::parse("[namespace.a]\n").unwrap(),
                Arc::new(ManualClock::new(T0)),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    };
    std::thread::sleep(Duration::from_millis(100)); // its clean-up
    drop(starting);
    opener.join().unwrap().expect("the second daemon starts");
}

#[test]
fn a_daemon_removes_what_dead_daemons_left_and_nothing_of_live_ones() {
    let f = fixture("[namespace.a]\n");
    let b = f.dir.path().join("b");
    let mut st = f
        .store
        .begin_write(&ns("a"), &key("k"), WriteFrom::Empty, OWNER)
        .unwrap();
    st.write_at(0, b"live").unwrap();
    // A daemon that died left its session behind (its lock is free, its
    // process gone).
    super::claims_tests::dead_session(&b, "dead-1");
    for d in ["staging/dead-1", "trash/dead-1"] {
        std::fs::create_dir(b.join(d)).unwrap();
        std::fs::write(b.join(d).join("left"), b"x").unwrap();
    }
    let second = Store::open(
        &b,
        Config::parse("[namespace.a]\n").unwrap(),
        f.clock.clone(),
    )
    .unwrap();
    assert!(!b.join("staging/dead-1").exists());
    assert!(!b.join("trash/dead-1").exists());
    assert!(!b.join("staging/dead-1.lock").exists());
    f.store
        .publish(st)
        .expect("the live daemon's write survives");
    assert_eq!(get(&f.store, "a", "k").unwrap(), b"live");
    drop(second);
}

#[test]
fn a_stopped_daemon_leaves_nothing_in_staging_or_trash() {
    let f = fixture("[namespace.a]\n");
    let b = f.dir.path().join("b");
    put(&f.store, "a", "k", b"one").unwrap();
    put(&f.store, "a", "k", b"two").unwrap(); // the first is kept a moment
    let mut st = f
        .store
        .begin_write(&ns("a"), &key("k2"), WriteFrom::Empty, OWNER)
        .unwrap();
    st.write_at(0, b"never closed").unwrap();
    std::mem::forget(st);
    f.store.save_snapshot().unwrap();
    f.store.end_session();
    for d in ["staging", "trash"] {
        let left: Vec<_> = std::fs::read_dir(b.join(d)).unwrap().collect();
        assert!(left.is_empty(), "{d}: {left:?}");
    }
}

#[test]
fn copy_content_gives_the_plain_bytes_checked_and_refuses_damage() {
    let f = fixture("[namespace.a]\nttl = \"1h\"\n");
    let body: Vec<u8> = (0..300_000).map(|i| (i * 7 % 253) as u8).collect();
    put(&f.store, "a", "k", &body).unwrap();
    let f = f.reopen_stopped();
    let layout = Layout::open(&f.dir.path().join("b")).unwrap();
    let path = layout.entry_path(&ns("a"), &key("k"));
    let off = offline(
        &f,
        offline::Access::ReadOnly,
        "[namespace.a]\nttl = \"1h\"\n",
    );
    let mut out = Vec::new();
    let (rec, digest) = off.copy_content(&path, &mut out).unwrap().unwrap();
    assert!(out == body, "the plain bytes");
    assert_eq!(
        digest,
        <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(&body))
    );
    assert_eq!((rec.logical_size, rec.mode), (body.len() as u64, 0o644));
    assert_eq!(
        rec.expires,
        Some(rec.mtime + 3600 * 1_000_000_000),
        "the namespace's TTL"
    );

    let mut bytes = std::fs::read(&path).unwrap();
    bytes[200_000] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let bad = off.copy_content(&path, &mut Vec::new()).unwrap_err();
    assert!(bad.why.contains("checksum"), "{}", bad.why);
    std::fs::remove_file(&path).unwrap();
    assert!(
        off.copy_content(&path, &mut Vec::new()).unwrap().is_none(),
        "gone: None"
    );
}
