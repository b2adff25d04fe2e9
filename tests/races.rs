//! Races between separate processes that the store decides under one lock:
//! two or more exclusive creates (`O_CREAT|O_EXCL`) of one key, and a
//! `RENAME_NOREPLACE` racing an exclusive create of its target. Each round
//! releases long-lived worker processes together through a FIFO barrier
//! (every worker blocks reading one byte, the test writes one byte per
//! worker in a single write) and checks that exactly one side won, every
//! other side got EEXIST, and the key holds the winner's bytes.
//!
//! In "hold" rounds a winning creator keeps its file open, half written,
//! until every other worker has reported its own result, so the losers are
//! decided against a key that is claimed but not yet published; in "fast"
//! rounds everyone goes as fast as it can. Nothing sleeps to synchronise:
//! workers wait on the barrier or on a line from the test.

mod common;
#[path = "common/worker.rs"]
mod worker;

use common::*;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use worker::Worker;

const CFG: &str = r#"
[cache]
max_bytes = "512MiB"
default_ttl = "2h"

[namespace.r]
"#;

/// Rounds per test; every round uses fresh keys.
const ROUNDS: usize = 200;

/// A worker process: `python3 WORKER FIFO DIR`, driven one command a line.
///
/// Commands (key names are relative to DIR):
/// - `excl KEY ID MODE`: `open(KEY, O_CREAT|O_EXCL|O_WRONLY)`. On success it
///   writes ID and closes; with MODE `hold` it writes the first half of ID,
///   then waits for a `close` line before writing the rest and closing.
/// - `rename SRC DST`: `renameat2(AT_FDCWD, SRC, AT_FDCWD, DST, RENAME_NOREPLACE)`.
///
/// For each command it prints `ready`, blocks reading one byte of the FIFO
/// (the barrier), runs the syscall and prints `ok` or `err ERRNO`. A
/// successful `excl` then prints `closed`, or `writefail ERRNO` /
/// `closefail ERRNO`.
const WORKER: &str = r#"
import ctypes, os, sys
fifo = os.open(sys.argv[1], os.O_RDWR)
d = sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
renameat2 = libc.renameat2
renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
renameat2.restype = ctypes.c_int
AT_FDCWD = -100
RENAME_NOREPLACE = 1

def say(s):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()

def write_all(fd, b):
    while b:
        b = b[os.write(fd, b):]

