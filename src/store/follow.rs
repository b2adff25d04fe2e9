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

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::changes::{self, Record};
use super::{Change, Store};
use crate::names::{Key, Namespace};

/// Where this follower is in one daemon's log.
struct Cursor {
    ino: u64,
    offset: u64,
    /// Ticks the bytes at `offset` have failed their check.
    bad_ticks: u32,
}

impl Store {
    /// Starts sharing changes with the other daemons on the backing dir:
    /// this daemon's log, and a thread following the others' (woken by
    /// notifications, and every `poll`).
    pub fn share_changes(self: &Arc<Self>, poll: Duration) -> std::io::Result<()> {
        let dir = self.layout.root().join("changes");
        self.changes.start(&dir, self.layout.token())?;
        let mut cursors = HashMap::new();
        // What is in the logs now is in the backing dir already.
        for (token, path) in other_logs(&dir, self.layout.token()) {
            if let Ok(md) = std::fs::metadata(&path) {
                let c = Cursor {
                    ino: md.ino(),
                    offset: md.len(),
                    bad_ticks: 0,
                };
                cursors.insert(token, c);
            }
        }
        let (wake_tx, wake_rx) = channel::<()>();
        let watcher = watch(&dir, wake_tx.clone());
        let (stop_tx, stop_rx) = channel::<()>();
        let weak = Arc::downgrade(self);
        let t = std::thread::Builder::new()
            .name("follower".into())
            .spawn(move || run(&weak, &dir, cursors, poll, &wake_rx, &stop_rx, watcher))?;
        *crate::sync::lock(&self.follower.0) = Some((stop_tx, t));
        Ok(())
    }

    /// Looks at a key again (a record named it): the index follows what
    /// its backing path holds.
    fn recheck_key(&self, ns: &Namespace, key: &Key) {
        if self.find_namespace(ns).is_none() {
            return;
        }
        let known = self.lock().peek(ns, key);
        let r = match known {
            Some(seen) => match self
                .layout
                .io
                .stat_nofollow(&self.layout.entry_path(ns, key))
            {
                Ok(md) if md.ino() == seen.file_id && md.len() == seen.file_size => Ok(()),
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
    }
}

fn other_logs(dir: &Path, own: &str) -> Vec<(String, std::path::PathBuf)> {
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

/// Notifications for `dir`, where the filesystem gives them; `None` where
/// it cannot (the poll alone then).
fn watch(dir: &Path, wake: Sender<()>) -> Option<notify::INotifyWatcher> {
    use notify::Watcher;
    let w = notify::INotifyWatcher::new(
        move |_: notify::Result<notify::Event>| {
            let _ = wake.send(());
        },
        notify::Config::default(),
    );
    match w.and_then(|mut w| {
        w.watch(dir, notify::RecursiveMode::NonRecursive)
            .map(|()| w)
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            log::info!(
                "no change notifications for {} ({e}): polling",
                dir.display()
            );
            None
        }
    }
}

fn run(
    store: &Weak<Store>,
    dir: &Path,
    mut cursors: HashMap<String, Cursor>,
    poll: Duration,
    wake: &Receiver<()>,
    stop: &Receiver<()>,
    _watcher: Option<notify::INotifyWatcher>,
) {
    loop {
        match stop.try_recv() {
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
            _ => return,
        }
        let Some(s) = store.upgrade() else { return };
        let own = s.layout.token().to_owned();
        for (token, path) in other_logs(dir, &own) {
            let c = cursors.entry(token.clone()).or_insert(Cursor {
                ino: 0,
                offset: 0,
                bad_ticks: 0,
            });
            follow_log(&s, dir, &token, &path, c);
        }
        drop(s);
        match wake.recv_timeout(poll) {
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
/// generation if it rotated since) and applies it.
fn follow_log(s: &Store, dir: &Path, token: &str, path: &Path, c: &mut Cursor) {
    let Ok(md) = std::fs::metadata(path) else {
        return;
    };
    if c.ino != 0 && md.ino() != c.ino {
        let old = dir.join(format!("{token}.old"));
        match std::fs::metadata(&old) {
            Ok(o) if o.ino() == c.ino => {
                read_from(s, &old, c);
            }
            _ => {
                log::info!("missed a generation of {token}'s changes: looking at every key again");
                s.recheck_all();
            }
        }
        c.offset = 0;
        c.bad_ticks = 0;
    }
    c.ino = md.ino();
    if md.len() > c.offset {
        read_from(s, path, c);
    } else if md.len() < c.offset {
        c.offset = 0;
        s.recheck_all();
    }
}

fn read_from(s: &Store, path: &Path, c: &mut Cursor) {
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(c.offset))?;
        f.read_to_end(&mut bytes)
    });
    if let Err(e) = read {
        log::warn!("cannot read {}: {e}", path.display());
        return;
    }
    let d = changes::decode(&bytes);
    for r in &d.records {
        match r {
            Record::Key(ns, key) => s.recheck_key(ns, key),
            Record::Namespace(ns) => s.recheck_namespace(ns),
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
}
