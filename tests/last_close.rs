//! Read-your-writes under concurrent rewrites (PRODUCT.md section 4): the
//! last writer to close wins, and once its close() has returned every open
//! of the path sees that version, whatever the kernel had cached and
//! whatever lookups were in flight while it was published.
//!
//! Writers and readers are separate processes (python3 workers driven one
//! command a line). Writers log the order of their closes in one O_APPEND
//! file: `S w s` just before close(), `E w s` once it has returned. Appends
//! are ordered in real time, so a version whose `E` line comes before some
//! writer's `S` line was closed before that writer's close began and must
//! not be what a later open finds. (The rule may let through a wrong
//! answer when the lines were written late, never reject a right one.)

mod common;
#[path = "common/worker.rs"]
mod worker;

use common::*;
use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use worker::Worker;

const CFG: &str = "[namespace.lc]\n";

/// `python3 -c WORKER ID`: writes, reads or checks a key, one command a line.
///
/// - `write PATH LOG SECONDS`: rewrites PATH (256 KiB to 1 MiB each, a
///   payload naming the worker and a sequence number) until SECONDS have
///   passed, logging `S`/`E` lines to LOG; prints `done N` or `fail WHY`.
/// - `read PATH STOP`: opens and reads PATH whole, stats it, again and
///   again until the file STOP exists; prints `done OK BAD FIRST-BAD`.
/// - `stat PATH STOP`: stats PATH until STOP exists (lookups only).
/// - `check PATH`: one open and read; prints `got W S` or `bad WHY`.
const WORKER: &str = r#"
import os, random, sys, time

ident = int(sys.argv[1])
rng = random.Random(ident)
seq = 0

def say(s):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()

