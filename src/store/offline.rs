//! Offline work on a backing dir, with no daemon: list (`inspect`), check
//! (`verify`, optionally quarantining) and `purge`.
//!
//! Invariants:
//! - Nothing is created: a backing dir that does not exist (or has no
//!   FORMAT file) is an error, never a new cache.
//! - Anything that changes entries (purge, quarantine) holds the backing
//!   dir's lock exclusively, so it refuses at once while a live daemon
//!   (which holds it shared) works on the dir, and a daemon cannot start
//!   in the middle of it. Read-only listing and checking take no lock.
//! - A file removed or quarantined here is also dropped from the index
//!   snapshot a clean stop left, so the next start neither lists it nor
//!   counts its bytes (the snapshot stays, keeping that start fast).
//! - Files are judged exactly as a daemon judges them: trailer, sizes,
//!   placement (`recover::inspect`), and content checksum.

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::clock::{Clock, UnixNanos};
use super::layout::{Layout, LayoutError, LockMode};
use super::purge::{PurgeFilter, PurgeReport};
use super::recover;
use crate::config::Config;
use crate::names::KeyFormat;
use crate::names::{Key, Namespace};

/// What an offline command may do to the backing dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only: works beside a live daemon.
    ReadOnly,
    /// Removes or moves entries: needs the dir to itself.
    Exclusive,
}

/// One valid entry, as its trailer describes it.
#[derive(Debug, Clone)]
pub struct EntryRecord {
    pub path: PathBuf,
    pub namespace: Vec<u8>,
    pub key: Vec<u8>,
    pub logical_size: u64,
    pub stored_bytes: u64,
    /// Publish time (or last touch): the TTL clock's start.
    pub mtime: UnixNanos,
    /// `None`: never expires.
    pub expires: Option<UnixNanos>,
    /// Permission bits.
    pub mode: u32,
}

/// A file that fails validation.
#[derive(Debug, Clone)]
pub struct BadEntry {
    pub path: PathBuf,
    /// (namespace, key) when the trailer is readable enough to say.
    pub names: Option<(Vec<u8>, Vec<u8>)>,
    pub why: String,
    /// Where `--quarantine` moved it.
    pub quarantined_to: Option<PathBuf>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub checked: u64,
    pub bad: Vec<BadEntry>,
}

pub struct OfflineStore {
    layout: Layout,
    config: Config,
    clock: Arc<dyn Clock>,
    _lock: Option<File>,
}

impl OfflineStore {
    /// Opens an existing backing dir; `config` supplies the TTL policies
    /// that decide expiry.
    pub fn open(
        root: &Path,
        access: Access,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<OfflineStore, LayoutError> {
        let layout = Layout::open_existing(root)?;
        let lock = match access {
            Access::ReadOnly => None,
            Access::Exclusive => Some(layout.lock(LockMode::Exclusive)?),
        };
        Ok(OfflineStore {
            layout,
            config,
            clock,
            _lock: lock,
        })
    }

    /// Every file in `data/`, in a stable order (shard by shard).
    pub fn entry_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let io = &self.layout.io;
        let list = |dir: &Path| recover::read_dir_sorted(io, dir).unwrap_or_default();
        for l1 in list(self.layout.data_dir()) {
            for l2 in list(&l1) {
                out.extend(list(&l2));
            }
        }
        out
    }

    /// Reads one entry's trailer (not its content). `Ok(None)`: the file
    /// vanished meanwhile (a live daemon evicted it).
    pub fn read_entry(&self, path: &Path) -> Result<Option<EntryRecord>, BadEntry> {
        if let Err(e) = fs::symlink_metadata(path)
            && e.kind() == io::ErrorKind::NotFound
        {
            return Ok(None);
        }
        let found = recover::inspect(&self.layout.io, path).map_err(|why| BadEntry {
            path: path.to_path_buf(),
            names: names_of(path),
            why,
            quarantined_to: None,
        })?;
        let h = &found.header;
        let expires = self.expires_of(h);
        Ok(Some(EntryRecord {
            path: path.to_path_buf(),
            namespace: h.namespace.clone(),
            key: h.key.clone(),
            logical_size: h.logical_size,
            stored_bytes: found.stored_bytes,
            mtime: h.mtime,
            expires,
            mode: h.mode & 0o7777,
        }))
    }

