//! `cachefs mount`: wire the store to a FUSE session, run it in the
//! foreground, and follow the service manager's lifecycle:
//!
//! - READY=1 (sd_notify) only once a stat and a statfs of the mountpoint
//!   have been answered through FUSE, so dependants never see the empty
//!   directory underneath;
//! - SIGHUP reloads the config's policies; a config that does not load is
//!   logged and the old policies stay;
//! - SIGINT/SIGTERM send STOPPING=1 and unmount. A busy mount (open files,
//!   a working directory inside) is reported and retried until the stop
//!   timeout, then detached; either way the index is saved before exit.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fuser::{MountOption, SessionACL};

use super::guard::Guard;
use super::notify::Notifier;
use cachefs::config::Config;
use cachefs::fs::CacheFs;
use cachefs::fs::fuse::FuseFs;
use cachefs::store::{Store, SystemClock};

/// What `cachefs mount` was asked to do.
#[derive(clap::Args)]
pub struct MountArgs {
    /// Directory holding the entries (created, mode 0700, if missing).
    pub backing: PathBuf,
    /// Where the cache appears; must be an existing directory.
    pub mountpoint: PathBuf,
    /// TOML config file; without one, the embedded defaults apply
    /// (TTL 2h, quota 1GiB, namespaces made by mkdir).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Mount options, comma separated: allow_other, allow_root, ro, and
    /// other FUSE options. Permissions are always enforced by the kernel
    /// (default_permissions is implied wherever other users can enter).
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// The most requests that wait (on the disk: publishes, creates, cold
    /// reads; or on another request) served at once, each on a worker
    /// thread started when first needed. Requests that never wait (hits,
    /// lookups, stats, listings) are all answered by one request thread,
    /// whatever this says; raise it for many writers at once on a slow or
    /// `durability = "fsync"` volume.
    #[arg(long, default_value_t = 16)]
    pub threads: usize,
    /// Threads that read the kernel's queue and answer the requests that
    /// never wait. Two by default: with one, a publish that evicts, or a
    /// writer among several, holds every other request for its time (a
    /// full quota namespace's publish measured +50 % in median, four
    /// writers' ops/s -19 %). One answers each request on the vCPU its
    /// caller woke (with two they take turns, and on a VM a wake on another
    /// vCPU can cost more than the request): hot reads measured up to 25 %
    /// faster with one while the host is quiet, far slower while the VM
    /// is in its slow mode.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub request_threads: u16,
    /// On SIGTERM, how long to wait for open files to close before
    /// detaching the mount ("10s", "1m").
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub stop_timeout: Duration,
}

/// Everything the signal thread and the main thread share to stop.
struct Daemon {
    store: Arc<Store>,
    notifier: Notifier,
    mountpoint: PathBuf,
    config_path: Option<PathBuf>,
    open_handles: Arc<AtomicUsize>,
    stop_timeout: Duration,
    /// Set once the index is saved: whichever thread ends the process
    /// first saves it, the other does nothing.
    finished: Mutex<bool>,
    /// Aborts the connection if this process is killed and cannot finish
    /// dying (see `guard.rs`); dismissed by a clean stop.
    guard: Mutex<Option<Guard>>,
}

