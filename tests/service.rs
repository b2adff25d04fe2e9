//! PRODUCT.md section 8 (and 1's signals): running cachefs as a service.
//! Readiness over the notify protocol, SIGHUP reload, graceful and busy
//! stops, restart after a crash, the installer, the systemd unit, and
//! `mount -t fuse.cachefs` through the mount helper.

mod common;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sock: UnixDatagram,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            _dir: dir,
            path,
            sock,
        }
    }

    /// The next datagram, or `None` if none comes within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("notify socket: {e}"),
        }
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn wait_exit(m: &mut Mount, timeout: Duration) -> std::process::ExitStatus {
    let mut status = None;
    let exited = wait_until(timeout, || {
        status = m.child_mut().try_wait().unwrap();
        status.is_some()
    });
    assert!(exited, "cachefs did not exit\n{}", m.log());
    status.unwrap()
}

#[test]
fn ready_is_sent_once_the_mount_answers_and_stopping_on_sigterm() {
    if skip_without_fuse() {
        return;
    }
    let notify = NotifySocket::new();
    let mut m = Mount::start(MountOpts {
        config: Some("[namespace.a]\n".into()),
        env: vec![("NOTIFY_SOCKET".into(), notify.path.display().to_string())],
        no_wait: true,
        ..Default::default()
    });
    let ready = notify
        .recv(WAIT)
        .unwrap_or_else(|| panic!("no READY=1 within {WAIT:?}\n{}", m.log()));
    assert!(has_line(&ready, "READY=1"), "first message: {ready:?}");
    // At the moment READY=1 arrives the mount is in place and answers:
    // no polling here, so a READY sent too early fails these.
    let entry = mount_entry(&m.mnt);
    assert_eq!(
        entry.as_ref().map(|(_, t)| t.as_str()),
        Some("fuse.cachefs"),
        "READY=1 before the mount existed"
    );
    assert_eq!(
        fs::metadata(&m.mnt).unwrap().ino(),
        1,
        "root of our FUSE fs"
    );
    assert!(m.mnt.join("a").is_dir());

    unsafe { libc::kill(m.pid(), libc::SIGTERM) };
    let stopping = notify.recv(WAIT).expect("no STOPPING=1 after SIGTERM");
    assert!(has_line(&stopping, "STOPPING=1"), "got {stopping:?}");
    assert!(wait_exit(&mut m, WAIT).success());
    assert!(!is_mounted(&m.mnt));
}

#[test]
fn no_ready_when_the_mount_fails() {
    let notify = NotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(BIN)
        .arg("mount")
        .arg(dir.path().join("backing"))
        .arg(dir.path().join("no-such-mountpoint"))
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(notify.recv(Duration::from_millis(200)), None);
}

/// The effective config as the mount shows it.
fn effective_config(m: &Mount) -> String {
    fs::read_to_string(m.mnt.join(".cachefs/config.toml")).unwrap()
}

#[test]
fn sighup_changes_ttl_and_quota_live_and_a_bad_config_keeps_the_old_policy() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new("[namespace.a]\nttl = \"1h\"\n");
    for k in ["k1", "k2", "k3", "k4"] {
        write_file(&m.path("a", k), &[7; 3000]).unwrap();
    }
    assert_eq!(m.ns_stat("a", "entries"), 4);
    let before = effective_config(&m);

    // Lower the TTL to 2 s and the quota to two 3000-byte entries.
    let cfg = m.config_path.clone().unwrap();
    fs::write(&cfg, "[namespace.a]\nttl = \"2s\"\nmax_bytes = \"8KiB\"\n").unwrap();
    unsafe { libc::kill(m.pid(), libc::SIGHUP) };
    assert!(
        wait_until(WAIT, || effective_config(&m) != before),
        "SIGHUP did not change the effective config\n{}",
        m.log()
    );
    let reloaded = effective_config(&m);
    assert!(reloaded.contains("max_bytes = 8192"), "{reloaded}");
    // The lower quota evicted down to it at once, not at the next write.
    assert_eq!(m.ns_stat("a", "entries"), 2);
    assert!(m.ns_stat("a", "bytes") <= 8192);
    assert_eq!(m.ns_stat("a", "evictions"), 2);
    // The new TTL applies: a fresh entry is readable, then expires.
    write_file(&m.path("a", "fresh"), b"short-lived").unwrap();
    assert_eq!(fs::read(m.path("a", "fresh")).unwrap(), b"short-lived");
    assert!(
        wait_until(WAIT, || !m.path("a", "fresh").exists()),
        "an entry under the new 2 s TTL did not expire"
    );

    // A broken config is refused and logged; the policy stays.
    fs::write(&cfg, "[namespace.a]\nttl = \"soon\"\n").unwrap();
    unsafe { libc::kill(m.pid(), libc::SIGHUP) };
    assert!(
        wait_until(WAIT, || m.log().contains("config not reloaded")),
        "no log line for the refused config\n{}",
        m.log()
    );
    assert_eq!(effective_config(&m), reloaded);
    for k in ["n1", "n2", "n3"] {
        write_file(&m.path("a", k), &[1; 3000]).unwrap();
    }
    assert_eq!(m.ns_stat("a", "entries"), 2, "the 8KiB quota still holds");
    assert!(m.is_alive());
    assert!(m.stop().success());
}

