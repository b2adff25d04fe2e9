//! The one place a store failure becomes an errno. Matched exhaustively (no
//! `_ =>` arm) so a new failure forces a decision here.

use super::types::Errno;
use crate::store::{NameError, Store, StoreError};

pub fn errno(e: &StoreError) -> Errno {
    match e {
        StoreError::NotFound => Errno::ENOENT,
        StoreError::Exists => Errno::EEXIST,
        StoreError::TooBig => Errno::EFBIG,
        StoreError::NoSpace => Errno::ENOSPC,
        StoreError::NotEmpty => Errno::ENOTEMPTY,
        StoreError::IsDir => Errno::EISDIR,
        StoreError::NotDir => Errno::ENOTDIR,
        // A namespace named in the config is held by the config.
        StoreError::Busy => Errno::EBUSY,
        StoreError::NotPermitted => Errno::EPERM,
        // So that `mv` falls back to copy + unlink.
        StoreError::CrossNamespace => Errno::EXDEV,
        StoreError::InvalidName(n) => match n {
            NameError::TooLong => Errno::ENAMETOOLONG,
            NameError::Invalid | NameError::NotSha256 => Errno::EINVAL,
            NameError::Reserved => Errno::EPERM,
        },
        StoreError::InvalidValue => Errno::EINVAL,
        StoreError::NoAttr => Errno::ENODATA,
        StoreError::ValueTooBig => Errno::E2BIG,
        StoreError::Io(io) => match io.raw_os_error() {
            // The backing volume itself is full: the rare ENOSPC.
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Errno::ENOSPC,
            _ => {
                log::warn!("backing I/O error: {io}");
                Errno::EIO
            }
        },
    }
}

/// The errno of a failure; a backing I/O error is counted as one (the
/// only figure this layer records: the store cannot know which of its
/// I/O errors reach a caller).
pub fn counted_errno(store: &Store, e: &StoreError) -> Errno {
    let en = errno(e);
    if en == Errno::EIO {
        store.record_io_error();
    }
    en
}

/// The errno of a name that names nothing here: a name too long for any
/// file is ENAMETOOLONG everywhere, any other bad name is `bad`.
pub fn name_errno(e: &StoreError, bad: Errno) -> Errno {
    match e {
        StoreError::InvalidName(NameError::TooLong) => Errno::ENAMETOOLONG,
        StoreError::InvalidName(_) => bad,
        other => errno(other),
    }
}
