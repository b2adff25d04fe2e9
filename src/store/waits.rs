//! What the FUSE layer asks before it chooses a thread for a request
//! (`fs/dispatch.rs`): whether a call would look at the backing dir or
//! wait for the disk. Each answer is read from memory (atomics, or one
//! index lock), never from the disk; it may be out of date a moment
//! later, so a caller uses it to choose where to run, never to decide
//! what the answer is.

use super::Store;
use crate::config::Durability;
use crate::names::Namespace;

impl Store {
    /// Whether a lookup is answered from memory alone (no system call on
    /// the backing dir): a daemon alone with its index whole.
    pub fn answers_from_memory(&self) -> bool {
        self.index_is_truth()
    }

    /// Whether a writer's create now would take a file made ahead (no
    /// inode made on its way: see `stage_pool.rs`).
    pub fn has_staging_ready(&self) -> bool {
        self.stage_pool.ready() > 0
    }

    /// Whether a publish in namespace `id` syncs (`durability = "fsync"`):
    /// it waits for the disk. An unknown namespace says yes (its request
    /// fails, wherever it runs).
    pub fn syncs_publishes(&self, id: u32) -> bool {
        let idx = self.lock();
        idx.namespace_by_id(id)
            .and_then(|ns| idx.namespace(ns))
            .is_none_or(|s| s.policy.durability == Durability::Fsync)
    }

    /// `syncs_publishes` of namespace `ns`.
    pub fn namespace_syncs(&self, ns: &Namespace) -> bool {
        self.lock()
            .namespace(ns)
            .is_none_or(|s| s.policy.durability == Durability::Fsync)
    }
}
