//! A python3 worker that takes one command a line on stdin and answers a
//! line on stdout: the race tests' processes, each its own process so the
//! kernel sees separate callers. Ended by EOF on drop, killed (by its own
//! pid) if it does not end.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::common::wait_until;

pub struct Worker {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// `python3 -c script args...`, named `name` in failures.
    pub fn spawn<A: AsRef<OsStr>>(name: &str, script: &str, args: &[A]) -> Worker {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3 worker");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Worker {
            name: name.to_string(),
            child,
            stdin,
            stdout,
        }
    }

    pub fn send(&mut self, line: &str) {
        let w = self.stdin.as_mut().unwrap();
        writeln!(w, "{line}")
            .and_then(|_| w.flush())
            .unwrap_or_else(|e| panic!("worker {}: send {line:?}: {e}", self.name));
    }

    pub fn recv(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("worker {}: read: {e}", self.name));
        if n == 0 {
            panic!(
                "worker {} exited unexpectedly: {:?}",
                self.name,
                self.child.wait()
            );
        }
        line.trim_end().to_string()
    }

    /// The next answer, which must be `want`.
    #[allow(dead_code)] // not every test crate that includes this asks
    pub fn expect(&mut self, want: &str) {
        let got = self.recv();
        assert_eq!(got, want, "worker {}", self.name);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // EOF on stdin ends an idle worker; one still looping is killed.
        drop(self.stdin.take());
        let child = &mut self.child;
        if !wait_until(Duration::from_secs(5), || {
            child.try_wait().ok().flatten().is_some()
        }) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
