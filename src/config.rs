//! The TOML configuration: schema, embedded defaults, validation.
//!
//! Every field is optional; durations ("90s", "2h", "7d") and sizes ("512MiB",
//! "10GB") are written the way people write them, or as plain integers of
//! seconds / bytes. Unknown fields are errors, so a typo never silently falls
//! back to a default. Errors are one line (`ConfigError`'s Display), because
//! the CLI prints them as its single error line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::access::{AccessOverride, IdSpec, parse_mode, resolve_group, resolve_user};
pub use crate::names::KeyFormat;
use crate::names::Namespace;

mod compression;
pub use compression::Compression;

/// Embedded default TTL: 2 hours.
pub const DEFAULT_TTL: Duration = Duration::from_secs(2 * 60 * 60);
/// Embedded default total quota: 1 GiB (capped by the volume's room at mount).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Other daemons' change logs are read this often if no event comes.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Invalid { path: String, message: String },
}

/// How hard a publish works to survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Atomic rename only: survives a daemon crash, not always a power loss.
    #[default]
    Rename,
    /// fsync the entry and its directory before `close()` returns.
    Fsync,
}

/// The policy of one namespace. `None` limits mean "no limit of its own".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespacePolicy {
    /// `None`: the cache's default TTL. `Some(ZERO)`: never expires.
    pub ttl: Option<Duration>,
    pub max_bytes: Option<u64>,
    pub max_entries: Option<u64>,
    pub max_entry_bytes: Option<u64>,
    pub key_format: KeyFormat,
    pub durability: Durability,
    /// `None`: the `[cache]` default (`CachePolicy::compression`).
    pub compression: Option<Compression>,
    /// `owner`, `group`, `mode`: names resolved to ids when the config is
    /// loaded, so an unknown one is a config error at start (or reload).
    pub access: AccessOverride,
}

/// The whole-cache settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePolicy {
    /// `None`: the embedded default (1 GiB), capped by the volume's room.
    pub max_bytes: Option<u64>,
    pub max_entries: Option<u64>,
    pub default_ttl: Duration,
    pub allow_new_namespaces: bool,
    pub sweep_interval: Duration,
    /// See `DEFAULT_POLL_INTERVAL`.
    pub poll_interval: Duration,
    /// Of every namespace that sets none of its own.
    pub compression: Compression,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            max_bytes: None,
            max_entries: None,
            default_ttl: DEFAULT_TTL,
            allow_new_namespaces: true,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            poll_interval: DEFAULT_POLL_INTERVAL,
            compression: Compression::None,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub cache: CachePolicy,
    /// Namespaces named in the config; they exist from the start.
    pub namespaces: BTreeMap<String, NamespacePolicy>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    namespace: BTreeMap<String, RawNamespace>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_bytes: Option<Size>,
    max_entries: Option<u64>,
    default_ttl: Option<Dur>,
    allow_new_namespaces: Option<bool>,
    sweep_interval: Option<Dur>,
    poll_interval: Option<Dur>,
    compression: Option<compression::Algorithm>,
    compression_level: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    ttl: Option<Dur>,
    max_bytes: Option<Size>,
    max_entries: Option<u64>,
    max_entry_bytes: Option<Size>,
    key_format: Option<KeyFormat>,
    durability: Option<Durability>,
    compression: Option<compression::Algorithm>,
    compression_level: Option<i64>,
    owner: Option<Id>,
    group: Option<Id>,
    mode: Option<Mode>,
}

/// A user or group: a name or a numeric id.
struct Id(IdSpec);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Int(i64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Int(n) => u32::try_from(n)
                .map(|n| Id(IdSpec::Id(n)))
                .map_err(|_| serde::de::Error::custom(format!("invalid user or group id {n}"))),
            Either::Text(s) => Ok(Id(IdSpec::Name(s))),
        }
    }
}

/// A mode: an octal string ("0750"). A TOML integer is refused: 750 and
/// 0o750 are different numbers, and which one was meant cannot be told.
struct Mode(u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Int(i64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Int(n) => Err(serde::de::Error::custom(format!(
                "mode {n} must be a quoted octal string, e.g. \"0750\""
            ))),
            Either::Text(s) => parse_mode(&s).map(Mode).map_err(serde::de::Error::custom),
        }
    }
}

