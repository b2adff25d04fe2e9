//! A namespace's directory tree: which directories exist, and what each
//! holds, so that `ls` of a directory costs what is in it, `du -s` and
//! `rm -r` walk only the subtree, and `mkdir`/`rmdir` have something to
//! act on. Keys are paths (`a/b/name`); the tree is derived from them.
//!
//! Shape: a map from directory path (`b""` is the namespace's top) to its
//! node: the slot numbers of the entries directly in it (the key and
//! metadata are read from the slot) and the names of its subdirectories.
//! About 6-11 bytes an entry (a `u32` in a hash set) on top of the table.
//!
//! A directory is explicit (made by `mkdir`, persisted by the store as a
//! marker, stays while empty) or implied (the parent of some entry's key,
//! from an import or a recovery whose marker is gone): an implied one
//! vanishes with the last thing under it, an explicit one only by
//! `remove_dir`.
//!
//! Invariants (checked by `debug_check`):
//! - the top always exists; every other directory's parent exists and
//!   names it among its subdirectories, and every subdirectory named
//!   exists;
//! - every entry's slot is in the node of its key's directory, once;
//! - an implied directory is never empty.
//! - a directory's `generation` changes with every change to what its
//!   listing shows (an entry filed in it or taken out of it, which a
//!   replace, a rename, an expiry and an eviction all are; a
//!   subdirectory coming or going), and no two nodes ever had the same
//!   one (a process-wide counter): a listing taken under a generation is
//!   the listing while the generation stays, up to the earliest expiry
//!   of its entries (`Store::list_dir_stamped`), so whether the kernel's
//!   copy of a listing is still right is known without taking it again.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::names::parent_of;

/// Hashes a directory's slot numbers. They are the table's own numbers,
/// never chosen by a user, so a multiply spreads them as well as SipHash
/// does, at a fraction of its cost (a rebuild files 10^5 of them before
/// the first listing can be answered).
#[derive(Default)]
pub struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(GOLDEN);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(GOLDEN);
    }
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

pub struct DirNode {
    /// Slots of the entries directly in this directory.
    pub files: HashSet<u32, BuildHasherDefault<SlotHasher>>,
    /// Names (last components) of the directories directly in it.
    pub subdirs: HashSet<Box<[u8]>>,
    explicit: bool,
    generation: u64,
}

/// A generation no node had before, in this process. Process-wide rather
/// than per tree: a namespace's tree is dropped with it and a directory
/// removed and made again is a new node, and neither may bring back a
/// generation that a kernel's copy of a listing was stamped with.
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Default for DirNode {
    fn default() -> Self {
        DirNode {
            files: HashSet::default(),
            subdirs: HashSet::new(),
            explicit: false,
            generation: next_generation(),
        }
    }
}

impl DirNode {
    /// Changes with every change to the directory's listing (see the
    /// invariants above).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn changed(&mut self) {
        self.generation = next_generation();
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.subdirs.is_empty()
    }

    pub fn is_explicit(&self) -> bool {
        self.explicit
    }
}

pub struct DirTree {
    dirs: HashMap<Box<[u8]>, DirNode>,
}

impl Default for DirTree {
    fn default() -> Self {
        let mut dirs = HashMap::new();
        dirs.insert(
            Box::<[u8]>::default(),
            DirNode {
                explicit: true,
                ..DirNode::default()
            },
        );
        DirTree { dirs }
    }
}

