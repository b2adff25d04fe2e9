//! An entry's own `user.*` xattrs (any but `user.cachefs.*`, which the fs
//! layer answers itself): the change a caller asks for, its limits, and
//! how it is applied to a version's list.
//!
//! Invariants: they belong to a version and travel in its trailer (so
//! they survive restarts, renames and `kill -9` with it, and count in its
//! stored bytes); the list stays sorted by name and within the limits
//! below, which bound every trailer (see `entry::MAX_HEADER_LEN`).

use super::{Store, StoreError, entry};
use crate::names::{Key, Namespace};

/// At most this many names on one entry (ENOSPC past it).
pub const MAX_XATTRS: usize = 32;
/// At most this many bytes of one value (E2BIG).
pub const MAX_XATTR_VALUE: usize = 16 * 1024;
/// At most this many bytes of names and values together (ENOSPC).
pub const MAX_XATTR_TOTAL: usize = 64 * 1024;

/// The list an entry carries: (whole name, value), sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// What `setxattr`'s flags ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Create or replace.
    Any,
    /// `XATTR_CREATE`: `Exists` if the name is there.
    Create,
    /// `XATTR_REPLACE`: `NoAttr` if it is not.
    Replace,
}

/// A change of one xattr.
#[derive(Debug, Clone)]
pub enum XattrChange {
    Set {
        name: Vec<u8>,
        value: Vec<u8>,
        mode: SetMode,
    },
    Remove {
        name: Vec<u8>,
    },
}

/// Whether `name` is one the store keeps (a `user.` name, not ours).
pub fn is_user_name(name: &[u8]) -> bool {
    name.starts_with(b"user.") && name.len() > 5 && !name.starts_with(b"user.cachefs.")
}

impl Store {
    /// The `user.*` xattrs of a key's live version, read from its trailer
    /// (the index does not keep them).
    pub fn xattrs(&self, ns: &Namespace, key: &Key) -> Result<Xattrs, StoreError> {
        self.live_meta(ns, key)?;
        let io = &self.layout.io;
        let file = io.open_nofollow(&self.layout.entry_path(ns, key))?;
        // Another daemon may be appending a trailer meanwhile.
        match entry::read_header_settled(io, &file)?.1 {
            Ok(h) => Ok(h.xattrs),
            Err(_) => Err(StoreError::NotFound),
        }
    }
}

/// Applies `change` to `list`, or says why not (nothing changed then).
/// Limits are logged where they refuse: the caller only sees an errno.
pub fn apply(list: &mut Xattrs, change: &XattrChange) -> Result<(), StoreError> {
    match change {
        XattrChange::Remove { name } => {
            let i = list
                .binary_search_by(|(n, _)| n.as_slice().cmp(name))
                .map_err(|_| StoreError::NoAttr)?;
            list.remove(i);
            Ok(())
        }
        XattrChange::Set { name, value, mode } => {
            if !is_user_name(name) || name.len() > 255 {
                return Err(StoreError::InvalidValue);
            }
            if value.len() > MAX_XATTR_VALUE {
                log::warn!(
                    "xattr {} refused: a value of {} bytes is over {MAX_XATTR_VALUE}",
                    String::from_utf8_lossy(name),
                    value.len()
                );
                return Err(StoreError::ValueTooBig);
            }
            let at = list.binary_search_by(|(n, _)| n.as_slice().cmp(name));
            match (at, mode) {
                (Ok(_), SetMode::Create) => return Err(StoreError::Exists),
                (Err(_), SetMode::Replace) => return Err(StoreError::NoAttr),
                _ => {}
            }
            let others: usize = list
                .iter()
                .filter(|(n, _)| n != name)
                .map(|(n, v)| n.len() + v.len())
                .sum();
            let count = list.len() + usize::from(at.is_err());
            if count > MAX_XATTRS || others + name.len() + value.len() > MAX_XATTR_TOTAL {
                log::warn!(
                    "xattr {} refused: an entry holds at most {MAX_XATTRS} xattrs, \
                     {MAX_XATTR_TOTAL} bytes of names and values",
                    String::from_utf8_lossy(name)
                );
                return Err(StoreError::NoSpace);
            }
            match at {
                Ok(i) => list[i].1 = value.clone(),
                Err(i) => list.insert(i, (name.clone(), value.clone())),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &[u8], mode: SetMode) -> XattrChange {
        XattrChange::Set {
            name: name.as_bytes().to_vec(),
            value: value.to_vec(),
            mode,
        }
    }

    #[test]
    fn flags_limits_and_order() {
        let mut l = Xattrs::new();
        apply(&mut l, &set("user.b", b"2", SetMode::Any)).unwrap();
        apply(&mut l, &set("user.a", b"1", SetMode::Create)).unwrap();
        assert!(matches!(
            apply(&mut l, &set("user.a", b"x", SetMode::Create)),
            Err(StoreError::Exists)
        ));
        assert!(matches!(
            apply(&mut l, &set("user.c", b"x", SetMode::Replace)),
            Err(StoreError::NoAttr)
        ));
        apply(&mut l, &set("user.a", b"11", SetMode::Replace)).unwrap();
        assert_eq!(l[0], (b"user.a".to_vec(), b"11".to_vec()));
        assert_eq!(l[0].0, b"user.a");
        let big = vec![0u8; MAX_XATTR_VALUE + 1];
        assert!(matches!(
            apply(&mut l, &set("user.big", &big, SetMode::Any)),
            Err(StoreError::ValueTooBig)
        ));
        for i in 0..MAX_XATTRS - 2 {
            apply(&mut l, &set(&format!("user.n{i}"), b"v", SetMode::Any)).unwrap();
        }
        assert!(matches!(
            apply(&mut l, &set("user.one-more", b"v", SetMode::Any)),
            Err(StoreError::NoSpace)
        ));
        let mut l = Xattrs::new();
        let v = vec![1u8; MAX_XATTR_VALUE];
        for i in 0..3 {
            apply(&mut l, &set(&format!("user.v{i}"), &v, SetMode::Any)).unwrap();
        }
        assert!(matches!(
            apply(&mut l, &set("user.v3", &v, SetMode::Any)),
            Err(StoreError::NoSpace)
        ));
        // Replacing a value counts its new size, not both.
        apply(&mut l, &set("user.v0", &v, SetMode::Any)).unwrap();
        apply(
            &mut l,
            &XattrChange::Remove {
                name: b"user.v0".to_vec(),
            },
        )
        .unwrap();
        assert!(matches!(
            apply(
                &mut l,
                &XattrChange::Remove {
                    name: b"user.v0".to_vec()
                }
            ),
            Err(StoreError::NoAttr)
        ));
        assert!(matches!(
            apply(&mut l, &set("user.cachefs.x", b"v", SetMode::Any)),
            Err(StoreError::InvalidValue)
        ));
    }
}
