//! `EntryTable`: one namespace's entries, as a hash map from key to
//! metadata that also keeps the entries' recency order.
//!
//! Shape (about 123 bytes an entry at 10^6: a 112-byte slot and about two
//! 5-byte buckets; the `lru` crate's boxed node, an `Arc` key and a map of
//! pointers took about 275):
//! - `slots`: one `Vec` of fixed-size `Slot`s; an entry is named by its
//!   slot number (`u32`) for as long as it stays, which is what the expiry
//!   heap's items hold. Vacant slots are chained into a free list and
//!   reused before the vector grows.
//! - `buckets`: a `hashbrown::HashTable<u32>` of slot numbers, hashed by
//!   the key's compact form: 4 bytes a bucket, the key itself is read from
//!   the slot.
//! - recency: a doubly linked list through the slots' `prev`/`next`, the
//!   head most recently used. Lookup, promote, insert, remove and the
//!   least recently used pick are O(1).
//!
//! Invariants (checked by `debug_check`):
//! - every occupied slot is in `buckets` exactly once, under its key's
//!   hash, and on the recency list exactly once; no key is in two slots;
//! - every vacant slot is on the free list; `len` counts occupied slots;
//! - `long_keys` and `wide` hold exactly the occupied slots whose key is
//!   long or whose metadata is wide.

use std::collections::HashMap;
use std::hash::RandomState;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use super::meta::EntryMeta;
use super::slot::{KeyBytes, NIL, Probe, Slot, Wide};

/// A table emptied with more slots than this frees them.
const RELEASE_EMPTY_OVER: usize = 1024;

pub struct EntryTable {
    slots: Vec<Slot>,
    buckets: HashTable<u32>,
    hasher: RandomState,
    head: u32,
    tail: u32,
    free: u32,
    len: u32,
    /// Keys longer than a slot holds (neither inline nor hex).
    long_keys: HashMap<u32, Box<[u8]>>,
    wide: HashMap<u32, Wide>,
}

impl Default for EntryTable {
    fn default() -> Self {
        EntryTable {
            slots: Vec::new(),
            buckets: HashTable::new(),
            hasher: RandomState::new(),
            head: NIL,
            tail: NIL,
            free: NIL,
            len: 0,
            long_keys: HashMap::new(),
            wide: HashMap::new(),
        }
    }
}

