//! Names, a leaf module that `config` and `store` both import.
//!
//! `Namespace` and `Key`: the only ways a name from the outside world enters
//! the store. Both are built only by their parsers, so everything downstream
//! (backing paths above all) can rely on: non-empty, at most 255 bytes, not
//! `.` or `..`, no `/` and no NUL. Keys of a `sha256` namespace are also 64
//! lowercase hex characters.

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
/// The reserved top-level name of the control directory.
pub const CONTROL_DIR: &[u8] = b".cachefs";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is longer than 255 bytes")]
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
        check_file_name(bytes)?;
        if format == KeyFormat::Sha256
            && !(bytes.len() == 64 && bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            return Err(NameError::NotSha256);
        }
        Ok(Key(bytes.into()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key read back from the index, which only ever held parsed keys
    /// (it keeps them in a compact form of its own, not as `Key`s).
    pub(crate) fn from_index(bytes: &[u8]) -> Key {
        debug_assert_eq!(check_file_name(bytes), Ok(()));
        Key(bytes.into())
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
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert_eq!(Key::parse(bad, KeyFormat::Any), Err(NameError::Invalid));
            assert_eq!(Namespace::parse(bad), Err(NameError::Invalid));
        }
        assert_eq!(
            Key::parse(&[b'a'; 256], KeyFormat::Any),
            Err(NameError::TooLong)
        );
        assert!(Key::parse(&[b'a'; 255], KeyFormat::Any).is_ok());
        assert_eq!(Namespace::parse(b".cachefs"), Err(NameError::Reserved));
        assert!(Key::parse(b"with space\nand \xff", KeyFormat::Any).is_ok());
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
    }
}
