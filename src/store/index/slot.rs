//! One entry as the index keeps it: a fixed-size `Slot` (112 bytes) holding
//! the key in a compact form, the metadata in narrowed fields and the
//! entry's recency links. `EntryMeta` is the form everything outside the
//! index sees; a slot converts to and from it without loss.
//!
//! Keys: a 64-lowercase-hex key (a sha256, by far the common case) is kept
//! as its 32 bytes, a key of up to 32 bytes inline; only a longer key
//! lives on the heap (the table's side map). The form is a function of the
//! key's bytes alone, so two equal keys always have the same form, and
//! forms can be compared and hashed without decoding.
//!
//! Metadata: the TTL (seconds) is a `u32` with `NO_TTL` for "none", and the
//! file size is kept as the trailer's length past the content. Values that
//! do not fit (a TTL of 136 years or more, a file shorter than its content
//! or a trailer over 4 GiB, only possible from a doctored snapshot) are
//! kept whole in the table's side map of `Wide` values, so nothing is ever
//! rounded or clamped.

use std::hash::BuildHasher;
use std::ops::Deref;

use super::meta::EntryMeta;

/// "No slot": the end of a list, or an empty list.
pub(super) const NIL: u32 = u32::MAX;

/// `form` values above the inline lengths (0..=32).
const FORM_HEX: u8 = 33;
const FORM_LONG: u8 = 34;
const FORM_VACANT: u8 = 35;
const INLINE_MAX: usize = 32;

/// `ttl` of an entry that has no TTL of its own (the namespace's applies).
const NO_TTL: u32 = u32::MAX;

const VERIFIED: u8 = 1;
/// The file size and TTL are in the table's `Wide` map, not in the slot.
const WIDE: u8 = 2;
/// `EntryMeta::compressed`; `trailer` then holds the file size.
const COMPRESSED: u8 = 4;

/// A key as it is looked up: its compact form, or its bytes if it is long.
pub(super) enum Probe<'a> {
    Packed { form: u8, bytes: [u8; 32] },
    Long(&'a [u8]),
}

impl Probe<'_> {
    pub(super) fn new(key: &[u8]) -> Probe<'_> {
        let mut bytes = [0u8; 32];
        if key.len() <= INLINE_MAX {
            bytes[..key.len()].copy_from_slice(key);
            return Probe::Packed {
                form: key.len() as u8,
                bytes,
            };
        }
        if key.len() == 64 && decode_hex(key, &mut bytes) {
            return Probe::Packed {
                form: FORM_HEX,
                bytes,
            };
        }
        Probe::Long(key)
    }

    pub(super) fn hash(&self, hasher: &impl BuildHasher) -> u64 {
        match self {
            Probe::Packed { form, bytes } => hash_form(hasher, *form, bytes),
            Probe::Long(key) => hash_form(hasher, FORM_LONG, key),
        }
    }
}

/// The one hash function of keys, for probes and slots alike: the form
/// and the bytes that are significant in it.
fn hash_form(hasher: &impl BuildHasher, form: u8, bytes: &[u8]) -> u64 {
    let significant = match form {
        FORM_HEX => bytes,
        FORM_LONG => bytes,
        len => &bytes[..usize::from(len)],
    };
    hasher.hash_one((form, significant))
}

/// Each byte's value as a lowercase hex digit; 0xff (the high bit set)
/// if it is none.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut v = 0;
    while v < 16 {
        t[b"0123456789abcdef"[v] as usize] = v as u8;
        v += 1;
    }
    t
};

/// Every lookup of a sha256 key decodes it (a listing's 10^5 of them):
/// a table read per digit and one check at the end, no branch per digit.
fn decode_hex(hex: &[u8], out: &mut [u8; 32]) -> bool {
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        // An invalid digit has the high bit set; a valid one never does.
        bad |= hi | lo;
        *o = hi << 4 | lo;
    }
    bad & 0x80 == 0
}

/// A key's bytes read back from a slot: decoded on the stack, or borrowed
/// from the side map when long.
pub enum KeyBytes<'a> {
    Stack { buf: [u8; 64], len: u8 },
    Long(&'a [u8]),
}

impl Deref for KeyBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            KeyBytes::Stack { buf, len } => &buf[..usize::from(*len)],
            KeyBytes::Long(bytes) => bytes,
        }
    }
}

/// What did not fit a slot's narrow fields, kept whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wide {
    file_size: u64,
    ttl_secs: Option<u64>,
    /// Only an entry changed after its mtime (chmod, a past `touch -d`)
    /// has a ctime of its own, and only one given an atime by `utimensat`
    /// an atime of its own; the others' are their mtime.
    ctime: i64,
    atime: i64,
}

