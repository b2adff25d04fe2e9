//! The backing dir's `FORMAT` file: which format of backing dir this is.
//! Read as untrusted input: a bounded read that follows no symlink and
//! never blocks, and a check of exact bytes.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// 2: entries may be of entry format 2 (ctime, atime); 3: of entry
/// format 3 (dead trailers, renamed_from, user xattrs). An older daemon
/// would take those for damaged files and quarantine them, so a dir a
/// newer daemon has opened is marked with its format, which an older
/// daemon refuses to open; an older dir is upgraded by the first open
/// that may write.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this build reads.
pub const FORMAT_OLDEST: u32 = 1;

/// The exact bytes of a FORMAT file of `version`.
pub fn format_line(version: u32) -> String {
    format!("cachefs backing format {version}\n")
}

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

/// The format FORMAT's bytes name, if this build reads it; else what was
/// found, for the error line (printable, short).
pub fn check_format(bytes: &[u8]) -> Result<u32, String> {
    if let Some(v) = (FORMAT_OLDEST..=FORMAT_VERSION).find(|&v| bytes == format_line(v).as_bytes())
    {
        return Ok(v);
    }
    let shown: String = String::from_utf8_lossy(&bytes[..bytes.len().min(FORMAT_MAX as usize)])
        .trim()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    Err(shown)
}
