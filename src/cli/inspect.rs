//! `cachefs inspect`: list the entries of a backing dir without a mount,
//! like `ls` (key, size, stored size, age, expiry). Read-only: works beside
//! a live daemon too.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use cachefs::store::SystemClock;
use cachefs::store::offline::{Access, OfflineStore};

use super::{human_duration, offline_config, progress, show_name};

#[derive(Serialize)]
struct Row {
    namespace: String,
    key: String,
    size: u64,
    stored_bytes: u64,
    /// Publish (or last touch) time, unix seconds.
    mtime: f64,
    age_seconds: f64,
    /// Seconds until expiry (negative: expired, not yet reclaimed); `null`: never.
    expires_in_seconds: Option<f64>,
}

pub fn run(
    backing: &Path,
    namespace: Option<&str>,
    config: Option<&Path>,
    json: bool,
) -> Result<ExitCode> {
    let store = OfflineStore::open(
        backing,
        Access::ReadOnly,
        offline_config(config)?,
        Arc::new(SystemClock),
    )?;
    let files = store.entry_files();
    let pb = progress(files.len() as u64, "reading");
    let mut listed = Vec::new();
    for chunk in files.chunks(512) {
        listed.extend(store.list(chunk, namespace.map(str::as_bytes)));
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    listed.sort_by(|a, b| (&a.namespace, &a.key).cmp(&(&b.namespace, &b.key)));
    let now = store.now();
    let secs = |nanos: i64| nanos as f64 / 1e9;
    let rows: Vec<Row> = listed
        .iter()
        .map(|r| Row {
            namespace: String::from_utf8_lossy(&r.namespace).into_owned(),
            key: String::from_utf8_lossy(&r.key).into_owned(),
            size: r.logical_size,
            stored_bytes: r.stored_bytes,
            mtime: secs(r.mtime),
            age_seconds: secs(now - r.mtime),
            expires_in_seconds: r.expires.map(|at| secs(at - now)),
        })
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<16} {:<64} {:>12} {:>12} {:>12} {:>12}",
        "NAMESPACE",
        "KEY",
        "SIZE",
        "STORED",
        "AGE",
        "EXPIRES IN"
    )?;
    for (r, rec) in rows.iter().zip(&listed) {
        let age = human_duration(Duration::from_secs_f64(r.age_seconds.max(0.0)));
        let expires = match r.expires_in_seconds {
            None => "never".to_string(),
            Some(s) if s <= 0.0 => "expired".to_string(),
            Some(s) => human_duration(Duration::from_secs_f64(s)),
        };
        outln!(
            "{:<16} {:<64} {:>12} {:>12} {:>12} {:>12}",
            show_name(&rec.namespace),
            show_name(&rec.key),
            r.size,
            r.stored_bytes,
            age,
            expires
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
