//! The export archive: a tar stream (POSIX pax) compressed with zstd, so
//! `tar --zstd -tvf FILE` lists it and a plain `tar --zstd -xf FILE` gives
//! one readable file per entry, `NAMESPACE/KEY`.
//!
//! One member per entry: a pax extended header, then a regular file.
//!
//! ```text
//! path=NS/KEY                 the exact bytes (a key may hold any byte but '/' and NUL)
//! mtime=SECONDS.NANOS         the entry's mtime: its TTL clock's start
//! SCHILY.xattr.user.cachefs.ttl=SECONDS
//!                             mtime + ttl = expiry, kept as is across hosts; 0 = never
//! SCHILY.xattr.user.cachefs.sha256=HEX
//!                             the content's digest, checked on import
//! SCHILY.xattr.user.NAME=V    the entry's own user.* xattrs
//! ```
//!
//! cachefs's own records are written as the xattrs a mount shows
//! (`SCHILY.xattr.` is how GNU tar and libarchive carry xattrs): `tar`
//! reads them without a warning about unknown keywords, and `tar --xattrs
//! -xf` into a mount even sets the TTL (the read-only sha256 is refused).
//!
//! The ustar header keeps the mode and the mtime in seconds, and a name
//! that fits ustar (the path itself, or `cachefs-long-names/<sha256>` when
//! it does not fit): the pax `path` is the name every pax reader uses.
//! A member without the `user.cachefs.*` records (a tar made by hand from a
//! directory of files) imports with its namespace's TTL.
//!
//! Why the `tar` crate over a format of our own: the archive is meant to
//! outlive the tool (read it with `tar`, inspect it, seed from a tar of
//! files), and pax already carries arbitrary names, nanosecond mtimes and
//! xattrs. zstd (already in our base for compression) with its frame
//! checksum makes a truncated or damaged archive an error, not a short one.

use std::io::{self, BufRead, BufReader, Read, Write};

use sha2::{Digest, Sha256};

const PAX_TTL: &str = "SCHILY.xattr.user.cachefs.ttl";
const PAX_SHA256: &str = "SCHILY.xattr.user.cachefs.sha256";
const PAX_XATTR: &str = "SCHILY.xattr.";
const LONG_NAMES: &str = "cachefs-long-names";
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// One entry as the archive describes it.
#[derive(Debug, Clone, Default)]
pub struct Member {
    pub namespace: Vec<u8>,
    pub key: Vec<u8>,
    /// Nanoseconds since the epoch.
    pub mtime: i64,
    /// Seconds from mtime to expiry: `Some(0)` never, `None` unknown (the
    /// target namespace's TTL applies).
    pub ttl: Option<u64>,
    pub mode: u32,
    pub sha256: Option<[u8; 32]>,
    /// `user.*` xattrs, full names.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Member {
    /// When the entry expires, in nanoseconds (`None`: never or unknown).
    pub fn expires(&self) -> Option<i64> {
        match self.ttl {
            Some(0) | None => None,
            Some(s) => Some(
                self.mtime
                    .saturating_add((s as i64).saturating_mul(1_000_000_000)),
            ),
        }
    }
}

/// Writes members into a zstd-compressed tar stream.
pub struct ArchiveWriter<W: Write> {
    tar: tar::Builder<zstd::Encoder<'static, CountingWriter<W>>>,
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(out: W, level: i32) -> io::Result<ArchiveWriter<W>> {
        let mut enc = zstd::Encoder::new(CountingWriter { inner: out, n: 0 }, level)?;
        enc.include_checksum(true)?;
        let mut tar = tar::Builder::new(enc);
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(ArchiveWriter { tar })
    }

    /// Appends one entry whose content (`len` bytes) `content` yields.
    pub fn append(&mut self, m: &Member, len: u64, content: &mut dyn Read) -> io::Result<()> {
        let mut path = m.namespace.clone();
        path.push(b'/');
        path.extend_from_slice(&m.key);
        let mtime = format!(
            "{}.{:09}",
            m.mtime.div_euclid(1_000_000_000),
            m.mtime.rem_euclid(1_000_000_000)
        );
        let ttl = m.ttl.map(|t| t.to_string());
        let sha = m.sha256.map(|d| hex(&d));
        let xattr_keys: Vec<(String, &[u8])> = m
            .xattrs
            .iter()
            .map(|(n, v)| {
                (
                    format!("{PAX_XATTR}{}", String::from_utf8_lossy(n)),
                    v.as_slice(),
                )
            })
            .collect();
        let mut pax: Vec<(&str, &[u8])> = vec![("path", &path), ("mtime", mtime.as_bytes())];
        if let Some(t) = &ttl {
            pax.push((PAX_TTL, t.as_bytes()));
        }
        if let Some(s) = &sha {
            pax.push((PAX_SHA256, s.as_bytes()));
        }
        pax.extend(xattr_keys.iter().map(|(k, v)| (k.as_str(), *v)));
        self.tar.append_pax_extensions(pax)?;

        let mut h = tar::Header::new_ustar();
        let plain = std::str::from_utf8(&path)
            .ok()
            .filter(|p| p.len() < 100 && !p.contains('\\'));
        if plain.is_none_or(|p| h.set_path(p).is_err()) {
            h.set_path(format!("{LONG_NAMES}/{}", hex(&Sha256::digest(&path))))?;
        }
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(len);
        h.set_mode(m.mode & 0o7777);
        h.set_mtime(m.mtime.max(0) as u64 / 1_000_000_000);
        h.set_cksum();
        self.tar.append(&h, content.take(len))
    }