pub fn mount(args: &MountArgs) -> Result<ExitCode> {
    let notifier = Notifier::from_env().context("invalid NOTIFY_SOCKET")?;
    let config = load_config(args.config.as_deref())?;
    let mountpoint = &args.mountpoint;
    detach_if_dead(mountpoint)?;
    match std::fs::metadata(mountpoint) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => bail!("mountpoint {} is not a directory", mountpoint.display()),
        Err(e) => bail!("mountpoint {}: {e}", mountpoint.display()),
    }
    if is_mount_point(mountpoint) {
        bail!(
            "mountpoint {} is busy: something is already mounted there",
            mountpoint.display()
        );
    }
    let fuse_cfg = fuse_config(&args.options, usize::from(args.request_threads))?;
    cachefs::fs::set_request_readers(usize::from(args.request_threads));
    // Serves at once: the index is rebuilt behind (snapshot or scan), and
    // lookups it cannot answer yet go to the keys' backing paths.
    let poll = config.cache.poll_interval;
    let store = Store::open_serving(&args.backing, config, Arc::new(SystemClock))?;
    // Other daemons on the backing dir learn this one's changes, and it
    // theirs (`store/follow.rs`); without it each is only slower to learn.
    if let Err(e) = store.share_changes(poll) {
        log::warn!("cannot share changes with other daemons: {e}");
    }
    let fs = CacheFs::new(Arc::clone(&store));
    fs.set_max_workers(args.threads);
    let open_handles = fs.open_handles();
    let kernel_slot = fs.kernel_slot();
    let mut session = fuser::Session::new(FuseFs::new(fs), mountpoint, &fuse_cfg)
        .with_context(|| format!("cannot mount at {}", mountpoint.display()))?;
    // Kernel cache invalidations go through the session's channel.
    let _ = kernel_slot.set(Box::new(session.notifier()));
    let guard = Guard::start(mountpoint)
        .inspect_err(|e| log::warn!("no guard for a kill -9 (a killed daemon may hang): {e}"))
        .ok();
    log::info!(
        "mounted {} at {}; the index is rebuilt behind (see stats: index)",
        args.backing.display(),
        mountpoint.display(),
    );

    let daemon = Arc::new(Daemon {
        store: Arc::clone(&store),
        notifier,
        mountpoint: mountpoint.clone(),
        config_path: args.config.clone(),
        open_handles,
        stop_timeout: args.stop_timeout,
        finished: Mutex::new(false),
        guard: Mutex::new(guard),
    });
    spawn_readiness(Arc::clone(&daemon));
    store.start_sweeper();
    store.start_stager();
    spawn_signal_handler(Arc::clone(&daemon), session.unmount_callable())?;

    let result = session.run();
    daemon.finish();
    result.context("FUSE session failed")?;
    Ok(ExitCode::SUCCESS)
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

fn fuse_config(options: &[String], readers: usize) -> Result<fuser::Config> {
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("cachefs".into()),
        // The kernel's own option, not MountOption::Subtype (which fuser
        // hands only to fusermount): /proc/mounts then says fuse.cachefs,
        // so findmnt, umount and `cachefs stats` can tell our mounts apart.
        MountOption::CUSTOM("subtype=cachefs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    for opt in options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        match opt {
            "allow_other" => cfg.acl = SessionACL::All,
            "allow_root" => cfg.acl = SessionACL::RootAndOwner,
            // Implied wherever it could refuse anything (below).
            "default_permissions" => {}
            "ro" => cfg.mount_options.push(MountOption::RO),
            "rw" => {}
            "exec" => cfg.mount_options.push(MountOption::Exec),
            "noexec" => cfg.mount_options.push(MountOption::NoExec),
            "atime" => cfg.mount_options.push(MountOption::Atime),
            "noatime" => cfg.mount_options.push(MountOption::NoAtime),
            "sync" => cfg.mount_options.push(MountOption::Sync),
            "async" => cfg.mount_options.push(MountOption::Async),
            "dirsync" => cfg.mount_options.push(MountOption::DirSync),
            "auto_unmount" => {
                bail!("-o auto_unmount is not supported (cachefs unmounts itself on SIGTERM)")
            }
            other => cfg
                .mount_options
                .push(MountOption::CUSTOM(other.to_string())),
        }
    }
    // The kernel checks every access against the owners and modes we
    // report (entries', namespaces'), and limits chmod to the owner and
    // chown to root, as on a local disk: a mode `ls -l` shows holds once
    // `allow_other` lets other users in. The kernel's check is the one
    // every local filesystem uses (groups, capabilities, sticky dirs);
    // the same checks in the daemon would be a second copy that could
    // disagree. It costs a publish two GETATTRs (the new file's and its
    // namespace's attributes, which a create leaves stale), so it is left
    // out only where it could never refuse: a mount by root that only
    // root may enter, whose every caller has CAP_DAC_OVERRIDE and
    // CAP_FOWNER, as on a local disk.
    if !(cfg.acl == SessionACL::Owner && nix::unistd::geteuid().is_root()) {
        cfg.mount_options.push(MountOption::DefaultPermissions);
    }
    // One thread (by default) reads the kernel's queue and answers every
    // request that never waits; the others go to workers
    // (`fs/dispatch.rs`). A second reader takes requests too, and the
    // kernel wakes whichever waited longest: on a VM, often a halted
    // vCPU's.
    cfg.n_threads = Some(readers.max(1));
    cfg.clone_fd = readers > 1;
    Ok(cfg)
}