fn mount_with_stop_timeout(timeout: &str) -> Mount {
    Mount::start(MountOpts {
        config: Some("[namespace.a]\n".into()),
        args: vec!["--stop-timeout".into(), timeout.into()],
        ..Default::default()
    })
}

#[test]
fn sigterm_lets_an_inflight_publish_finish_then_saves_and_unmounts() {
    if skip_without_fuse() {
        return;
    }
    let mut m = mount_with_stop_timeout("20s");
    let mut writer = File::create(m.path("a", "k")).unwrap();
    writer.write_all(b"first half, ").unwrap();
    unsafe { libc::kill(m.pid(), libc::SIGTERM) };
    assert!(
        wait_until(WAIT, || m.log().contains("busy")),
        "the open writer was not reported\n{}",
        m.log()
    );
    writer.write_all(b"second half").unwrap();
    drop(writer.sync_all());
    drop(writer); // close(): publishes, and frees the mount
    assert!(wait_exit(&mut m, WAIT).success(), "{}", m.log());
    assert!(!is_mounted(&m.mnt));
    assert!(m.backing.join("index.snapshot").exists(), "index saved");

    let m2 = Mount::with_backing("[namespace.a]\n", &m.backing);
    assert_eq!(
        fs::read(m2.path("a", "k")).unwrap(),
        b"first half, second half"
    );
}

#[test]
fn sigterm_on_a_busy_mount_reports_it_then_detaches_after_the_timeout() {
    if skip_without_fuse() {
        return;
    }
    let mut m = mount_with_stop_timeout("1s");
    write_file(&m.path("a", "k"), b"value").unwrap();
    let mut reader = File::open(m.path("a", "k")).unwrap();
    unsafe { libc::kill(m.pid(), libc::SIGTERM) };
    assert!(wait_exit(&mut m, WAIT).success(), "{}", m.log());
    let log = m.log();
    assert!(
        log.contains("is busy") && log.contains("1 open files"),
        "{log}"
    );
    assert!(log.contains("detaching"), "{log}");
    assert!(!is_mounted(&m.mnt));
    let mut buf = Vec::new();
    assert_errno(
        reader.read_to_end(&mut buf),
        libc::ENOTCONN,
        "read after detach",
    );
    drop(reader);
    assert!(m.backing.join("index.snapshot").exists(), "index saved");

    let m2 = Mount::with_backing("[namespace.a]\n", &m.backing);
    assert_eq!(fs::read(m2.path("a", "k")).unwrap(), b"value");
}

#[test]
fn a_restart_after_a_crash_takes_over_the_dead_mount() {
    if skip_without_fuse() {
        return;
    }
    let mut crashed = Mount::new("[namespace.a]\n");
    write_file(&crashed.path("a", "k"), b"survives").unwrap();
    crashed.child_mut().kill().unwrap();
    crashed.child_mut().wait().unwrap();
    // stat may still answer from the kernel's attribute cache; statfs
    // always asks the (dead) daemon.
    let statfs = Command::new("stat")
        .arg("-f")
        .arg(&crashed.mnt)
        .output()
        .unwrap();
    assert!(!statfs.status.success(), "a dead mount is left behind");
    assert!(
        String::from_utf8_lossy(&statfs.stderr).contains("not connected"),
        "{}",
        String::from_utf8_lossy(&statfs.stderr)
    );

    let restarted = Mount::start(MountOpts {
        config: Some("[namespace.a]\n".into()),
        backing: Some(crashed.backing.clone()),
        mountpoint: Some(crashed.mnt.clone()),
        ..Default::default()
    });
    assert_eq!(fs::read(restarted.path("a", "k")).unwrap(), b"survives");
    assert!(
        restarted.log().contains("dead mount"),
        "{}",
        restarted.log()
    );
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn install_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh")
}

/// `DESTDIR=<temp> scripts/install.sh` with the test binary; the temp root.
fn install_into_temp_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(install_script())
        .env("DESTDIR", root.path())
        .env("CACHEFS_BIN", BIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    root
}