    /// Checks one entry completely: trailer, sizes, placement, content.
    pub fn verify_entry(&self, path: &Path) -> Result<Option<EntryRecord>, BadEntry> {
        let Some(rec) = self.read_entry(path)? else {
            return Ok(None);
        };
        let bad = |why: String| BadEntry {
            path: path.to_path_buf(),
            names: Some((rec.namespace.clone(), rec.key.clone())),
            why,
            quarantined_to: None,
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(e.to_string())),
        };
        let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        let io = &self.layout.io;
        let header = super::entry::read_header(io, &file, len).map_err(|e| bad(e.to_string()))?;
        // A compressed entry is decompressed and its plain bytes checked.
        super::compress::copy_plain(io, &file, &header, &mut io::sink())
            .map_err(|e| bad(e.to_string()))?;
        Ok(Some(rec))
    }

    /// Copies one entry's plain content into `out` and checks it against
    /// its checksum on the way; returns its record and the content's
    /// sha256. The one place an export reads entry content, so that it
    /// gets plain bytes whatever the entry's storage. On `Err` (a damaged
    /// entry) part of the content may already be in `out`: the caller
    /// drops what it holds. `Ok(None)`: the file vanished meanwhile.
    pub fn copy_content(
        &self,
        path: &Path,
        out: &mut dyn io::Write,
    ) -> Result<Option<(EntryRecord, [u8; 32])>, BadEntry> {
        let Some(rec) = self.read_entry(path)? else {
            return Ok(None);
        };
        let names = (rec.namespace.clone(), rec.key.clone());
        let bad = |why: String| BadEntry {
            path: path.to_path_buf(),
            names: Some(names.clone()),
            why,
            quarantined_to: None,
        };
        let file = match self.layout.io.open_nofollow(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(e.to_string())),
        };
        // The file opened may be a newer version than the trailer read
        // above: the trailer of this very file decides.
        let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        let io = &self.layout.io;
        let header = super::entry::read_header(io, &file, len).map_err(|e| bad(e.to_string()))?;
        let rec = EntryRecord {
            logical_size: header.logical_size,
            mtime: header.mtime,
            mode: header.mode & 0o7777,
            expires: self.expires_of(&header),
            ..rec
        };
        let digest =
            super::compress::copy_plain(io, &file, &header, out).map_err(|e| bad(e.to_string()))?;
        Ok(Some((rec, digest)))
    }

    /// Checks `files` (from `entry_files`); with `quarantine`, moves each
    /// bad one into `quarantine/`. `each` sees every file's outcome.
    pub fn verify(
        &self,
        files: &[PathBuf],
        quarantine: bool,
        mut each: impl FnMut(&Result<Option<EntryRecord>, BadEntry>),
    ) -> VerifyReport {
        let mut report = VerifyReport::default();
        let mut removed = false;
        for path in files {
            let mut outcome = self.verify_entry(path);
            if let Err(bad) = &mut outcome {
                if quarantine {
                    let to = self.layout.quarantine_path(path);
                    match fs::rename(path, &to) {
                        Ok(()) => {
                            bad.quarantined_to = Some(to);
                            removed = true;
                        }
                        Err(e) => bad.why = format!("{}; cannot quarantine: {e}", bad.why),
                    }
                }
                report.bad.push(bad.clone());
            }
            if !matches!(outcome, Ok(None)) {
                report.checked += 1;
            }
            each(&outcome);
        }
        self.forget_in_snapshot(removed);
        report
    }

    /// Removes the entries `filter` selects among `files`. Unreadable
    /// files are left alone (that is `verify`'s business). `tick` is
    /// called once per file.
    pub fn purge(
        &self,
        files: &[PathBuf],
        filter: &PurgeFilter,
        mut tick: impl FnMut(),
    ) -> io::Result<PurgeReport> {
        let now = self.clock.now();
        let mut report = PurgeReport::default();
        for path in files {
            tick();
            let Ok(Some(rec)) = self.read_entry(path) else {
                continue;
            };
            if filter
                .namespace
                .as_ref()
                .is_some_and(|ns| ns.as_bytes() != rec.namespace.as_slice())
                || !filter.under_prefix(&rec.key)
                || !filter.select.matches(rec.mtime, rec.expires, now)
            {
                continue;
            }
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            report.entries += 1;
            report.bytes += rec.stored_bytes;
        }
        self.forget_in_snapshot(report.entries > 0);
        if filter.removes_dirs()
            && let (Some(ns), Some(prefix)) = (&filter.namespace, &filter.prefix)
        {
            // `rm -r`: the directories made by mkdir under the prefix, and
            // the prefix's own, are markers; implied ones went with their
            // entries. Only directories are there, never followed.
            let marker = self
                .layout
                .dirs_dir()
                .join(std::ffi::OsStr::from_bytes(ns.as_bytes()))
                .join(std::ffi::OsStr::from_bytes(prefix.as_bytes()));
            if fs::symlink_metadata(&marker).is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(&marker)?;
            }
        }
        Ok(report)
    }

    /// Lists valid entries (of one namespace, or all), sorted by
    /// namespace then key; unreadable files are skipped.
    pub fn list(&self, files: &[PathBuf], namespace: Option<&[u8]>) -> Vec<EntryRecord> {
        let mut out: Vec<EntryRecord> = files
            .iter()
            .filter_map(|p| self.read_entry(p).ok().flatten())
            .filter(|r| namespace.is_none_or(|n| n == r.namespace.as_slice()))
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.key).cmp(&(&b.namespace, &b.key)));
        out
    }

    /// When an entry expires under this store's config (`None`: never).
    fn expires_of(&self, h: &super::entry::EntryHeader) -> Option<UnixNanos> {
        let ttl = match h.ttl_secs {
            Some(s) => Duration::from_secs(s),
            None => String::from_utf8(h.namespace.clone())
                .ok()
                .and_then(|n| self.config.namespaces.get(&n))
                .and_then(|p| p.ttl)
                .unwrap_or(self.config.cache.default_ttl),
        };
        (!ttl.is_zero()).then(|| {
            h.mtime
                .saturating_add(ttl.as_nanos().min(i64::MAX as u128) as i64)
        })
    }

    pub fn now(&self) -> UnixNanos {
        self.clock.now()
    }

    /// Drops entries whose file is gone from the clean-stop index
    /// snapshot, if there is one (a damaged file's names may not be
    /// readable, so the files decide, not the names).
    fn forget_in_snapshot(&self, removed_any: bool) {
        if !removed_any {
            return;
        }
        let Some(mut entries) = recover::take_snapshot(&self.layout) else {
            return;
        };
        entries.retain(|e| {
            match (
                Namespace::parse(&e.namespace),
                Key::parse(&e.key, KeyFormat::Any),
            ) {
                (Ok(ns), Ok(key)) => {
                    fs::symlink_metadata(self.layout.entry_path(&ns, &key)).is_ok()
                }
                _ => false,
            }
        });
        if let Err(e) = recover::save_snapshot(&self.layout, &entries) {
            // Without a snapshot the next start scans: slower, still right.
            log::warn!("cannot rewrite the index snapshot ({e}); the next start will scan");
        }
    }
}

/// The names a damaged file's trailer still gives, if it decodes at all.
fn names_of(path: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    let file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let h = super::entry::read_header(&super::backing::BackingIo::default(), &file, len).ok()?;
    Some((h.namespace, h.key))
}
