//! Which FUSE lookups that find nothing count as cache misses.
//!
//! A miss is a read that found nothing. The kernel's lookups do not map
//! one to one onto reads:
//! - `open(O_CREAT)` of a missing key sends LOOKUP then CREATE: that lookup
//!   is part of the write, not a read that missed;
//! - an open of a key whose name the kernel still caches (it was there a
//!   moment ago, then expired, was evicted or purged) sends LOOKUP twice:
//!   the revalidation of the cached name, then a fresh lookup.
//!
//! So a lookup miss is counted unless this ledger says it repeats a miss of
//! the same key by the same thread within `BURST`, and a write begun by a
//! thread takes back the miss its own lookup of that key just counted. The
//! ledger lives in the store, beside the counters it decides: it is touched
//! on misses and creates only, never on hits.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::names::{Key, Namespace};

/// Lookups of one missing key by one thread closer together than this are
/// one miss.
pub const BURST: Duration = Duration::from_millis(50);
/// Misses remembered (the oldest are dropped first).
const CAPACITY: usize = 64;

struct Record {
    pid: u32,
    ns: Namespace,
    key: Key,
    expired: bool,
    /// Whether this lookup's miss still stands in the counters.
    counted: bool,
    at: Instant,
}

/// What the caller must take back from the store's miss counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeBack {
    Nothing,
    /// One miss (and one expired miss if `expired`).
    Miss {
        expired: bool,
    },
}

#[derive(Default)]
pub struct MissLedger {
    records: Mutex<VecDeque<Record>>,
}

impl MissLedger {
    /// A lookup by thread `pid` missed; says whether to count it.
    pub fn missed(&self, pid: u32, ns: &Namespace, key: &Key, expired: bool, now: Instant) -> bool {
        let mut q = crate::sync::lock(&self.records);
        let repeat = q
            .iter()
            .rev()
            .find(|r| r.pid == pid && &r.ns == ns && &r.key == key)
            .is_some_and(|r| now.saturating_duration_since(r.at) < BURST);
        if q.len() == CAPACITY {
            q.pop_front();
        }
        q.push_back(Record {
            pid,
            ns: ns.clone(),
            key: key.clone(),
            expired,
            counted: !repeat,
            at: now,
        });
        !repeat
    }

    /// Thread `pid` creates `key`: the lookup just before was the
    /// kernel's pre-create lookup.
    pub fn created(&self, pid: u32, ns: &Namespace, key: &Key) -> TakeBack {
        let mut q = crate::sync::lock(&self.records);
        let Some(i) = q
            .iter()
            .rposition(|r| r.pid == pid && &r.ns == ns && &r.key == key)
        else {
            return TakeBack::Nothing;
        };
        take(&mut q, i)
    }

    /// Thread `pid` renamed an entry onto `key` at `now`: a lookup of
    /// `key` by it within `BURST` before was the kernel's look at the
    /// rename's target (write-temp-then-rename after a miss and a long
    /// computation), not a read. Unlike a create's, a rename's target
    /// lookup is not sent when the kernel still holds the name, so an
    /// older record is a read of its own and stays counted.
    pub fn renamed_onto(&self, pid: u32, ns: &Namespace, key: &Key, now: Instant) -> TakeBack {
        let mut q = crate::sync::lock(&self.records);
        let Some(i) = q.iter().rposition(|r| {
            r.pid == pid
                && &r.ns == ns
                && &r.key == key
                && now.saturating_duration_since(r.at) < BURST
        }) else {
            return TakeBack::Nothing;
        };
        take(&mut q, i)
    }
}

/// Takes record `i` out of `q`: what its thread's miss becomes.
fn take(q: &mut VecDeque<Record>, i: usize) -> TakeBack {
    let r = q.remove(i).expect("found");
    if r.counted {
        TakeBack::Miss { expired: r.expired }
    } else {
        TakeBack::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::KeyFormat;

    fn k(s: &str) -> Key {
        Key::parse(s.as_bytes(), KeyFormat::Any).unwrap()
    }

    /// Net misses of a scripted sequence: +1 per counted miss, minus take-backs.
    fn net(steps: &[(&str, u64)]) -> i64 {
        let l = MissLedger::default();
        let ns = Namespace::parse(b"n").unwrap();
        let t0 = Instant::now();
        let mut n = 0i64;
        for (op, ms) in steps {
            let at = t0 + Duration::from_millis(*ms);
            let counted = match *op {
                "lookup" => l.missed(1, &ns, &k("a"), false, at),
                "other-key" => l.missed(1, &ns, &k("b"), false, at),
                "other-thread" => l.missed(2, &ns, &k("a"), false, at),
                "rename" => {
                    if l.renamed_onto(1, &ns, &k("a"), at) != TakeBack::Nothing {
                        n -= 1;
                    }
                    false
                }
                "create" => {
                    if l.created(1, &ns, &k("a")) != TakeBack::Nothing {
                        n -= 1;
                    }
                    false
                }
                _ => unreachable!(),
            };
            if counted {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn misses_are_reads_that_found_nothing() {
        assert_eq!(net(&[("lookup", 0)]), 1, "a plain miss");
        assert_eq!(net(&[("lookup", 0), ("create", 0)]), 0, "a create");
        assert_eq!(
            net(&[("lookup", 0), ("lookup", 0)]),
            1,
            "revalidation, then a fresh lookup"
        );
        assert_eq!(
            net(&[("lookup", 0), ("lookup", 1), ("lookup", 2), ("create", 2)]),
            1,
            "a stale name read, then at once written: one miss"
        );
        assert_eq!(
            net(&[("lookup", 0), ("lookup", 1000), ("create", 1000)]),
            1,
            "miss, compute for a second, then fill: one miss"
        );
        assert_eq!(net(&[("lookup", 0), ("lookup", 100)]), 2, "two reads");
        assert_eq!(
            net(&[("lookup", 0), ("other-thread", 1), ("other-key", 1)]),
            3,
            "other threads and keys are other misses"
        );
        assert_eq!(net(&[("create", 0)]), 0, "a create without a lookup");
    }

    #[test]
    fn a_rename_onto_a_missed_key_is_not_a_second_miss() {
        assert_eq!(
            net(&[("lookup", 0), ("lookup", 2), ("rename", 2)]),
            1,
            "miss, compute briefly, write a temp file, rename onto the key"
        );
        assert_eq!(
            net(&[("lookup", 0), ("lookup", 1000), ("rename", 1000)]),
            1,
            "miss, compute for a second, rename onto the key: one miss"
        );
        assert_eq!(
            net(&[("lookup", 0), ("rename", 1000)]),
            1,
            "a rename whose target the kernel held: the old miss stays"
        );
        assert_eq!(net(&[("rename", 0)]), 0, "a rename without a lookup");
    }
}
