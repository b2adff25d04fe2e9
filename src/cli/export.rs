//! `cachefs export`: the live entries of a cache into a portable archive
//! (see `archive.rs` for its layout), from a live mount or a backing dir.
//!
//! Through a mount (`--mount`, or the one cachefs mount there is) it reads
//! the mount's files: the daemon decides what is live with its current
//! policies, entries published by other daemons on the same backing dir
//! are there, and content comes back plain whatever its storage. The cost:
//! each export counts as a hit and refreshes the entry's recency, and each
//! entry is a few FUSE requests. A backing dir (`--backing`) is read
//! directly, read-only and without a lock, so it works beside a live
//! daemon too, without touching its counters or recency; the TTLs of
//! entries without one of their own then come from `--config`.
//!
//! Invariants: an entry's content is read whole and checked (its checksum
//! offline, the daemon's own checks through a mount) before its member is
//! written, so a damaged entry is reported and left out, never archived;
//! an archive written to FILE appears under its name only once complete.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use cachefs::store::SystemClock;
use cachefs::store::offline::{Access, OfflineStore};

use super::archive::{ArchiveWriter, Member};
use super::spool::Spool;
use super::{human_bytes, offline_config, progress, show_name, xattr};

/// Which entries go into the archive.
#[derive(Debug, Default)]
pub struct Filter {
    pub namespace: Option<Vec<u8>>,
    pub prefix: Option<Vec<u8>>,
    /// Only entries whose mtime is before this (nanoseconds).
    pub mtime_before: Option<i64>,
    /// Only entries whose mtime is at or after this.
    pub mtime_from: Option<i64>,
}

impl Filter {
    /// `--older-than`/`--newer-than` as ages from now.
    pub fn with_age(mut self, older: Option<Duration>, newer: Option<Duration>) -> Filter {
        let now = now_nanos();
        let ago = |d: Duration| now.saturating_sub(d.as_nanos().min(i64::MAX as u128) as i64);
        self.mtime_before = older.map(ago);
        self.mtime_from = newer.map(ago);
        self
    }

    fn wants_namespace(&self, ns: &[u8]) -> bool {
        self.namespace.as_ref().is_none_or(|n| n == ns)
    }

    fn wants_key(&self, key: &[u8]) -> bool {
        self.prefix.as_ref().is_none_or(|p| key.starts_with(p))
    }

    fn wants_mtime(&self, mtime: i64) -> bool {
        self.mtime_before.is_none_or(|t| mtime < t) && self.mtime_from.is_none_or(|t| mtime >= t)
    }
}

pub enum Source<'a> {
    Mount(&'a Path),
    Backing {
        dir: &'a Path,
        config: Option<&'a Path>,
    },
}

#[derive(Default, Serialize)]
struct Summary {
    entries: u64,
    /// Content bytes (logical sizes).
    bytes: u64,
    /// The compressed archive's size.
    archive_bytes: u64,
    /// Entries that could not be read (damaged, or an I/O error): left out.
    unreadable: u64,
    seconds: f64,
}

/// What the export writes into: FILE (under a temporary name until
/// complete) or stdout.
enum Out {
    File(io::BufWriter<File>),
    Stdout(io::Stdout),
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::File(file) => file.write(buf),
            Out::Stdout(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::File(file) => file.flush(),
            Out::Stdout(s) => s.flush(),
        }
    }
}

