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
    /// Watch a mount's daemon and abort its FUSE connection if it is
    /// killed and cannot finish dying (started by `cachefs mount`).
    #[command(hide = true)]
    Guard(cli::guard::GuardArgs),
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
        /// Only under this directory of a namespace, NS/DIR (at a directory
        /// boundary: ns/a/b is not ns/a/bc). With --all it is `rm -r` of
        /// the directory: the directories under it, and it, go too.
        #[arg(long, value_name = "NS/DIR", conflicts_with = "namespace")]
        prefix: Option<String>,
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
    /// Write the live entries of a cache into a portable archive: a
    /// zstd-compressed tar (`tar --zstd -tvf FILE` lists it; `tar --zstd
    /// -xf FILE` gives NAMESPACE/KEY files), with each entry's key, mtime,
    /// TTL, mode and user.* xattrs.
    ///
    /// From a live mount (--mount, or the one cachefs mount there is) it
    /// reads through the mount's files: the daemon decides what is live,
    /// and each export counts as a hit. With --backing it reads a backing
    /// dir directly, read-only (a live daemon may hold it). Exit status: 0
    /// done, 1 some entries could not be read (reported, left out), 2 the
    /// export failed.
    #[command(group(clap::ArgGroup::new("age").args(["older_than", "newer_than"])))]
    Export {
        /// The archive to write (under FILE.partial until complete), or `-`
        /// for stdout.
        file: PathBuf,
        /// The live cachefs mount to export.
        #[arg(long, value_name = "DIR", conflicts_with = "backing")]
        mount: Option<PathBuf>,
        /// Export this backing dir instead (read only; no lock taken).
        #[arg(long, value_name = "DIR")]
        backing: Option<PathBuf>,
        /// With --backing: the daemon's config, whose TTLs decide what is
        /// live (default: the embedded defaults).
        #[arg(long, requires = "backing")]
        config: Option<PathBuf>,
        /// Only this namespace.
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        /// Only keys that start with P.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Only entries published (or touched) longer ago than DUR ("2h", "7d").
        #[arg(long, value_name = "DUR")]
        older_than: Option<String>,
        /// Only entries published (or touched) within the last DUR.
        #[arg(long, value_name = "DUR")]
        newer_than: Option<String>,
        /// zstd compression level (1-19).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
        level: i32,
        /// Print the totals as JSON (on stderr when the archive goes to stdout).
        #[arg(long)]
        json: bool,
    },
    /// Load an archive made by `cachefs export` into a live mount or a
    /// backing dir, by the same rules as any write (quotas, key format,
    /// max_entry_bytes), keeping each entry's mtime, expiry and mode.
    ///
    /// Entries already present with the same content are skipped, so a
    /// rerun after an interruption finishes the job; entries that expired
    /// meanwhile are skipped and counted. Exit status: 0 done, 1 some
    /// entries were refused (each reported), 2 the import stopped (an
    /// unreadable or damaged archive: what was imported before stays).
    Import {
        /// The archive, or `-` for stdin.
        file: PathBuf,
        /// The live cachefs mount to import into.
        #[arg(long, value_name = "DIR", conflicts_with = "backing")]
        mount: Option<PathBuf>,
        /// Import into this backing dir instead (made if missing; refused
        /// while a live daemon holds it).
        #[arg(long, value_name = "DIR")]
        backing: Option<PathBuf>,
        /// With --backing: the config whose policies apply (quotas, key
        /// format, max_entry_bytes; default: the embedded defaults).
        #[arg(long, requires = "backing")]
        config: Option<PathBuf>,
        /// Print the totals as JSON.
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
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str());
    if invoked_as.is_some_and(|n| cli::mount_helper::NAMES.contains(&n)) {
        init_logs(true);
        // mount(8)'s "mount failure" status, which it passes on.
        return report(cli::mount_helper::run(&args[1..]), ExitCode::from(32));
    }
    let cli = Cli::parse();
    init_logs(matches!(cli.command, Command::Mount(_) | Command::Guard(_)));
    // `verify` keeps 1 for "bad entries found"; its own failures are 2.
    let failure = match cli.command {
        Command::Verify { .. } | Command::Export { .. } | Command::Import { .. } => {
            ExitCode::from(2)
        }
        _ => ExitCode::FAILURE,
    };
    report(run(cli), failure)
}

/// Logs to stderr (`RUST_LOG`). A daemon logs what it does; the other
/// commands print their own results, and log only what goes wrong (an
/// import opens a store, whose start-up news is not the user's).
fn init_logs(daemon: bool) {
    // fuser::session warns when the mount it would unmount at the end is
    // already gone, which is every ordinary `umount`: not worth a warning.
    let default = if daemon {
        "info,fuser::session=error"
    } else {
        "warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
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
        Command::Guard(args) => cli::guard::run(&args),
        Command::Stats { mountpoint, json } => cli::stats::run(mountpoint.as_deref(), json),
        Command::Purge {
            mountpoint,
            backing,
            namespace,
            prefix,
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
            let place = match (&namespace, &prefix) {
                (_, Some(p)) => cli::purge::Place::Prefix(p),
                (Some(n), None) => cli::purge::Place::Namespace(n),
                (None, None) => cli::purge::Place::All,
            };
            cli::purge::run(target, place, select, json)
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
        Command::Export {
            file,
            mount,
            backing,
            config,
            namespace,
            prefix,
            older_than,
            newer_than,
            level,
            json,
        } => {
            let age = |d: Option<String>| {
                d.map(|d| cachefs::config::parse_duration(&d).map_err(anyhow::Error::msg))
                    .transpose()
            };
            let filter = cli::export::Filter {
                namespace: namespace.map(String::into_bytes),
                prefix: prefix.map(String::into_bytes),
                ..Default::default()
            }
            .with_age(age(older_than)?, age(newer_than)?);
            let source = match (&mount, &backing) {
                (_, Some(dir)) => cli::export::Source::Backing {
                    dir,
                    config: config.as_deref(),
                },
                (Some(m), None) => cli::export::Source::Mount(m),
                (None, None) => cli::export::Source::Mount(&the_mount(mount)?),
            };
            cli::export::run(source, &filter, &file, level, json)
        }
        Command::Import {
            file,
            mount,
            backing,
            config,
            json,
        } => {
            let target = match (&mount, &backing) {
                (_, Some(dir)) => cli::import::Target::Backing {
                    dir,
                    config: config.as_deref(),
                },
                (Some(m), None) => cli::import::Target::Mount(m),
                (None, None) => cli::import::Target::Mount(&the_mount(mount)?),
            };
            cli::import::run(target, &file, json)
        }
        Command::Key { text, namespace } => cli::key::run(text.as_deref(), namespace.as_deref()),
    }
}

/// The mount given, else the one cachefs mount in /proc/self/mounts.
fn the_mount(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(m) = given {
        return Ok(m);
    }
    let mut mounts = cli::cachefs_mounts()?;
    match mounts.len() {
        0 => anyhow::bail!("no cachefs mount found: give --mount DIR or --backing DIR"),
        1 => Ok(mounts.remove(0)),
        n => anyhow::bail!("{n} cachefs mounts found: give --mount DIR"),
    }
}
