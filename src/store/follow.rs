//! Following the other daemons' change logs (`changes.rs`): each record
//! names a key or a namespace to look at again in the backing dir, and
//! what differs from the index is taken in (a new or replaced file, one
//! gone, a namespace made or removed), the listener told so the kernel
//! drops its dentries.
//!
//! When: at once on a change notification for `changes/` (inotify through
//! `notify`: another daemon on this host), and every `poll_interval`
//! whatever arrives (a network volume delivers no events for other hosts'
//! writes). A daemon that never gets an event is only slower to learn.
//!
//! Invariants: a log is read from where this follower left it; one that
//! appears after the start is read from its beginning, one present at the
//! start from its end (the index was, or is being, built from the backing
//! dir itself); a generation missed (rotated away unread) makes the
//! follower re-check every key it holds. Only the follower thread reads
//! logs; applying a record takes the index lock as a lookup does.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::changes::{self, Cursor, Cursors, Record, other_logs};
use super::sessions::{ALONE_LEASE, others_there};
use super::{Change, Store};
use crate::names::{Key, Namespace};

impl Store {
    /// Starts sharing changes with the other daemons on the backing dir:
    /// this daemon's log, and a thread following the others' (woken by
    /// notifications, and every `poll`).
    pub fn share_changes(self: &Arc<Self>, poll: Duration) -> std::io::Result<()> {
        let dir = self.layout.root().join("changes");
        self.changes.start(&dir, self.layout.token())?;
        let mut cursors = Cursors::default();
        // What is in the logs now is in the backing dir already.
        for (token, path) in other_logs(&dir, self.layout.token()) {
            if let Ok(md) = std::fs::metadata(&path) {
                let c = Cursor {
                    ino: md.ino(),
                    offset: md.len(),
                    bad_ticks: 0,
                };
                cursors.at.insert(token, c);
            }
        }
        // Others were here first: they may take themselves for alone
        // until their next survey sees this daemon (see `Company`).
        let looked = Instant::now();
        if self.others_there() {
            self.follower.company.newcomer(looked);
        }
        let (wake_tx, wake_rx) = channel::<()>();
        let watcher = Watch::start(
            self.layout.staging_dir(),
            &dir,
            self.layout.token(),
            wake_tx.clone(),
        );
        let (stop_tx, stop_rx) = channel::<()>();
        *crate::sync::lock(&self.follower.wake) = Some(wake_tx.clone());
        *crate::sync::lock(&self.follower.cursors) = Some(cursors);
        let weak = Arc::downgrade(self);
        let t = std::thread::Builder::new()
            .name("follower".into())
            .spawn(move || run(&weak, poll, &wake_rx, &stop_rx, watcher))?;
        *crate::sync::lock(&self.follower.thread) = Some((stop_tx, t));
        Ok(())
    }

    /// Reads what is new in every other daemon's log, now, on the
    /// caller's thread, and evicts if what they published puts the cache
    /// over its limits. A publish calls it before it decides what to
    /// evict and again once its own record is written, so the index
    /// knows every publish whose close() returned (see "One quota" in
    /// the README). Cheap when nothing is new: a readdir and a stat per
    /// log. Nothing when changes are not shared, or when this daemon is
    /// alone on the backing dir (no other log can grow: see `Company`).
    pub(super) fn catch_up(&self) {
        if self.follower.company.alone() {
            return;
        }
        self.catch_up_listing(false);
    }

    /// Waits, in a daemon that started beside others, until each of them
    /// knows it is not alone: called before a change that puts an entry
    /// at a path where none was (a publish, a rename), which an "alone"
    /// daemon would otherwise answer as a miss without looking.
    pub(super) fn wait_announced(&self) {
        self.follower.company.wait_announced();
    }

    /// Lists the sessions, then catches up with every log: alone for a
    /// lease when no other session is there (see `Company`). The listing
    /// comes first, so the last records of a daemon that stopped are read
    /// before this one takes itself for alone.
    fn survey(&self) {
        let at = Instant::now();
        let others = self.others_there();
        self.catch_up_listing(true);
        self.follower.company.surveyed(at, others);
    }

