//! Names, a leaf module that `config` and `store` both import.
//!
//! `Namespace` and `Key`: the only ways a name from the outside world enters
//! the store. Both are built only by their parsers, so everything downstream
//! (backing paths above all) can rely on: non-empty, at most 255 bytes, not
//! `.` or `..`, no `/` and no NUL. A key is a path: one or more such
//! components joined by `/` (at most `KEY_MAX` bytes and `DEPTH_MAX`
//! components), never a leading, trailing or doubled `/`. In a `sha256`
//! namespace the last component is also 64 lowercase hex characters.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

/// Whether keys in a namespace may be any file name or must be sha256 hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyFormat {
    #[default]
    Any,
    Sha256,
}

/// The longest name a key or namespace may have, as for any file name.
pub const NAME_MAX: usize = 255;
/// The longest key path, in bytes: an entry's trailer holds it whole
/// (entry.rs reads at most 2 KiB of trailer).
pub const KEY_MAX: usize = 1024;
/// The most components a key path may have (directories plus the name).
pub const DEPTH_MAX: usize = 32;
/// The reserved top-level name of the control directory.
pub const CONTROL_DIR: &[u8] = b".cachefs";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is longer than 255 bytes, or a key path longer than 1024 bytes or 32 levels")]
    TooLong,
    #[error("name is empty, '.', '..', or holds '/' or NUL")]
    Invalid,
    #[error("name is not 64 lowercase hex characters (sha256)")]
    NotSha256,
    #[error("name is reserved")]
    Reserved,
}

fn check_file_name(bytes: &[u8]) -> Result<(), NameError> {
    if bytes.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    if bytes.is_empty()
        || bytes == b"."
        || bytes == b".."
        || bytes.contains(&b'/')
        || bytes.contains(&0)
    {
        return Err(NameError::Invalid);
    }
    Ok(())
}

/// A top-level directory of the mount with its own policy.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Arc<[u8]>);

