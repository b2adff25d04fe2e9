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

use std::collections::{HashMap, HashSet};

use crate::names::parent_of;

#[derive(Default)]
pub struct DirNode {
    /// Slots of the entries directly in this directory.
    pub files: HashSet<u32>,
    /// Names (last components) of the directories directly in it.
    pub subdirs: HashSet<Box<[u8]>>,
    explicit: bool,
}

impl DirNode {
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
            self.ensure(parent).subdirs.insert(name_of(path).into());
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
            }
            path = parent;
        }
    }

    /// An entry with key `key` now lives in slot `slot`.
    pub fn add_file(&mut self, key: &[u8], slot: u32) {
        self.ensure(parent_of(key)).files.insert(slot);
    }

    /// The entry with key `key` left slot `slot`.
    pub fn remove_file(&mut self, key: &[u8], slot: u32) {
        let dir = parent_of(key);
        if let Some(n) = self.dirs.get_mut(dir) {
            n.files.remove(&slot);
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
