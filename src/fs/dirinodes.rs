//! The table of directory inode numbers inside namespaces: a number from
//! `DIR_BASE` up per directory handed to the kernel, kept while the
//! directory exists and moved with it by a rename (see `subdirs.rs`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::inodes::DIR_BASE;

#[derive(Default)]
struct Table {
    by_ino: HashMap<u64, (u32, Box<[u8]>)>,
    by_path: HashMap<(u32, Box<[u8]>), u64>,
    next: u64,
}

/// Directory inode numbers <-> (namespace id, path in it).
#[derive(Default)]
pub struct DirInodes {
    table: Mutex<Table>,
}

fn is_under(path: &[u8], dir: &[u8]) -> bool {
    path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

impl DirInodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        crate::sync::lock(&self.table)
    }

    /// The number of directory `path` of namespace `ns_id`, given now if
    /// it has none.
    pub fn ino_for(&self, ns_id: u32, path: &[u8]) -> u64 {
        let mut t = self.lock();
        if let Some(&ino) = t.by_path.get(&(ns_id, path.into())) {
            return ino;
        }
        let ino = DIR_BASE + t.next;
        t.next += 1;
        t.by_path.insert((ns_id, path.into()), ino);
        t.by_ino.insert(ino, (ns_id, path.into()));
        ino
    }

    /// The number already given to a directory, if any (a directory never
    /// handed out has no dentry in the kernel to drop).
    pub fn ino_of(&self, ns_id: u32, path: &[u8]) -> Option<u64> {
        self.lock().by_path.get(&(ns_id, path.into())).copied()
    }

    pub fn get(&self, ino: u64) -> Option<(u32, Vec<u8>)> {
        self.lock()
            .by_ino
            .get(&ino)
            .map(|(id, p)| (*id, p.to_vec()))
    }

    /// Forgets `dir` and every directory under it (removed).
    pub fn remove_under(&self, ns_id: u32, dir: &[u8]) {
        let mut t = self.lock();
        let gone: Vec<u64> = t
            .by_ino
            .iter()
            .filter(|(_, (id, p))| *id == ns_id && is_under(p, dir))
            .map(|(&ino, _)| ino)
            .collect();
        for ino in gone {
            if let Some(k) = t.by_ino.remove(&ino) {
                t.by_path.remove(&k);
            }
        }
    }

    /// Follows a directory's rename: it and its subdirectories keep their
    /// numbers under the new path.
    pub fn rename(&self, ns_id: u32, from: &[u8], to: &[u8]) {
        let mut t = self.lock();
        let moved: Vec<(u64, Box<[u8]>)> = t
            .by_ino
            .iter()
            .filter(|(_, (id, p))| *id == ns_id && is_under(p, from))
            .map(|(&ino, (_, p))| (ino, p.clone()))
            .collect();
        for (ino, old) in moved {
            t.by_path.remove(&(ns_id, old.clone()));
            let new: Box<[u8]> = [to, &old[from.len()..]].concat().into();
            t.by_path.insert((ns_id, new.clone()), ino);
            t.by_ino.insert(ino, (ns_id, new));
        }
    }
}
