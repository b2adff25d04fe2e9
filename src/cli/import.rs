//! `cachefs import`: loads an archive made by `cachefs export` (or any
//! zstd-compressed tar of `NAMESPACE/KEY` files) into a live mount or a
//! backing dir, by the same rules as any write.
//!
//! Through a mount each entry is written as a user writes it: create,
//! write, `user.cachefs.ttl` and the mode and mtime on the descriptor,
//! then close() publishes it (quotas, key format and max_entry_bytes are
//! the daemon's to enforce; its refusal is the entry's). Into a backing
//! dir (`--backing`) the store's own write path does the same, holding the
//! dir as a daemon would; it refuses while a live daemon holds the dir.
//!
//! Invariants:
//! - A member's content is read whole and checked against its recorded
//!   sha256 before anything of it is written, so a damaged member stops
//!   the import with one error line and is never published; what was
//!   imported before it stays.
//! - An entry already present with the same digest is skipped, so a rerun
//!   after an interruption only does what is left. The expiry is absolute
//!   (mtime + TTL): an entry that expired on the way is skipped and counted.
//! - A refused entry (too big, no room, a bad name) is reported and
//!   counted; the import goes on and exits 1.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use cachefs::access::NsAccess;
use cachefs::store::offline::{Access, OfflineStore};
use cachefs::store::{
    Key, KeyFormat, LayoutError, Namespace, Owner, Store, SystemClock, WriteFrom,
};

use super::archive::{Member, MemberKind, hex, read_members};
use super::spool::Spool;
use super::{human_bytes, offline_config, show_name, xattr};

pub enum Target<'a> {
    Mount(&'a Path),
    Backing {
        dir: &'a Path,
        config: Option<&'a Path>,
    },
}

#[derive(Default, Serialize)]
struct Summary {
    imported: u64,
    /// Content bytes imported.
    bytes: u64,
    /// Already there with the same content: skipped.
    present: u64,
    /// Expired before they could be imported: skipped.
    expired: u64,
    /// Refused by the cache's rules (too big, no room, a bad name).
    refused: u64,
    /// Members that are not entries (directories, links...): skipped.
    not_entries: u64,
    /// `user.*` xattrs the target could not keep.
    xattrs_dropped: u64,
    seconds: f64,
}

/// Where entries go: a mount's files, or a store of a backing dir.
trait Sink {
    /// The digest of the entry `m` names, if it is there and live.
    fn present(&mut self, m: &Member) -> Option<[u8; 32]>;
    /// Writes the entry; `Ok(n)`: published, with `n` xattrs dropped.
    fn write(&mut self, m: &Member, len: u64, content: &mut Spool) -> Result<u64, String>;
    /// The end of the import (a store saves its index).
    fn finish(self: Box<Self>) -> Result<()>;
}

