//! `cachefs verify`: check every entry of a backing dir (trailer, sizes,
//! placement, content checksum), report each bad one, and with
//! `--quarantine` move it into `quarantine/` so no mount serves it.
//!
//! Exit status: 0 every entry is good, 1 at least one is bad, 2 the check
//! could not run (set by `main`). A bad entry never stops the check.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use cachefs::config::Config;
use cachefs::store::SystemClock;
use cachefs::store::offline::{Access, OfflineStore};

use super::{progress, show_name};

#[derive(Serialize)]
struct Bad {
    path: String,
    namespace: Option<String>,
    key: Option<String>,
    reason: String,
    quarantined_to: Option<String>,
}

#[derive(Serialize)]
struct Report {
    checked: u64,
    bad: Vec<Bad>,
}

pub fn run(backing: &Path, quarantine: bool, json: bool) -> Result<ExitCode> {
    let access = if quarantine {
        Access::Exclusive
    } else {
        Access::ReadOnly
    };
    let store = OfflineStore::open(backing, access, Config::default(), Arc::new(SystemClock))?;
    let files = store.entry_files();
    let pb = progress(files.len() as u64, "verifying");
    let mut write_error: Option<std::io::Error> = None;
    let report = store.verify(&files, quarantine, |outcome| {
        pb.inc(1);
        if let (Err(bad), false) = (outcome, json) {
            let names = bad.names.as_ref().map_or("?".to_string(), |(n, k)| {
                format!("{}/{}", show_name(n), show_name(k))
            });
            let moved = bad
                .quarantined_to
                .as_ref()
                .map_or(String::new(), |to| format!(" -> {}", to.display()));
            if write_error.is_none()
                && let Err(e) = pb
                    .suspend(|| outln!("BAD {} ({names}): {}{moved}", bad.path.display(), bad.why))
            {
                // A closed pipe stops the printing, not the check: the
                // exit status still says whether any entry is bad.
                write_error = Some(e);
            }
        }
    });
    pb.finish_and_clear();
    let bad_count = report.bad.len();
    if json {
        let out = Report {
            checked: report.checked,
            bad: report
                .bad
                .into_iter()
                .map(|b| Bad {
                    path: b.path.display().to_string(),
                    namespace: b
                        .names
                        .as_ref()
                        .map(|(n, _)| String::from_utf8_lossy(n).into_owned()),
                    key: b
                        .names
                        .as_ref()
                        .map(|(_, k)| String::from_utf8_lossy(k).into_owned()),
                    reason: b.why,
                    quarantined_to: b.quarantined_to.map(|p| p.display().to_string()),
                })
                .collect(),
        };
        // Ignored like the lines above: the exit status is the verdict.
        let _ = outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let _ = outln!(
            "checked {} entries: {} bad{}",
            report.checked,
            bad_count,
            if quarantine && bad_count > 0 {
                ", quarantined"
            } else {
                ""
            }
        );
    }
    Ok(if bad_count == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
