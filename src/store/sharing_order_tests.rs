//! The order of a change and its record (issue 13): another daemon that
//! reads a record looks at the backing dir, so the record must be written
//! only once the change is there. A record read while the file was still
//! in place left the follower with nothing to do, and no later record
//! told it again: the other mount kept the key (`rm on A, still on B`).
//! Each test reads A's log from B at the very moment A makes the change
//! on disk (a hook on A's backing operation), with no race to win.

use std::sync::Arc;

use super::backing::{BackingIo, FaultOp};
use super::pair_tests::{key, pair_on, put_in};
use super::purge::{PurgeFilter, PurgeSelect};
use super::*;

const CONFIG: &str = "[namespace.o]\n";

fn ns() -> Namespace {
    Namespace::parse(b"o").unwrap()
}

fn put(s: &Store, k: &str, data: &[u8]) {
    put_in(s, &ns(), k, data)
}

/// A (with a seam a test hooks into) and B on one backing dir, sharing
/// changes; their followers poll once an hour.
fn pair() -> (tempfile::TempDir, BackingIo, Arc<Store>, Arc<Store>) {
    let io = BackingIo::default();
    let (dir, _clock, a, b) = pair_on(CONFIG, io.clone());
    (dir, io, a, b)
}

/// At A's next `op`, before it is made: A's log written as far as noted,
/// and B reads it.
fn b_reads_at_next(op: FaultOp, io: &BackingIo, a: &Arc<Store>, b: &Arc<Store>) {
    let (a, b) = (Arc::downgrade(a), Arc::downgrade(b));
    io.before_next(op, move || {
        if let (Some(a), Some(b)) = (a.upgrade(), b.upgrade()) {
            a.changes.flush();
            b.catch_up();
        }
    });
}

fn b_holds(b: &Store, k: &str) -> bool {
    matches!(b.entry_info(&ns(), &key(k)), Lookup::Hit(_))
}

#[test]
fn an_unlink_reaches_a_follower_that_reads_while_the_file_is_still_in_place() {
    let (_dir, io, a, b) = pair();
    put(&a, "k", b"value");
    b.catch_up();
    assert!(b_holds(&b, "k"), "B took in A's publish");
    // The unlink's one rename: the file into trash/.
    b_reads_at_next(FaultOp::Rename, &io, &a, &b);
    a.remove(&ns(), &key("k")).unwrap();
    a.changes.flush();
    b.catch_up();
    assert!(!b_holds(&b, "k"), "rm on A, still in B's index");
    assert_eq!(b.usage().entries, 0);
}

#[test]
fn a_purge_reaches_a_follower_that_reads_while_the_files_are_still_in_place() {
    let (_dir, io, a, b) = pair();
    put(&a, "k1", b"one");
    put(&a, "k2", b"two");
    b.catch_up();
    assert!(b_holds(&b, "k1") && b_holds(&b, "k2"));
    // The first victim's rename: its record, if noted before it, is
    // read then.
    b_reads_at_next(FaultOp::Rename, &io, &a, &b);
    let filter = PurgeFilter {
        namespace: Some(ns()),
        prefix: None,
        select: PurgeSelect::All,
    };
    assert_eq!(a.purge(&filter).unwrap().entries, 2);
    a.changes.flush();
    b.catch_up();
    assert!(
        !b_holds(&b, "k1") && !b_holds(&b, "k2"),
        "purge on A, still in B's index"
    );
    assert_eq!(b.usage().entries, 0);
}
