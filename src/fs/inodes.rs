//! Inode numbers: which ones are fixed, which name namespaces, and the
//! table from an entry version's inode number to its (namespace, key).
//!
//! Entry inodes are store versions: a published version never changes, a
//! new version is a new inode, so the kernel may keep page cache across
//! opens of one inode. The table remembers what the kernel was told
//! (lookup counts, last attributes) until the kernel forgets the inode.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::SystemTime;

use super::types::{Attr, FileKind};
use crate::store::{FIRST_VERSION, Key, Namespace, UnixNanos, to_nanos, to_system_time};

pub const ROOT: u64 = 1;
pub const CONTROL_DIR: u64 = 2;
pub const STATS_JSON: u64 = 3;
pub const METRICS_PROM: u64 = 4;
pub const CONFIG_TOML: u64 = 5;
/// Namespace `id` has inode `NS_BASE + id`.
pub const NS_BASE: u64 = 1 << 16;
/// Store versions are entry inodes, and start here.
pub const ENTRY_BASE: u64 = FIRST_VERSION;
/// Directories inside namespaces (see `subdirs.rs`) are numbered from
/// here: far above any version the store will reach.
pub const DIR_BASE: u64 = 1 << 62;

/// What an inode number stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeKind {
    Root,
    ControlDir,
    ControlFile(u64),
    Namespace(u32),
    Entry,
    /// A directory inside a namespace.
    SubDir,
}

pub fn kind_of(ino: u64) -> Option<InodeKind> {
    match ino {
        ROOT => Some(InodeKind::Root),
        CONTROL_DIR => Some(InodeKind::ControlDir),
        STATS_JSON | METRICS_PROM | CONFIG_TOML => Some(InodeKind::ControlFile(ino)),
        i if (NS_BASE..ENTRY_BASE).contains(&i) => Some(InodeKind::Namespace((i - NS_BASE) as u32)),
        i if (ENTRY_BASE..DIR_BASE).contains(&i) => Some(InodeKind::Entry),
        i if i >= DIR_BASE => Some(InodeKind::SubDir),
        _ => None,
    }
}

pub fn namespace_ino(id: u32) -> u64 {
    NS_BASE + u64::from(id)
}

/// What an entry (a regular file) shows: the rest of a `FileAttr` is
/// implied (its atime and ctime are its mtime unless the caller sets
/// them). The one place such attributes are built.
pub struct EntryAttr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub mtime: SystemTime,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
}

impl EntryAttr {
    pub fn to_attr(&self) -> Attr {
        Attr {
            ino: self.ino,
            size: self.size,
            blocks: self.blocks,
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            kind: FileKind::RegularFile,
            perm: (self.perm & 0o7777) as u16,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            blksize: BLOCK_SIZE,
        }
    }
}

/// The block size entries report.
pub const BLOCK_SIZE: u32 = 4096;

/// One per inode the kernel holds (after `ls -l` of a big namespace, one
/// per entry): kept small. The attributes last told are what an older
/// version, still open somewhere, reports; entries are regular files, so
/// the rest of a `FileAttr` is implied.
struct Node {
    ns: Namespace,
    key: Key,
    lookups: u64,
    size: u64,
    blocks: u64,
    mtime: UnixNanos,
    ctime: UnixNanos,
    atime: UnixNanos,
    uid: u32,
    gid: u32,
    perm: u16,
}

impl Node {
    fn set_attr(&mut self, attr: &Attr) {
        self.size = attr.size;
        self.blocks = attr.blocks;
        self.mtime = to_nanos(attr.mtime);
        self.ctime = to_nanos(attr.ctime);
        self.atime = to_nanos(attr.atime);
        self.uid = attr.uid;
        self.gid = attr.gid;
        self.perm = attr.perm;
    }

    fn attr(&self, ino: u64) -> Attr {
        let attr = EntryAttr {
            ino,
            size: self.size,
            blocks: self.blocks,
            mtime: to_system_time(self.mtime),
            perm: u32::from(self.perm),
            uid: self.uid,
            gid: self.gid,
        }
        .to_attr();
        Attr {
            ctime: to_system_time(self.ctime),
            atime: to_system_time(self.atime),
            ..attr
        }
    }
}

/// Hashes an inode number with one multiplication: the numbers are the
/// daemon's own (store versions, nobody else picks them), so SipHash's
/// defence against chosen keys buys nothing here, and a READDIRPLUS of
/// 10^5 names makes 10^5 inserts (most of its cost in the daemon was
/// this table).
#[derive(Default)]
struct InoHasher(u64);

impl Hasher for InoHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The product's high bits (the table's tags) depend on every bit
        // of `n`; its low bits (the bucket) on the low bits of `n`, which
        // are what tell consecutive versions apart.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Nodes = HashMap<u64, Node, BuildHasherDefault<InoHasher>>;

#[derive(Default)]
pub struct InodeTable {
    nodes: Mutex<Nodes>,
}

