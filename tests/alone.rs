//! A daemon alone on its backing dir answers a name its index does not
//! hold as a miss without looking at the backing dir, and its publishes
//! skip reading the others' change logs (README, "Several daemons on one
//! backing dir": alone). What must still hold: a key published or renamed
//! through a daemon that has just started beside it is read through it
//! right after that close() or rename() returned, on the same host
//! (notified) and through a bindfs view (another host: polled only), while
//! it serves misses on that very key.

#[path = "common/bindview.rs"]
mod bindview;
mod common;

use bindview::BindView;
use common::*;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Misses `path` through its mount in a loop until dropped (what keeps
/// the lone daemon answering that key from its index); counts them.
struct Misser {
    stop: Arc<AtomicBool>,
    misses: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Misser {
    fn start(path: PathBuf) -> Misser {
        let stop = Arc::new(AtomicBool::new(false));
        let misses = Arc::new(AtomicU64::new(0));
        let (s, m) = (Arc::clone(&stop), Arc::clone(&misses));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match fs::File::open(&path) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        m.fetch_add(1, Ordering::Relaxed);
                    }
                    // Published: found, as it must be from now on.
                    _ => return,
                }
            }
        });
        Misser {
            stop,
            misses,
            thread: Some(thread),
        }
    }

    /// Waits until it has missed `n` more times (the lone daemon has
    /// answered the key from its index meanwhile).
    fn wait_misses(&self, n: u64) {
        let from = self.misses.load(Ordering::Relaxed);
        assert!(
            wait_until(Duration::from_secs(10), || self
                .misses
                .load(Ordering::Relaxed)
                >= from + n),
            "the misser stalled"
        );
    }
}

impl Drop for Misser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where the two daemons run: on one local dir (the lone daemon is told
/// of the newcomer's files by inotify), or the lone one on a bindfs view
/// of the newcomer's backing dir (another host: it learns by its polls
/// alone). Drop order: the mounts, then the view, then the dir.
struct Pair {
    a: Mount,
    b_backing: PathBuf,
    _view: Option<BindView>,
    _dir: tempfile::TempDir,
}

impl Pair {
    fn new(other_host: bool) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("backing");
        fs::create_dir(&real).unwrap();
        let view = other_host.then(|| BindView::of(&real));
        let a_backing = view.as_ref().map_or(real.clone(), |v| v.dir.path().into());
        let a = Mount::with_backing("", &a_backing);
        Pair {
            a,
            b_backing: real,
            _view: view,
            _dir: dir,
        }
    }

    /// The lone daemon misses `key` until it has surely surveyed and
    /// found itself alone (a lease renewed twice a second).
    fn settle_alone(&self, key: &str) -> Misser {
        let misser = Misser::start(self.a.path("ns", key));
        misser.wait_misses(100);
        std::thread::sleep(Duration::from_secs(1));
        misser.wait_misses(100);
        misser
    }
}

/// A first daemon alone serves misses on `ns/k`; a second daemon starts
/// and at once publishes `k`: the first reads it right after the close.
/// Then more keys, each missed through the first right before.
fn newcomer_publishes_while_the_lone_one_misses(other_host: bool) {
    let p = Pair::new(other_host);
    let a = &p.a;
    fs::create_dir(a.ns("ns")).unwrap();
    let misser = p.settle_alone("k");
    let b = Mount::with_backing("", &p.b_backing);
    sh(&format!("echo first > {}", b.path("ns", "k").display()));
    // Right after B's close() returned.
    assert_eq!(
        read_file(&a.path("ns", "k")).map_err(|e| e.to_string()),
        Ok(b"first\n".to_vec()),
        "A after B's first publish"
    );
    drop(misser);
    for round in 0..3 {
        let k = format!("k{round}");
        let m = Misser::start(a.path("ns", &k));
        m.wait_misses(50);
        sh(&format!("echo v{round} > {}", b.path("ns", &k).display()));
        assert_eq!(
            read_file(&a.path("ns", &k)).map_err(|e| e.to_string()),
            Ok(format!("v{round}\n").into_bytes()),
            "round {round}: A after B's publish"
        );
    }
}

#[test]
fn a_key_published_by_a_newcomer_is_read_through_a_lone_daemon_at_once() {
    if skip_without_fuse() {
        return;
    }
    newcomer_publishes_while_the_lone_one_misses(false);
}

#[test]
fn a_key_published_by_a_newcomer_on_another_host_is_read_through_a_lone_daemon_at_once() {
    if skip_without_fuse() {
        return;
    }
    newcomer_publishes_while_the_lone_one_misses(true);
}

/// A newcomer's first change may be a rename of a key the lone daemon
/// holds: the new name is found through the lone daemon right after.
fn newcomer_renames_while_the_lone_one_misses(other_host: bool) {
    let p = Pair::new(other_host);
    let a = &p.a;
    fs::create_dir(a.ns("ns")).unwrap();
    write_file(&a.path("ns", "old"), b"moved").unwrap();
    let misser = p.settle_alone("new");
    let b = Mount::with_backing("", &p.b_backing);
    fs::rename(b.path("ns", "old"), b.path("ns", "new")).unwrap();
    assert_eq!(
        read_file(&a.path("ns", "new")).map_err(|e| e.to_string()),
        Ok(b"moved".to_vec()),
        "A after B's rename"
    );
    drop(misser);
}

#[test]
fn a_key_renamed_by_a_newcomer_is_found_through_a_lone_daemon_at_once() {
    if skip_without_fuse() {
        return;
    }
    newcomer_renames_while_the_lone_one_misses(false);
}

#[test]
fn a_key_renamed_by_a_newcomer_on_another_host_is_found_through_a_lone_daemon_at_once() {
    if skip_without_fuse() {
        return;
    }
    newcomer_renames_while_the_lone_one_misses(true);
}

/// A daemon that was not alone becomes alone again when the other stops
/// (its last records read first), and not alone once more when a third
/// starts: through each change, a publish is read through the other
/// mount right after its close.
#[test]
fn company_comes_and_goes_and_publishes_are_always_seen() {
    if skip_without_fuse() {
        return;
    }
    let a = Mount::new("");
    fs::create_dir(a.ns("ns")).unwrap();
    {
        let mut b = Mount::with_backing("", &a.backing);
        write_file(&b.path("ns", "from-b"), b"b").unwrap();
        assert_eq!(read_file(&a.path("ns", "from-b")).unwrap(), b"b");
        assert!(b.stop().success());
    }
    // B's session is over: A surveys, finds itself alone again.
    let misser = Misser::start(a.path("ns", "from-c"));
    misser.wait_misses(100);
    std::thread::sleep(Duration::from_secs(1));
    misser.wait_misses(100);
    // What B published is still A's (read from its log, not forgotten).
    assert_eq!(read_file(&a.path("ns", "from-b")).unwrap(), b"b");
    let c = Mount::with_backing("", &a.backing);
    write_file(&c.path("ns", "from-c"), b"c").unwrap();
    assert_eq!(read_file(&a.path("ns", "from-c")).unwrap(), b"c");
    // And the other way: A's publish is read through C at once.
    write_file(&a.path("ns", "from-a"), b"a").unwrap();
    assert_eq!(read_file(&c.path("ns", "from-a")).unwrap(), b"a");
    drop(misser);
}
