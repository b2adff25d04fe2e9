//! The index against a naive model: per namespace, a `Vec` of (key, meta)
//! from least to most recently used, searched linearly. Random sequences
//! of insert/remove/promote/pop_lru/take_expired/mark_verified over keys
//! of every form (hex, inline, long, hex-like but not hex) and metadata
//! narrow and wide, checked after every step: results, every key's
//! lookup, recency order, accounting and `debug_check`.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

const SECOND: i64 = 1_000_000_000;

fn keys() -> Vec<Vec<u8>> {
    let hex = |c: char| c.to_string().repeat(64).into_bytes();
    vec![
        hex('0'),
        hex('a'),
        "0123456789abcdef".repeat(4).into_bytes(),
        "0123456789ABCDEF".repeat(4).into_bytes(),
        b"k".to_vec(),
        b"short key".to_vec(),
        vec![b'x'; 32],
        vec![b'y'; 33],
        vec![b'z'; 255],
        [&b"g"[..], &[b'0'; 63]].concat(),
    ]
}

fn namespaces() -> [(Namespace, NamespacePolicy); 2] {
    [
        (Namespace::parse(b"a").unwrap(), NamespacePolicy::default()),
        (
            Namespace::parse(b"b").unwrap(),
            NamespacePolicy {
                ttl: Some(Duration::from_secs(3)),
                ..NamespacePolicy::default()
            },
        ),
    ]
}

fn index() -> Index {
    let mut idx = Index::new(GlobalLimits {
        max_bytes: u64::MAX,
        max_entries: None,
        default_ttl: Duration::from_secs(5),
        compression: Default::default(),
    });
    for (ns, policy) in namespaces() {
        idx.add_namespace(ns, policy, true);
    }
    idx
}

#[derive(Debug, Clone)]
struct MetaSeed {
    mtime_s: i64,
    ttl: Option<u64>,
    logical: u64,
    trailer: Option<u64>,
    stored: u64,
    verified: bool,
}

fn meta_seed() -> impl Strategy<Value = MetaSeed> {
    let ttl = prop_oneof![
        Just(None),
        Just(Some(0)),
        (1u64..8).prop_map(Some),
        Just(Some(u64::from(u32::MAX) - 1)),
        Just(Some(u64::from(u32::MAX))),
        Just(Some(u64::MAX)),
    ];
    let trailer = prop_oneof![
        4 => (0u64..400).prop_map(Some),
        1 => Just(Some(u64::from(u32::MAX) + 1)),
        1 => Just(None),
    ];
    (0i64..10, ttl, 0u64..5000, trailer, 0u64..3, any::<bool>()).prop_map(
        |(mtime_s, ttl, logical, trailer, blocks, verified)| MetaSeed {
            mtime_s,
            ttl,
            logical,
            trailer,
            stored: blocks * 4096,
            verified,
        },
    )
}

