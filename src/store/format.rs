//! The backing dir's `FORMAT` file: which format of backing dir this is.
//! Read as untrusted input: a bounded read that follows no symlink and
//! never blocks, and a check of exact bytes.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;

/// A FORMAT file longer than this is not ours; only this much is read.
const FORMAT_MAX: u64 = 64;

/// The first bytes of a FORMAT file. The backing dir is untrusted: no
/// symlink is followed, a FIFO does not block, and a huge file costs no
/// more than `FORMAT_MAX` bytes.
pub fn read_format(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Ok(b"(not a regular file)".to_vec());
    }
    let mut buf = Vec::new();
    f.take(FORMAT_MAX + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Whether FORMAT's bytes name this format; else what was found, for the
/// error line (printable, short).
pub fn check_format(bytes: &[u8]) -> Result<(), String> {
    let expected = format!("cachefs backing format {FORMAT_VERSION}\n");
    if bytes == expected.as_bytes() {
        return Ok(());
    }
    let shown: String = String::from_utf8_lossy(&bytes[..bytes.len().min(FORMAT_MAX as usize)])
        .trim()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    Err(shown)
}
