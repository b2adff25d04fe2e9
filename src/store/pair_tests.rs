//! What the store tests of two daemons on one backing dir share: the
//! clock's start, an owner, keys, and the pair itself.

use std::sync::Arc;
use std::time::Duration;

use super::backing::BackingIo;
use super::*;
use crate::config::Config;

pub(super) const T0: i64 = 1_800_000_000 * 1_000_000_000;
pub(super) const OWNER: Owner = Owner {
    uid: 0,
    gid: 0,
    mode: 0o644,
};

pub(super) fn key(name: &str) -> Key {
    Key::parse(name.as_bytes(), KeyFormat::Any).unwrap()
}

/// Publishes `data` as key `k` of `ns` through `s`, from nothing.
pub(super) fn put_in(s: &Store, ns: &Namespace, k: &str, data: &[u8]) {
    let mut st = s.begin_write(ns, &key(k), WriteFrom::Empty, OWNER).unwrap();
    st.write_at(0, data).unwrap();
    s.publish(st).unwrap();
}

/// Stores A (on backing seam `io_a`) and B on one backing dir (kept while
/// the tempdir lives) with `config`, sharing changes; their followers
/// poll once an hour, so each knows only what a lookup or a publish of
/// its own reads.
pub(super) fn pair_on(
    config: &str,
    io_a: BackingIo,
) -> (tempfile::TempDir, Arc<ManualClock>, Arc<Store>, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let open = |io: BackingIo| {
        let s = Arc::new(
            Store::open_with(
                &dir.path().join("b"),
                Config::parse(config).unwrap(),
                clock.clone(),
                io,
            )
            .unwrap(),
        );
        s.share_changes(Duration::from_secs(3600)).unwrap();
        s
    };
    let a = open(io_a);
    let b = open(BackingIo::from_env());
    (dir, clock, a, b)
}
