//! The store's errors: what a store operation or an open can fail with.

use std::io;

use super::LayoutError;
use crate::names::NameError;

/// Every way a store operation can fail; `fs` maps each to one errno.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such entry or namespace")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("entry is larger than its limit")]
    TooBig,
    #[error("no room can be made")]
    NoSpace,
    #[error("namespace or directory is not empty")]
    NotEmpty,
    #[error("is a directory")]
    IsDir,
    #[error("a directory on the key's path is an entry")]
    NotDir,
    #[error("namespace is named in the config")]
    Busy,
    #[error("new namespaces are not allowed")]
    NotPermitted,
    #[error("rename across namespaces")]
    CrossNamespace,
    #[error("invalid name: {0}")]
    InvalidName(#[from] NameError),
    #[error("invalid value")]
    InvalidValue,
    #[error("no such xattr")]
    NoAttr,
    #[error("xattr value over its limit")]
    ValueTooBig,
    #[error("backing I/O: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("backing dir {path}: {source}")]
    Io { path: String, source: io::Error },
}
