//! Keys as paths, through the Store API (no FUSE), against a model: random
//! nested publishes, reads, renames of entries across directories and of
//! whole directories, mkdir, rmdir, subtree purges (`rm -r`), removals,
//! expiry on a manual clock (each step of the clock followed by the
//! sweeper, see `Op::Advance`), a clean restart (snapshot) and a
//! crash (no snapshot: recovery from the entries' trailers).
//!
//! After every step each directory's listing, each entry's bytes and each
//! subtree's `du` (what a walk of the listings sums, as `du -s` does) must
//! be the model's, and a directory's listing must be, line for line, the
//! first one taken under its generation while that listing's stamp holds
//! (the kernel's copy of a listing is kept on that: `fs/dircache.rs`). Paths come from a small alphabet (`a`, `b`, `c`, up to
//! three deep) so that names collide: an entry where a directory is, a key
//! under an entry, a directory renamed into itself.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::access::NsAccess;
use crate::config::Config;
use crate::names::parent_of;

const T0: i64 = 1_800_000_000 * 1_000_000_000;
const TTL_SECS: u64 = 30;
const CONFIG: &str = "[namespace.n]\nttl = \"30s\"\n";
const NAMES: [&str; 3] = ["a", "b", "c"];

/// Every path of one to three components from `NAMES` (39): the
/// children of the first 12, the paths of one or two components.
fn all_paths() -> Vec<String> {
    let mut out: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    for i in 0..12 {
        for n in NAMES {
            out.push(format!("{}/{n}", out[i]));
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, u16),
    Get(usize),
    Remove(usize),
    Rename(usize, usize),
    RenameDir(usize, usize),
    MakeDir(usize),
    RemoveDir(usize),
    PurgeUnder(usize),
    Advance(u8),
    Restart,
    Crash,
}

fn op(paths: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..paths, 0u16..3000).prop_map(|(p, n)| Op::Put(p, n)),
        2 => (0..paths).prop_map(Op::Get),
        2 => (0..paths).prop_map(Op::Remove),
        3 => (0..paths, 0..paths).prop_map(|(a, b)| Op::Rename(a, b)),
        2 => (0..paths, 0..paths).prop_map(|(a, b)| Op::RenameDir(a, b)),
        3 => (0..paths).prop_map(Op::MakeDir),
        2 => (0..paths).prop_map(Op::RemoveDir),
        1 => (0..paths).prop_map(Op::PurgeUnder),
        1 => (0u8..40).prop_map(Op::Advance),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

/// What the store should hold: live entries (bytes and publish time) and
/// the directories made by mkdir. A directory exists if it was made and
/// not removed, or if something lives under it.
#[derive(Default)]
struct Model {
    files: BTreeMap<String, (Vec<u8>, i64)>,
    explicit: BTreeSet<String>,
}

fn under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

fn parent(p: &str) -> &str {
    std::str::from_utf8(parent_of(p.as_bytes())).unwrap()
}

fn ancestors(p: &str) -> impl Iterator<Item = &str> {
    let mut cur = p;
    std::iter::from_fn(move || {
        cur = parent(cur);
        (!cur.is_empty()).then_some(cur)
    })
}

impl Model {
    fn expire(&mut self, now: i64) {
        let ttl = (TTL_SECS * 1_000_000_000) as i64;
        self.files.retain(|_, (_, at)| *at + ttl > now);
    }

    fn dirs(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        out.insert(String::new());
        for d in &self.explicit {
            out.insert(d.clone());
            out.extend(ancestors(d).map(str::to_string));
        }
        for k in self.files.keys() {
            out.extend(ancestors(k).map(str::to_string));
        }
        out
    }

    fn is_dir(&self, p: &str) -> bool {
        self.dirs().contains(p)
    }

    /// Whether some component above `p` is an entry.
    fn through_file(&self, p: &str) -> bool {
        ancestors(p).any(|a| self.files.contains_key(a))
    }

    fn listing(&self, dir: &str) -> BTreeSet<(bool, String)> {
        let name = |p: &str| p.rsplit('/').next().unwrap().to_string();
        let mut out = BTreeSet::new();
        for d in self.dirs() {
            if !d.is_empty() && parent(&d) == dir {
                out.insert((true, name(&d)));
            }
        }
        for k in self.files.keys() {
            if parent(k) == dir {
                out.insert((false, name(k)));
            }
        }
        out
    }
}

struct Live {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    /// `None` only between a stop and the next start.
    store: Option<Store>,
    /// Kept across restarts: no generation ever comes back.
    listings: super::listing_tests::Seen,
}

impl Live {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    /// Stops the store (its session ends, as at a daemon's exit) and
    /// starts another on the backing dir; `before_start` runs between.
    fn restart(&mut self, before_start: impl FnOnce(&std::path::Path)) {
        drop(self.store.take());
        before_start(&self.dir.path().join("b"));
        self.store = Some(open(self.dir.path(), &self.clock));
    }
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Store {
    Store::open(
        &dir.join("b"),
        Config::parse(CONFIG).unwrap(),
        clock.clone(),
    )
    .unwrap()
}

fn ns() -> Namespace {
    Namespace::parse(b"n").unwrap()
}

fn key(p: &str) -> Key {
    Key::parse(p.as_bytes(), KeyFormat::Any).unwrap()
}

const OWNER: Owner = Owner {
    uid: 0,
    gid: 0,
    mode: 0o644,
};

fn read(s: &Store, p: &str) -> Option<Vec<u8>> {
    let (ns, key) = (ns(), key(p));
    match s.lookup(&ns, &key) {
        Lookup::Hit(_) => Some(s.open_read(&ns, &key).ok()?.read_at(0, 1 << 20).unwrap()),
        Lookup::Miss | Lookup::Expired => None,
    }
}

fn kind(r: Result<(), StoreError>) -> Result<(), String> {
    r.map_err(|e| format!("{e:?}"))
}

fn no(e: &str) -> Result<(), String> {
    Err(e.to_string())
}

fn check(s: &Store, m: &Model, paths: &[String], usage_exact: bool) -> Result<(), TestCaseError> {
    let dirs = m.dirs();
    for d in &dirs {
        let got: BTreeSet<(bool, String)> = s
            .list_dir(&ns(), d.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("ls {d:?}: {e}")))?
            .into_iter()
            .map(|i| match i {
                DirItem::Dir { name } => (true, String::from_utf8(name).unwrap()),
                DirItem::File { name, .. } => (false, String::from_utf8(name).unwrap()),
            })
            .collect();
        prop_assert_eq!(&got, &m.listing(d), "listing of {:?}", d);
        let want: u64 = m
            .files
            .iter()
            .filter(|(k, _)| under(k, d))
            .map(|(_, (b, _))| b.len() as u64)
            .sum();
        prop_assert_eq!(
            super::listing_tests::du(s, &ns(), d)?.0,
            want,
            "du -s of {:?}",
            d
        );
    }
    for p in paths {
        prop_assert_eq!(
            s.is_dir(s.namespace_id(&ns()).unwrap(), p.as_bytes()),
            dirs.contains(p),
            "is_dir {}",
            p
        );
        prop_assert_eq!(
            read(s, p),
            m.files.get(p).map(|(b, _)| b.clone()),
            "bytes of {}",
            p
        );
    }
    if usage_exact {
        // Nothing expired is left unswept: the accounting is the walk's.
        let u = s.usage();
        prop_assert_eq!(u.entries, m.files.len() as u64);
        prop_assert_eq!(u.used_bytes, super::listing_tests::du(s, &ns(), "")?.1);
    }
    s.check_invariants();
    Ok(())
}

fn step(
    live: &mut Live,
    m: &mut Model,
    paths: &[String],
    i: usize,
    op: Op,
) -> Result<(), TestCaseError> {
    let s = live.store();
    let ns = ns();
    let mut usage_exact = false;
    match op {
        Op::Put(p, n) => {
            let p = &paths[p];
            let data: Vec<u8> = (0..n).map(|j| (j as usize * 31 + i) as u8).collect();
            let got = s
                .begin_write(&ns, &key(p), WriteFrom::Empty, OWNER)
                .and_then(|mut st| {
                    st.write_at(0, &data)?;
                    s.publish(st)
                })
                .map(|_| ());
            let want = if m.through_file(p) {
                no("NotDir")
            } else if m.is_dir(p) {
                no("IsDir")
            } else {
                Ok(())
            };
            prop_assert_eq!(kind(got), want.clone(), "put {}", p);
            if want.is_ok() {
                m.files.insert(p.clone(), (data, s.now()));
            }
        }
        Op::Get(p) => {
            prop_assert_eq!(
                read(s, &paths[p]),
                m.files.get(&paths[p]).map(|(b, _)| b.clone())
            );
        }
        Op::Remove(p) => {
            let p = &paths[p];
            let got = s.remove(&ns, &key(p)).is_ok();
            prop_assert_eq!(got, m.files.remove(p).is_some(), "remove {}", p);
        }
        Op::Rename(a, b) => {
            let (from, to) = (&paths[a], &paths[b]);
            // As through the mount: the kernel has found the source and
            // the target's directory.
            if from == to || !m.files.contains_key(from) || !m.is_dir(parent(to)) {
                return Ok(());
            }
            let got = s.rename(&ns, &key(from), &key(to), false).map(|_| ());
            let want = if m.is_dir(to) { no("IsDir") } else { Ok(()) };
            prop_assert_eq!(kind(got), want, "rename {} -> {}", from, to);
            if !m.is_dir(to) {
                let v = m.files.remove(from).unwrap();
                m.files.insert(to.clone(), v);
            }
        }
        Op::RenameDir(a, b) => {
            let (from, to) = (&paths[a], &paths[b]);
            if from == to || !m.is_dir(from) || !m.is_dir(parent(to)) {
                return Ok(());
            }
            let got = kind(s.rename_dir(&ns, &key(from), &key(to)));
            let want = if under(to, from) {
                no("InvalidValue")
            } else if m.files.contains_key(to) {
                no("NotDir")
            } else if m.is_dir(to) && !m.listing(to).is_empty() {
                no("NotEmpty")
            } else {
                Ok(())
            };
            prop_assert_eq!(&got, &want, "rename dir {} -> {}", from, to);
            if want.is_ok() {
                m.explicit.remove(to);
                m.explicit.extend(ancestors(to).map(str::to_string));
                let moved = |p: String| match p == *from || under(&p, from) {
                    true => format!("{to}{}", &p[from.len()..]),
                    false => p,
                };
                m.files = std::mem::take(&mut m.files)
                    .into_iter()
                    .map(|(k, v)| (moved(k), v))
                    .collect();
                m.explicit = std::mem::take(&mut m.explicit)
                    .into_iter()
                    .map(moved)
                    .collect();
            }
        }
        Op::MakeDir(p) => {
            let p = &paths[p];
            let got = kind(s.make_dir_as(&ns, &key(p), NsAccess::of_daemon()));
            let want = if m.through_file(p) {
                no("NotDir")
            } else if m.is_dir(p) || m.files.contains_key(p) {
                no("Exists")
            } else if !m.is_dir(parent(p)) {
                no("NotFound")
            } else {
                Ok(())
            };
            prop_assert_eq!(&got, &want, "mkdir {}", p);
            if want.is_ok() {
                // Its parents' markers are made with it: they stay too.
                m.explicit.insert(p.clone());
                m.explicit.extend(ancestors(p).map(str::to_string));
            }
        }
        Op::RemoveDir(p) => {
            let p = &paths[p];
            let got = kind(s.remove_dir(&ns, &key(p)));
            let want = if m.is_dir(p) && !m.listing(p).is_empty() {
                no("NotEmpty")
            } else if m.is_dir(p) {
                Ok(())
            } else if m.files.contains_key(p) {
                no("NotDir")
            } else {
                no("NotFound")
            };
            prop_assert_eq!(&got, &want, "rmdir {}", p);
            if want.is_ok() {
                m.explicit.remove(p);
            }
        }
        Op::PurgeUnder(p) => {
            let p = &paths[p];
            let filter = PurgeFilter {
                namespace: Some(ns.clone()),
                prefix: Some(key(p)),
                select: PurgeSelect::All,
            };
            s.purge(&filter)
                .map_err(|e| TestCaseError::fail(format!("purge {p}: {e}")))?;
            m.files.retain(|k, _| !under(k, p));
            if m.is_dir(p) {
                m.explicit.retain(|d| d != p && !under(d, p));
            }
        }
        Op::Advance(secs) => {
            // Time passes and the sweeper catches up. Between an expiry and
            // the sweep, an implied directory whose entries have all
            // expired is still listed (empty) and still stands where an
            // entry of its name would go: left out of the model.
            live.clock.advance(Duration::from_secs(u64::from(secs)));
            s.sweep_expired();
            usage_exact = true;
        }
        Op::Restart => {
            prop_assert!(s.save_snapshot().unwrap().is_some());
            live.restart(|_| {});
        }
        Op::Crash => {
            let snapshot = s.layout.snapshot_path();
            // The index was never saved: recovery reads the trailers.
            live.restart(|_| {
                let _ = std::fs::remove_file(&snapshot);
            });
        }
    }
    m.expire(live.store().now());
    check(live.store(), m, paths, usage_exact)?;
    let store = live.store.as_ref().expect("open");
    super::listing_tests::check_stamps(store, &ns, &m.dirs(), &mut live.listings)
}

/// Runs `ops` (indices into `all_paths`) from an empty store.
fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let paths = all_paths();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = Some(open(dir.path(), &clock));
    let listings = Default::default();
    let (mut live, mut model) = (
        Live {
            dir,
            clock,
            store,
            listings,
        },
        Model::default(),
    );
    for (i, op) in ops.into_iter().enumerate() {
        step(&mut live, &mut model, &paths, i, op)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn nested_operations_follow_a_model_tree(ops in prop::collection::vec(op(39), 1..40)) {
        run(ops)?;
    }
}

fn at(p: &str) -> usize {
    all_paths().iter().position(|x| x == p).unwrap()
}

/// Found by the property test: in a namespace without directories a
/// nested key skipped the check of its path, so `b/a/a` was published
/// under the entry `b`.
#[test]
fn a_nested_key_under_an_entry_is_refused_without_any_directory() {
    run(vec![Op::Put(at("b"), 0), Op::Put(at("b/a/a"), 0)]).unwrap();
}

/// Found by the property test: `c` implied by `c/c`, `mkdir c/b` made
/// `c`'s marker too, so after a restart `c` outlived its last entry.
#[test]
fn a_parent_given_a_marker_by_mkdir_is_the_same_directory_after_a_restart() {
    run(vec![
        Op::Put(at("c/c"), 0),
        Op::MakeDir(at("c/b")),
        Op::Restart,
        Op::PurgeUnder(at("c/b")),
        Op::Advance(30),
    ])
    .unwrap();
}