    /// Whether another session's file is in `staging/`. The directory is
    /// `stat`ed fresh first: a network volume's client lists a directory
    /// from its cache while the directory's cached times say unchanged.
    fn others_there(&self) -> bool {
        let staging = self.layout.staging_dir();
        let _ = self.layout.io.stat_fresh(staging);
        others_there(staging, self.layout.token())
    }

    /// Whether lookups may take the index's word alone: no other daemon,
    /// and the index whole.
    pub(super) fn index_is_truth(&self) -> bool {
        self.follower.company.alone() && self.rebuilt()
    }

    /// `catch_up`, listing `changes/` in full when `full`.
    fn catch_up_listing(&self, full: bool) {
        let mut guard = crate::sync::lock(&self.follower.cursors);
        let Some(cursors) = guard.as_mut() else {
            return;
        };
        let dir = self.layout.root().join("changes");
        let mut applied = false;
        for (token, path) in cursors.logs(&dir, self.layout.token(), full) {
            let c = cursors.at.entry(token.clone()).or_insert(Cursor {
                ino: 0,
                offset: 0,
                bad_ticks: 0,
            });
            applied |= follow_log(self, &dir, &token, &path, c);
        }
        drop(guard);
        if applied {
            self.trim_to_limits();
        }
    }

    /// Evicts what the limits no longer hold (entries other daemons
    /// published, taken in from their logs).
    fn trim_to_limits(&self) {
        let mut trash = Vec::new();
        {
            let mut idx = self.lock();
            let victims = idx.shrink_to_limits(self.clock.now());
            if victims.is_empty() {
                return;
            }
            self.move_to_trash_locked(&idx, victims, &mut trash);
        }
        self.changes.flush();
        self.dispose(trash);
    }

    /// Looks at a key again (a record named it): the index follows what
    /// its backing path holds.
    fn recheck_key(&self, ns: &Namespace, key: &Key) {
        if self.find_namespace(ns).is_none() {
            return;
        }
        let known = self.lock().peek(ns, key);
        let r = match known {
            // Fresh: a network volume's client (a FUSE view) may show the
            // file the record says changed as it was a moment ago.
            Some(seen) => match self.layout.io.stat_fresh(&self.layout.entry_path(ns, key)) {
                Ok(id) if id == (seen.file_id, seen.file_size) => Ok(()),
                _ => self.reconcile(ns, key, &seen),
            },
            None => self
                .adopt_from_backing(ns, key, self.clock.now())
                .map(|_| ()),
        };
        if let Err(e) = r {
            log::warn!("cannot look at {ns}/{key:?} again: {e}");
        }
    }

    /// Looks at a namespace again: made (its marker is there) or removed.
    fn recheck_namespace(&self, ns: &Namespace) {
        if self.layout.namespace_marker(ns).exists() {
            self.find_namespace(ns);
            return;
        }
        let mut idx = self.lock();
        let Some(state) = idx.namespace(ns) else {
            return;
        };
        // Entries this daemon still holds (records of their removal not
        // yet read) or one named in the config: it stays for now.
        if state.len() > 0 || state.from_config {
            return;
        }
        let id = state.id;
        self.index_changed_locked();
        idx.remove_namespace(ns);
        self.tell(Change::NamespaceRemoved { ns_id: id, ns });
    }

    /// Every key held looked at again (records were lost).
    fn recheck_all(&self) {
        let keys: Vec<(Namespace, Key)> = {
            let idx = self.lock();
            idx.namespaces()
                .flat_map(|(ns, s)| {
                    s.iter_lru()
                        .map(move |(k, _)| (ns.clone(), Key::from_index(&k)))
                })
                .collect()
        };
        for (ns, key) in keys {
            self.recheck_key(&ns, &key);
        }
        // And every directory made by mkdir (one made elsewhere meanwhile
        // is found by a lookup, through its marker; listed from the next
        // start).
        let dirs: Vec<(Namespace, Vec<u8>)> = {
            let idx = self.lock();
            idx.namespaces()
                .flat_map(|(ns, s)| {
                    let t = s.tree();
                    t.dirs_under(b"")
                        .into_iter()
                        .filter(|d| !d.is_empty() && t.node(d).is_some_and(|n| n.is_explicit()))
                        .map(move |d| (ns.clone(), d))
                })
                .collect()
        };
        for (ns, d) in dirs {
            if let Ok(path) = Key::parse(&d, crate::names::KeyFormat::Any) {
                self.recheck_dir(&ns, &path);
            }
        }
    }
}

