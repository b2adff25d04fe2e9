//! What Python's file objects do to an entry, through a real mount: the
//! requests CPython adds to every `open()` (an `isatty()` ioctl, an
//! `fstat` for the buffer size) must answer as a local file does, and the
//! seed workload's pattern (a read that misses, a write, a read-back)
//! counts one miss per miss.
//!
//! Why these matter: the kernel sends every ioctl on a FUSE file to the
//! daemon (an `ENOSYS` answer is turned into `ENOTTY` each time, never
//! remembered), so cachefs answers `ENOTTY` at once; a wrong answer would
//! make Python line-buffer or fail every open. The attributes a writer's
//! `fstat` sees come from the daemon after each write (the kernel drops
//! its copy of size and times at every write through it), so whatever is
//! cached at CREATE, a writer's `fstat` must follow its writes, and its
//! read-back right after close() (direct or through os.replace) must be
//! exactly the version's bytes, compressed namespace or not.

mod common;

use std::process::Command;

use common::*;

const CFG: &str = "[namespace.py]\n\n[namespace.z]\ncompression = \"zstd\"\n";

/// Runs `script` with python3 (argv[1] = `dir`) and returns its stdout;
/// a failing script fails the test with its stderr.
fn python(script: &str, dir: &std::path::Path) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn isatty_is_false_and_tcgets_is_enotty_on_entries_and_files_being_written() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let script = r#"
import errno, fcntl, os, sys, termios
p = os.path.join(sys.argv[1], "e")
def tty(f):
    try:
        fcntl.ioctl(f.fileno(), termios.TCGETS, bytes(64))
        e = "answered"
    except OSError as x:
        e = errno.errorcode[x.errno]
    return f"{f.isatty()} {os.isatty(f.fileno())} {e}"
with open(p, "wb") as f:
    print("writer", tty(f))
    f.write(b"value")
with open(p, "rb") as f:
    print("reader", tty(f))
    print("read", f.read().decode())
# Text mode, default buffering: what a tty would make line-buffered.
with open(p, "a") as f:
    print("text", tty(f), f.line_buffering)
    f.write(" more")
with open(p) as f:
    print("read", f.read())
"#;
    let out = python(script, &m.ns("py"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "writer False False ENOTTY",
            "reader False False ENOTTY",
            "read value",
            "text False False ENOTTY False",
            "read value more",
        ],
        "{}",
        m.log()
    );
}

#[test]
fn fstat_of_a_file_being_written_follows_its_writes() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    // Another process's stat of the name while it is written: invisible
    // (a new key) or the old version (a rewrite), whatever the writer's
    // own attributes are cached as.
    let script = r#"
import os, subprocess, sys
d = sys.argv[1]
def other(p):
    r = subprocess.run([sys.executable, "-c",
        "import os,sys\ntry: print(os.stat(sys.argv[1]).st_size)\nexcept FileNotFoundError: print('ENOENT')", p],
        capture_output=True, text=True, check=True)
    return r.stdout.strip()
def sz(f):
    return os.fstat(f.fileno()).st_size
for name, old in (("new", None), ("old", b"x" * 123)):
    p = os.path.join(d, name)
    if old is not None:
        with open(p, "wb") as f:
            f.write(old)
    f = open(p, "wb", buffering=0)
    seen = [sz(f)]
    assert os.fstat(f.fileno()).st_blksize > 0
    f.write(b"a" * 1000); seen.append(sz(f))
    f.write(b"b" * 3000); seen.append(sz(f))
    seen.append(os.stat(p).st_size)
    seen.append(other(p))
    f.truncate(700); seen.append(sz(f))
    f.seek(0, 2); f.write(b"c" * 10); seen.append(sz(f))
    f.close()
    seen.append(os.stat(p).st_size)
    seen.append(other(p))
    print(name, *seen)
# Append to a published entry: starts at its size.
with open(os.path.join(d, "new"), "ab", buffering=0) as f:
    a = [os.fstat(f.fileno()).st_size]
    f.write(b"d" * 5); a.append(os.fstat(f.fileno()).st_size)
print("append", *a)
"#;
    let out = python(script, &m.ns("py"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "new 0 1000 4000 4000 ENOENT 700 710 710 710",
            "old 0 1000 4000 4000 123 700 710 710 710",
            "append 710 715",
        ],
        "{}",
        m.log()
    );
}

#[test]
fn a_python_miss_then_write_then_read_back_counts_one_miss() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let misses0 = m.ns_stat("py", "misses");
    let hits0 = m.ns_stat("py", "hits");
    // As bench_seed.py's client: a read that misses, a "computation"
    // (shorter and longer than the miss ledger's 50 ms burst), a direct
    // write or a write-temp-then-rename, and a read-back; then reads of
    // keys never written.
    let script = r#"
import os, sys, time
d = sys.argv[1]
def get(p):
    try:
        with open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
n = 0
for i in range(8):
    p = os.path.join(d, f"k{i}")
    assert get(p) is None
    time.sleep(0.002 if i % 4 < 2 else 0.06)
    v = b"v%d" % i * 1000
    if i % 2:
        tmp = os.path.join(d, f".tmp-{os.getpid()}-k{i}")
        with open(tmp, "wb") as f:
            f.write(v)
        os.replace(tmp, p)
    else:
        with open(p, "wb") as f:
            f.write(v)
    assert get(p) == v, i
    n += 1
for i in range(5):
    assert get(os.path.join(d, f"never{i}")) is None
print(n)
"#;
    let out = python(script, &m.ns("py"));
    assert_eq!(out.trim(), "8");
    // The counters are the store's, decided as each request is answered:
    // nothing left in flight once the script has exited.
    let misses = m.ns_stat("py", "misses") - misses0;
    let hits = m.ns_stat("py", "hits") - hits0;
    assert_eq!(misses, 8 + 5, "misses counted: {}", m.stats());
    assert!(hits >= 8, "the read-backs are hits: {hits}: {}", m.stats());
}

#[test]
fn a_read_back_right_after_close_is_exactly_the_version() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    // Writes each key (directly, or through a temporary name and
    // os.replace) and reads it back at once twice ("write_then_check");
    // reads each back twice ("check").
    let script = r#"
import os, sys
d, size, n, tag, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
for i in range(n):
    p = os.path.join(d, f"{tag}{i}")
    v = bytes((i * 7 + j) % 251 for j in range(size - i))
    if mode != "check" and i % 2:
        tmp = os.path.join(d, f".tmp-{os.getpid()}-{tag}{i}")
        with open(tmp, "wb") as f:
            f.write(v)
        os.replace(tmp, p)
    elif mode != "check":
        with open(p, "wb") as f:
            f.write(v)
    for _ in range(2):
        with open(p, "rb") as f:
            got = f.read()
        assert got == v, (p, len(got), len(v))
print("ok")
"#;
    let run = |ns: &str, size: usize, tag: &str, mode: &str| {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(m.ns(ns))
            .arg(size.to_string())
            .arg("20")
            .arg(tag)
            .arg(mode)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success() && out.stdout == b"ok\n",
            "{ns}/{tag}/{mode}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            m.log()
        );
    };
    // Read back at once after each write, twice; then all again.
    for (ns, size, tag) in [
        ("py", 15 * 1024, "small"),
        ("z", 15 * 1024, "small"),
        ("py", 100 * 1024, "big"),
    ] {
        run(ns, size, tag, "write_then_check");
        run(ns, size, tag, "check");
    }
}
