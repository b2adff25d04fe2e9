//! Entry content between reading and writing it: read once (from an
//! archive member, a mount's file or an entry file), hashed on the way, then
//! written out whole, so that nothing is written before it is checked. Up
//! to 64 MiB it stays in memory; beyond, in an unnamed temp file
//! (`O_TMPFILE`, gone with its descriptor).

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;

use sha2::{Digest, Sha256};

/// Content up to this size is held in memory between reading and writing
/// it; above it, in an unnamed temp file.
const SPOOL_IN_MEMORY: u64 = 64 << 20;

/// Content read once, hashed on the way, written out afterwards.
pub enum Spool {
    Memory(io::Cursor<Vec<u8>>),
    File(File),
}

impl Spool {
    /// Reads all of `src` (which says it holds `len` bytes).
    pub fn fill(src: &mut dyn Read, len: u64) -> io::Result<(Spool, u64, [u8; 32])> {
        let mut spool = if len <= SPOOL_IN_MEMORY {
            Spool::Memory(io::Cursor::new(Vec::with_capacity(len as usize)))
        } else {
            Spool::File(tmpfile()?)
        };
        let mut hashing = HashWriter {
            inner: &mut spool,
            hash: Sha256::new(),
            len: 0,
        };
        io::copy(src, &mut hashing)?;
        let (n, digest) = (hashing.len, hashing.hash.finalize().into());
        spool.rewind()?;
        Ok((spool, n, digest))
    }

    /// An empty spool to write content into (it moves into a temp file
    /// past 64 MiB).
    pub fn empty() -> Spool {
        Spool::Memory(io::Cursor::new(Vec::new()))
    }

    /// Back to the start, to read what was written.
    pub fn rewind(&mut self) -> io::Result<()> {
        match self {
            Spool::Memory(c) => c.set_position(0),
            Spool::File(f) => {
                f.rewind()?;
            }
        }
        Ok(())
    }
}

impl Read for Spool {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Spool::Memory(c) => c.read(buf),
            Spool::File(f) => f.read(buf),
        }
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Spool::Memory(c) = self
            && c.get_ref().len() as u64 + buf.len() as u64 > SPOOL_IN_MEMORY
        {
            let mut f = tmpfile()?;
            f.write_all(c.get_ref())?;
            *self = Spool::File(f);
        }
        match self {
            Spool::Memory(c) => c.write(buf),
            Spool::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct HashWriter<'a> {
    inner: &'a mut Spool,
    hash: Sha256,
    len: u64,
}

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A file with no name in the temp dir: nothing to clean up, whatever ends us.
fn tmpfile() -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(std::env::temp_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_spool_moves_to_a_temp_file_and_reads_back_whole() {
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut s = Spool::empty();
        for _ in 0..65 {
            s.write_all(&chunk).unwrap();
        }
        assert!(matches!(s, Spool::File(_)), "past 64 MiB it is a file");
        s.rewind().unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 65 << 20);
        assert!(back.chunks(1 << 20).all(|c| c == chunk.as_slice()));
        let (mut s2, n, digest) = Spool::fill(&mut &back[..], back.len() as u64).unwrap();
        assert_eq!(
            (n, digest),
            (back.len() as u64, Sha256::digest(&back).into())
        );
        let mut again = Vec::new();
        s2.read_to_end(&mut again).unwrap();
        assert!(again == back);
    }
}
