//! The subcommands' implementations; `main.rs` holds only their clap
//! definitions and the dispatch. No cache logic lives here: commands call
//! the store or talk to a live mount through its files.

/// `println!` that returns the write's error instead of panicking, so a
/// reader that closed the pipe (`| head`) ends the command quietly (see
/// `main`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)
    }};
}

/// `print!` that returns the write's error (see `outln!`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($t)*)
    }};
}

pub mod archive;
pub mod export;
pub mod guard;
pub mod import;
pub mod inspect;
pub mod key;
pub mod mount;
pub mod mount_helper;
pub mod notify;
pub mod purge;
pub mod spool;
pub mod stats;
pub mod verify;
pub mod xattr;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use cachefs::config::Config;

/// A progress bar over `len` items, drawn only when stderr is a terminal
/// (scripts and logs get none).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || len < 1000 {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta} left)")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// The config whose policies (TTLs) an offline command applies.
pub fn offline_config(path: Option<&Path>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

/// Mount points of live cachefs mounts, from /proc/self/mounts: fstype
/// `fuse.cachefs`, or plain `fuse` with source `cachefs` (a mount made
/// without a helper may not carry the subtype).
pub fn cachefs_mounts() -> Result<Vec<PathBuf>> {
    let text =
        std::fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let ours =
                f.len() >= 3 && (f[2] == "fuse.cachefs" || (f[2] == "fuse" && f[0] == "cachefs"));
            ours.then(|| PathBuf::from(unescape_mount_field(f[1])))
        })
        .collect())
}

/// /proc/mounts escapes space, tab, newline and backslash as octal.
fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Bytes as people read them: "0 B", "12.3 KiB", "1.0 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration rounded to seconds, as "1h 2m 3s".
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Names from entry trailers, shown as text.
pub fn show_name(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}
