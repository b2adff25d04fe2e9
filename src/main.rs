//! The `cachefs` command: clap definitions and dispatch to `cli::*`.
//! No cache logic lives here.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// A FUSE filesystem cache: write `MOUNT/<namespace>/<key>` to cache a
/// result, read it back to reuse it. Entries expire after a time-to-live,
/// byte quotas evict the least recently used, and every write is published
/// atomically when the file is closed.
#[derive(Parser)]
#[command(name = "cachefs", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount a cache in the foreground until SIGINT/SIGTERM (SIGHUP reloads
    /// the config's policies).
    Mount {
        /// Directory holding the entries (created, mode 0700, if missing).
        backing: PathBuf,
        /// Where the cache appears; must be an existing directory.
        mountpoint: PathBuf,
        /// TOML config file; without one, the embedded defaults apply
        /// (TTL 2h, quota 1GiB, namespaces made by mkdir).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Mount options, comma separated: allow_other, allow_root,
        /// default_permissions, ro, and other FUSE options.
        #[arg(short = 'o', value_name = "OPTS")]
        options: Vec<String>,
        /// FUSE worker threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// On SIGTERM, how long to wait for open files to close before
        /// detaching the mount ("10s", "1m").
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        stop_timeout: std::time::Duration,
    },
}

fn main() -> ExitCode {
    // fuser::session warns when the mount it would unmount at the end is
    // already gone, which is every ordinary `umount`: not worth a warning.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,fuser::session=error"),
    )
    .init();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str());
    if invoked_as.is_some_and(|n| cli::mount_helper::NAMES.contains(&n)) {
        // mount(8)'s "mount failure" status, which it passes on.
        return report(cli::mount_helper::run(&args[1..]), ExitCode::from(32));
    }
    report(run(Cli::parse()), ExitCode::FAILURE)
}

/// One line on stderr for an error (the chain of causes, outermost
/// first) and the given failure status.
fn report(result: Result<ExitCode>, failure: ExitCode) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("cachefs: error: {}", msg.join(": ").replace('\n', " "));
            failure
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Mount {
            backing,
            mountpoint,
            config,
            options,
            threads,
            stop_timeout,
        } => cli::mount::mount(&cli::mount::MountArgs {
            backing,
            mountpoint,
            config,
            options,
            threads,
            stop_timeout,
        }),
    }
}
