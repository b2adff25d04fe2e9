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
    assert_eq!(
        std::fs::read_dir(f.dir.path().join("b/staging"))
            .unwrap()
            .count(),
        0
    );
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
    assert_eq!(
        std::fs::read_dir(f.dir.path().join("b/staging"))
            .unwrap()
            .count(),
        0
    );
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
    f.store.rename(&ns("a"), &key("src"), &key("dst")).unwrap();
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