fn name_of(path: &[u8]) -> &[u8] {
    let parent = parent_of(path);
    if parent.is_empty() {
        path
    } else {
        &path[parent.len() + 1..]
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

impl DirTree {
    pub fn is_dir(&self, path: &[u8]) -> bool {
        self.dirs.contains_key(path)
    }

    pub fn node(&self, path: &[u8]) -> Option<&DirNode> {
        self.dirs.get(path)
    }

    /// How many directories there are besides the top.
    pub fn dir_count(&self) -> usize {
        self.dirs.len() - 1
    }

    /// Makes `path` and its missing ancestors exist (implied).
    fn ensure(&mut self, path: &[u8]) -> &mut DirNode {
        if !self.dirs.contains_key(path) {
            let parent = parent_of(path);
            let p = self.ensure(parent);
            p.subdirs.insert(name_of(path).into());
            p.changed();
            self.dirs.insert(path.into(), DirNode::default());
        }
        self.dirs.get_mut(path).expect("just ensured")
    }

    /// Removes `path` and then its implied ancestors while they are empty.
    fn prune(&mut self, mut path: &[u8]) {
        while !path.is_empty() {
            match self.dirs.get(path) {
                Some(n) if !n.explicit && n.is_empty() => {}
                _ => return,
            }
            self.dirs.remove(path);
            let parent = parent_of(path);
            if let Some(p) = self.dirs.get_mut(parent) {
                p.subdirs.remove(name_of(path));
                p.changed();
            }
            path = parent;
        }
    }

    /// An entry with key `key` now lives in slot `slot`.
    pub fn add_file(&mut self, key: &[u8], slot: u32) {
        let node = self.ensure(parent_of(key));
        node.files.insert(slot);
        node.changed();
    }

    /// The entry with key `key` left slot `slot`.
    pub fn remove_file(&mut self, key: &[u8], slot: u32) {
        let dir = parent_of(key);
        if let Some(n) = self.dirs.get_mut(dir) {
            n.files.remove(&slot);
            n.changed();
        }
        self.prune(dir);
    }

    /// Makes `path` an explicit directory (its ancestors exist after, as
    /// implied ones where they did not). Returns whether it was already
    /// explicit.
    pub fn make_dir(&mut self, path: &[u8]) -> bool {
        let node = self.ensure(path);
        std::mem::replace(&mut node.explicit, true)
    }

    /// Makes `path` and every directory above it explicit: what a marker
    /// made on disk with its parents means, so that a directory stays the
    /// same across a restart (which reads every marker as explicit).
    pub fn make_dir_path(&mut self, path: &[u8]) {
        self.make_dir(path);
        let mut dir = parent_of(path);
        while !dir.is_empty() {
            self.make_dir(dir);
            dir = parent_of(dir);
        }
    }

    /// Removes an empty directory (the caller checked it is empty); its
    /// implied ancestors go with it if that leaves them empty.
    pub fn remove_dir(&mut self, path: &[u8]) {
        if path.is_empty() {
            return;
        }
        if let Some(n) = self.dirs.get_mut(path) {
            debug_assert!(n.is_empty());
            n.explicit = false;
        }
        self.prune(path);
    }

    /// Every directory's listing may have changed (the rules of expiry
    /// did: a listing's earliest expiry is no longer what it was).
    pub fn all_changed(&mut self) {
        for n in self.dirs.values_mut() {
            n.changed();
        }
    }

    /// `path` and every directory under it, each before its children.
    pub fn dirs_under(&self, path: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if !self.dirs.contains_key(path) {
            return out;
        }
        let mut i = 0;
        out.push(path.to_vec());
        while i < out.len() {
            if let Some(n) = self.dirs.get(&out[i][..]) {
                let children: Vec<Vec<u8>> = n.subdirs.iter().map(|s| join(&out[i], s)).collect();
                out.extend(children);
            }
            i += 1;
        }
        out
    }

    /// Slots of every entry under `path` (at any depth).
    pub fn files_under(&self, path: &[u8]) -> Vec<u32> {
        self.dirs_under(path)
            .iter()
            .filter_map(|d| self.dirs.get(&d[..]))
            .flat_map(|n| n.files.iter().copied())
            .collect()
    }

    #[cfg(test)]
    pub fn debug_check(&self, key_of: impl Fn(u32) -> Vec<u8>, slots: &[u32]) {
        assert!(self.dirs.contains_key(&b""[..]), "the top exists");
        for (path, node) in &self.dirs {
            if !path.is_empty() {
                let parent = self.dirs.get(parent_of(path)).expect("parent exists");
                assert!(parent.subdirs.contains(name_of(path)), "parent names it");
                assert!(node.explicit || !node.is_empty(), "implied and empty");
            }
            for s in &node.subdirs {
                assert!(self.dirs.contains_key(&join(path, s)[..]), "subdir exists");
            }
            for &slot in &node.files {
                assert_eq!(parent_of(&key_of(slot)), &path[..], "file in its dir");
            }
        }
        let filed: usize = self.dirs.values().map(|n| n.files.len()).sum();
        assert_eq!(filed, slots.len(), "every entry filed once");
        for &slot in slots {
            let key = key_of(slot);
            assert!(
                self.dirs[parent_of(&key)].files.contains(&slot),
                "entry {slot} is filed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    const PATHS: [&str; 8] = ["a", "b", "a/x", "a/y", "a/x/1", "a/x/2", "b/z", "b/z/q"];

    #[derive(Debug, Clone)]
    enum Op {
        AddFile(usize),
        RemoveFile(usize),
        MakeDir(usize),
        RemoveDir(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..PATHS.len()).prop_map(Op::AddFile),
            (0..PATHS.len()).prop_map(Op::RemoveFile),
            (0..PATHS.len()).prop_map(Op::MakeDir),
            (0..PATHS.len()).prop_map(Op::RemoveDir),
        ]
    }

    /// The model: files (key -> slot) and explicit dirs; a directory
    /// exists if it is explicit or holds something.
    fn model_dirs(files: &BTreeMap<String, u32>, explicit: &BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut add_with_parents = |p: &str| {
            let mut p = p.to_string();
            while !p.is_empty() {
                out.insert(p.clone());
                p = String::from_utf8(parent_of(p.as_bytes()).to_vec()).unwrap();
            }
        };
        for k in files.keys() {
            add_with_parents(std::str::from_utf8(parent_of(k.as_bytes())).unwrap());
        }
        for d in explicit {
            add_with_parents(d);
        }
        out
    }

    proptest! {
        #[test]
        fn the_tree_follows_a_model_of_nested_operations(ops in prop::collection::vec(op(), 1..60)) {
            let mut tree = DirTree::default();
            let mut files: BTreeMap<String, u32> = BTreeMap::new();
            let mut explicit: BTreeSet<String> = BTreeSet::new();
            let mut next_slot = 0;
            for op in ops {
                let dirs = model_dirs(&files, &explicit);
                match op {
                    Op::AddFile(i) => {
                        let k = PATHS[i];
                        // The store refuses a key that is a directory, or
                        // under an entry.
                        let under_file = files.keys().any(|f| k.starts_with(&format!("{f}/")));
                        if dirs.contains(k) || under_file || files.contains_key(k) {
                            continue;
                        }
                        tree.add_file(k.as_bytes(), next_slot);
                        files.insert(k.to_string(), next_slot);
                        next_slot += 1;
                    }
                    Op::RemoveFile(i) => {
                        if let Some(slot) = files.remove(PATHS[i]) {
                            tree.remove_file(PATHS[i].as_bytes(), slot);
                        }
                    }
                    Op::MakeDir(i) => {
                        let d = PATHS[i];
                        let under_file = files.keys().any(|f| d == f || d.starts_with(&format!("{f}/")));
                        if under_file {
                            continue;
                        }
                        tree.make_dir(d.as_bytes());
                        explicit.insert(d.to_string());
                    }
                    Op::RemoveDir(i) => {
                        let d = PATHS[i];
                        let empty = !files.keys().any(|f| f.starts_with(&format!("{d}/")))
                            && !dirs.iter().any(|x| x.starts_with(&format!("{d}/")));
                        prop_assert_eq!(tree.node(d.as_bytes()).is_some_and(|n| n.is_empty()), dirs.contains(d) && empty);
                        if dirs.contains(d) && empty {
                            tree.remove_dir(d.as_bytes());
                            explicit.remove(d);
                        }
                    }
                }
                let want = model_dirs(&files, &explicit);
                let have: BTreeSet<String> = tree.dirs_under(b"").into_iter().skip(1)
                    .map(|d| String::from_utf8(d).unwrap()).collect();
                prop_assert_eq!(&have, &want);
                let by_slot: BTreeMap<u32, String> = files.iter().map(|(k, s)| (*s, k.clone())).collect();
                let slots: Vec<u32> = by_slot.keys().copied().collect();
                tree.debug_check(|s| by_slot[&s].clone().into_bytes(), &slots);
                let mut under_a: Vec<u32> = tree.files_under(b"a");
                under_a.sort();
                let want_a: Vec<u32> = files.iter().filter(|(k, _)| k.starts_with("a/")).map(|(_, s)| *s).collect::<BTreeSet<_>>().into_iter().collect();
                prop_assert_eq!(under_a, want_a);
            }
        }
    }
}