while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd = line.split()
    if cmd[0] == "excl":
        path = os.path.join(d, cmd[1]).encode()
        ident = cmd[2].encode()
        hold = cmd[3] == "hold"
        say("ready")
        os.read(fifo, 1)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as e:
            say("err %d" % e.errno)
            continue
        say("ok")
        try:
            if hold:
                write_all(fd, ident[: len(ident) // 2])
                if sys.stdin.readline().strip() != "close":
                    raise SystemExit("expected close")
                write_all(fd, ident[len(ident) // 2 :])
            else:
                write_all(fd, ident)
        except OSError as e:
            os.close(fd)
            say("writefail %d" % e.errno)
            continue
        try:
            os.close(fd)
        except OSError as e:
            say("closefail %d" % e.errno)
            continue
        say("closed")
    elif cmd[0] == "rename":
        src = os.path.join(d, cmd[1]).encode()
        dst = os.path.join(d, cmd[2]).encode()
        say("ready")
        os.read(fifo, 1)
        r = renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE)
        say("ok" if r == 0 else "err %d" % ctypes.get_errno())
    else:
        raise SystemExit("unknown command %r" % line)
"#;

/// The barrier: every worker blocks reading one byte of this FIFO; one
/// write of one byte per worker releases them all.
struct Barrier {
    fifo: File,
}

impl Barrier {
    fn new(path: &Path) -> Barrier {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(
            r,
            0,
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        // O_RDWR: the open does not wait for a reader, and the FIFO never
        // reports EOF to the workers (which hold it O_RDWR as well).
        let fifo = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        Barrier { fifo }
    }

    /// Waits for every worker's `ready`, then releases them all at once.
    fn release(&mut self, workers: &mut [Worker]) {
        for w in workers.iter_mut() {
            w.expect("ready");
        }
        self.fifo
            .write_all(&vec![b'g'; workers.len()])
            .expect("release the barrier");
    }
}

/// A worker's answer to its racing syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    Err(i32),
}

fn parse_outcome(w: &str, line: &str) -> Outcome {
    if line == "ok" {
        return Outcome::Ok;
    }
    match line.strip_prefix("err ").and_then(|e| e.parse().ok()) {
        Some(e) => Outcome::Err(e),
        None => panic!("worker {w}: unexpected answer {line:?}"),
    }
}

fn show(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Err(e) => format!("errno {}", errno_name(*e)),
    }
}

fn read_show(p: &Path) -> String {
    match fs::read(p) {
        Ok(b) => format!("{:?}", String::from_utf8_lossy(&b)),
        Err(e) => format!("<{e}>"),
    }
}

/// Lets a creator that opened its key finish: `close` first in a hold
/// round; returns what it said about its write and close.
fn finish_create(w: &mut Worker, hold: bool) -> String {
    if hold {
        w.send("close");
    }
    w.recv()
}

fn mode_of(round: usize) -> &'static str {
    if round % 2 == 0 { "hold" } else { "fast" }
}

#[test]
fn two_exclusive_creates_of_one_key_exactly_one_wins() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let dir = m.ns("r");
    let fifo = m.dir.path().join("barrier");
    let mut barrier = Barrier::new(&fifo);
    const N: usize = 3;
    let mut workers: Vec<Worker> = (0..N)
        .map(|i| Worker::spawn(&format!("c{i}"), WORKER, &[&fifo, &dir]))
        .collect();
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut wins = [0usize; N];
    for round in 0..ROUNDS {
        let mode = mode_of(round);
        let hold = mode == "hold";
        let key = format!("k{round}");
        let ids: Vec<String> = (0..N).map(|i| format!("c{i}-round{round}-id")).collect();
        for (w, id) in workers.iter_mut().zip(&ids) {
            w.send(&format!("excl {key} {id} {mode}"));
        }
        barrier.release(&mut workers);
        // Every worker's open result comes before any winner may close.
        let outcomes: Vec<Outcome> = workers
            .iter_mut()
            .map(|w| {
                let line = w.recv();
                parse_outcome(&w.name, &line)
            })
            .collect();
        let mut closes = vec![String::new(); N];
        for (i, w) in workers.iter_mut().enumerate() {
            if outcomes[i] == Outcome::Ok {
                closes[i] = finish_create(w, hold);
            }
        }
        let path: PathBuf = dir.join(&key);
        let content = fs::read(&path);
        let winners: Vec<usize> = (0..N).filter(|&i| outcomes[i] == Outcome::Ok).collect();
        let report = || {
            let sides: Vec<String> = (0..N)
                .map(|i| {
                    let c = if closes[i].is_empty() {
                        String::new()
                    } else {
                        format!(" then {}", closes[i])
                    };
                    format!("c{i} open(O_CREAT|O_EXCL) -> {}{c}", show(&outcomes[i]))
                })
                .collect();
            format!(
                "round {round} ({mode}): {}; {key} reads {}",
                sides.join(", "),
                read_show(&path)
            )
        };
        let mut bad = winners.len() != 1;
        for i in 0..N {
            if outcomes[i] != Outcome::Ok && outcomes[i] != Outcome::Err(libc::EEXIST) {
                bad = true;
            }
            if outcomes[i] == Outcome::Ok && closes[i] != "closed" {
                bad = true;
            }
        }
        if let [w] = winners[..] {
            wins[w] += 1;
            match &content {
                Ok(b) if b == ids[w].as_bytes() => {}
                _ => bad = true,
            }
        }
        if bad {
            failures.push(report());
            if failures.len() >= 10 {
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    eprintln!(
        "{ROUNDS} rounds of {N} racing O_EXCL creates in {elapsed:?}; wins per worker {wins:?}"
    );
    assert_rounds_ok(&failures);
    drop(workers);
    assert_eq!(
        m.ns_stat("r", "entries"),
        ROUNDS as u64,
        "stats: {}",
        m.stats()
    );
}

#[test]
fn rename_noreplace_racing_a_create() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let dir = m.ns("r");
    let fifo = m.dir.path().join("barrier");
    let mut barrier = Barrier::new(&fifo);
    // workers[0] is A (renames), workers[1] is B (creates).
    let mut workers = vec![
        Worker::spawn("A", WORKER, &[&fifo, &dir]),
        Worker::spawn("B", WORKER, &[&fifo, &dir]),
    ];
    let start = Instant::now();
    let mut failures = Vec::new();
    let (mut a_wins, mut b_wins) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let mode = mode_of(round);
        let hold = mode == "hold";
        let (src, dst) = (format!("src{round}"), format!("dst{round}"));
        let (srcp, dstp) = (dir.join(&src), dir.join(&dst));
        let src_body = format!("source-of-round-{round}");
        write_file(&srcp, src_body.as_bytes()).unwrap();
        workers[0].send(&format!("rename {src} {dst}"));
        workers[1].send(&format!("excl {dst} B {mode}"));
        barrier.release(&mut workers);
        let a_line = workers[0].recv();
        let a = parse_outcome("A", &a_line);
        let b_line = workers[1].recv();
        let b = parse_outcome("B", &b_line);
        let b_close = if b == Outcome::Ok {
            finish_create(&mut workers[1], hold)
        } else {
            String::new()
        };
        let dst_now = fs::read(&dstp);
        let src_now = fs::read(&srcp);
        let report = || {
            format!(
                "round {round} ({mode}): A renameat2({src} -> {dst}, RENAME_NOREPLACE) -> {}, \
                 B open({dst}, O_CREAT|O_EXCL) -> {}{}; {dst} reads {}, {src} reads {}",
                show(&a),
                show(&b),
                if b_close.is_empty() {
                    String::new()
                } else {
                    format!(" then {b_close}")
                },
                read_show(&dstp),
                read_show(&srcp)
            )
        };
        let eexist = Outcome::Err(libc::EEXIST);
        let ok = match (&a, &b) {
            (Outcome::Ok, e) if *e == eexist => {
                a_wins += 1;
                matches!(&dst_now, Ok(d) if d == src_body.as_bytes())
                    && errno(&src_now) == Some(libc::ENOENT)
            }
            (e, Outcome::Ok) if *e == eexist => {
                b_wins += 1;
                b_close == "closed"
                    && matches!(&dst_now, Ok(d) if d == b"B")
                    && matches!(&src_now, Ok(s) if s == src_body.as_bytes())
            }
            _ => false,
        };
        if !ok {
            failures.push(report());
            if failures.len() >= 10 {
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    eprintln!(
        "{ROUNDS} rounds of RENAME_NOREPLACE vs O_EXCL in {elapsed:?}; A (rename) won {a_wins}, B (create) won {b_wins}"
    );
    assert_rounds_ok(&failures);
}

/// Every round went right; otherwise each wrong round's report.
fn assert_rounds_ok(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} rounds went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
