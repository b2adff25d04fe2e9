//! A claim dies with its writer (PRODUCT.md section 4): a process killed
//! by a signal while it writes a key publishes nothing, neither the part
//! it wrote nor, for an exclusive create with nothing written, an empty
//! value; a process that exits normally without closing its file (its
//! files closed by the kernel, as a killed one's are) publishes.
//!
//! Writers are python3 children that say `ready` on stdout once they are
//! where the test wants them, then block reading stdin (or exit).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

const CFG: &str = "[namespace.k]\n";
const WAIT: Duration = Duration::from_secs(10);

/// Starts `python3 -c SCRIPT PATH`, waits for its `ready` line.
fn python_ready(script: &str, path: &Path) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the writer got ready");
    (child, out)
}

/// Writes the first 64 KiB chunk of 1 MiB unbuffered (the daemon has it),
/// then blocks: the rest never comes.
const PARTIAL: &str = r#"
import os, sys
f = open(sys.argv[1], "wb", buffering=0)
f.write(b"p" * 65536)
print("ready", flush=True)
sys.stdin.read()
f.write(b"p" * (1048576 - 65536))
"#;

/// O_EXCL create, nothing written: a claim.
const CLAIM: &str = r#"
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
print("ready", flush=True)
sys.stdin.read()
"#;

/// Sends `sig` with kill(1), as a user would, and reaps the child: by
/// then the kernel has closed its files (the FLUSH is answered before
/// the exit completes).
fn kill_with(child: &mut Child, sig: &str) {
    let st = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -s {sig}");
    let st = child.wait().unwrap();
    assert!(st.code().is_none(), "killed by a signal: {st:?}");
}

fn killed_writes(m: &Mount) -> u64 {
    m.stats()["killed_writes"].as_u64().expect("killed_writes")
}

/// The key never shows the partial write: `want` (None: ENOENT) right
/// after the kill and once the daemon has dropped the write.
fn assert_shows(m: &Mount, path: &Path, want: Option<&[u8]>, killed_before: u64) {
    let check = |when: &str| match (read_file(path), want) {
        (Ok(got), Some(w)) => assert!(got == w, "{when}: {} bytes, not the old value", got.len()),
        (Ok(got), None) => panic!("{when}: a killed writer published {} bytes", got.len()),
        (Err(e), None) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{when}: {e}"),
        (Err(e), Some(_)) => panic!("{when}: the old value is gone: {e}"),
    };
    check("after the kill");
    assert!(
        wait_until(WAIT, || killed_writes(m) == killed_before + 1),
        "the write is counted as killed: {}",
        m.stats()
    );
    check("after its release");
    assert!(
        wait_until(WAIT, || staged_files(&m.backing.join("staging")).is_empty()),
        "nothing staged is left: {:?}",
        staged_files(&m.backing.join("staging"))
    );
}

fn killed_partial_writer(sig: &str) {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    // A new key: ENOENT, never the first chunk.
    let new = m.path("k", "new");
    let (mut child, _out) = python_ready(PARTIAL, &new);
    kill_with(&mut child, sig);
    assert_shows(&m, &new, None, 0);
    // A key with a value: the old one stays.
    let old = m.path("k", "old");
    write_file(&old, b"old value").unwrap();
    let (mut child, _out) = python_ready(PARTIAL, &old);
    kill_with(&mut child, sig);
    assert_shows(&m, &old, Some(b"old value"), 1);
    // The key is writable as usual afterwards.
    write_file(&new, b"whole").unwrap();
    assert_eq!(read_file(&new).unwrap(), b"whole");
    assert_eq!(killed_writes(&m), 2);
}

#[test]
fn a_writer_killed_by_sigkill_publishes_nothing() {
    killed_partial_writer("KILL");
}

#[test]
fn a_writer_killed_by_sigterm_publishes_nothing() {
    killed_partial_writer("TERM");
}

#[test]
fn a_killed_claimer_leaves_no_entry_and_frees_the_key() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("k", "claimed");
    let (mut child, _out) = python_ready(CLAIM, &p);
    assert_errno(create_excl(&p), libc::EEXIST, "claimed by a live writer");
    kill_with(&mut child, "KILL");
    assert_errno(read_file(&p), libc::ENOENT, "a killed claim is no value");
    // The claim goes with the kill's last close: a new claim succeeds
    // as soon as the daemon has had it.
    let mut mine = None;
    assert!(
        wait_until(WAIT, || {
            match create_excl(&p) {
                Ok(f) => mine = Some(f),
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}"),
            }
            mine.is_some()
        }),
        "the key can be claimed again"
    );
    assert_eq!(killed_writes(&m), 1);
    use std::io::Write;
    let mut f = mine.unwrap();
    f.write_all(b"mine").unwrap();
    close_file(f).unwrap();
    assert_eq!(read_file(&p).unwrap(), b"mine");
}