pub fn run(source: Source, filter: &Filter, to: &Path, level: i32, json: bool) -> Result<ExitCode> {
    let start = Instant::now();
    let to_stdout = to.as_os_str() == "-";
    let mut partial = Partial(None);
    let out = if to_stdout {
        if io::stdout().is_terminal() {
            bail!("refusing to write an archive to a terminal (give FILE, or redirect stdout)");
        }
        Out::Stdout(io::stdout())
    } else {
        let mut tmp = to.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = PathBuf::from(tmp);
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        partial.0 = Some(tmp);
        Out::File(io::BufWriter::with_capacity(1 << 20, file))
    };
    let mut ar = ArchiveWriter::new(out, level).context("cannot start the archive")?;
    let mut sum = Summary::default();
    let mut bad = |what: String, why: String| -> io::Result<()> {
        // Summed up at the end; each is one line now, beside the progress bar.
        eprintln!("cachefs: cannot export {what}: {why}");
        Ok(())
    };
    match source {
        Source::Mount(mnt) => from_mount(mnt, filter, &mut ar, &mut sum, &mut bad)?,
        Source::Backing { dir, config } => {
            let store = OfflineStore::open(
                dir,
                Access::ReadOnly,
                offline_config(config)?,
                Arc::new(SystemClock),
            )?;
            from_backing(&store, filter, &mut ar, &mut sum, &mut bad)?;
        }
    }
    sum.archive_bytes = ar.finish().context("cannot finish the archive")?;
    sum.seconds = start.elapsed().as_secs_f64();
    // The archive is complete only once it is under its name.
    if !to_stdout {
        publish_file(to)?;
        partial.0 = None;
    }
    report(&sum, json, to_stdout)?;
    Ok(if sum.unreadable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// FILE.partial, removed unless the export completes: a failed export
/// leaves no file behind.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Moves FILE.partial to FILE once it is complete and synced.
fn publish_file(to: &Path) -> Result<()> {
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".partial");
    let f = File::open(&tmp).with_context(|| format!("cannot reopen {}", to.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot sync {}", to.display()))?;
    fs::rename(&tmp, to).with_context(|| format!("cannot rename the archive to {}", to.display()))
}

fn report(sum: &Summary, json: bool, to_stderr: bool) -> Result<()> {
    let line = if json {
        serde_json::to_string(sum)?
    } else {
        let rate = sum.entries as f64 / sum.seconds.max(1e-9);
        format!(
            "exported {} entries ({}) into {} in {:.1}s ({:.0} entries/s){}",
            sum.entries,
            human_bytes(sum.bytes),
            human_bytes(sum.archive_bytes),
            sum.seconds,
            rate,
            if sum.unreadable > 0 {
                format!("; {} unreadable, left out", sum.unreadable)
            } else {
                String::new()
            }
        )
    };
    if to_stderr {
        eprintln!("{line}");
    } else {
        outln!("{line}")?;
    }
    Ok(())
}

type Bad<'a> = dyn FnMut(String, String) -> io::Result<()> + 'a;

fn from_backing<W: Write>(
    store: &OfflineStore,
    filter: &Filter,
    ar: &mut ArchiveWriter<W>,
    sum: &mut Summary,
    bad: &mut Bad<'_>,
) -> Result<()> {
    let files = store.entry_files();
    let pb = progress(files.len() as u64, "exporting");
    let now = store.now();
    for path in &files {
        pb.inc(1);
        // The trailer alone decides most filters: no content read for those.
        let rec = match store.read_entry(path) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(b) => {
                sum.unreadable += 1;
                pb.suspend(|| bad(b.path.display().to_string(), b.why))?;
                continue;
            }
        };
        if !(filter.wants_namespace(&rec.namespace)
            && filter.wants_key(&rec.key)
            && filter.wants_mtime(rec.mtime)
            && rec.expires.is_none_or(|e| e > now))
        {
            continue;
        }
        let mut spool = Spool::empty();
        let (rec, digest) = match store.copy_content(path, &mut spool) {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(b) => {
                sum.unreadable += 1;
                let name = format!("{}/{}", show_name(&rec.namespace), show_name(&rec.key));
                pb.suspend(|| bad(name, b.why))?;
                continue;
            }
        };
        let m = Member {
            ttl: Some(rec.expires.map_or(0, |e| {
                // Whole seconds (the TTL's unit), never 0 (which is "never").
                (e.saturating_sub(rec.mtime).max(1) as u64).div_ceil(1_000_000_000)
            })),
            namespace: rec.namespace,
            key: rec.key,
            mtime: rec.mtime,
            mode: rec.mode,
            sha256: Some(digest),
            xattrs: Vec::new(),
        };
        spool.rewind()?;
        ar.append(&m, rec.logical_size, &mut spool)
            .context("cannot write the archive")?;
        sum.entries += 1;
        sum.bytes += rec.logical_size;
    }
    pb.finish_and_clear();
    Ok(())
}

fn from_mount<W: Write>(
    mnt: &Path,
    filter: &Filter,
    ar: &mut ArchiveWriter<W>,
    sum: &mut Summary,
    bad: &mut Bad<'_>,
) -> Result<()> {
    if !mnt.join(".cachefs").is_dir() {
        bail!(
            "{} is not a cachefs mount (for a backing dir, use --backing DIR)",
            mnt.display()
        );
    }
    let mut names = Vec::new();
    for (ns, is_dir) in sorted_dir(mnt).with_context(|| format!("cannot list {}", mnt.display()))? {
        if !is_dir || ns == b".cachefs" || !filter.wants_namespace(&ns) {
            continue;
        }
        walk(mnt, &ns, &[], filter, &mut names)?;
    }
    let pb = progress(names.len() as u64, "exporting");
    for (ns, key) in names {
        pb.inc(1);
        let path = entry_path(mnt, &ns, &key);
        let show = format!("{}/{}", show_name(&ns), show_name(&key));
        match read_through_mount(&path, ns, key, filter) {
            Ok(None) => {}
            Ok(Some((m, len, mut spool))) => {
                ar.append(&m, len, &mut spool)
                    .context("cannot write the archive")?;
                sum.entries += 1;
                sum.bytes += len;
            }
            Err(e) => {
                sum.unreadable += 1;
                pb.suspend(|| bad(show, e.to_string()))?;
            }
        }
    }
    pb.finish_and_clear();
    Ok(())
}

/// One entry read through the mount: `None` when it is gone (expired,
/// evicted, removed since the listing) or the filter leaves it out.
fn read_through_mount(
    path: &Path,
    namespace: Vec<u8>,
    key: Vec<u8>,
    filter: &Filter,
) -> io::Result<Option<(Member, u64, Spool)>> {
    let mut f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let md = f.metadata()?;
    let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
    if !md.is_file() || !filter.wants_mtime(mtime) {
        return Ok(None);
    }
    let ttl = match xattr::get(&f, "user.cachefs.ttl")? {
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok()),
        None => None,
    };
    let mut xattrs = Vec::new();
    for name in xattr::list(&f)? {
        if xattr::is_users(&name)
            && let Some(v) = xattr::get(&f, &String::from_utf8_lossy(&name))?
        {
            xattrs.push((name, v));
        }
    }
    let (spool, len, digest) = Spool::fill(&mut f, md.len())?;
    if len != md.len() {
        // A published version never changes: a short read is a fault.
        return Err(io::Error::other(format!(
            "read {len} bytes of {}",
            md.len()
        )));
    }
    let m = Member {
        namespace,
        key,
        mtime,
        ttl,
        mode: md.mode() & 0o7777,
        sha256: Some(digest),
        xattrs,
    };
    Ok(Some((m, len, spool)))
}

/// Collects the keys under MNT/NS/DIR (keys may be paths in a namespace),
/// by the types readdir gives: no stat per entry.
fn walk(
    mnt: &Path,
    ns: &[u8],
    dir: &[u8],
    filter: &Filter,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<()> {
    let at = entry_path(mnt, ns, dir);
    let names = match sorted_dir(&at) {
        Ok(n) => n,
        // A directory removed meanwhile has nothing left to export.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", at.display())),
    };
    for (name, is_dir) in names {
        let mut key = dir.to_vec();
        if !key.is_empty() {
            key.push(b'/');
        }
        key.extend_from_slice(&name);
        if is_dir {
            walk(mnt, ns, &key, filter, out)?;
        } else if filter.wants_key(&key) {
            // Anything else than a file is left out once opened.
            out.push((ns.to_vec(), key));
        }
    }
    Ok(())
}

/// Names in a directory, sorted, each with whether it is a directory.
fn sorted_dir(dir: &Path) -> io::Result<Vec<(Vec<u8>, bool)>> {
    let mut names = fs::read_dir(dir)?
        .map(|e| {
            let e = e?;
            let is_dir = e.file_type()?.is_dir();
            Ok((e.file_name().into_vec(), is_dir))
        })
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

fn entry_path(mnt: &Path, ns: &[u8], key: &[u8]) -> PathBuf {
    let mut p = mnt.join(std::ffi::OsStr::from_bytes(ns));
    if !key.is_empty() {
        p.push(std::ffi::OsStr::from_bytes(key));
    }
    p
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}