impl Daemon {
    /// Saves the index and logs the stop, once.
    fn finish(&self) {
        let mut finished = cachefs::sync::lock(&self.finished);
        if *finished {
            return;
        }
        if let Some(g) = cachefs::sync::lock(&self.guard).take() {
            g.dismiss();
        }
        match self.store.save_snapshot() {
            Ok(Some(n)) => log::info!("stopped; saved the index ({n} entries)"),
            Ok(None) => log::info!("stopped while the index was rebuilt; the next start scans"),
            Err(e) => log::error!("stopped; cannot save the index (the next start scans): {e}"),
        }
        self.store.end_session();
        *finished = true;
    }

    fn reload(&self) {
        match load_config(self.config_path.as_deref()) {
            Ok(cfg) => {
                let evicted = self.store.reload(cfg);
                let usage = self.store.usage();
                log::info!(
                    "reloaded the config: quota {}, {} entries evicted to fit",
                    iec(usage.quota_bytes),
                    evicted
                );
                self.notifier.notify("STATUS=reloaded the config");
            }
            Err(e) => {
                log::error!("config not reloaded, the old one stays in force: {e:#}");
                self.notifier
                    .notify("STATUS=config not reloaded (see the log)");
            }
        }
    }

    /// Unmounts, waiting up to the stop timeout for a busy mount to become
    /// free. Returns only if the session is ending by itself; otherwise it
    /// saves the index and exits the process.
    fn stop(&self, unmounter: &mut fuser::SessionUnmounter, signals: &mut Signals) {
        self.notifier.notify("STOPPING=1");
        let mnt = self.mountpoint.display();
        log::info!("stopping: unmounting {mnt}");
        // The first attempt goes through fuser so that the session does
        // not try to unmount again when it ends.
        let Err(e) = unmounter.unmount() else {
            return;
        };
        log::warn!(
            "{mnt} is busy ({e}; {} open files); waiting up to {} for them to close",
            self.open_handles.load(Ordering::Relaxed),
            humantime::format_duration(self.stop_timeout)
        );
        let deadline = Instant::now() + self.stop_timeout;
        let mut again = false;
        while Instant::now() < deadline && !again {
            thread::sleep(Duration::from_millis(50));
            if unmount(&self.mountpoint, false).is_ok() {
                log::info!("{mnt} is free and unmounted");
                return;
            }
            // A second SIGINT/SIGTERM means: stop now.
            again = signals.pending().any(|s| s != SIGHUP);
        }
        log::warn!(
            "{mnt} still busy ({} open files); detaching it: they get ENOTCONN",
            self.open_handles.load(Ordering::Relaxed)
        );
        if let Err(e) = unmount(&self.mountpoint, true) {
            log::error!("cannot detach {mnt}: {e}");
        }
        self.finish();
        std::process::exit(0);
    }
}

/// Sizes the way the config writes them (binary units).
fn iec(bytes: u64) -> String {
    bytesize::ByteSize(bytes).to_string_as(true)
}