/// A log whose session is over (its lock file gone: stopped, or found
/// dead and reaped) is removed once untouched this long: every follower
/// polling more often than this has read it by then.
const DEAD_LOG_GRACE: Duration = Duration::from_secs(60);

impl Store {
    /// Removes the logs of sessions that are over and were last written
    /// `DEAD_LOG_GRACE` ago, and forgets where this follower was in them.
    pub(super) fn remove_dead_logs(&self) {
        let dir = self.layout.root().join("changes");
        let staging = self.layout.staging_dir();
        let now = std::time::SystemTime::now();
        for (token, path) in other_logs(&dir, self.layout.token()) {
            if staging.join(format!("{token}.lock")).exists() {
                continue;
            }
            let idle = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > DEAD_LOG_GRACE));
            if !idle {
                continue;
            }
            let _ = std::fs::remove_file(dir.join(format!("{token}.old")));
            match std::fs::remove_file(&path) {
                Ok(()) => log::info!("removed the change log of ended session {token}"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
            }
            if let Some(c) = crate::sync::lock(&self.follower.cursors).as_mut() {
                c.at.remove(&token);
            }
        }
    }
}

/// Change notifications (inotify through `notify`, where the filesystem
/// gives them; none where it cannot: the polls alone then). `staging/`
/// is watched always (a session file made or removed: a daemon came or
/// went), `changes/` only while another daemon is there: the crate's
/// watch reports every open and append in the directory, this daemon's
/// own appends too (one per publish), and waking a thread for each cost
/// a lone daemon's publish about a tenth.
struct Watch {
    watcher: notify::INotifyWatcher,
    changes: std::path::PathBuf,
    watching_changes: bool,
}

impl Watch {
    fn start(staging: &Path, changes: &Path, own: &str, wake: Sender<()>) -> Option<Watch> {
        use notify::Watcher;
        let own: [std::ffi::OsString; 4] = [
            format!("{own}.log").into(),
            format!("{own}.old").into(),
            // Its heartbeat, every `HEARTBEAT`, and its staging dir.
            format!("{own}.lock").into(),
            own.into(),
        ];
        let w = notify::INotifyWatcher::new(
            move |ev: notify::Result<notify::Event>| {
                // Wakes for another daemon's doing, never for this
                // daemon's own appends and heartbeats nor for opens and
                // reads (the follower's own reads of the logs: woken by
                // them, it spun, a core's third for nothing).
                let idle = ev.as_ref().is_ok_and(|e| {
                    matches!(e.kind, notify::EventKind::Access(_))
                        || (!e.paths.is_empty()
                            && e.paths
                                .iter()
                                .all(|p| p.file_name().is_some_and(|n| own.iter().any(|o| o == n))))
                });
                if !idle {
                    let _ = wake.send(());
                }
            },
            notify::Config::default(),
        );
        let mut w = match w.and_then(|mut w| {
            w.watch(staging, notify::RecursiveMode::NonRecursive)
                .map(|()| w)
        }) {
            Ok(w) => Watch {
                watcher: w,
                changes: changes.to_path_buf(),
                watching_changes: false,
            },
            Err(e) => {
                log::info!(
                    "no change notifications for {} ({e}): polling",
                    staging.display()
                );
                return None;
            }
        };
        w.follow_changes(true);
        Some(w)
    }