    /// Ends the tar stream and the zstd frame; returns the bytes written.
    pub fn finish(self) -> io::Result<u64> {
        let enc = self.tar.into_inner()?;
        let mut out = enc.finish()?;
        out.flush()?;
        Ok(out.n)
    }
}

/// Counts the compressed bytes written (the archive's size, for stdout too).
pub struct CountingWriter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a member of the archive turned out to be.
pub enum MemberKind {
    /// An entry and its content.
    Entry(Member, u64),
    /// A directory, a link or anything else an entry cannot be.
    Other,
}

/// A pax header larger than this is not one of ours: refused, not buffered.
const MAX_PAX: u64 = 16 << 20;

/// Reads a zstd-compressed tar stream member by member, calling `each`
/// with what each member is and a reader of its content; fails at once
/// when `src` is not zstd, and at the end when the compressed stream is
/// cut short or damaged (zstd's frame checksum), even if the tar stream
/// looked complete.
///
/// pax headers are parsed here, not by the `tar` crate: its parser splits
/// records at newlines, and a key may hold one (records are
/// length-prefixed precisely so that values may).
pub fn read_members<R: Read>(
    src: R,
    mut each: impl FnMut(MemberKind, &mut dyn Read) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let damaged = "the archive is damaged or cut short";
    let mut buf = BufReader::new(src);
    let head = buf.fill_buf()?;
    if head.len() < 4 || head[..4] != ZSTD_MAGIC {
        anyhow::bail!(
            "not a cachefs archive (not zstd-compressed; make one with `cachefs export`)"
        );
    }
    let mut ar = tar::Archive::new(zstd::Decoder::with_buffer(buf)?);
    let mut pax: Option<Vec<u8>> = None;
    let mut long_name: Option<Vec<u8>> = None;
    for member in ar.entries().context(damaged)?.raw(true) {
        let mut e = member.context(damaged)?;
        let typ = e.header().entry_type();
        if typ.is_pax_local_extensions() || typ.is_gnu_longname() || typ.is_pax_global_extensions()
        {
            if e.size() > MAX_PAX {
                anyhow::bail!("{damaged}: a {} byte extended header", e.size());
            }
            let mut data = Vec::with_capacity(e.size() as usize);
            e.read_to_end(&mut data).context(damaged)?;
            if typ.is_pax_local_extensions() {
                pax = Some(data);
            } else if typ.is_gnu_longname() {
                if data.last() == Some(&0) {
                    data.pop();
                }
                long_name = Some(data);
            }
            continue;
        }
        let kind = describe(&e, pax.take().as_deref(), long_name.take()).context(damaged)?;
        each(kind, &mut e)?;
    }
    // The tar stream may end before the compressed one does: read to its
    // end, so that a cut archive is an error here, not a quiet short one.
    io::copy(&mut ar.into_inner(), &mut io::sink()).context(damaged)?;
    Ok(())
}

/// Decodes one member's headers into what it is; its content is left to read.
fn describe<R: Read>(
    e: &tar::Entry<'_, R>,
    pax: Option<&[u8]>,
    long_name: Option<Vec<u8>>,
) -> io::Result<MemberKind> {
    let mut path = long_name.unwrap_or_else(|| e.header().path_bytes().into_owned());
    let typ = e.header().entry_type();
    let mut m = Member {
        mode: e.header().mode().unwrap_or(0o644) & 0o7777,
        mtime: (e
            .header()
            .mtime()
            .unwrap_or(0)
            .min(i64::MAX as u64 / 1_000_000_000) as i64)
            * 1_000_000_000,
        ..Member::default()
    };
    let mut size = e.header().size()?;
    let mut mtime_text = None;
    let mut ttl_text = None;
    let mut sha_text = None;
    for (k, v) in pax_records(pax.unwrap_or_default())? {
        match k {
            b"path" => path = v.to_vec(),
            b"size" => size = parse_num(v).ok_or_else(|| bad(&path, "size"))?,
            b"mtime" => mtime_text = Some(v),
            _ if k == PAX_TTL.as_bytes() => ttl_text = Some(v),
            _ if k == PAX_SHA256.as_bytes() => sha_text = Some(v),
            _ => {
                if let Some(name) = k.strip_prefix(PAX_XATTR.as_bytes())
                    && super::xattr::is_users(name)
                {
                    m.xattrs.push((name.to_vec(), v.to_vec()));
                }
            }
        }
    }
    if let Some(v) = mtime_text {
        m.mtime = std::str::from_utf8(v)
            .ok()
            .and_then(parse_pax_time)
            .ok_or_else(|| bad(&path, "mtime"))?;
    }
    if let Some(v) = ttl_text {
        m.ttl = Some(parse_num(v).ok_or_else(|| bad(&path, "ttl"))?);
    }
    if let Some(v) = sha_text {
        m.sha256 = Some(
            std::str::from_utf8(v)
                .ok()
                .and_then(unhex)
                .ok_or_else(|| bad(&path, "sha256"))?,
        );
    }
    if !(typ.is_file() || typ == tar::EntryType::Continuous) {
        return Ok(MemberKind::Other);
    }
    let rel = path.strip_prefix(b"./").unwrap_or(&path);
    let Some(slash) = rel.iter().position(|&b| b == b'/') else {
        return Ok(MemberKind::Other);
    };
    m.namespace = rel[..slash].to_vec();
    m.key = rel[slash + 1..].to_vec();
    Ok(MemberKind::Entry(m, size))
}