/// Runs `script PATH` to its end (it exits without closing its file) and
/// checks that what it wrote is published.
fn exits_and_publishes(m: &Mount, key: &str, script: &str, want: &[u8]) {
    let p = m.path("k", key);
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&p)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some(),
        "{key}: exits, not killed: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    match read_file(&p) {
        Ok(got) => assert!(got == want, "{key}: {} bytes published", got.len()),
        Err(e) => panic!("{key}: a normal exit published nothing: {e}"),
    }
}

#[test]
fn a_normal_exit_without_close_publishes() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    // os._exit skips Python's own cleanup: the kernel closes the file.
    exits_and_publishes(
        &m,
        "main",
        r#"
import os, sys
f = open(sys.argv[1], "wb", buffering=0)
f.write(b"x" * 100000)
os._exit(0)
"#,
        &[b'x'; 100000],
    );
    // A nonzero exit status is no signal.
    exits_and_publishes(
        &m,
        "status3",
        r#"
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b"three")
os._exit(3)
"#,
        b"three",
    );
    // An unwritten exclusive create whose process exits: an empty value.
    exits_and_publishes(
        &m,
        "empty",
        r#"
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os._exit(0)
"#,
        b"",
    );
    // A thread opened and wrote it, and exits the process from there.
    exits_and_publishes(
        &m,
        "thread-exits",
        r#"
import os, sys, threading
def work():
    f = open(sys.argv[1], "wb", buffering=0)
    f.write(b"from a thread")
    os._exit(0)
threading.Thread(target=work).start()
threading.Event().wait()
"#,
        b"from a thread",
    );
    // A thread holds it, written, while the main thread exits the
    // process: the thread is zapped with the group's exit code.
    exits_and_publishes(
        &m,
        "thread-zapped",
        r#"
import os, sys, threading
ready = threading.Event()
def work():
    f = open(sys.argv[1], "wb", buffering=0)
    f.write(b"held by a thread")
    ready.set()
    threading.Event().wait()
threading.Thread(target=work, daemon=True).start()
ready.wait()
os._exit(0)
"#,
        b"held by a thread",
    );
    // The one-liner that never calls close(): CPython's exit closes it.
    exits_and_publishes(
        &m,
        "oneliner",
        "import sys; open(sys.argv[1], 'w').write('x')",
        b"x",
    );
    assert_eq!(killed_writes(&m), 0);
}

#[test]
fn a_killed_child_sharing_the_file_leaves_the_parents_write() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("k", "shared");
    // The parent writes, forks a child that blocks, and (once told) reaps
    // the killed child, writes the rest and closes.
    let script = r#"
import os, sys
f = open(sys.argv[1], "wb", buffering=0)
f.write(b"head,")
pid = os.fork()
if pid == 0:
    os.read(0, 1)
    os._exit(0)
print("ready", pid, flush=True)
sys.stdin.readline()
_, status = os.waitpid(pid, 0)
assert os.WIFSIGNALED(status), status
f.write(b"tail")
f.close()
print("closed", flush=True)
"#;
    let mut parent = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&p)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(parent.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let child_pid = line
        .trim()
        .strip_prefix("ready ")
        .expect("ready PID")
        .to_string();
    let st = Command::new("kill")
        .args(["-s", "KILL", &child_pid])
        .status()
        .unwrap();
    assert!(st.success());
    {
        use std::io::Write;
        let mut stdin = parent.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(parent.wait().unwrap().success(), "{rest}");
    assert_eq!(rest.trim(), "closed");
    assert_eq!(read_file(&p).unwrap(), b"head,tail");
    assert_eq!(killed_writes(&m), 0);
}

#[test]
fn a_child_execing_while_the_file_is_written_is_no_kill() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("k", "exec");
    // The child's execve closes its copy of the close-on-exec descriptor
    // while it holds the lock a read of its /proc stat takes: the daemon
    // must answer that close without that read.
    let mut f = std::fs::File::create(&p).unwrap();
    use std::io::Write;
    f.write_all(b"being written").unwrap();
    for _ in 0..3 {
        let st = Command::new("true").status().unwrap();
        assert!(st.success());
    }
    f.write_all(b", then closed").unwrap();
    close_file(f).unwrap();
    assert_eq!(read_file(&p).unwrap(), b"being written, then closed");
    assert_eq!(killed_writes(&m), 0);
}
