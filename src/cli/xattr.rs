//! Extended attributes, for export and import through a mount: on the
//! descriptor where it matters, so they are the version that was opened
//! (or the one being written), never a name looked up again.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The value of `name`; `Ok(None)` when the file has no such attribute.
pub fn get(f: &File, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cname = CString::new(name).map_err(io::Error::other)?;
    read_value(|buf| {
        // SAFETY: a valid descriptor, a C string, and a buffer of the length given.
        unsafe {
            libc::fgetxattr(
                f.as_raw_fd(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
}

/// The value of `name` of the file at `path` (not followed if a symlink);
/// `Ok(None)` when it has no such attribute.
pub fn get_path(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let cname = CString::new(name).map_err(io::Error::other)?;
    read_value(|buf| {
        // SAFETY: two C strings, and a buffer of the length given.
        unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
}

/// One attribute's value through `call` (a get*xattr into the buffer),
/// growing the buffer while the value does not fit (up to 1 MiB).
fn read_value(call: impl Fn(&mut [u8]) -> isize) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = call(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 16, 0),
            _ => return Err(e),
        }
    }
}

/// Sets `name` to `value`.
pub fn set(f: &File, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a valid descriptor, a C string, and a buffer of the length given.
    let r = unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The names of the file's attributes.
pub fn list(f: &File) -> io::Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: a valid descriptor and a buffer of the length given.
        let n = unsafe { libc::flistxattr(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf
                .split(|&b| b == 0)
                .filter(|n| !n.is_empty())
                .map(<[u8]>::to_vec)
                .collect());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 16, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    }
}

/// The entry's own metadata: `user.*` but not cachefs's `user.cachefs.*`.
pub fn is_users(name: &[u8]) -> bool {
    name.starts_with(b"user.") && !name.starts_with(b"user.cachefs.")
}
