//! A listing's entries with their metadata (READDIRPLUS): many keys in
//! one critical section, counting nothing, since a listing is no read.

use super::{Key, Lookup, Namespace, Store};

impl Store {
    /// What `entry_info` says of each of `keys` of `ns`, in order, under
    /// one index lock.
    pub fn entry_infos<'a>(
        &self,
        ns: &Namespace,
        keys: impl IntoIterator<Item = &'a Key>,
    ) -> Vec<Lookup> {
        let now = self.clock.now();
        let idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return keys.into_iter().map(|_| Lookup::Miss).collect();
        };
        keys.into_iter()
            .map(|key| match state.peek(key) {
                None => Lookup::Miss,
                Some(meta) => match idx.expires_at(&state.policy, &meta) {
                    Some(at) if at <= now => Lookup::Expired,
                    _ => Lookup::Hit(Self::info_locked(&idx, ns, &meta)),
                },
            })
            .collect()
    }
}
