//! Two stores on one backing dir (two daemons, without FUSE): what one
//! publishes, replaces or removes, the other's lookups find at the key's
//! backing path, with the other's accounting kept right; and the rebuild
//! never re-adds a key changed while it ran.

use std::sync::Arc;

use super::*;
use crate::config::Config;

const T0: i64 = 1_800_000_000 * 1_000_000_000;
const OWNER: Owner = Owner {
    uid: 0,
    gid: 0,
    mode: 0o644,
};

fn ns(name: &str) -> Namespace {
    Namespace::parse(name.as_bytes()).unwrap()
}

fn key(name: &str) -> Key {
    Key::parse(name.as_bytes(), KeyFormat::Any).unwrap()
}

fn put(s: &Store, n: &str, k: &str, data: &[u8]) {
    let mut st = s
        .begin_write(&ns(n), &key(k), WriteFrom::Empty, OWNER)
        .unwrap();
    st.write_at(0, data).unwrap();
    s.publish(st).unwrap();
}

/// Two stores on one backing dir, sharing a manual clock.
fn pair(config: &str) -> (tempfile::TempDir, Arc<ManualClock>, Store, Store) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let open = || {
        Store::open(
            &dir.path().join("b"),
            Config::parse(config).unwrap(),
            clock.clone(),
        )
        .unwrap()
    };
    let a = open();
    let b = open();
    (dir, clock, a, b)
}

fn lookup(s: &Store, n: &str, k: &str) -> Lookup {
    let id = s.namespace_id(&ns(n)).unwrap();
    s.lookup_name(id, b"", k.as_bytes(), 1).unwrap().lookup
}

fn read(s: &Store, n: &str, k: &str) -> Vec<u8> {
    let h = s.open_read(&ns(n), &key(k)).unwrap();
    h.read_at(0, 1 << 20).unwrap()
}

#[test]
fn a_lookup_finds_what_another_store_published_replaced_or_removed() {
    let (_dir, _clock, a, b) = pair("[namespace.a]\n");
    assert!(matches!(lookup(&b, "a", "k"), Lookup::Miss));
    put(&a, "a", "k", b"one");
    let Lookup::Hit(first) = lookup(&b, "a", "k") else {
        panic!("published by A, not found by B");
    };
    assert_eq!(first.logical_size, 3);
    assert_eq!(read(&b, "a", "k"), b"one");
    assert_eq!(b.usage().entries, 1);
    assert_eq!(b.usage().used_bytes, a.usage().used_bytes);

    // Replaced by A: B's next lookup notices (another file at the path).
    put(&a, "a", "k", b"second version");
    let Lookup::Hit(second) = lookup(&b, "a", "k") else {
        panic!("replaced by A, lost by B");
    };
    assert_ne!(second.version, first.version);
    assert_eq!(second.logical_size, 14);
    assert_eq!(read(&b, "a", "k"), b"second version");
    assert_eq!(b.usage().entries, 1, "replaced, not counted twice");
    assert_eq!(b.usage().used_bytes, a.usage().used_bytes);

    // Removed by A: gone for B, and out of B's accounts.
    a.remove(&ns("a"), &key("k")).unwrap();
    assert!(matches!(lookup(&b, "a", "k"), Lookup::Miss));
    assert_eq!(b.usage().entries, 0);
    assert_eq!(b.usage().used_bytes, 0);
    a.check_invariants();
    b.check_invariants();
}

#[test]
fn an_expired_or_bad_file_found_at_the_backing_path_is_not_served() {
    let (dir, clock, a, b) = pair("[namespace.a]\nttl = \"10s\"\n");
    put(&a, "a", "old", b"x");
    clock.advance(std::time::Duration::from_secs(11));
    assert!(matches!(lookup(&b, "a", "old"), Lookup::Expired));
    assert_eq!(b.usage().entries, 0, "an expired file is not adopted");
    // Left in place: the daemon whose index holds it expires it.
    let path = b.layout.entry_path(&ns("a"), &key("old"));
    assert!(path.exists());

    // Garbage at a key's path: a miss, nothing indexed.
    let bad = b.layout.entry_path(&ns("a"), &key("bad"));
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, b"not an entry at all").unwrap();
    assert!(matches!(lookup(&b, "a", "bad"), Lookup::Miss));
    assert_eq!(b.usage().entries, 0);
    // Moved aside, as the scan would.
    assert!(!bad.exists());
    assert_eq!(
        std::fs::read_dir(b.layout.quarantine_dir())
            .unwrap()
            .count(),
        1
    );
    assert_eq!(b.stats().corrupt_entries, 1);
    drop(dir);
}