pub fn run(target: Target, from: &Path, json: bool) -> Result<ExitCode> {
    let start = Instant::now();
    let (input, total): (Box<dyn Read>, Option<u64>) = if from.as_os_str() == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let pb = progress_bar(total);
    let input = pb.wrap_read(input);
    let mut sink: Box<dyn Sink> = match target {
        Target::Mount(mnt) => {
            if !mnt.join(".cachefs").is_dir() {
                bail!(
                    "{} is not a cachefs mount (for a backing dir, use --backing DIR)",
                    mnt.display()
                );
            }
            Box::new(MountSink {
                mnt: mnt.to_path_buf(),
                absent: None,
                namespaces: HashSet::new(),
            })
        }
        Target::Backing { dir, config } => Box::new(StoreSink::open(dir, config)?),
    };
    let mut sum = Summary::default();
    let read = read_members(input, |kind, content| {
        let (mut m, len) = match kind {
            MemberKind::Entry(m, len) => (m, len),
            MemberKind::Other => {
                sum.not_entries += 1;
                return Ok(());
            }
        };
        let name = format!("{}/{}", show_name(&m.namespace), show_name(&m.key));
        let damaged = || format!("the archive is damaged or cut short: member {name}");
        let (mut spool, n, digest) = Spool::fill(content, len).with_context(damaged)?;
        if n != len {
            bail!("{}", damaged());
        }
        if m.sha256.is_some_and(|want| want != digest) {
            bail!("{} fails its checksum", damaged());
        }
        m.sha256 = Some(digest);
        if m.expires().is_some_and(|at| at <= now_nanos()) {
            sum.expired += 1;
            return Ok(());
        }
        if sink.present(&m) == Some(digest) {
            sum.present += 1;
            return Ok(());
        }
        match sink.write(&m, len, &mut spool) {
            Ok(dropped) => {
                sum.imported += 1;
                sum.bytes += len;
                sum.xattrs_dropped += dropped;
            }
            Err(why) => {
                sum.refused += 1;
                pb.suspend(|| eprintln!("cachefs: cannot import {name}: {why}"));
            }
        }
        Ok(())
    });
    // What was imported before a damaged member stays, and a store's
    // index is saved for the next start either way.
    sink.finish()?;
    read.with_context(|| from.display().to_string())?;
    pb.finish_and_clear();
    sum.seconds = start.elapsed().as_secs_f64();
    if json {
        outln!("{}", serde_json::to_string(&sum)?)?;
    } else {
        outln!(
            "imported {} entries ({}) in {:.1}s; {} already present, {} expired, {} refused{}",
            sum.imported,
            human_bytes(sum.bytes),
            sum.seconds,
            sum.present,
            sum.expired,
            sum.refused,
            [
                (sum.not_entries, "members that are not entries skipped"),
                (sum.xattrs_dropped, "user xattrs not kept"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!(", {n} {what}"))
            .collect::<String>()
        )?;
    }
    Ok(if sum.refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Compressed bytes read, against the file's size (a spinner for stdin);
/// drawn only on a terminal.
fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (pb, template) = match total {
        Some(len) => (
            ProgressBar::new(len),
            "importing [{bar:40}] {binary_bytes}/{binary_total_bytes} ({eta} left)",
        ),
        None => (
            ProgressBar::new_spinner(),
            "importing {spinner} {binary_bytes}",
        ),
    };
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

/// The mode of an entry while it is written (see `MountSink::write`).
const PENDING_MODE: u32 = 0o200;
/// An mtime that expires a pending entry under any TTL but "never"
/// (1 s after the epoch: 0 may read as "unset").
const BORN_EXPIRED_NANOS: i64 = 1_000_000_000;
const TTL_XATTR: &[u8] = b"user.cachefs.ttl";

struct MountSink {
    mnt: PathBuf,
    /// The last key `present` found absent.
    absent: Option<PathBuf>,
    /// Namespaces known to exist.
    namespaces: HashSet<Vec<u8>>,
}

impl MountSink {
    /// MNT/NS/KEY, for a namespace and key that are names (no `..` or
    /// empty component may lead out of the namespace).
    fn path(&self, m: &Member) -> Result<PathBuf, String> {
        Namespace::parse(&m.namespace).map_err(|e| format!("bad namespace: {e}"))?;
        for part in m.key.split(|&b| b == b'/') {
            Key::parse(part, KeyFormat::Any).map_err(|e| format!("bad key: {e}"))?;
        }
        let mut p = self.mnt.join(std::ffi::OsStr::from_bytes(&m.namespace));
        p.push(std::ffi::OsStr::from_bytes(&m.key));
        Ok(p)
    }
}

impl Sink for MountSink {
    fn present(&mut self, m: &Member) -> Option<[u8; 32]> {
        // By path, not by an open: an open would count a hit.
        let path = self.path(m).ok()?;
        self.absent = None;
        let v = match xattr::get_path(&path, "user.cachefs.sha256") {
            Ok(v) => v?,
            Err(e) => {
                if e.kind() == io::ErrorKind::NotFound {
                    self.absent = Some(path);
                }
                return None;
            }
        };
        let text = std::str::from_utf8(&v).ok()?;
        let same = m.sha256.filter(|d| hex(d) == text.trim())?;
        // The same bytes are not enough: an entry a killed import left
        // behind its 1 s guard has them too, and is about to expire. It
        // counts as present only if it lives as long as the archive says.
        let Some(ttl) = m.ttl else {
            return Some(same);
        };
        let expires = xattr::get_path(&path, "user.cachefs.expires").ok()??;
        let expires = std::str::from_utf8(&expires).ok()?.trim();
        let lasts = match (ttl, expires.parse::<i64>()) {
            (_, Err(_)) => expires == "never",
            (0, Ok(_)) => false,
            (_, Ok(at)) => at >= m.expires()? / 1_000_000_000 - 2,
        };
        lasts.then_some(same)
    }

    fn write(&mut self, m: &Member, len: u64, content: &mut Spool) -> Result<u64, String> {
        let path = self.path(m)?;
        let ns_dir = self.mnt.join(std::ffi::OsStr::from_bytes(&m.namespace));
        // A namespace that does not exist is made as `mkdir` makes one
        // (unless the config forbids it: then the entry is refused), once
        // per import, not once per entry.
        if !self.namespaces.contains(&m.namespace) {
            match fs::create_dir(&ns_dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(format!("cannot make its namespace: {e}"));
                }
                _ => {}
            }
            self.namespaces.insert(m.namespace.clone());
        }
        if let Some(parent) = path.parent().filter(|p| *p != ns_dir) {
            fs::create_dir_all(parent).map_err(|e| format!("cannot make its directory: {e}"))?;
        }
        // A killed import's descriptor is closed by the kernel, which
        // publishes what it holds: until the last byte is written the
        // entry is expired at birth, as the Python helper writes one: a
        // 1 s TTL and an mtime at the epoch. A write moves a pending
        // version's mtime to now (its last change), so the epoch is set
        // again after every write but the last; what is left is a death
        // right after a write, whose partial entry lives 1 s. The other
        // gap is between the create and the guard: an empty entry of mode
        // 0200 (no O_TRUNC at the open, so it never empties a live
        // version).
        // A key found absent is created exclusively: then there is
        // nothing to truncate (and a race with another writer falls back).
        let new = self.absent.take().is_some_and(|p| p == path);
        let open = |exclusive: bool| {
            fs::OpenOptions::new()
                .write(true)
                .create(!exclusive)
                .create_new(exclusive)
                .mode(PENDING_MODE)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
        };
        let (mut f, created) = match open(new) {
            Ok(f) => (f, new),
            Err(e) if new && e.kind() == io::ErrorKind::AlreadyExists => {
                (open(false).map_err(|e| e.to_string())?, false)
            }
            Err(e) => return Err(e.to_string()),
        };
        // Without a TTL of its own the entry keeps its namespace's (a TTL
        // set on a file being written cannot be removed): the epoch mtime
        // alone guards it, unless that TTL is 0.
        if m.ttl.is_some() {
            xattr::set(&f, TTL_XATTR, b"1").map_err(|e| format!("cannot set its TTL: {e}"))?;
        }
        let born_expired = |f: &File| {
            f.set_modified(to_system_time(BORN_EXPIRED_NANOS))
                .map_err(|e| e.to_string())
        };
        born_expired(&f)?;
        if !created {
            f.set_len(0).map_err(|e| e.to_string())?;
        }
        // Large writes: the mount's writers use direct I/O, so each write
        // is one FUSE request (io::copy would send 8 KiB at a time).
        let mut buf = vec![0u8; len.clamp(1, 1 << 20) as usize];
        let mut written = 0u64;
        loop {
            let n = content.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).map_err(|e| e.to_string())?;
            written += n as u64;
            if written < len {
                born_expired(&f)?;
            }
        }
        if let Some(ttl) = m.ttl {
            xattr::set(&f, TTL_XATTR, ttl.to_string().as_bytes())
                .map_err(|e| format!("cannot set its TTL: {e}"))?;
        }
        let mut dropped = 0;
        for (name, value) in &m.xattrs {
            match xattr::set(&f, name, value) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP | libc::EPERM)) => {
                    dropped += 1
                }
                Err(e) => return Err(format!("cannot set {}: {e}", show_name(name))),
            }
        }
        f.set_permissions(fs::Permissions::from_mode(m.mode & 0o7777))
            .map_err(|e| format!("cannot set its mode: {e}"))?;
        // The commit point, after every byte: the TTL clock starts at the
        // exported mtime.
        f.set_modified(to_system_time(m.mtime))
            .map_err(|e| format!("cannot set its mtime: {e}"))?;
        // close() is the publish, and says whether it failed (a File's
        // drop would not).
        // SAFETY: the descriptor is ours alone, taken out of the File, and
        // closed once.
        if unsafe { libc::close(f.into_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error().to_string());
        }
        Ok(dropped)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