pub(super) struct Slot {
    pub version: u64,
    pub file_id: u64,
    pub mtime: i64,
    pub last_access: i64,
    pub logical_size: u64,
    pub stored_bytes: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds, or `NO_TTL`.
    ttl: u32,
    /// File size minus logical size: the entry's trailer.
    trailer: u32,
    /// Towards the more recently used entry (the list's head), and away
    /// from it; a vacant slot's `next` chains the free list.
    pub prev: u32,
    pub next: u32,
    key: [u8; 32],
    /// An inline key's length (0..=32), `FORM_HEX`, `FORM_LONG` or
    /// `FORM_VACANT`.
    form: u8,
    flags: u8,
}

impl Slot {
    pub(super) fn vacant(next: u32) -> Slot {
        Slot {
            version: 0,
            file_id: 0,
            mtime: 0,
            last_access: 0,
            logical_size: 0,
            stored_bytes: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            ttl: NO_TTL,
            trailer: 0,
            prev: NIL,
            next,
            key: [0; 32],
            form: FORM_VACANT,
            flags: 0,
        }
    }

    pub(super) fn is_vacant(&self) -> bool {
        self.form == FORM_VACANT
    }

    pub(super) fn is_long(&self) -> bool {
        self.form == FORM_LONG
    }

    pub(super) fn is_wide(&self) -> bool {
        self.flags & WIDE != 0
    }

    pub(super) fn make_vacant(&mut self, next: u32) {
        *self = Slot::vacant(next);
    }

    /// Stores a probe's key; a long key's bytes go to the side map, by
    /// the caller.
    pub(super) fn set_key(&mut self, probe: &Probe<'_>) {
        match probe {
            Probe::Packed { form, bytes } => {
                self.form = *form;
                self.key = *bytes;
            }
            Probe::Long(_) => {
                self.form = FORM_LONG;
                self.key = [0; 32];
            }
        }
    }