fn bad(path: &[u8], what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "member {}: bad {what}",
            String::from_utf8_lossy(path).escape_debug()
        ),
    )
}

/// pax records: "LEN KEY=VALUE\n", LEN counting the whole record, so a
/// value may hold any byte, newlines included.
fn pax_records(mut data: &[u8]) -> io::Result<Vec<(&[u8], &[u8])>> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed pax header");
    let mut out = Vec::new();
    while !data.is_empty() {
        let sp = data.iter().position(|&b| b == b' ').ok_or_else(malformed)?;
        let len = parse_num(&data[..sp]).ok_or_else(malformed)? as usize;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(malformed());
        }
        let record = &data[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(malformed)?;
        out.push((&record[..eq], &record[eq + 1..]));
        data = &data[len..];
    }
    Ok(out)
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// pax times: "SECONDS[.FRACTION]", possibly negative.
fn parse_pax_time(t: &str) -> Option<i64> {
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits = frac
        .bytes()
        .take(9)
        .map(|b| i64::from(b - b'0'))
        .collect::<Vec<_>>();
    digits.resize(9, 0);
    let nanos = digits.iter().fold(0i64, |acc, d| acc * 10 + d);
    let nanos = if t.starts_with('-') { -nanos } else { nanos };
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::spool::Spool;

    #[test]
    fn members_round_trip_with_any_key_bytes() {
        let mut out = Vec::new();
        let keys: Vec<Vec<u8>> = vec![
            b"plain".to_vec(),
            vec![0xff, b'\\', b'\n', 0x01, b'.'],
            vec![b'k'; 255],
        ];
        let mut w = ArchiveWriter::new(&mut out, 3).unwrap();
        for (i, k) in keys.iter().enumerate() {
            let content = vec![i as u8; i * 1000];
            let m = Member {
                namespace: b"ns".to_vec(),
                key: k.clone(),
                mtime: 1_700_000_000_123_456_789 + i as i64,
                ttl: Some(i as u64 * 60),
                mode: 0o640,
                sha256: Some(Sha256::digest(&content).into()),
                xattrs: vec![(b"user.etag".to_vec(), b"\"x\"".to_vec())],
            };
            w.append(&m, content.len() as u64, &mut &content[..])
                .unwrap();
        }
        w.finish().unwrap();
        let mut seen = 0;
        read_members(&out[..], |kind, content| {
            let i = seen;
            let MemberKind::Entry(m, len) = kind else {
                panic!("member {i} is not an entry");
            };
            assert_eq!((m.namespace.as_slice(), &m.key), (&b"ns"[..], &keys[i]));
            assert_eq!(m.mtime, 1_700_000_000_123_456_789 + i as i64);
            assert_eq!(
                (m.ttl, m.mode, len),
                (Some(i as u64 * 60), 0o640, i as u64 * 1000)
            );
            assert_eq!(m.xattrs, vec![(b"user.etag".to_vec(), b"\"x\"".to_vec())]);
            let (_, n, digest) = Spool::fill(content, len).unwrap();
            assert_eq!((n, Some(digest)), (len, m.sha256));
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, keys.len());
    }

    #[test]
    fn not_zstd_is_refused_at_once() {
        let e = read_members(&b"hello, not an archive"[..], |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("not a cachefs archive"), "{e}");
    }

    #[test]
    fn pax_times_parse() {
        assert_eq!(parse_pax_time("12.5"), Some(12_500_000_000));
        assert_eq!(parse_pax_time("12"), Some(12_000_000_000));
        assert_eq!(parse_pax_time("1.0000000019"), Some(1_000_000_001));
        assert_eq!(parse_pax_time("x"), None);
    }
}
