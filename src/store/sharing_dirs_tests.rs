//! Two stores sharing changes (two daemons, without FUSE): a directory
//! made through one, by mkdir (a marker) or implied by a key published
//! under it, is found by the other's next lookup of its name.

use std::sync::Arc;

use super::backing::BackingIo;
use super::pair_tests::{OWNER, key, pair_on};
use super::*;

fn ns() -> Namespace {
    Namespace::parse(b"n").unwrap()
}

/// Two stores sharing changes; their followers poll once an hour, so
/// only what a lookup or a publish reads itself is known.
fn pair() -> (tempfile::TempDir, Arc<Store>, Arc<Store>) {
    pair_with("[namespace.n]\n")
}

fn pair_with(config: &str) -> (tempfile::TempDir, Arc<Store>, Arc<Store>) {
    let (dir, _clock, a, b) = pair_on(config, BackingIo::from_env());
    (dir, a, b)
}

fn found(s: &Store, dir: &str, name: &str) -> Found {
    let id = s.namespace_id(&ns()).unwrap();
    s.lookup_name(id, dir.as_bytes(), name.as_bytes(), 1)
        .unwrap()
}

#[test]
fn a_directory_implied_by_a_key_published_through_another_store_is_found() {
    let (_dir, a, b) = pair();
    assert!(!found(&b, "", "x").dir);
    let mut st = a
        .begin_write(&ns(), &key("x/y/k"), WriteFrom::Empty, OWNER)
        .unwrap();
    st.write_at(0, b"v").unwrap();
    a.publish(st).unwrap();
    // No marker: only A's record (in its log before publish returned)
    // tells B that x and x/y are directories now.
    let x = found(&b, "", "x");
    assert!(x.dir, "x: {x:?}");
    assert!(found(&b, "x", "y").dir);
    assert!(matches!(found(&b, "x/y", "k").lookup, Lookup::Hit(_)));
    assert!(matches!(found(&b, "", "nope").lookup, Lookup::Miss));
    assert!(!found(&b, "", "nope").dir);
}

#[test]
fn an_empty_directory_made_through_another_store_is_found() {
    let (_dir, a, b) = pair();
    a.make_dir(&ns(), &key("e")).unwrap();
    a.make_dir(&ns(), &key("e/f")).unwrap();
    assert!(found(&b, "", "e").dir);
    assert!(found(&b, "e", "f").dir);
    assert!(b.list_dir(&ns(), b"e").unwrap().contains(&DirItem::Dir {
        name: b"f".to_vec()
    }));
    // Made explicit in B: a mkdir of it through B is EEXIST.
    assert!(matches!(
        b.make_dir(&ns(), &key("e/f")),
        Err(StoreError::Exists)
    ));
}

#[test]
fn directories_removed_or_renamed_through_another_store_leave_the_tree() {
    let (_dir, a, b) = pair();
    a.make_dir(&ns(), &key("d")).unwrap();
    a.make_dir(&ns(), &key("d/sub")).unwrap();
    a.make_dir(&ns(), &key("gone")).unwrap();
    // The records are in A's log (its thread writes them behind).
    a.changes.flush();
    b.catch_up();
    let dirs = |s: &Store, path: &[u8]| {
        let mut names: Vec<Vec<u8>> = s
            .list_dir(&ns(), path)
            .unwrap()
            .into_iter()
            .filter_map(|i| match i {
                DirItem::Dir { name } => Some(name),
                DirItem::File { .. } => None,
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(dirs(&b, b""), [b"d".to_vec(), b"gone".to_vec()]);
    assert_eq!(dirs(&b, b"d"), [b"sub".to_vec()]);

    a.remove_dir(&ns(), &key("gone")).unwrap();
    a.rename_dir(&ns(), &key("d"), &key("e")).unwrap();
    a.changes.flush();
    b.catch_up();
    assert_eq!(dirs(&b, b""), [b"e".to_vec()]);
    assert_eq!(dirs(&b, b"e"), [b"sub".to_vec()]);
    assert!(!found(&b, "", "d").dir);
    // Explicit in B as in A: still there while empty, refused to mkdir.
    assert!(matches!(
        b.make_dir(&ns(), &key("e/sub")),
        Err(StoreError::Exists)
    ));
}

#[test]
fn a_directory_whose_name_is_no_key_of_the_format_is_found_too() {
    // sha256 applies to an entry's last component: "by-day" is a
    // directory's name, never a key's.
    let (_dir, a, b) = pair_with("[namespace.n]\nkey_format = \"sha256\"\n");
    a.make_dir(&ns(), &key("by-day")).unwrap();
    assert!(found(&b, "", "by-day").dir);
    let id = b.namespace_id(&ns()).unwrap();
    assert!(matches!(
        b.lookup_name(id, b"", b"by-night", 1),
        Err(StoreError::InvalidName(_))
    ));
}

#[test]
fn a_follower_that_lost_records_still_drops_directories_removed_elsewhere() {
    let (dir, a, b) = pair();
    a.make_dir(&ns(), &key("x")).unwrap();
    a.make_dir(&ns(), &key("y")).unwrap();
    a.changes.flush();
    b.catch_up();
    assert!(b.is_dir(b.namespace_id(&ns()).unwrap(), b"x"));
    // Removed with its record lost (as a generation rotated away unread
    // loses it): only B's re-check of what it holds can notice.
    std::fs::remove_dir(a.dir_marker(&ns(), b"x")).unwrap();
    // A's log shorter than where B was in it: B lost records.
    let log = dir
        .path()
        .join("b/changes")
        .join(format!("{}.log", a.layout.token()));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    b.catch_up();
    let id = b.namespace_id(&ns()).unwrap();
    assert!(!b.is_dir(id, b"x"), "removed through A, still in B's tree");
    assert!(b.is_dir(id, b"y"));
}
