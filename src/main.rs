//! The `cachefs` command: clap definitions and dispatch to `cli::*`.
//! No cache logic lives here.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use cachefs::store::PurgeSelect;

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
    Mount(cli::mount::MountArgs),
    /// Show a live mount's figures: hit ratio, entries, bytes against
    /// quota, evictions, expirations, rejected writes and latency
    /// percentiles, per namespace and in total.
    ///
    /// Without MOUNTPOINT, uses the cachefs mount found in
    /// /proc/self/mounts (every one, in turn, when there are several).
    Stats {
        /// A cachefs mount point.
        mountpoint: Option<PathBuf>,
        /// Print MOUNTPOINT/.cachefs/stats.json as is.
        #[arg(long)]
        json: bool,
    },
    /// Remove entries: all, the expired ones, or those older than an age;
    /// in one namespace or in all.
    ///
    /// Through a live mount the daemon does it (its counters and df change
    /// at once). With --backing it works offline on a backing dir, and
    /// refuses when a live daemon holds that dir.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["older_than", "expired", "all"])))]
    #[command(group(clap::ArgGroup::new("where").required(true).args(["mountpoint", "backing"])))]
    Purge {
        /// A live cachefs mount point.
        mountpoint: Option<PathBuf>,
        /// Work offline on this backing dir instead (no daemon may hold it).
        #[arg(long, value_name = "DIR")]
        backing: Option<PathBuf>,
        /// Only this namespace.
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        /// Entries published (or touched) longer ago than DUR ("90s", "2h", "7d").
        #[arg(long, value_name = "DUR")]
        older_than: Option<String>,
        /// Entries whose time-to-live has run out.
        #[arg(long)]
        expired: bool,
        /// Every entry.
        #[arg(long)]
        all: bool,
        /// Offline only: the daemon's config, whose TTLs decide --expired
        /// (required with --expired).
        #[arg(long, requires = "backing")]
        config: Option<PathBuf>,
        /// Print {"entries", "bytes", "mode"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check every entry of a backing dir (header, sizes, checksum) and
    /// report each bad one. Exit status: 0 all good, 1 some bad, 2 the
    /// check could not run.
    Verify {
        /// The backing dir.
        #[arg(long, value_name = "DIR")]
        backing: PathBuf,
        /// Move bad entries into DIR/quarantine/ (refused while a live
        /// daemon holds the dir).
        #[arg(long)]
        quarantine: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the entries of a backing dir without a mount: namespace, key,
    /// size, stored size, age, time left before expiry.
    Inspect {
        /// The backing dir.
        #[arg(long, value_name = "DIR")]
        backing: PathBuf,
        /// Only this namespace.
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        /// The config whose TTLs decide expiry (default: the embedded defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Print the sha256 key of a text as clients name entries (the exact
    /// bytes, no newline added); `-` or nothing reads stdin.
    Key {
        /// The text (or `-` for stdin).
        text: Option<String>,
        /// Print NS/<hex>, the path under the mount.
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
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
    let cli = Cli::parse();
    // `verify` keeps 1 for "bad entries found"; its own failures are 2.
    let failure = match cli.command {
        Command::Verify { .. } => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    };
    report(run(cli), failure)
}

/// One line on stderr for an error (the chain of causes, outermost
/// first) and the given failure status.
fn report(result: Result<ExitCode>, failure: ExitCode) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("cachefs: error: {}", msg.join(": ").replace('\n', " "));
            failure
        }
    }
}

/// Output piped into `head` that closed early is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Mount(args) => cli::mount::mount(&args),
        Command::Stats { mountpoint, json } => cli::stats::run(mountpoint.as_deref(), json),
        Command::Purge {
            mountpoint,
            backing,
            namespace,
            older_than,
            expired,
            all,
            config,
            json,
        } => {
            let select = match (older_than, expired, all) {
                (Some(d), _, _) => PurgeSelect::OlderThan(
                    cachefs::config::parse_duration(&d).map_err(anyhow::Error::msg)?,
                ),
                (None, true, _) => PurgeSelect::Expired,
                _ => PurgeSelect::All,
            };
            if backing.is_some() && expired && config.is_none() {
                // Guessing the TTLs (the embedded 2 h) could purge live
                // entries of a namespace whose config keeps them for days.
                anyhow::bail!(
                    "offline --expired needs the daemon's --config FILE (TTLs come from it); or use --older-than DUR"
                );
            }
            let target = match (&mountpoint, &backing) {
                (Some(m), None) => cli::purge::Target::Mount(m),
                (None, Some(dir)) => cli::purge::Target::Backing {
                    dir,
                    config: config.as_deref(),
                },
                _ => anyhow::bail!("give either MOUNTPOINT or --backing DIR, not both"),
            };
            cli::purge::run(target, namespace.as_deref(), select, json)
        }
        Command::Verify {
            backing,
            quarantine,
            json,
        } => cli::verify::run(&backing, quarantine, json),
        Command::Inspect {
            backing,
            namespace,
            config,
            json,
        } => cli::inspect::run(&backing, namespace.as_deref(), config.as_deref(), json),
        Command::Key { text, namespace } => cli::key::run(text.as_deref(), namespace.as_deref()),
    }
}