#[derive(Debug, Clone)]
enum Op {
    Insert(usize, usize, MetaSeed),
    Remove(usize, usize),
    Promote(usize, usize, i64),
    PopLru(usize),
    TakeExpired(i64),
    MarkVerified(usize, usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let n = keys().len();
    prop_oneof![
        6 => (0..2usize, 0..n, meta_seed()).prop_map(|(s, k, m)| Op::Insert(s, k, m)),
        2 => (0..2usize, 0..n).prop_map(|(s, k)| Op::Remove(s, k)),
        2 => (0..2usize, 0..n, 0i64..20).prop_map(|(s, k, t)| Op::Promote(s, k, t)),
        1 => (0..2usize).prop_map(Op::PopLru),
        1 => (0i64..20).prop_map(Op::TakeExpired),
        1 => (0..2usize, 0..n, any::<bool>()).prop_map(|(s, k, b)| Op::MarkVerified(s, k, b)),
    ]
}

/// Per namespace: (key, meta), least recently used first.
type Model = [Vec<(Vec<u8>, EntryMeta)>; 2];

fn model_expires(ns: usize, m: &EntryMeta) -> Option<UnixNanos> {
    let secs = match (m.ttl_secs, ns) {
        (Some(s), _) => s,
        (None, 0) => 5,
        (None, _) => 3,
    };
    let nanos = u128::from(secs) * 1_000_000_000;
    (secs != 0).then(|| m.mtime.saturating_add(nanos.min(i64::MAX as u128) as i64))
}

fn model_take(model: &mut Model, ns: usize, key: &[u8]) -> Option<EntryMeta> {
    let at = model[ns].iter().position(|(k, _)| k == key)?;
    Some(model[ns].remove(at).1)
}

fn run(ops: Vec<Op>) {
    let keys = keys();
    let nss = namespaces();
    let mut idx = index();
    let mut model: Model = [Vec::new(), Vec::new()];
    let mut version = 1u64 << 32;
    for op in ops {
        match op {
            Op::Insert(s, k, seed) => {
                version += 1;
                let meta = EntryMeta {
                    version,
                    file_id: version ^ 0x5555,
                    file_size: match seed.trailer {
                        Some(t) => seed.logical + t,
                        None => seed.logical.wrapping_sub(1),
                    },
                    mtime: seed.mtime_s * SECOND,
                    // Some entries changed after their mtime: a wide ctime.
                    ctime: seed.mtime_s * SECOND + i64::from(version % 3 == 0),
                    // And some were given an atime by `utimensat`.
                    atime: seed.mtime_s * SECOND - i64::from(version % 5 == 0),
                    ttl_secs: seed.ttl,
                    logical_size: seed.logical,
                    stored_bytes: seed.stored,
                    mode: 0o100644,
                    uid: version as u32,
                    gid: 7,
                    verified: seed.verified,
                    // Some are stored compressed: smaller than they read.
                    compressed: version % 4 == 0,
                    last_access: seed.mtime_s * SECOND,
                };
                let key = Key::parse(&keys[k], crate::config::KeyFormat::Any).unwrap();
                let old = idx.insert(&nss[s].0, key, meta.clone());
                assert_eq!(old, model_take(&mut model, s, &keys[k]));
                model[s].push((keys[k].clone(), meta));
            }
            Op::Remove(s, k) => {
                let key = Key::parse(&keys[k], crate::config::KeyFormat::Any).unwrap();
                let got = idx.remove(&nss[s].0, &key);
                assert_eq!(got, model_take(&mut model, s, &keys[k]));
            }
            Op::Promote(s, k, t) => {
                let key = Key::parse(&keys[k], crate::config::KeyFormat::Any).unwrap();
                let got = idx.promote(&nss[s].0, &key, t * SECOND);
                let want = model_take(&mut model, s, &keys[k]).map(|mut m| {
                    m.last_access = t * SECOND;
                    model[s].push((keys[k].clone(), m.clone()));
                    m
                });
                assert_eq!(got, want);
            }
            Op::PopLru(s) => {
                let got = idx.pop_lru(&nss[s].0);
                let want = (!model[s].is_empty()).then(|| model[s].remove(0));
                assert_eq!(
                    got.map(|(k, m)| (k.as_bytes().to_vec(), m)),
                    want,
                    "pop_lru"
                );
            }
            Op::TakeExpired(t) => {
                let now = t * SECOND;
                let got: BTreeSet<(Vec<u8>, Vec<u8>, u64)> = idx
                    .take_expired(now)
                    .into_iter()
                    .map(|r| {
                        assert_eq!(r.reason, RemoveReason::Expired);
                        (
                            r.ns.as_bytes().to_vec(),
                            r.key.as_bytes().to_vec(),
                            r.meta.version,
                        )
                    })
                    .collect();
                let mut want = BTreeSet::new();
                for (s, entries) in model.iter_mut().enumerate() {
                    entries.retain(|(k, m)| {
                        let expired = model_expires(s, m).is_some_and(|at| at <= now);
                        if expired {
                            want.insert((nss[s].0.as_bytes().to_vec(), k.clone(), m.version));
                        }
                        !expired
                    });
                }
                assert_eq!(got, want, "take_expired at {t}s");
            }
            Op::MarkVerified(s, k, same) => {
                let key = Key::parse(&keys[k], crate::config::KeyFormat::Any).unwrap();
                let entry = model[s].iter_mut().find(|(mk, _)| *mk == keys[k]);
                let v = entry.as_ref().map_or(0, |(_, m)| m.version) + u64::from(!same);
                let want = match entry {
                    Some((_, m)) if m.version == v => {
                        m.verified = true;
                        true
                    }
                    _ => false,
                };
                let compressed = entry_compressed(&model[s], &keys[k]);
                assert_eq!(idx.mark_verified(&nss[s].0, &key, v, compressed), want);
            }
        }
        idx.debug_check();
        for (s, (ns, _)) in nss.iter().enumerate() {
            let state = idx.namespace(ns).unwrap();
            let listed: Vec<(Vec<u8>, EntryMeta)> =
                state.iter_lru().map(|(k, m)| (k.to_vec(), m)).collect();
            assert_eq!(listed, model[s], "namespace {ns}: order and metadata");
            for k in &keys {
                let key = Key::parse(k, crate::config::KeyFormat::Any).unwrap();
                let want = model[s].iter().find(|(mk, _)| mk == k).map(|(_, m)| m);
                assert_eq!(state.peek(&key).as_ref(), want);
            }
            let bytes: u64 = model[s].iter().map(|(_, m)| m.stored_bytes).sum();
            assert_eq!(state.bytes(), bytes);
        }
        let n: usize = model.iter().map(Vec::len).sum();
        assert_eq!(idx.total_entries(), n as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn index_agrees_with_a_naive_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

fn hex_key(i: u64) -> Key {
    Key::parse(
        format!("{i:064x}").as_bytes(),
        crate::config::KeyFormat::Any,
    )
    .unwrap()
}

fn meta(version: u64, mtime: i64, ttl_secs: Option<u64>) -> EntryMeta {
    EntryMeta {
        version,
        file_id: version,
        file_size: 200,
        mtime,
        ctime: mtime,
        atime: mtime,
        ttl_secs,
        logical_size: 1,
        stored_bytes: 4096,
        mode: 0o644,
        uid: 0,
        gid: 0,
        verified: false,
        compressed: false,
        last_access: mtime,
    }
}

#[test]
fn a_stale_expiry_item_spares_the_entry_that_reused_its_slot() {
    let mut idx = index();
    let ns = Namespace::parse(b"a").unwrap();
    idx.insert(&ns, hex_key(1), meta(1, 0, Some(1)));
    idx.remove(&ns, &hex_key(1));
    // Same slot (the free list is reused first), later expiry.
    idx.insert(&ns, hex_key(2), meta(2, 0, Some(100)));
    assert!(idx.take_expired(2 * SECOND).is_empty());
    assert!(idx.peek(&ns, &hex_key(2)).is_some());
    let gone = idx.take_expired(100 * SECOND);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].key, hex_key(2));
    idx.debug_check();
}

#[test]
fn a_ttl_past_i64_nanoseconds_still_gets_its_expiry_item() {
    let mut idx = index();
    let ns = Namespace::parse(b"a").unwrap();
    // 2^63 ns is 292 years: the instant saturates; it must not wrap
    // to the past, nor be left without an item.
    idx.insert(&ns, hex_key(1), meta(1, 0, Some(u64::MAX / 2)));
    idx.debug_check();
    assert!(idx.take_expired(SECOND).is_empty());
    assert_eq!(idx.take_expired(i64::MAX).len(), 1);
}

#[test]
fn many_entries_in_and_out_keep_the_table_whole() {
    let mut idx = index();
    let ns = Namespace::parse(b"a").unwrap();
    for i in 0..20_000 {
        idx.insert(&ns, hex_key(i), meta(i, i as i64, Some(0)));
    }
    for i in (0..20_000).step_by(2) {
        assert_eq!(idx.remove(&ns, &hex_key(i)).map(|m| m.version), Some(i));
    }
    for i in 20_000..25_000 {
        idx.insert(&ns, hex_key(i), meta(i, i as i64, Some(0)));
    }
    idx.debug_check();
    assert_eq!(idx.total_entries(), 15_000);
    let order: Vec<u64> = idx
        .namespace(&ns)
        .unwrap()
        .iter_lru()
        .map(|(_, m)| m.version)
        .collect();
    let want: Vec<u64> = (1..20_000).step_by(2).chain(20_000..25_000).collect();
    assert_eq!(order, want);
    assert_eq!(idx.pop_lru(&ns).map(|(k, _)| k), Some(hex_key(1)));
}

#[test]
fn an_emptied_table_frees_its_slots_and_stale_items_stay_harmless() {
    let mut idx = index();
    let ns = Namespace::parse(b"a").unwrap();
    for i in 0..2000 {
        idx.insert(&ns, hex_key(i), meta(i, 0, Some(1)));
    }
    for i in 0..2000 {
        idx.remove(&ns, &hex_key(i));
    }
    assert_eq!(idx.namespace(&ns).unwrap().entries.capacity(), 0);
    // Slot 0 again, under items of the old entries that fire at 1 s.
    idx.insert(&ns, hex_key(5000), meta(5000, 0, Some(60)));
    idx.debug_check();
    assert!(idx.take_expired(2 * SECOND).is_empty());
    assert_eq!(idx.take_expired(60 * SECOND).len(), 1);
}

/// What the model says of a key's storage (a verify keeps it).
fn entry_compressed(model: &[(Vec<u8>, EntryMeta)], key: &[u8]) -> bool {
    model.iter().any(|(k, m)| k == key && m.compressed)
}

/// A rebuild's inserts: a key put in otherwise since the rebuild began
/// (published, or published and removed) is left as it is; a key already
/// in is not replaced; the rest go in oldest first, accounted, with their
/// expiry items, in a table sized once for them.
#[test]
fn a_rebuild_puts_in_only_what_nothing_newer_put_in() {
    let mut idx = index();
    let (a, b) = (
        Namespace::parse(b"a").unwrap(),
        Namespace::parse(b"b").unwrap(),
    );
    let keys: Vec<Key> = (0..3000)
        .map(hex_key)
        .chain(
            keys()
                .into_iter()
                .filter(|k| k.as_slice() != hex_key(0).as_bytes())
                .map(|k| Key::parse(&k, crate::config::KeyFormat::Any).unwrap()),
        )
        .collect();
    idx.begin_rebuild();
    idx.reserve_rebuilt(&a, keys.len());
    idx.reserve_rebuilt(&b, 10);
    idx.insert(&a, keys[5].clone(), meta(90_005, 50, Some(0)));
    idx.insert(&a, keys[6].clone(), meta(90_006, 50, Some(0)));
    idx.remove(&a, &keys[6]);
    for (i, k) in keys.iter().enumerate() {
        let went_in = idx.insert_rebuilt(&a, k.clone(), meta(i as u64, i as i64, None));
        assert_eq!(went_in, i != 5 && i != 6, "key {i}");
    }
    // Found twice (a scan racing a rename): the first stays.
    assert!(!idx.insert_rebuilt(&a, keys[7].clone(), meta(77_777, 0, None)));
    assert!(idx.insert_rebuilt(&b, hex_key(1), meta(50_000, 0, None)));
    assert!(!idx.insert_rebuilt(
        &Namespace::parse(b"gone").unwrap(),
        hex_key(1),
        meta(1, 0, None)
    ));
    idx.end_rebuild();
    idx.debug_check();

    let state = idx.namespace(&a).unwrap();
    assert_eq!(state.peek(&keys[5]).map(|m| m.version), Some(90_005));
    assert!(state.peek(&keys[6]).is_none());
    assert_eq!(state.peek(&keys[7]).map(|m| m.version), Some(7));
    let order: Vec<u64> = state.iter_lru().map(|(_, m)| m.version).collect();
    let want: Vec<u64> = std::iter::once(90_005)
        .chain((0..keys.len() as u64).filter(|&i| i != 5 && i != 6))
        .collect();
    assert_eq!(order, want, "oldest first, as put in");
    // Every key of a but the removed one, and b's.
    assert_eq!(idx.total_entries(), keys.len() as u64 - 1 + 1);
    assert_eq!(idx.total_bytes(), idx.total_entries() * 4096);
    // The namespaces' TTLs (5 s default, 3 s for b) hold for what went in.
    assert_eq!(idx.take_expired(3 * SECOND).len(), 1);
    assert_eq!(
        idx.take_expired(5 * SECOND + 10_000).len(),
        keys.len() - 2,
        "every rebuilt entry of a expires; the one published has no TTL"
    );
    idx.debug_check();
}

/// A sha256 key is kept as its 32 bytes only if every character is a
/// lowercase hex digit: any other byte anywhere keeps the key as it is,
/// a key of its own, read back whole.
#[test]
fn only_lowercase_hex_keys_are_packed_and_every_key_reads_back_whole() {
    let mut table = table::EntryTable::default();
    let base = "0123456789abcdef".repeat(4).into_bytes();
    let (slot, _) = table.insert(&base, &meta(1, 0, None));
    let mut n = 1;
    for c in 0..=255u8 {
        for at in [0, 31, 63] {
            let mut key = base.clone();
            key[at] = c;
            if key == base {
                continue;
            }
            n += 1;
            let (i, replaced) = table.insert(&key, &meta(n, 0, None));
            assert!(replaced.is_none(), "byte {c} at {at} taken for another key");
            assert_eq!(&*table.key(i), &key[..], "byte {c} at {at}");
        }
    }
    assert_eq!(&*table.key(slot), &base[..]);
    assert_eq!(table.len() as u64, n);
}