struct StoreSink {
    store: Store,
    uid: u32,
    gid: u32,
    /// The owner and mode of a namespace the import makes: the importing
    /// user's, as `mkdir` makes one.
    ns_access: NsAccess,
}

impl StoreSink {
    fn open(dir: &Path, config: Option<&Path>) -> Result<StoreSink> {
        let config = offline_config(config)?;
        // Refuse while a daemon holds the dir: its index would not learn
        // of the entries, nor count their bytes in its quota.
        match OfflineStore::open(
            dir,
            Access::Exclusive,
            config.clone(),
            Arc::new(SystemClock),
        ) {
            Ok(_alone) => {}
            Err(LayoutError::Missing { .. }) => {} // a fresh dir: the store makes it
            Err(LayoutError::LockedLive { path }) => {
                bail!("a live cachefs daemon holds {path}: import through its mount instead")
            }
            Err(e) => return Err(e.into()),
        }
        let store = Store::open(dir, config, Arc::new(SystemClock))?;
        // SAFETY: getuid, getgid and umask cannot fail; the umask is put
        // back at once (nothing else runs in this process meanwhile).
        let (uid, gid, umask) = unsafe {
            let old = libc::umask(0o022);
            libc::umask(old);
            (libc::getuid(), libc::getgid(), old)
        };
        let ns_access = NsAccess {
            uid,
            gid,
            mode: 0o777 & !umask,
        };
        Ok(StoreSink {
            store,
            uid,
            gid,
            ns_access,
        })
    }
}