/// A size: an integer of bytes or a string such as "512MiB" or "10GB".
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Int(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Int(n) => Ok(Size(n)),
            Either::Text(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// A duration: an integer of seconds or a string such as "90s", "2h", "7d".
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Int(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Int(n) => Ok(Dur(Duration::from_secs(n))),
            Either::Text(s) => parse_duration(&s)
                .map(Dur)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses "512MiB", "10GB", "1.5 GiB" or "4096" into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("invalid size {text:?} (expected e.g. \"512MiB\", \"10GB\")"))
}

/// Parses "90s", "2h", "7d", "1h 30m" or "3600" into a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("invalid duration {text:?} (expected e.g. \"90s\", \"2h\", \"7d\")"))
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses config text; the error is one line.
    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| one_line_toml_error(text, &e))?;
        let dur = |d: Option<Dur>, default| d.map_or(default, |d| d.0);
        let cache = CachePolicy {
            max_bytes: raw.cache.max_bytes.map(|s| s.0),
            max_entries: raw.cache.max_entries,
            default_ttl: raw.cache.default_ttl.map_or(DEFAULT_TTL, |d| d.0),
            allow_new_namespaces: raw.cache.allow_new_namespaces.unwrap_or(true),
            sweep_interval: dur(raw.cache.sweep_interval, DEFAULT_SWEEP_INTERVAL),
            poll_interval: dur(raw.cache.poll_interval, DEFAULT_POLL_INTERVAL),
            compression: compression::resolve(
                "[cache]",
                raw.cache.compression,
                raw.cache.compression_level,
                Compression::None,
            )?,
        };
        if cache.sweep_interval.is_zero() {
            return Err("[cache] sweep_interval must be positive".into());
        }
        if cache.poll_interval.is_zero() {
            return Err("[cache] poll_interval must be positive".into());
        }
        let mut namespaces = BTreeMap::new();
        for (name, ns) in raw.namespace {
            if let Err(e) = Namespace::parse(name.as_bytes()) {
                return Err(format!("[namespace.{name}]: invalid namespace name: {e}"));
            }
            let id_err = |e: String| format!("[namespace.{name}]: {e}");
            let access = AccessOverride {
                uid: ns
                    .owner
                    .map(|o| resolve_user(&o.0))
                    .transpose()
                    .map_err(id_err)?,
                gid: ns
                    .group
                    .map(|g| resolve_group(&g.0))
                    .transpose()
                    .map_err(id_err)?,
                mode: ns.mode.map(|m| m.0),
            };
            let own = ns.compression.is_some() || ns.compression_level.is_some();
            let compression = own
                .then(|| {
                    let section = format!("[namespace.{name}]");
                    let (a, l) = (ns.compression, ns.compression_level);
                    compression::resolve(&section, a, l, cache.compression)
                })
                .transpose()?;
            let policy = NamespacePolicy {
                access,
                compression,
                ttl: ns.ttl.map(|d| d.0),
                max_bytes: ns.max_bytes.map(|s| s.0),
                max_entries: ns.max_entries,
                max_entry_bytes: ns.max_entry_bytes.map(|s| s.0),
                key_format: ns.key_format.unwrap_or_default(),
                durability: ns.durability.unwrap_or_default(),
            };
            namespaces.insert(name, policy);
        }
        Ok(Config { cache, namespaces })
    }

    /// The policy a namespace gets: its own section, or the defaults.
    pub fn policy_for(&self, name: &str) -> NamespacePolicy {
        self.namespaces.get(name).cloned().unwrap_or_default()
    }

    /// The effective configuration as TOML, for `.cachefs/config.toml`.
    pub fn to_toml(&self, effective_max_bytes: u64) -> String {
        let mut out = String::new();
        let c = &self.cache;
        let _ = writeln!(out, "[cache]");
        let _ = writeln!(out, "max_bytes = {effective_max_bytes}");
        if let Some(n) = c.max_entries {
            let _ = writeln!(out, "max_entries = {n}");
        }
        let _ = writeln!(out, "default_ttl = {}", c.default_ttl.as_secs());
        let _ = writeln!(out, "allow_new_namespaces = {}", c.allow_new_namespaces);
        let hd = humantime::format_duration;
        let _ = writeln!(out, "sweep_interval = \"{}\"", hd(c.sweep_interval));
        let _ = writeln!(out, "poll_interval = \"{}\"", hd(c.poll_interval));
        out.push_str(&compression::to_toml(c.compression));
        for (name, ns) in &self.namespaces {
            let _ = writeln!(out, "\n[namespace.{}]", toml_key(name));
            if let Some(t) = ns.ttl {
                let _ = writeln!(out, "ttl = {}", t.as_secs());
            }
            for (field, value) in [
                ("max_bytes", ns.max_bytes),
                ("max_entries", ns.max_entries),
                ("max_entry_bytes", ns.max_entry_bytes),
            ] {
                if let Some(v) = value {
                    let _ = writeln!(out, "{field} = {v}");
                }
            }
            let kf = match ns.key_format {
                KeyFormat::Any => "any",
                KeyFormat::Sha256 => "sha256",
            };
            let du = match ns.durability {
                Durability::Rename => "rename",
                Durability::Fsync => "fsync",
            };
            let _ = writeln!(out, "key_format = \"{kf}\"\ndurability = \"{du}\"");
            if let Some(own) = ns.compression {
                out.push_str(&compression::to_toml(own));
            }
            for (field, value) in [("owner", ns.access.uid), ("group", ns.access.gid)] {
                if let Some(v) = value {
                    let _ = writeln!(out, "{field} = {v}");
                }
            }
            if let Some(m) = ns.access.mode {
                let _ = writeln!(out, "mode = \"{m:04o}\"");
            }
        }
        out
    }
}

fn toml_key(name: &str) -> String {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// toml's errors span several lines with a source excerpt; the CLI wants one.
fn one_line_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", message.trim())
        }
        None => message.trim().to_string(),
    }
}

#[cfg(test)]
mod tests;