#[test]
fn install_into_destdir_then_uninstall() {
    let root = install_into_temp_root();
    let dest = root.path();

    let expect = [
        ("usr/local/bin/cachefs", 0o755),
        ("etc/systemd/system/cachefs@.service", 0o644),
        ("etc/cachefs/example.toml", 0o644),
        ("var/lib/cachefs", 0o700),
    ];
    for (p, mode) in expect {
        assert_eq!(mode_of(&dest.join(p)), mode, "{p}");
    }
    let helper = dest.join("sbin/mount.fuse.cachefs");
    assert_eq!(
        fs::read_link(&helper).unwrap(),
        Path::new("/usr/local/bin/cachefs"),
        "the helper points at the installed binary, without DESTDIR"
    );
    let unit = fs::read_to_string(dest.join("etc/systemd/system/cachefs@.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/cachefs mount "),
        "{unit}"
    );
    assert!(!unit.contains("@BINDIR@"));
    assert_eq!(
        fs::read(dest.join("usr/local/bin/cachefs")).unwrap(),
        fs::read(BIN).unwrap()
    );

    let out = Command::new(install_script())
        .arg("--uninstall")
        .env("DESTDIR", dest)
        .output()
        .unwrap();
    assert!(out.status.success());
    for (p, _) in &expect[..3] {
        assert!(!dest.join(p).exists(), "{p} left after uninstall");
    }
    assert!(fs::symlink_metadata(&helper).is_err());
    assert!(dest.join("var/lib/cachefs").is_dir(), "cached data kept");
}

#[test]
fn the_installed_unit_passes_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(!in_ci(), "systemd-analyze is missing but CI=true");
        eprintln!("SKIP: systemd-analyze not installed");
        return;
    };
    assert!(version.status.success());
    let root = install_into_temp_root();
    let dest = root.path();
    // verify checks that ExecStart= exists: point it into DESTDIR.
    let unit = fs::read_to_string(dest.join("etc/systemd/system/cachefs@.service")).unwrap();
    let units = dest.join("units");
    fs::create_dir(&units).unwrap();
    let bin = dest.join("usr/local/bin/cachefs");
    fs::write(
        units.join("cachefs@.service"),
        unit.replace("/usr/local/bin/cachefs", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(units.join("cachefs@example.service"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // Unknown keys and bad values are only warnings: fail on any word
    // about our unit.
    assert!(!text.contains("cachefs@"), "{text}");
}

/// Removes the helper it installed and unmounts on drop, even on panic.
struct HelperInstall {
    link: PathBuf,
    mnt: PathBuf,
}

impl Drop for HelperInstall {
    fn drop(&mut self) {
        lazy_unmount(&self.mnt);
        let _ = fs::remove_file(&self.link);
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mount_t_fuse_cachefs_and_an_fstab_line_go_through_the_helper() {
    if skip_without_fuse() {
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        assert!(!in_ci(), "the mount helper test needs root under CI=true");
        eprintln!("SKIP: mount(8) runs helpers from /sbin only; needs root");
        return;
    }
    let link = PathBuf::from("/sbin/mount.fuse.cachefs");
    if let Ok(target) = fs::read_link(&link) {
        panic!(
            "{} already exists (-> {}); this test installs its own: remove it first",
            link.display(),
            target.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (backing, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    fs::create_dir(&mnt).unwrap();
    let config = dir.path().join("c.toml");
    fs::write(&config, "[namespace.a]\n").unwrap();
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let _guard = HelperInstall {
        link: link.clone(),
        mnt: mnt.clone(),
    };

    // By hand, with the options an fstab line for a shared volume has.
    let log = dir.path().join("daemon.log");
    run_ok(
        Command::new("mount")
            .args(["-t", "fuse.cachefs"])
            .arg(&backing)
            .arg(&mnt)
            .args([
                "-o",
                &format!(
                    "config={},_netdev,allow_other,log={}",
                    config.display(),
                    log.display()
                ),
            ]),
    );
    assert_eq!(
        mount_entry(&mnt).map(|(_, t)| t),
        Some("fuse.cachefs".to_string())
    );
    write_file(&mnt.join("a/k"), b"through mount(8)").unwrap();
    run_ok(Command::new("umount").arg(&mnt));
    // The daemon saves its index once the session ends, then logs its stop.
    assert!(wait_until(WAIT, || backing.join("index.snapshot").exists()));
    let logged = |what: &str| fs::read_to_string(&log).is_ok_and(|l| l.contains(what));
    assert!(
        wait_until(WAIT, || logged("stopped")) && logged("ready"),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );

    // From an fstab line.
    let fstab = dir.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "{} {} fuse.cachefs config={},_netdev,nofail,x-systemd.requires=/ 0 0\n",
            backing.display(),
            mnt.display(),
            config.display()
        ),
    )
    .unwrap();
    run_ok(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt));
    assert_eq!(fs::read(mnt.join("a/k")).unwrap(), b"through mount(8)");
    run_ok(Command::new("umount").arg(&mnt));
    assert!(!is_mounted(&mnt));
}