#[test]
fn a_namespace_made_by_another_store_is_found() {
    let (_dir, _clock, a, b) = pair("");
    a.create_namespace(b"team", crate::access::NsAccess::of_daemon())
        .unwrap();
    assert!(b.namespace_id(&ns("team")).is_none());
    assert!(b.find_namespace(&ns("team")).is_some());
    a.create_namespace(b"other", crate::access::NsAccess::of_daemon())
        .unwrap();
    let names: Vec<_> = b.namespaces_on_disk().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec![ns("other"), ns("team")]);
    // mkdir through B of what A made: it exists.
    assert!(matches!(
        b.create_namespace(b"other", crate::access::NsAccess::of_daemon()),
        Err(StoreError::Exists)
    ));
}

#[test]
fn the_rebuild_never_re_adds_a_key_changed_while_it_ran() {
    let mut idx = index::Index::new(index::GlobalLimits {
        max_bytes: u64::MAX,
        max_entries: None,
        default_ttl: std::time::Duration::ZERO,
        compression: Default::default(),
    });
    idx.add_namespace(ns("a"), crate::config::NamespacePolicy::default(), false);
    let meta = |v: u64, bytes: u64| EntryMeta {
        version: v,
        file_id: v,
        file_size: bytes,
        mtime: T0,
        ctime: T0,
        atime: T0,
        ttl_secs: None,
        logical_size: bytes,
        stored_bytes: bytes,
        mode: 0o644,
        uid: 0,
        gid: 0,
        verified: false,
        compressed: false,
        last_access: T0,
    };
    idx.begin_rebuild();
    // Published (or adopted) during the rebuild, then removed: the
    // rebuild's older find of it stays out.
    idx.insert(&ns("a"), key("gone"), meta(1, 10));
    idx.remove(&ns("a"), &key("gone"));
    assert!(!idx.insert_rebuilt(&ns("a"), key("gone"), meta(2, 10)));
    // Rewritten during the rebuild: the newer version stays, counted once.
    idx.insert(&ns("a"), key("new"), meta(3, 20));
    assert!(!idx.insert_rebuilt(&ns("a"), key("new"), meta(4, 10)));
    // Untouched: goes in.
    assert!(idx.insert_rebuilt(&ns("a"), key("plain"), meta(5, 5)));
    idx.end_rebuild();
    assert_eq!(idx.total_entries(), 2);
    assert_eq!(idx.total_bytes(), 25);
    assert_eq!(idx.peek(&ns("a"), &key("new")).unwrap().version, 3);
    idx.debug_check();
}

/// pjdfstest's `utimensat` failed once with ENOENT: a LOOKUP that raced a
/// metadata republish of the same key (a new file renamed over the path,
/// the same version) took this daemon's own change for another daemon's,
/// and forgot or re-versioned a key that was live throughout.
#[test]
fn lookups_racing_metadata_republishes_always_find_the_same_live_version() {
    let (_dir, _clock, a, _b) = pair("[namespace.a]\n");
    put(&a, "a", "k", b"content");
    let Lookup::Hit(first) = lookup(&a, "a", "k") else {
        panic!("just published");
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..2u32 {
            let (a, done) = (&a, &done);
            s.spawn(move || {
                for i in 0..500u32 {
                    let update = MetaUpdate {
                        mtime: Some(T0 + i64::from(i)),
                        mode: Some(0o600 + (i + w) % 2 * 0o44),
                        ..MetaUpdate::default()
                    };
                    let info = a.update(&ns("a"), &key("k"), update).expect("republish");
                    assert_eq!(info.version, first.version, "a touch keeps the version");
                }
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        }
        let (a, done) = (&a, &done);
        s.spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                match lookup(a, "a", "k") {
                    Lookup::Hit(info) => assert_eq!(info.version, first.version),
                    other => panic!("a live key looked up as {other:?}"),
                }
                let h = a
                    .open_read(&ns("a"), &key("k"))
                    .expect("open of a live key");
                assert_eq!(h.read_at(0, 100).unwrap(), b"content");
            }
        });
    });
    assert_eq!(a.stats().corrupt_entries, 0, "nothing live was quarantined");
    a.check_invariants();
}