/// Unmounts (lazily: detaches) the mountpoint. Root calls umount2; an
/// ordinary user goes through fusermount3, as mounting did.
fn unmount(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    if nix::unistd::geteuid().is_root() {
        let flags = if lazy {
            nix::mount::MntFlags::MNT_DETACH
        } else {
            nix::mount::MntFlags::empty()
        };
        return nix::mount::umount2(mountpoint, flags).map_err(io::Error::from);
    }
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u").arg("-q");
    if lazy {
        cmd.arg("-z");
    }
    let status = cmd.arg(mountpoint).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("fusermount3 -u: {status}")))
    }
}

/// Sends READY=1 once the mount answers a stat and a statfs through FUSE
/// (both block until the session serves them).
fn spawn_readiness(daemon: Arc<Daemon>) {
    thread::Builder::new()
        .name("readiness".into())
        .spawn(move || {
            let mnt = &daemon.mountpoint;
            let answered = std::fs::metadata(mnt).and_then(|_| {
                nix::sys::statfs::statfs(mnt.as_path())
                    .map(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC)
                    .map_err(io::Error::from)
            });
            match answered {
                Ok(true) => {
                    log::info!("ready: {} answers", mnt.display());
                    daemon
                        .notifier
                        .notify(&format!("READY=1\nSTATUS=serving {}", mnt.display()));
                }
                Ok(false) => log::error!("not ready: {} is not our FUSE mount", mnt.display()),
                Err(e) => log::error!("not ready: {} does not answer: {e}", mnt.display()),
            }
        })
        .expect("spawn readiness thread");
}

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
type Signals = signal_hook::iterator::Signals;

fn spawn_signal_handler(daemon: Arc<Daemon>, mut unmounter: fuser::SessionUnmounter) -> Result<()> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot install signal handlers")?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Some(sig) = signals.forever().next() {
                if sig == SIGHUP {
                    daemon.reload();
                } else {
                    log::info!(
                        "signal {}: stopping",
                        if sig == SIGINT { "SIGINT" } else { "SIGTERM" }
                    );
                    daemon.stop(&mut unmounter, &mut signals);
                }
            }
        })?;
    Ok(())
}

/// A cachefs that was killed (crash, OOM, kill -9) leaves its mount in
/// place, answering ENOTCONN. Restarting on it (systemd's Restart=) must
/// work, so such a mount of ours is detached first; a dead mount of any
/// other filesystem is left alone and refused. statfs is the probe: the
/// kernel answers a stat of the root from its attribute cache for a while
/// after the daemon died, but sends every statfs.
fn detach_if_dead(mountpoint: &Path) -> Result<()> {
    let Some(fstype) = mount_type(mountpoint) else {
        return Ok(());
    };
    match nix::sys::statfs::statfs(mountpoint) {
        Err(nix::errno::Errno::ENOTCONN) if fstype == "fuse.cachefs" => {
            log::warn!(
                "{} holds the dead mount of a cachefs that did not stop cleanly; detaching it",
                mountpoint.display()
            );
            unmount(mountpoint, true).with_context(|| {
                format!("cannot detach the dead mount at {}", mountpoint.display())
            })
        }
        Err(nix::errno::Errno::ENOTCONN) => bail!(
            "mountpoint {} holds a dead {fstype} mount; unmount it first",
            mountpoint.display()
        ),
        _ => Ok(()), // alive: refused with the other mountpoint checks
    }
}

fn is_mount_point(path: &Path) -> bool {
    mount_type(path).is_some()
}

/// The type /proc/self/mounts gives the mount at `path`, if any. Only the
/// parent is canonicalized: a dead mount cannot be stat'ed itself.
fn mount_type(path: &Path) -> Option<String> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let full = parent.canonicalize().ok()?.join(path.file_name()?);
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let want = full.to_string_lossy().replace(' ', "\\040");
    // The last line wins: a mount stacked on another hides it.
    mounts.lines().rev().find_map(|l| {
        let mut fields = l.split(' ');
        let (_, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (target == want).then(|| fstype.to_string())
    })
}
