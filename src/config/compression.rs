//! `compression` and `compression_level`: how a namespace's new entries
//! are stored. Set in `[cache]` (the default of every namespace) and per
//! namespace; a namespace's own setting wins, field by field.

use serde::Deserialize;

/// zstd's own default, a good ratio for little CPU.
pub const DEFAULT_LEVEL: i32 = 3;
/// zstd's levels (its negative "fast" levels are not offered: they save
/// little on the JSON and text this cache holds).
pub const LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

/// How new entries are stored. Entries already stored keep their own
/// storage (their trailer says which), so a change applies to new writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Zstd {
        level: i32,
    },
}

/// The names the config accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Algorithm {
    None,
    Zstd,
}

/// The two fields of a section as written; `section` names it in errors.
pub(super) fn resolve(
    section: &str,
    algorithm: Option<Algorithm>,
    level: Option<i64>,
    inherited: Compression,
) -> Result<Compression, String> {
    let algorithm = algorithm.unwrap_or(match inherited {
        Compression::None => Algorithm::None,
        Compression::Zstd { .. } => Algorithm::Zstd,
    });
    match (algorithm, level) {
        (Algorithm::None, None) => Ok(Compression::None),
        (Algorithm::None, Some(_)) => Err(format!(
            "{section}: compression_level needs compression = \"zstd\""
        )),
        (Algorithm::Zstd, Some(l)) => match i32::try_from(l) {
            Ok(l) if LEVELS.contains(&l) => Ok(Compression::Zstd { level: l }),
            _ => Err(format!(
                "{section}: compression_level {l} is out of range ({}..={})",
                LEVELS.start(),
                LEVELS.end()
            )),
        },
        (Algorithm::Zstd, None) => Ok(Compression::Zstd {
            level: match inherited {
                Compression::Zstd { level } => level,
                Compression::None => DEFAULT_LEVEL,
            },
        }),
    }
}

/// The setting as `.cachefs/config.toml` shows it.
pub(super) fn to_toml(c: Compression) -> String {
    match c {
        Compression::None => "compression = \"none\"\n".into(),
        Compression::Zstd { level } => {
            format!("compression = \"zstd\"\ncompression_level = {level}\n")
        }
    }
}