    /// Whether this slot holds the probe's key; `long` is its side-map
    /// key when `is_long`.
    pub(super) fn holds<'a>(
        &self,
        probe: &Probe<'_>,
        long: impl FnOnce() -> Option<&'a [u8]>,
    ) -> bool {
        match probe {
            Probe::Packed { form, bytes } => self.form == *form && self.key == *bytes,
            Probe::Long(key) => self.form == FORM_LONG && long() == Some(*key),
        }
    }

    /// The hash of the key held; `long` as for `holds`.
    pub(super) fn hash(&self, hasher: &impl BuildHasher, long: Option<&[u8]>) -> u64 {
        match long {
            Some(key) if self.is_long() => hash_form(hasher, FORM_LONG, key),
            _ => hash_form(hasher, self.form, &self.key),
        }
    }

    pub(super) fn key<'a>(&self, long: Option<&'a [u8]>) -> KeyBytes<'a> {
        let mut buf = [0u8; 64];
        match self.form {
            FORM_HEX => {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                for (pair, b) in buf.chunks_exact_mut(2).zip(self.key) {
                    pair[0] = DIGITS[usize::from(b >> 4)];
                    pair[1] = DIGITS[usize::from(b & 0xf)];
                }
                KeyBytes::Stack { buf, len: 64 }
            }
            FORM_LONG => KeyBytes::Long(long.expect("a long key is in the side map")),
            len => {
                let len = len.min(INLINE_MAX as u8);
                buf[..usize::from(len)].copy_from_slice(&self.key[..usize::from(len)]);
                KeyBytes::Stack { buf, len }
            }
        }
    }

    /// Stores the metadata; returns what does not fit the narrow fields,
    /// for the side map (the slot is then marked wide).
    pub(super) fn set_meta(&mut self, m: &EntryMeta) -> Option<Wide> {
        self.version = m.version;
        self.file_id = m.file_id;
        self.mtime = m.mtime;
        self.last_access = m.last_access;
        self.logical_size = m.logical_size;
        self.stored_bytes = m.stored_bytes;
        self.mode = m.mode;
        self.uid = m.uid;
        self.gid = m.gid;
        self.flags = if m.verified { VERIFIED } else { 0 };
        if m.compressed {
            self.flags |= COMPRESSED;
        }
        let ttl = match m.ttl_secs {
            None => Some(NO_TTL),
            Some(s) => u32::try_from(s).ok().filter(|&s| s != NO_TTL),
        };
        // A compressed file is smaller than its logical size: the slot
        // keeps its size whole (in 32 bits) instead of the difference.
        let trailer = if m.compressed {
            u32::try_from(m.file_size).ok()
        } else {
            m.file_size
                .checked_sub(m.logical_size)
                .and_then(|t| u32::try_from(t).ok())
        };
        match (ttl, trailer) {
            (Some(ttl), Some(trailer)) if m.ctime == m.mtime && m.atime == m.mtime => {
                self.ttl = ttl;
                self.trailer = trailer;
                None
            }
            _ => {
                self.flags |= WIDE;
                self.ttl = NO_TTL;
                self.trailer = 0;
                Some(Wide {
                    file_size: m.file_size,
                    ttl_secs: m.ttl_secs,
                    ctime: m.ctime,
                    atime: m.atime,
                })
            }
        }
    }

    /// The metadata; `wide` is the side-map value when `is_wide`.
    pub(super) fn meta(&self, wide: Option<&Wide>) -> EntryMeta {
        let (file_size, ttl_secs, ctime, atime) = match wide {
            Some(w) if self.is_wide() => (w.file_size, w.ttl_secs, w.ctime, w.atime),
            _ if self.flags & COMPRESSED != 0 => (
                u64::from(self.trailer),
                (self.ttl != NO_TTL).then_some(u64::from(self.ttl)),
                self.mtime,
                self.mtime,
            ),
            _ => (
                self.logical_size + u64::from(self.trailer),
                (self.ttl != NO_TTL).then_some(u64::from(self.ttl)),
                self.mtime,
                self.mtime,
            ),
        };
        EntryMeta {
            version: self.version,
            file_id: self.file_id,
            file_size,
            mtime: self.mtime,
            ctime,
            atime,
            ttl_secs,
            logical_size: self.logical_size,
            stored_bytes: self.stored_bytes,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            verified: self.flags & VERIFIED != 0,
            compressed: self.flags & COMPRESSED != 0,
            last_access: self.last_access,
        }
    }

    pub(super) fn set_verified(&mut self, compressed: bool) {
        self.flags |= VERIFIED;
        if compressed && !self.is_wide() && self.flags & COMPRESSED == 0 {
            // The narrow size field changes meaning with the flag.
            self.trailer =
                u32::try_from(self.logical_size + u64::from(self.trailer)).unwrap_or(u32::MAX);
        }
        if compressed {
            self.flags |= COMPRESSED;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::RandomState;

    fn meta() -> EntryMeta {
        EntryMeta {
            version: 1 << 32,
            file_id: 7,
            file_size: 300,
            mtime: -5,
            ctime: -5,
            atime: -5,
            ttl_secs: Some(60),
            logical_size: 100,
            stored_bytes: 4096,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            verified: true,
            compressed: false,
            last_access: 9,
        }
    }

    #[test]
    fn a_slot_is_112_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 112);
    }

    #[test]
    fn keys_take_the_form_their_bytes_call_for_and_read_back_whole() {
        let hex = "0123456789abcdef".repeat(4);
        let upper = hex.to_uppercase();
        let long = "x".repeat(255);
        let cases: [(&[u8], Option<u8>); 7] = [
            (hex.as_bytes(), Some(FORM_HEX)),
            (upper.as_bytes(), None),
            (&hex.as_bytes()[..63], None),
            (b"a", Some(1)),
            (&[b'k'; 32], Some(32)),
            (&[b'k'; 33], None),
            (long.as_bytes(), None),
        ];
        for (key, form) in cases {
            let probe = Probe::new(key);
            match (&probe, form) {
                (Probe::Packed { form: f, .. }, Some(want)) => assert_eq!(*f, want),
                (Probe::Long(_), None) => {}
                _ => panic!("{key:?}: wrong form"),
            }
            let mut slot = Slot::vacant(NIL);
            slot.set_key(&probe);
            let side = matches!(probe, Probe::Long(_)).then_some(key);
            assert_eq!(&*slot.key(side), key);
            assert!(slot.holds(&probe, || side));
            let h = RandomState::new();
            assert_eq!(slot.hash(&h, side), probe.hash(&h));
        }
    }

    #[test]
    fn metadata_round_trips_narrow_or_wide() {
        let mut slot = Slot::vacant(NIL);
        let m = meta();
        assert_eq!(slot.set_meta(&m), None);
        assert_eq!(slot.meta(None), m);
        for m in [
            EntryMeta {
                ttl_secs: None,
                verified: false,
                ..meta()
            },
            EntryMeta {
                ttl_secs: Some(u64::from(u32::MAX) - 1),
                ..meta()
            },
        ] {
            assert_eq!(slot.set_meta(&m), None);
            assert_eq!(slot.meta(None), m);
        }
        for m in [
            EntryMeta {
                ttl_secs: Some(u64::from(u32::MAX)),
                ..meta()
            },
            EntryMeta {
                ttl_secs: Some(u64::MAX),
                ..meta()
            },
            EntryMeta {
                file_size: 99,
                ..meta()
            },
            EntryMeta {
                file_size: u64::MAX,
                ..meta()
            },
            EntryMeta {
                ctime: 1 << 40,
                ..meta()
            },
            EntryMeta {
                atime: (1 << 33) * 1_000_000_000 + 1,
                ..meta()
            },
        ] {
            let wide = slot.set_meta(&m).expect("does not fit");
            assert!(slot.is_wide());
            assert_eq!(slot.meta(Some(&wide)), m);
        }
        // A compressed file is smaller than its logical size, and narrow.
        for file_size in [60, u64::from(u32::MAX)] {
            let m = EntryMeta {
                file_size,
                compressed: true,
                ..meta()
            };
            assert_eq!(slot.set_meta(&m), None);
            assert_eq!(slot.meta(None), m);
        }
        slot.set_meta(&meta());
        assert!(!slot.is_wide(), "a narrow value clears the mark");
    }
}