impl InodeTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Nodes> {
        crate::sync::lock(&self.nodes)
    }

    /// Records that the kernel was handed `attr.ino` once more.
    pub fn remember(&self, ns: &Namespace, key: &Key, attr: Attr) {
        Self::remember_locked(&mut self.lock(), ns, key, attr);
    }

    /// `remember` for each of a listing's lines, in one hold of the lock.
    pub fn remember_all(&self, ns: &Namespace, lines: impl IntoIterator<Item = (Key, Attr)>) {
        let mut nodes = self.lock();
        for (key, attr) in lines {
            Self::remember_locked(&mut nodes, ns, &key, attr);
        }
    }

    fn remember_locked(nodes: &mut Nodes, ns: &Namespace, key: &Key, attr: Attr) {
        let node = nodes.entry(attr.ino).or_insert_with(|| Node {
            ns: ns.clone(),
            key: key.clone(),
            lookups: 0,
            size: 0,
            blocks: 0,
            mtime: 0,
            ctime: 0,
            atime: 0,
            uid: 0,
            gid: 0,
            perm: 0,
        });
        node.lookups += 1;
        node.set_attr(&attr);
    }

    /// Updates the attributes last told for an inode the kernel holds.
    pub fn refresh(&self, attr: Attr) {
        if let Some(node) = self.lock().get_mut(&attr.ino) {
            node.set_attr(&attr);
        }
    }

    pub fn forget(&self, ino: u64, n: u64) {
        let mut nodes = self.lock();
        if let Some(node) = nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
            if node.lookups == 0 {
                nodes.remove(&ino);
            }
        }
    }

    /// Whether the kernel holds inode `ino` (the tests of `forget` ask).
    #[cfg(test)]
    pub fn holds(&self, ino: u64) -> bool {
        self.lock().contains_key(&ino)
    }

    /// (namespace, key, last attributes) of an entry inode.
    pub fn get(&self, ino: u64) -> Option<(Namespace, Key, Attr)> {
        self.lock()
            .get(&ino)
            .map(|n| (n.ns.clone(), n.key.clone(), n.attr(ino)))
    }

    /// Follows a directory's rename: every entry under `from` (a
    /// directory) is now under `to`, in one pass.
    pub fn rename_under(&self, ns: &Namespace, from: &Key, to: &Key) {
        let (f, t) = (from.as_bytes(), to.as_bytes());
        for node in self.lock().values_mut() {
            let k = node.key.as_bytes();
            if &node.ns == ns && k.starts_with(f) && k.get(f.len()) == Some(&b'/') {
                let moved = [t, &k[f.len()..]].concat();
                if let Ok(key) = Key::parse(&moved, crate::names::KeyFormat::Any) {
                    node.key = key;
                }
            }
        }
    }

    /// Follows a rename: the kernel keeps inodes `inos` (the moved
    /// version, and what its writer's own rename moved) under their new
    /// name. Given by number, never searched for: after `ls -l` of a big
    /// namespace the table holds an inode per entry, and a scan of it per
    /// rename was most of a tmp+rename's time. Older versions of `from`
    /// keep their key, as any replaced version does: they have no name.
    pub fn rename(&self, inos: &[u64], ns: &Namespace, from: &Key, to: &Key) {
        let mut nodes = self.lock();
        for ino in inos {
            if let Some(node) = nodes.get_mut(ino)
                && &node.ns == ns
                && &node.key == from
            {
                node.key = to.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::KeyFormat;

    #[test]
    fn numbers_name_their_kind() {
        assert_eq!(kind_of(ROOT), Some(InodeKind::Root));
        assert_eq!(
            kind_of(METRICS_PROM),
            Some(InodeKind::ControlFile(METRICS_PROM))
        );
        assert_eq!(kind_of(namespace_ino(7)), Some(InodeKind::Namespace(7)));
        assert_eq!(kind_of(ENTRY_BASE), Some(InodeKind::Entry));
        assert_eq!(kind_of(DIR_BASE - 1), Some(InodeKind::Entry));
        assert_eq!(kind_of(DIR_BASE + 3), Some(InodeKind::SubDir));
        assert_eq!(kind_of(0), None);
        assert_eq!(kind_of(6), None);
    }

    #[test]
    fn a_node_lives_until_the_kernel_forgets_every_lookup() {
        let t = InodeTable::default();
        let ns = Namespace::parse(b"n").unwrap();
        let key = Key::parse(b"k", KeyFormat::Any).unwrap();
        let attr = |size, mtime: SystemTime| Attr {
            atime: mtime - std::time::Duration::from_nanos(3),
            ctime: mtime + std::time::Duration::from_nanos(5),
            ..EntryAttr {
                ino: ENTRY_BASE + 1,
                size,
                blocks: 1,
                mtime,
                perm: 0o640,
                uid: 1,
                gid: 2,
            }
            .to_attr()
        };
        // Before the epoch and far after 2038 both survive the round trip.
        let past = to_system_time(-1_500_000_000_123);
        t.remember(&ns, &key, attr(5, past));
        t.remember(&ns, &key, attr(5, past));
        assert_eq!(t.get(ENTRY_BASE + 1).unwrap().2, attr(5, past));
        let future = to_system_time((1i64 << 33) * 1_000_000_000 + 7);
        t.refresh(attr(9, future));
        assert_eq!(t.get(ENTRY_BASE + 1).unwrap().2, attr(9, future));
        let k2 = Key::parse(b"k2", KeyFormat::Any).unwrap();
        // Only the inodes named move, and only from the name given.
        t.rename(&[ENTRY_BASE + 1], &ns, &k2, &key);
        assert_eq!(t.get(ENTRY_BASE + 1).unwrap().1.as_bytes(), b"k");
        t.rename(&[ENTRY_BASE + 2], &ns, &key, &k2);
        assert_eq!(t.get(ENTRY_BASE + 1).unwrap().1.as_bytes(), b"k");
        t.rename(&[ENTRY_BASE + 1], &ns, &key, &k2);
        assert_eq!(t.get(ENTRY_BASE + 1).unwrap().1.as_bytes(), b"k2");
        t.forget(ENTRY_BASE + 1, 1);
        assert!(t.holds(ENTRY_BASE + 1));
        t.forget(ENTRY_BASE + 1, 1);
        assert!(!t.holds(ENTRY_BASE + 1));
    }
}
