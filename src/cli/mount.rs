//! `cachefs mount`: wire the store to a FUSE session, run it in the
//! foreground, and turn signals into unmount (SIGINT/SIGTERM) and reload
//! (SIGHUP).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use anyhow::{Context, Result, bail};
use fuser::{MountOption, SessionACL};

use cachefs::config::Config;
use cachefs::fs::CacheFs;
use cachefs::store::{Store, SystemClock};

fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

fn fuse_config(options: &[String], threads: usize) -> Result<fuser::Config> {
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("cachefs".into()),
        MountOption::Subtype("cachefs".into()),
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
            "default_permissions" => cfg.mount_options.push(MountOption::DefaultPermissions),
            "ro" => cfg.mount_options.push(MountOption::RO),
            "rw" => {}
            "auto_unmount" => {
                bail!("-o auto_unmount is not supported (cachefs unmounts itself on SIGTERM)")
            }
            other => cfg
                .mount_options
                .push(MountOption::CUSTOM(other.to_string())),
        }
    }
    cfg.n_threads = Some(threads.max(1));
    cfg.clone_fd = threads > 1;
    Ok(cfg)
}

pub fn mount(
    backing: &Path,
    mountpoint: &Path,
    config_path: Option<&Path>,
    options: &[String],
    threads: usize,
) -> Result<ExitCode> {
    let config = load_config(config_path)?;
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
    let fuse_cfg = fuse_config(options, threads)?;
    let store = Arc::new(Store::open(backing, config, Arc::new(SystemClock))?);
    let fs = CacheFs::new(Arc::clone(&store));
    let mut session = fuser::Session::new(fs, mountpoint, &fuse_cfg)
        .with_context(|| format!("cannot mount at {}", mountpoint.display()))?;
    log::info!(
        "mounted {} at {} (quota {} bytes)",
        backing.display(),
        mountpoint.display(),
        store.usage().quota_bytes
    );

    spawn_sweeper(Arc::clone(&store));
    spawn_signal_handler(
        Arc::clone(&store),
        config_path.map(Path::to_path_buf),
        session.unmount_callable(),
        mountpoint.to_path_buf(),
    )?;

    session.run().context("FUSE session failed")?;
    let n = store.save_snapshot().context("cannot save the index")?;
    log::info!("unmounted; saved the index ({n} entries)");
    Ok(ExitCode::SUCCESS)
}

fn spawn_sweeper(store: Arc<Store>) {
    thread::Builder::new()
        .name("sweeper".into())
        .spawn(move || {
            loop {
                thread::sleep(store.config().cache.sweep_interval);
                let n = store.sweep_expired();
                if n > 0 {
                    log::debug!("swept {n} expired entries");
                }
            }
        })
        .expect("spawn sweeper thread");
}

fn spawn_signal_handler(
    store: Arc<Store>,
    config_path: Option<PathBuf>,
    mut unmounter: fuser::SessionUnmounter,
    mountpoint: PathBuf,
) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install signal handlers")?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    match load_config(config_path.as_deref()) {
                        Ok(cfg) => {
                            store.reload(cfg);
                            log::info!("reloaded the config");
                        }
                        Err(e) => log::error!("config not reloaded: {e:#}"),
                    }
                    continue;
                }
                log::info!("signal {sig}: unmounting");
                if let Err(e) = unmounter.unmount() {
                    // Busy (a process has its cwd inside): detach lazily so the
                    // session still ends and the index is saved.
                    log::warn!("unmount failed ({e}); detaching lazily");
                    let _ = nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        })?;
    Ok(())
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = canon.to_string_lossy().replace(' ', "\\040");
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}
