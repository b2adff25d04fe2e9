//! The change log: how one daemon's changes reach the other daemons on the
//! backing dir (`changes/<session>.log`, one per daemon, appended by it
//! alone, read by the others: `follow.rs`).
//!
//! A record names what changed, never what it became: "key K of namespace
//! N" or "namespace N". The follower looks at the backing dir (the truth)
//! for each name it reads, so records may be late, repeated or read out of
//! order across logs without harm, and a follower that lost records (a
//! generation rotated away before it read it) only has to re-check what
//! it holds. Nothing here needs `flock` or a process the daemons share.
//!
//! Record: magic, kind, ns length (u8), key length (u16 LE), ns, key, an
//! FNV-1a 32 of all that (LE). A record is appended by one `write` from
//! this log's one writer thread; a reader takes only whole records whose
//! check holds, and waits for the rest (a network volume may show a file's
//! new size before its bytes).
//!
//! Invariants: a change is noted once it is made in the backing dir (the
//! log's thread may write the record at once, and a follower that looks
//! before the change takes the key for unchanged until the next record);
//! noting a change is a push into a buffer (callers hold the index lock); the write happens on the log's own thread, batched; a log
//! over `ROTATE_BYTES` becomes `<session>.old` (replacing the one before)
//! and a new log begins, so a log's size is bounded.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::names::{Key, Namespace};

const MAGIC: u8 = 0xc5;
const HEAD: usize = 5;
const CHECK: usize = 4;
/// A log this big is rotated (about 10^5 records of 64-hex keys).
pub(super) const ROTATE_BYTES: u64 = 8 << 20;

/// What a record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A key's version was published, replaced, changed, removed.
    Key(Namespace, Key),
    /// A namespace was made, removed, or its owner or mode changed.
    Namespace(Namespace),
    /// A directory of a namespace was made, removed or renamed (to or
    /// from this path): its marker under `dirs/` says which. Kind 3:
    /// a reader older than it skips it (unknown kinds name nothing).
    Dir(Namespace, Key),
}