def payload(w, s, n):
    head = b"lastclose w=%d s=%d n=%d\n" % (w, s, n)
    return (head * (n // len(head) + 1))[:n]

def parse(b):
    nl = b.find(b"\n")
    try:
        f = dict(x.split(b"=") for x in b[:nl].split()[1:])
        w, s, n = int(f[b"w"]), int(f[b"s"]), int(f[b"n"])
    except Exception:
        return None
    return (w, s) if payload(w, s, n) == b else None

def read_whole(path):
    with open(path, "rb", buffering=0) as f:
        return f.read()

def write_all(fd, b):
    while b:
        b = b[os.write(fd, b):]

for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "write":
        path, log, end = cmd[1], cmd[2], time.monotonic() + float(cmd[3])
        logfd = os.open(log, os.O_WRONLY | os.O_APPEND)
        done, err = 0, None
        while err is None and time.monotonic() < end:
            b = payload(ident, seq, rng.randint(256 * 1024, 1024 * 1024))
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    write_all(fd, b)
                finally:
                    os.write(logfd, b"S %d %d\n" % (ident, seq))
                    os.close(fd)
                os.write(logfd, b"E %d %d\n" % (ident, seq))
                done += 1
            except OSError as e:
                err = "w=%d s=%d: %s" % (ident, seq, e)
            seq += 1
        os.close(logfd)
        say("done %d" % done if err is None else "fail " + err)
    elif cmd[0] in ("read", "stat"):
        path, stop = cmd[1], cmd[2]
        ok, bad, first = 0, 0, "-"
        while not os.path.exists(stop):
            try:
                if cmd[0] == "read" and parse(read_whole(path)) is None:
                    bad, first = bad + 1, first if bad else "torn-or-mixed"
                    continue
                os.stat(path)
                ok += 1
            except OSError as e:
                bad, first = bad + 1, first if bad else "errno=%d" % e.errno
        say("done %d %d %s" % (ok, bad, first))
    elif cmd[0] == "check":
        try:
            got = parse(read_whole(cmd[1]))
            say("got %d %d" % got if got else "bad torn-or-mixed")
        except OSError as e:
            say("bad errno=%d" % e.errno)
    else:
        raise SystemExit("unknown command %r" % line)
"#;

/// The same payloads as the worker's: `Some((writer, seq))` if `b` is one
/// whole payload.
fn parse(b: &[u8]) -> Option<(u32, u64)> {
    let nl = b.iter().position(|&c| c == b'\n')?;
    let head = std::str::from_utf8(&b[..nl]).ok()?;
    let mut f = head.split(' ').skip(1).map(|x| x.split_once('='));
    let (w, s, n) = match (f.next()??, f.next()??, f.next()??) {
        (("w", w), ("s", s), ("n", n)) => (w.parse().ok()?, s.parse().ok()?, n.parse().ok()?),
        _ => return None,
    };
    (payload(w, s, n) == b).then_some((w, s))
}

fn payload(w: u32, s: u64, n: usize) -> Vec<u8> {
    let head = format!("lastclose w={w} s={s} n={n}\n").into_bytes();
    head.iter().copied().cycle().take(n).collect()
}

/// What an open that follows a run may find, from the writers' close log:
/// the versions whose `E` line follows the last `S` line (their close
/// returned after every other close began). Also how many closes there were.
fn winners(log: &str) -> (Vec<(u32, u64)>, usize) {
    let lines: Vec<(&str, u32, u64)> = log
        .lines()
        .map(|l| {
            let mut it = l.split(' ');
            let t = it.next().unwrap();
            let w = it.next().unwrap().parse().unwrap();
            let s = it.next().unwrap().parse().unwrap();
            (t, w, s)
        })
        .collect();
    let last_start = lines
        .iter()
        .rposition(|(t, ..)| *t == "S")
        .expect("no writer closed anything");
    let ok = lines[last_start..]
        .iter()
        .filter(|(t, ..)| *t == "E")
        .map(|&(_, w, s)| (w, s))
        .collect();
    (ok, lines.iter().filter(|(t, ..)| *t == "E").count())
}

fn describe_read(r: std::io::Result<Vec<u8>>) -> Result<(u32, u64), String> {
    match r {
        Ok(b) => parse(&b).ok_or_else(|| format!("{} bytes, torn or mixed", b.len())),
        Err(e) => Err(format!("{e}")),
    }
}

fn cat(path: &Path) -> Result<(u32, u64), String> {
    let out = Command::new("cat")
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    describe_read(Ok(out.stdout))
}

/// Parses a reader's `done OK BAD FIRST` and asserts it read cleanly.
fn assert_clean_reads(w: &mut Worker, what: &str) -> u64 {
    let line = w.recv();
    let f: Vec<&str> = line.split(' ').collect();
    assert!(f.len() == 4 && f[0] == "done", "{}: {line:?}", w.name);
    assert_eq!(
        f[2], "0",
        "{}: {what}: bad reads (first: {}), {} good",
        w.name, f[3], f[1]
    );
    f[1].parse().unwrap()
}

/// Hammering time per run: long enough for each writer to close several
/// versions while the readers keep lookups and opens in flight.
const HAMMER: Duration = Duration::from_millis(500);
const RUNS: usize = 50;

#[test]
fn the_last_close_wins_for_every_open_after_four_writers_and_four_readers() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let work = m.dir.path().to_path_buf();
    let mut writers: Vec<Worker> = (0..4)
        .map(|i| Worker::spawn(&format!("writer{i}"), WORKER, &[i.to_string()]))
        .collect();
    let mut readers: Vec<Worker> = (0..4)
        .map(|i| Worker::spawn(&format!("reader{i}"), WORKER, &[(100 + i).to_string()]))
        .collect();
    let started = Instant::now();
    let (mut closes, mut reads) = (0, 0);
    for run in 0..RUNS {
        let key = m.path("lc", &format!("k{run}"));
        fs::write(&key, payload(99, 0, 1000)).unwrap();
        let log = work.join(format!("closes-{run}"));
        let stop = work.join(format!("stop-{run}"));
        File::create(&log).unwrap();
        for r in &mut readers {
            r.send(&format!("read {} {}", key.display(), stop.display()));
        }
        for w in &mut writers {
            w.send(&format!(
                "write {} {} {}",
                key.display(),
                log.display(),
                HAMMER.as_secs_f64()
            ));
        }
        for w in &mut writers {
            let line = w.recv();
            assert!(line.starts_with("done "), "run {run}: {}: {line}", w.name);
        }
        // Every writer has returned from its last close: from here on one
        // version may be seen, by another process and by this one.
        let (want, n) = winners(&fs::read_to_string(&log).unwrap());
        closes += n;
        let by_cat = cat(&key);
        let by_us = describe_read(fs::read(&key));
        File::create(&stop).unwrap();
        for r in &mut readers {
            reads += assert_clean_reads(r, &format!("run {run}"));
        }
        for (who, got) in [("cat", by_cat), ("the test", by_us)] {
            match got {
                Ok(v) if want.contains(&v) => {}
                got => panic!(
                    "run {run}: {who} read {got:?} after all writers closed; \
                     only {want:?} may be seen (their close returned after all {n} closes of the run began)"
                ),
            }
        }
    }
    eprintln!(
        "{RUNS} runs of {HAMMER:?}: {closes} closes, {reads} clean reads, {:?} in all",
        started.elapsed()
    );
}

/// Publishes in the focused test: each is checked by two opens at once.
const PUBLISHES: u64 = 1000;

#[test]
fn every_open_after_a_close_sees_it_while_lookups_race_the_publishes() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let key = m.path("lc", "focus");
    let stop = m.dir.path().join("stop");
    fs::write(&key, payload(0, 0, 4096)).unwrap();
    // Stats revalidate the dentry whenever the kernel may not trust it
    // (LOOKUPs, some answered while a publish is under way); reads add
    // opens of whatever version the dentry leads to.
    let mut lookers: Vec<Worker> = (0..4)
        .map(|i| {
            let mut w = Worker::spawn(&format!("looker{i}"), WORKER, &[(100 + i).to_string()]);
            let how = if i % 2 == 0 { "stat" } else { "read" };
            w.send(&format!("{how} {} {}", key.display(), stop.display()));
            w
        })
        .collect();
    let mut checker = Worker::spawn("checker", WORKER, &["200"]);
    let started = Instant::now();
    for s in 1..=PUBLISHES {
        fs::write(&key, payload(0, s, 4096 + (s as usize % 7) * 1000)).unwrap();
        // close() has returned: this process and another open it now.
        checker.send(&format!("check {}", key.display()));
        let ours = describe_read(fs::read(&key));
        let theirs = checker.recv();
        assert_eq!(ours, Ok((0, s)), "this process's open after close {s}");
        assert_eq!(
            theirs,
            format!("got 0 {s}"),
            "another process's open after close {s}"
        );
    }
    let took = started.elapsed();
    File::create(&stop).unwrap();
    let mut lookups = 0;
    for w in &mut lookers {
        lookups += assert_clean_reads(w, "racing lookups");
    }
    eprintln!("{PUBLISHES} publishes checked in {took:?}; {lookups} racing stats and reads");
}