impl Namespace {
    pub fn parse(bytes: &[u8]) -> Result<Namespace, NameError> {
        check_file_name(bytes)?;
        if bytes == CONTROL_DIR {
            return Err(NameError::Reserved);
        }
        Ok(Namespace(bytes.into()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The name of one entry inside a namespace.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Arc<[u8]>);

impl Key {
    pub fn parse(bytes: &[u8], format: KeyFormat) -> Result<Key, NameError> {
        check_key_path(bytes)?;
        let name = last_component(bytes);
        if format == KeyFormat::Sha256
            && !(name.len() == 64 && name.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            return Err(NameError::NotSha256);
        }
        Ok(Key(bytes.into()))
    }

    /// `name` inside directory `dir` (`b""`: the namespace's top): the
    /// key `dir/name`, parsed as a whole.
    pub fn join(dir: &[u8], name: &[u8], format: KeyFormat) -> Result<Key, NameError> {
        if name.contains(&b'/') {
            return Err(NameError::Invalid);
        }
        if dir.is_empty() {
            return Key::parse(name, format);
        }
        let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
        path.extend_from_slice(dir);
        path.push(b'/');
        path.extend_from_slice(name);
        Key::parse(&path, format)
    }

    /// The directory the key's entry is in (`b""`: the namespace's top).
    pub fn dir(&self) -> &[u8] {
        parent_of(&self.0)
    }

    /// The key's last component: its file name in its directory.
    pub fn name(&self) -> &[u8] {
        last_component(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key read back from the index, which only ever held parsed keys
    /// (it keeps them in a compact form of its own, not as `Key`s).
    pub(crate) fn from_index(bytes: &[u8]) -> Key {
        debug_assert_eq!(check_key_path(bytes), Ok(()));
        Key(bytes.into())
    }
}

/// A key path: components that are each a file name, within the limits.
pub fn check_key_path(bytes: &[u8]) -> Result<(), NameError> {
    if bytes.len() > KEY_MAX {
        return Err(NameError::TooLong);
    }
    let mut depth = 0;
    for part in bytes.split(|&b| b == b'/') {
        depth += 1;
        if depth > DEPTH_MAX {
            return Err(NameError::TooLong);
        }
        check_file_name(part)?;
    }
    Ok(())
}

/// The directory part of a key path (`b""` when it has none).
pub fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

fn last_component(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_refuse_what_no_file_name_may_be() {
        for bad in [&b""[..], b".", b"..", b"a\0b"] {
            assert_eq!(Key::parse(bad, KeyFormat::Any), Err(NameError::Invalid));
            assert_eq!(Namespace::parse(bad), Err(NameError::Invalid));
        }
        assert_eq!(Namespace::parse(b"a/b"), Err(NameError::Invalid));
        assert_eq!(
            Key::parse(&[b'a'; 256], KeyFormat::Any),
            Err(NameError::TooLong)
        );
        assert!(Key::parse(&[b'a'; 255], KeyFormat::Any).is_ok());
        assert_eq!(Namespace::parse(b".cachefs"), Err(NameError::Reserved));
        assert!(Key::parse(b"with space\nand \xff", KeyFormat::Any).is_ok());
    }

    #[test]
    fn keys_are_paths_of_file_names_within_limits() {
        let k = Key::parse(b"news/espn/2026/123", KeyFormat::Any).unwrap();
        assert_eq!(k.dir(), b"news/espn/2026");
        assert_eq!(k.name(), b"123");
        let top = Key::parse(b"k", KeyFormat::Any).unwrap();
        assert_eq!((top.dir(), top.name()), (&b""[..], &b"k"[..]));
        for bad in [&b"/a"[..], b"a/", b"a//b", b"a/./b", b"a/../b", b"a/b\0"] {
            assert_eq!(
                Key::parse(bad, KeyFormat::Any),
                Err(NameError::Invalid),
                "{bad:?}"
            );
        }
        let long = [&[b'a'; 255][..], b"/", &[b'b'; 255]].concat();
        assert!(Key::parse(&long, KeyFormat::Any).is_ok());
        let too_long = vec![vec![b'a'; 200]; 6].join(&b'/');
        assert!(too_long.len() > KEY_MAX);
        assert_eq!(
            Key::parse(&too_long, KeyFormat::Any),
            Err(NameError::TooLong)
        );
        let deep = vec![&b"d"[..]; DEPTH_MAX + 1].join(&b'/');
        assert_eq!(Key::parse(&deep, KeyFormat::Any), Err(NameError::TooLong));
        let ok_deep = vec![&b"d"[..]; DEPTH_MAX].join(&b'/');
        assert!(Key::parse(&ok_deep, KeyFormat::Any).is_ok());
        assert_eq!(
            Key::join(b"a/b", b"c", KeyFormat::Any).unwrap().as_bytes(),
            b"a/b/c"
        );
        assert_eq!(
            Key::join(b"a", b"x/y", KeyFormat::Any),
            Err(NameError::Invalid)
        );
    }

    #[test]
    fn sha256_keys_are_64_lowercase_hex() {
        let good = "0123456789abcdef".repeat(4);
        assert!(Key::parse(good.as_bytes(), KeyFormat::Sha256).is_ok());
        let upper = good.to_uppercase();
        assert_eq!(
            Key::parse(upper.as_bytes(), KeyFormat::Sha256),
            Err(NameError::NotSha256)
        );
        assert_eq!(
            Key::parse(b"abc", KeyFormat::Sha256),
            Err(NameError::NotSha256)
        );
        // Only the last component: directories above it are any names.
        let nested = format!("by-site/espn/{good}");
        assert!(Key::parse(nested.as_bytes(), KeyFormat::Sha256).is_ok());
        let hex_dir = format!("{good}/x");
        assert_eq!(
            Key::parse(hex_dir.as_bytes(), KeyFormat::Sha256),
            Err(NameError::NotSha256)
        );
    }
}