fn fnv(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn encode(kind: u8, ns: &[u8], key: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.push(MAGIC);
    out.push(kind);
    out.push(ns.len() as u8);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(ns);
    out.extend_from_slice(key);
    let check = fnv(&out[start..]);
    out.extend_from_slice(&check.to_le_bytes());
}

/// What `decode` made of a log's bytes.
pub(super) struct Decoded {
    pub records: Vec<Record>,
    /// Bytes taken (whole, checked records, and any that named nothing
    /// valid); the rest waits for more.
    pub used: usize,
    /// The bytes at `used` are whole but fail their check: torn, or not
    /// yet visible.
    pub bad: bool,
}

pub(super) fn decode(bytes: &[u8]) -> Decoded {
    let mut records = Vec::new();
    let mut at = 0;
    let mut bad = false;
    while bytes.len() - at >= HEAD {
        let h = &bytes[at..];
        let (nl, kl) = (h[2] as usize, u16::from_le_bytes([h[3], h[4]]) as usize);
        let len = HEAD + nl + kl + CHECK;
        if h.len() < len {
            break;
        }
        let body = &h[..len - CHECK];
        let check = u32::from_le_bytes(h[len - CHECK..len].try_into().expect("4 bytes"));
        if h[0] != MAGIC || fnv(body) != check {
            bad = true;
            break;
        }
        let ns = Namespace::parse(&body[HEAD..HEAD + nl]);
        let key = Key::parse(&body[HEAD + nl..], crate::names::KeyFormat::Any);
        match (h[1], ns, key) {
            (1, Ok(ns), Ok(key)) => records.push(Record::Key(ns, key)),
            (2, Ok(ns), _) => records.push(Record::Namespace(ns)),
            (3, Ok(ns), Ok(path)) => records.push(Record::Dir(ns, path)),
            // A kind of a later version, or names this one refuses:
            // nothing to look at.
            _ => {}
        }
        at += len;
    }
    Decoded {
        records,
        used: at,
        bad,
    }
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    stop: bool,
}

/// The log file and where it stands; writes happen under its lock, so
/// records reach the file in the order they were taken from `pending`.
struct LogFile {
    file: File,
    written: u64,
    path: PathBuf,
    old: PathBuf,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    file: Mutex<Option<LogFile>>,
}

/// This daemon's log: noted changes, written behind by a thread, or at
/// once by `flush` (a publish: see `catch_up` in follow.rs).
#[derive(Default)]
pub(super) struct ChangeLog {
    shared: Arc<Shared>,
    /// Set once the log is started (a daemon's store; never an offline
    /// command's, whose changes no follower needs: it runs alone).
    thread: Mutex<Option<JoinHandle<()>>>,
    on: std::sync::atomic::AtomicBool,
}

impl ChangeLog {
    /// Starts writing `dir/<token>.log`.
    pub(super) fn start(&self, dir: &Path, token: &str) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{token}.log"));
        let old = dir.join(format!("{token}.old"));
        let file = open_log(&path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        *crate::sync::lock(&self.shared.file) = Some(LogFile {
            file,
            written,
            path,
            old,
        });
        let shared = Arc::clone(&self.shared);
        let thread = std::thread::Builder::new()
            .name("changes".into())
            .spawn(move || write_behind(&shared))?;
        *crate::sync::lock(&self.thread) = Some(thread);
        self.on.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn push(&self, kind: u8, ns: &Namespace, key: &[u8], wake: bool) {
        if !self.on.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut p = crate::sync::lock(&self.shared.pending);
        let was_empty = p.bytes.is_empty();
        encode(kind, ns.as_bytes(), key, &mut p.bytes);
        if was_empty && wake {
            self.shared.wake.notify_one();
        }
    }

    /// A key changed (any change the others must see).
    pub(super) fn key(&self, ns: &Namespace, key: &Key) {
        self.push(1, ns, key.as_bytes(), true);
    }

    /// A key changed, and the caller calls `flush` next: the writer
    /// thread is not woken for it (a wake-up per publish, on the other
    /// core, for a write the publish makes anyway).
    pub(super) fn key_flushed_by_caller(&self, ns: &Namespace, key: &Key) {
        self.push(1, ns, key.as_bytes(), false);
    }

    /// A namespace was made, removed or changed.
    pub(super) fn namespace(&self, ns: &Namespace) {
        self.push(2, ns, b"", true);
    }

    /// A directory was made or removed at `path` (see `Record::Dir`).
    pub(super) fn dir(&self, ns: &Namespace, path: &[u8]) {
        self.push(3, ns, path, true);
    }

    /// Writes what is noted now, on the caller's thread: a publish's
    /// record is in the file before its close() returns, so another
    /// daemon's next catch-up counts the entry in its quota.
    pub(super) fn flush(&self) {
        if self.on.load(std::sync::atomic::Ordering::Acquire) {
            flush(&self.shared);
        }
    }

    /// Writes what is noted and stops the thread.
    pub(super) fn stop(&self) {
        crate::sync::lock(&self.shared.pending).stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = crate::sync::lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_behind(shared: &Shared) {
    loop {
        let stop = {
            let mut p = crate::sync::lock(&shared.pending);
            while p.bytes.is_empty() && !p.stop {
                p = shared
                    .wake
                    .wait(p)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            p.stop
        };
        flush(shared);
        if stop {
            return;
        }
    }
}

/// Appends what is pending (one `write`) and rotates a log grown past
/// `ROTATE_BYTES`.
fn flush(shared: &Shared) {
    let mut f = crate::sync::lock(&shared.file);
    let bytes = std::mem::take(&mut crate::sync::lock(&shared.pending).bytes);
    let Some(log) = f.as_mut() else { return };
    if !bytes.is_empty() {
        if let Err(e) = log.file.write_all(&bytes) {
            // The others learn only through their polls of what they
            // hold and lookups: slower, still correct for what they
            // look up.
            log::warn!("cannot append to {}: {e}", log.path.display());
        }
        log.written += bytes.len() as u64;
    }
    if log.written > ROTATE_BYTES {
        match std::fs::rename(&log.path, &log.old).and_then(|()| open_log(&log.path)) {
            Ok(file) => {
                log.file = file;
                log.written = 0;
            }
            Err(e) => log::warn!("cannot rotate {}: {e}", log.path.display()),
        }
    }
}

/// Where this daemon is in each other daemon's log, by its token, and
/// the logs last listed with the `changes/` stamps they were listed at.
#[derive(Default)]
pub(super) struct Cursors {
    pub(super) at: HashMap<String, Cursor>,
    listed_at: Option<(i64, i64, i64, i64)>,
    logs: Vec<(String, std::path::PathBuf)>,
}

impl Cursors {
    /// The other daemons' logs: listed again when `full`, or when the
    /// directory changed since (a log made, rotated or removed: its
    /// mtime and ctime move; an append to a log moves neither), so a
    /// publish alone pays one `stat` of `changes/` when no other daemon
    /// is there. The follower's every tick lists in full (a network
    /// volume's client may cache the directory's times).
    pub(super) fn logs(
        &mut self,
        dir: &Path,
        own: &str,
        full: bool,
    ) -> Vec<(String, std::path::PathBuf)> {
        let stamps = std::fs::metadata(dir)
            .ok()
            .map(|m| (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()));
        if full || stamps.is_none() || stamps != self.listed_at {
            self.logs = other_logs(dir, own);
            self.listed_at = stamps;
        }
        self.logs.clone()
    }
}

/// Where this follower is in one daemon's log.
pub(super) struct Cursor {
    pub(super) ino: u64,
    pub(super) offset: u64,
    /// Ticks the bytes at `offset` have failed their check.
    pub(super) bad_ticks: u32,
}

/// The running follower: its stop signal and thread, and where it is in
/// each other daemon's log (shared with `catch_up`; `None` until sharing
/// starts).
#[derive(Default)]
pub(super) struct Follower {
    pub(super) thread: Mutex<Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>>,
    pub(super) cursors: Mutex<Option<Cursors>>,
    /// Wakes the follower from its wait (for a stop).
    pub(super) wake: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    /// Whether this daemon is alone on the backing dir (the follower's
    /// surveys say), and its hold as a newcomer.
    pub(super) company: super::sessions::Company,
}

impl Follower {
    pub(super) fn stop(&self) {
        if let Some((tx, t)) = crate::sync::lock(&self.thread).take() {
            drop(tx);
            // It waits up to a poll interval for a notification.
            if let Some(w) = crate::sync::lock(&self.wake).take() {
                let _ = w.send(());
            }
            // The follower itself may drop the store's last handle (it
            // holds one while it reads): it ends on its own then.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

pub(super) fn other_logs(dir: &Path, own: &str) -> Vec<(String, std::path::PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let token = name.as_bytes().strip_suffix(b".log")?;
            let token = std::str::from_utf8(token).ok()?.to_owned();
            (token != own).then(|| (token, e.path()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_waits() {
        let ns = Namespace::parse(b"news").unwrap();
        let key = Key::parse(b"espn-2026", crate::names::KeyFormat::Any).unwrap();
        let mut bytes = Vec::new();
        encode(1, ns.as_bytes(), key.as_bytes(), &mut bytes);
        encode(2, ns.as_bytes(), b"", &mut bytes);
        encode(3, ns.as_bytes(), b"a/b", &mut bytes);
        // A kind of a later version: skipped, not taken for damage.
        encode(9, ns.as_bytes(), b"x", &mut bytes);
        let whole = bytes.len();
        encode(1, ns.as_bytes(), key.as_bytes(), &mut bytes);
        let d = decode(&bytes[..bytes.len() - 1]);
        assert_eq!(
            d.records,
            vec![
                Record::Key(ns.clone(), key.clone()),
                Record::Namespace(ns.clone()),
                Record::Dir(
                    ns,
                    Key::parse(b"a/b", crate::names::KeyFormat::Any).unwrap()
                ),
            ]
        );
        assert_eq!(d.used, whole, "the incomplete record is left for later");
        assert!(!d.bad);
        // Zeros where a record should be (a size seen before the bytes).
        let mut zeros = bytes[..whole].to_vec();
        zeros.extend_from_slice(&[0u8; 20]);
        let d = decode(&zeros);
        assert_eq!((d.used, d.bad), (whole, true));
    }
}
