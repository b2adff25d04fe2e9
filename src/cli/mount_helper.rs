//! `mount.fuse.cachefs`: the cachefs binary under the name mount(8) looks
//! for when asked to `mount -t fuse.cachefs BACKING MOUNTPOINT -o OPTS`,
//! by hand or from an fstab line. mount(8) expects the helper to return
//! once the filesystem is mounted, while `cachefs mount` stays in the
//! foreground. So the helper starts `cachefs mount` in its own process
//! group and waits for it to send READY=1 over the notify protocol (the
//! same one systemd uses), or to exit with its error.

use std::ffi::{OsStr, OsString};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The names mount(8) runs the helper by.
pub const NAMES: [&str; 2] = ["mount.fuse.cachefs", "mount.cachefs"];

/// What the helper was asked, in `cachefs mount`'s terms.
#[derive(Debug, PartialEq)]
struct Request {
    backing: OsString,
    mountpoint: OsString,
    /// `cachefs mount` arguments after the two paths.
    daemon_args: Vec<OsString>,
    /// `-o log=FILE`: where the daemon's log goes.
    log: Option<OsString>,
    fake: bool,
    verbose: bool,
}

/// Options that are mount(8)'s or systemd's business, not the kernel's
/// or cachefs's: they are dropped.
fn is_userspace_only(opt: &str) -> bool {
    matches!(
        opt,
        "defaults"
            | "auto"
            | "noauto"
            | "user"
            | "users"
            | "nouser"
            | "owner"
            | "group"
            | "nofail"
            | "_netdev"
            | "rw"
            | ""
            | "loop"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
}

fn parse(args: &[OsString]) -> Result<Request> {
    let mut positional = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut fake = false;
    let mut verbose = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_bytes() {
            b"-o" => {
                let v = it.next().context("-o needs a value")?;
                let v = v.to_str().context("mount options are not UTF-8")?;
                options.extend(v.split(',').map(str::to_string));
            }
            // -n: no mtab; -s: sloppy; mount(8) handles both for us.
            b"-n" | b"-s" => {}
            b"-f" => fake = true,
            b"-v" => verbose = true,
            b"-t" | b"-N" => {
                it.next();
            }
            f if f.starts_with(b"-") && f.len() > 1 => {
                bail!("unknown flag {}", a.to_string_lossy())
            }
            _ => positional.push(a.clone()),
        }
    }
    let [backing, mountpoint] = <[OsString; 2]>::try_from(positional).map_err(|p| {
        anyhow::anyhow!(
            "usage: mount.fuse.cachefs BACKING MOUNTPOINT [-o options] (got {} paths)",
            p.len()
        )
    })?;
    let mut daemon_args: Vec<OsString> = Vec::new();
    let mut fuse_opts = Vec::new();
    let mut log = None;
    for opt in options {
        if let Some(path) = opt.strip_prefix("log=") {
            log = Some(path.into());
        } else if let Some(path) = opt.strip_prefix("config=") {
            daemon_args.extend(["--config".into(), path.into()]);
        } else if let Some(n) = opt.strip_prefix("threads=") {
            daemon_args.extend(["--threads".into(), n.into()]);
        } else if let Some(t) = opt.strip_prefix("stop_timeout=") {
            daemon_args.extend(["--stop-timeout".into(), t.into()]);
        } else if !is_userspace_only(&opt) {
            fuse_opts.push(opt);
        }
    }
    if !fuse_opts.is_empty() {
        daemon_args.extend(["-o".into(), fuse_opts.join(",").into()]);
    }
    Ok(Request {
        backing,
        mountpoint,
        daemon_args,
        log,
        fake,
        verbose,
    })
}

/// Where the daemon, which outlives the helper, writes its log: the
/// `log=` file; else the helper's stderr (the journal when systemd runs
/// mount(8), or a terminal), except a pipe: whoever reads that pipe would
/// wait for its end, and so for the daemon to stop.
fn daemon_log(path: Option<&OsStr>) -> Result<Stdio> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(path) = path {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("log file {}", path.to_string_lossy()))?;
        return Ok(file.into());
    }
    let stderr_is_pipe =
        std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.file_type().is_fifo());
    Ok(if stderr_is_pipe {
        Stdio::null()
    } else {
        Stdio::inherit()
    })
}

pub fn run(args: &[OsString]) -> Result<ExitCode> {
    let req = parse(args)?;
    let exe = std::env::current_exe().context("cannot find the cachefs binary")?;
    let mut cmd = Command::new(&exe);
    cmd.arg("mount")
        .arg(&req.backing)
        .arg(&req.mountpoint)
        .args(&req.daemon_args);
    if req.verbose {
        eprintln!("mount.fuse.cachefs: running {cmd:?}");
    }
    if req.fake {
        return Ok(ExitCode::SUCCESS);
    }
    // An abstract socket: nothing to clean up, no directory to trust.
    let name = format!("cachefs-mount-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
        .context("cannot open the readiness socket")?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut child = cmd
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(daemon_log(req.log.as_deref())?)
        // Its own process group: a Ctrl-C meant for the shell that ran
        // mount(8) must not stop the daemon.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let mut buf = [0u8; 4096];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) if buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") => {
                return Ok(ExitCode::SUCCESS);
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("readiness socket"),
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "cachefs mount {} exited ({status}) before the mount was ready",
                OsStr::new(&req.mountpoint).to_string_lossy()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn translates_mount_options() {
        let r = parse(&args(
            "/b /m -o rw,config=/etc/cachefs/x.toml,_netdev,x-systemd.requires=/srv,allow_other,nofail,threads=2,log=/var/log/c.log",
        ))
        .unwrap();
        assert_eq!(r.backing, "/b");
        assert_eq!(r.mountpoint, "/m");
        assert_eq!(
            r.daemon_args,
            args("--config /etc/cachefs/x.toml --threads 2 -o allow_other")
        );
        assert_eq!(r.log.as_deref(), Some(OsStr::new("/var/log/c.log")));
        assert!(!r.fake);
    }

    #[test]
    fn refuses_a_wrong_number_of_paths() {
        let e = parse(&args("/b -o rw")).unwrap_err().to_string();
        assert!(e.contains("usage"), "{e}");
        assert!(parse(&args("/b /m -x")).is_err());
    }
}