impl EntryTable {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Slots held, occupied or vacant.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot holding `key`.
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        let probe = Probe::new(key);
        let (slots, long_keys) = (&self.slots, &self.long_keys);
        self.buckets
            .find(probe.hash(&self.hasher), |&i| {
                slots[i as usize].holds(&probe, || long_keys.get(&i).map(|k| &k[..]))
            })
            .copied()
    }

    /// The metadata of an occupied slot.
    pub fn meta(&self, i: u32) -> EntryMeta {
        let slot = &self.slots[i as usize];
        debug_assert!(!slot.is_vacant());
        slot.meta(slot.is_wide().then(|| &self.wide[&i]))
    }

    /// The metadata of slot `i` if it is occupied (`i` may be any number).
    pub fn get(&self, i: u32) -> Option<EntryMeta> {
        let slot = self.slots.get(i as usize)?;
        (!slot.is_vacant()).then(|| self.meta(i))
    }

    /// The key of an occupied slot.
    pub fn key(&self, i: u32) -> KeyBytes<'_> {
        self.slots[i as usize].key(self.long_keys.get(&i).map(|k| &k[..]))
    }

    /// Adds an entry as the most recently used unless its key is there
    /// already (then nothing changes): its slot, if it went in. One probe
    /// of the hash table (a rebuild's insert of each entry).
    pub fn insert_new(&mut self, key: &[u8], meta: &EntryMeta) -> Option<u32> {
        self.upsert(key, meta, false).map(|(i, _)| i)
    }

    /// Room for `n` more entries without growing the slots or the hash
    /// table (a rebuild knows how many come).
    pub fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
        let (slots, long_keys, hasher) = (&self.slots, &self.long_keys, &self.hasher);
        self.buckets.reserve(n, |&i| {
            slots[i as usize].hash(hasher, long_keys.get(&i).map(|k| &k[..]))
        });
    }

    /// Adds an entry as the most recently used, or replaces the metadata
    /// of the key's entry and makes it the most recently used. Returns its
    /// slot and the replaced metadata.
    pub fn insert(&mut self, key: &[u8], meta: &EntryMeta) -> (u32, Option<EntryMeta>) {
        self.upsert(key, meta, true)
            .expect("an insert that may replace always goes in")
    }

    /// `insert`, or (`replace` false) nothing at all if the key is there.
    fn upsert(
        &mut self,
        key: &[u8],
        meta: &EntryMeta,
        replace: bool,
    ) -> Option<(u32, Option<EntryMeta>)> {
        let probe = Probe::new(key);
        let hash = probe.hash(&self.hasher);
        let (slots, long_keys, hasher) = (&self.slots, &self.long_keys, &self.hasher);
        let entry = self.buckets.entry(
            hash,
            |&i| slots[i as usize].holds(&probe, || long_keys.get(&i).map(|k| &k[..])),
            |&i| slots[i as usize].hash(hasher, long_keys.get(&i).map(|k| &k[..])),
        );
        match entry {
            Entry::Occupied(_) if !replace => None,
            Entry::Occupied(e) => {
                let i = *e.get();
                let old = self.meta(i);
                self.set_meta(i, meta);
                self.unlink(i);
                self.push_head(i);
                Some((i, Some(old)))
            }
            Entry::Vacant(e) => {
                let i = match self.free {
                    NIL => {
                        let i = u32::try_from(self.slots.len())
                            .ok()
                            .filter(|&i| i != NIL)
                            .expect("fewer than 2^32-1 entries in a namespace");
                        self.slots.push(Slot::vacant(NIL));
                        i
                    }
                    i => {
                        self.free = self.slots[i as usize].next;
                        i
                    }
                };
                e.insert(i);
                self.slots[i as usize].set_key(&probe);
                if let Probe::Long(key) = probe {
                    self.long_keys.insert(i, key.into());
                }
                self.set_meta(i, meta);
                self.push_head(i);
                self.len += 1;
                Some((i, None))
            }
        }
    }

    /// Takes the entry of an occupied slot out; returns its metadata.
    pub fn remove(&mut self, i: u32) -> EntryMeta {
        let hash =
            self.slots[i as usize].hash(&self.hasher, self.long_keys.get(&i).map(|k| &k[..]));
        match self.buckets.find_entry(hash, |&j| j == i) {
            Ok(e) => {
                e.remove();
            }
            Err(_) => panic!("occupied slot {i} is not in the hash table"),
        }
        self.vacate(i)
    }

    /// Marks an occupied slot most recently used, read at `now`.
    pub fn promote(&mut self, i: u32, now: i64) {
        self.slots[i as usize].last_access = now;
        self.unlink(i);
        self.push_head(i);
    }

    pub fn set_verified(&mut self, i: u32, compressed: bool) {
        self.slots[i as usize].set_verified(compressed);
    }

    /// The least recently used entry's slot.
    pub fn lru(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// When the least recently used entry was last used.
    pub fn lru_last_access(&self) -> Option<i64> {
        self.lru().map(|i| self.slots[i as usize].last_access)
    }

    /// Occupied slots from least to most recently used.
    pub fn iter_lru(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(self.lru(), |&i| {
            let prev = self.slots[i as usize].prev;
            (prev != NIL).then_some(prev)
        })
    }

    fn set_meta(&mut self, i: u32, meta: &EntryMeta) {
        match self.slots[i as usize].set_meta(meta) {
            Some(wide) => self.wide.insert(i, wide),
            None => self.wide.remove(&i),
        };
    }

    /// Frees a slot already out of `buckets`.
    fn vacate(&mut self, i: u32) -> EntryMeta {
        let meta = self.meta(i);
        self.unlink(i);
        if self.slots[i as usize].is_long() {
            self.long_keys.remove(&i);
        }
        if self.slots[i as usize].is_wide() {
            self.wide.remove(&i);
        }
        self.slots[i as usize].make_vacant(self.free);
        self.free = i;
        self.len -= 1;
        if self.len == 0 && self.slots.len() > RELEASE_EMPTY_OVER {
            // Neither the slab nor hashbrown's buckets shrink as entries
            // leave; a namespace emptied (purged, expired) gives its
            // memory back. Slot numbers start over: stale expiry items
            // that name them are only hints (see `Index::take_expired`).
            *self = EntryTable::default();
        }
        meta
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
        let s = &mut self.slots[i as usize];
        s.prev = NIL;
        s.next = NIL;
    }

    fn push_head(&mut self, i: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        match old {
            NIL => self.tail = i,
            h => self.slots[h as usize].prev = i,
        }
        self.head = i;
    }

    /// Panics if the structure breaks an invariant (see the module docs).
    #[cfg(test)]
    pub fn debug_check(&self) {
        let n = self.slots.len();
        let mut on_list = vec![false; n];
        let mut count = 0u32;
        let mut prev = NIL;
        let mut i = self.head;
        while i != NIL {
            let s = &self.slots[i as usize];
            assert!(!s.is_vacant(), "vacant slot {i} on the recency list");
            assert!(!on_list[i as usize], "slot {i} twice on the recency list");
            on_list[i as usize] = true;
            assert_eq!(s.prev, prev, "slot {i}'s back link");
            count += 1;
            prev = i;
            i = s.next;
        }
        assert_eq!(self.tail, prev, "tail");
        assert_eq!(count, self.len, "len counts the listed slots");
        let mut free = 0;
        let mut i = self.free;
        while i != NIL {
            assert!(
                self.slots[i as usize].is_vacant(),
                "occupied slot {i} on the free list"
            );
            free += 1;
            i = self.slots[i as usize].next;
            assert!(free <= n, "the free list loops");
        }
        assert_eq!(free + count as usize, n, "every slot is listed or free");
        assert_eq!(
            self.buckets.len(),
            self.len as usize,
            "one bucket per entry"
        );
        for &i in &self.buckets {
            assert!(on_list[i as usize], "bucket names vacant slot {i}");
            let key = self.key(i);
            assert_eq!(self.find(&key), Some(i), "slot {i} is found by its key");
        }
        for (i, s) in self.slots.iter().enumerate() {
            let i = i as u32;
            assert_eq!(
                s.is_long() && !s.is_vacant(),
                self.long_keys.contains_key(&i)
            );
            assert_eq!(s.is_wide() && !s.is_vacant(), self.wide.contains_key(&i));
        }
    }
}