impl Sink for StoreSink {
    fn present(&mut self, m: &Member) -> Option<[u8; 32]> {
        let ns = Namespace::parse(&m.namespace).ok()?;
        let key = Key::parse(&m.key, KeyFormat::Any).ok()?;
        self.store.content_sha256(&ns, &key).ok()
    }

    fn write(&mut self, m: &Member, len: u64, content: &mut Spool) -> Result<u64, String> {
        let s = &self.store;
        let ns = Namespace::parse(&m.namespace).map_err(|e| format!("bad namespace: {e}"))?;
        let ns_id = match s.namespace_id(&ns) {
            Some(id) => id,
            None => {
                s.create_namespace(ns.as_bytes(), self.ns_access)
                    .map_err(|e| format!("cannot make its namespace: {e}"))?
                    .1
            }
        };
        let (ns, key) = s.resolve(ns_id, &m.key, true).map_err(|e| e.to_string())?;
        let owner = Owner {
            uid: self.uid,
            gid: self.gid,
            mode: m.mode & 0o7777,
        };
        let mut st = s
            .begin_write(&ns, &key, WriteFrom::Empty, owner)
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; len.clamp(1, 1 << 20) as usize];
        loop {
            let n = content.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            s.append_staged(&mut st, &buf[..n])
                .map_err(|e| e.to_string())?;
        }
        if let Some(ttl) = m.ttl {
            st.set_ttl(Some(ttl));
        }
        st.set_mtime(m.mtime);
        // What the entry cannot keep (not a user name, over a limit) is
        // counted as dropped, as through a mount.
        let dropped = st.keep_xattrs(&m.xattrs);
        s.publish(st).map_err(|e| e.to_string())?;
        Ok(dropped)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.store
            .save_snapshot()
            .context("cannot save the index snapshot")?;
        self.store.end_session();
        Ok(())
    }
}

fn to_system_time(nanos: i64) -> SystemTime {
    if nanos >= 0 {
        UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(nanos.unsigned_abs())
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}