    /// Watches `changes/` while others are there, not while alone. Says
    /// whether the watch was just added (what came before it must then
    /// be read by hand).
    fn follow_changes(&mut self, others: bool) -> bool {
        use notify::Watcher;
        if others == self.watching_changes {
            return false;
        }
        let r = if others {
            self.watcher
                .watch(&self.changes, notify::RecursiveMode::NonRecursive)
        } else {
            self.watcher.unwatch(&self.changes)
        };
        match r {
            Ok(()) => self.watching_changes = others,
            // The polls still find every change, only later.
            Err(e) => log::warn!("cannot watch {}: {e}", self.changes.display()),
        }
        others && self.watching_changes
    }
}

fn run(
    store: &Weak<Store>,
    poll: Duration,
    wake: &Receiver<()>,
    stop: &Receiver<()>,
    mut watch: Option<Watch>,
) {
    let mut cleaned = std::time::Instant::now();
    loop {
        match stop.try_recv() {
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
            _ => return,
        }
        let Some(s) = store.upgrade() else { return };
        s.survey();
        let alone = s.follower.company.alone();
        if watch.as_mut().is_some_and(|w| w.follow_changes(!alone)) {
            // Appended before the watch began: no event came for it.
            s.catch_up_listing(true);
        }
        // Alone, the lease is renewed well before it ends.
        let wait = if alone {
            poll.min(ALONE_LEASE / 2)
        } else {
            poll
        };
        if cleaned.elapsed() > DEAD_LOG_GRACE / 4 {
            s.remove_dead_logs();
            cleaned = std::time::Instant::now();
        }
        drop(s);
        match wake.recv_timeout(wait) {
            Ok(()) => while wake.try_recv().is_ok() {},
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if !matches!(stop.recv_timeout(poll), Err(RecvTimeoutError::Timeout)) {
                    return;
                }
            }
        }
    }
}

/// Reads what is new in one daemon's log (and the rest of its previous
/// generation if it rotated since) and applies it. Says whether anything
/// was applied.
fn follow_log(s: &Store, dir: &Path, token: &str, path: &Path, c: &mut Cursor) -> bool {
    // Fresh: a network volume's client (a FUSE view) shows a log's size
    // as it was up to its attribute cache's lifetime ago.
    let Ok((ino, len)) = s.layout.io.stat_fresh(path) else {
        return false;
    };
    let mut applied = false;
    if c.ino != 0 && ino != c.ino {
        let old = dir.join(format!("{token}.old"));
        match std::fs::metadata(&old) {
            Ok(o) if o.ino() == c.ino => {
                applied |= read_from(s, &old, c);
            }
            _ => {
                log::info!("missed a generation of {token}'s changes: looking at every key again");
                s.recheck_all();
                applied = true;
            }
        }
        c.offset = 0;
        c.bad_ticks = 0;
    }
    c.ino = ino;
    if len > c.offset {
        applied |= read_from(s, path, c);
    } else if len < c.offset {
        c.offset = 0;
        s.recheck_all();
        applied = true;
    }
    applied
}

fn read_from(s: &Store, path: &Path, c: &mut Cursor) -> bool {
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(c.offset))?;
        f.read_to_end(&mut bytes)
    });
    if let Err(e) = read {
        log::warn!("cannot read {}: {e}", path.display());
        return false;
    }
    let d = changes::decode(&bytes);
    for r in &d.records {
        match r {
            Record::Key(ns, key) => s.recheck_key(ns, key),
            Record::Namespace(ns) => s.recheck_namespace(ns),
            Record::Dir(ns, path) => s.recheck_dir(ns, path),
        }
    }
    c.offset += d.used as u64;
    if d.bad {
        c.bad_ticks += 1;
        // Not a size seen before its bytes (that settles in a tick or
        // two): torn by a crash. Its writer is gone; so is the rest.
        if c.bad_ticks > 3 {
            log::warn!(
                "{}: a damaged change record; skipping the rest",
                path.display()
            );
            c.offset += (bytes.len() - d.used) as u64;
            c.bad_ticks = 0;
            s.recheck_all();
        }
    } else {
        c.bad_ticks = 0;
    }
    !d.records.is_empty()
}
