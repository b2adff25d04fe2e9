//! Who may use a namespace: its owner, group and mode. A leaf module that
//! `config` (the `owner`, `group`, `mode` fields), `store` (the namespace
//! records) and `fs` (the directory attributes) share.
//!
//! The kernel enforces these (cachefs always mounts with
//! `default_permissions`): what is kept here is what it checks against.
//!
//! Invariants: a mode never holds more than the permission bits (`0o7777`);
//! a namespace record read from the backing dir is untrusted input: it is
//! read up to `RECORD_MAX` bytes, and anything malformed is an error for the
//! caller to report, never a panic.

use std::ffi::CString;

/// A namespace directory's owner, group and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsAccess {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The mode of a namespace nobody chose one for: its owner writes,
/// everyone reads (as `mkdir` with the usual umask 022 makes).
pub const DEFAULT_NS_MODE: u32 = 0o755;
/// The permission bits a mode may hold (no file type).
pub const MODE_BITS: u32 = 0o7777;
/// The longest namespace record read from the backing dir.
pub const RECORD_MAX: usize = 256;

/// Owner, group and mode as the config sets them (`None`: not set there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessOverride {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

impl AccessOverride {
    pub fn is_empty(&self) -> bool {
        *self == AccessOverride::default()
    }
}

impl NsAccess {
    /// The daemon's own user and group, `DEFAULT_NS_MODE`: what a
    /// namespace gets when neither the config nor a record says otherwise
    /// (and what every namespace had before namespaces had owners).
    pub fn of_daemon() -> NsAccess {
        NsAccess {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            mode: DEFAULT_NS_MODE,
        }
    }

    /// This access with what the config sets taking precedence.
    pub fn with(self, o: &AccessOverride) -> NsAccess {
        NsAccess {
            uid: o.uid.unwrap_or(self.uid),
            gid: o.gid.unwrap_or(self.gid),
            mode: o.mode.unwrap_or(self.mode),
        }
    }

    /// This access changed by a chmod/chown (`None`: left as is).
    pub fn changed(self, uid: Option<u32>, gid: Option<u32>, mode: Option<u32>) -> NsAccess {
        self.with(&AccessOverride {
            uid,
            gid,
            mode: mode.map(|m| m & MODE_BITS),
        })
    }

    /// The namespace record kept in the backing dir's marker file:
    /// one line, `owner=UID group=GID mode=OCTAL`.
    pub fn encode(&self) -> String {
        format!(
            "owner={} group={} mode={:04o}\n",
            self.uid,
            self.gid,
            self.mode & MODE_BITS
        )
    }

    /// Parses a namespace record. An empty one (a marker written before
    /// namespaces had owners) is `None`: the caller applies the default.
    pub fn decode(bytes: &[u8]) -> Result<Option<NsAccess>, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        let (mut uid, mut gid, mut mode) = (None, None, None);
        for field in text.split_whitespace() {
            let (name, value) = field
                .split_once('=')
                .ok_or_else(|| format!("field {field:?} is not NAME=VALUE"))?;
            let slot = match name {
                "owner" => &mut uid,
                "group" => &mut gid,
                "mode" => &mut mode,
                _ => return Err(format!("unknown field {name:?}")),
            };
            if slot.is_some() {
                return Err(format!("field {name:?} given twice"));
            }
            let n = if name == "mode" {
                parse_mode(value)?
            } else {
                value
                    .parse::<u32>()
                    .map_err(|_| format!("{name} {value:?} is not a number"))?
            };
            *slot = Some(n);
        }
        match (uid, gid, mode) {
            (Some(uid), Some(gid), Some(mode)) => Ok(Some(NsAccess { uid, gid, mode })),
            _ => Err("owner, group and mode are all required".into()),
        }
    }
}

/// Parses an octal mode as `chmod` takes it: "0750", "750", "1777".
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if !digits.is_empty() && m <= MODE_BITS => Ok(m),
        _ => Err(format!(
            "invalid mode {text:?} (expected octal permission bits, e.g. \"0750\")"
        )),
    }
}

/// A user or group as the config names it: a name, or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSpec {
    Id(u32),
    Name(String),
}

/// The uid of a user name (or a numeric uid written as text), through
/// the system's user database (NSS), as `chown` resolves it.
pub fn resolve_user(spec: &IdSpec) -> Result<u32, String> {
    match spec {
        IdSpec::Id(n) => Ok(*n),
        IdSpec::Name(name) => match nix::unistd::User::from_name(checked(name)?) {
            Ok(Some(u)) => Ok(u.uid.as_raw()),
            Ok(None) => name
                .parse::<u32>()
                .map_err(|_| format!("no such user {name:?}")),
            Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
        },
    }
}

/// The gid of a group name (or a numeric gid written as text).
pub fn resolve_group(spec: &IdSpec) -> Result<u32, String> {
    match spec {
        IdSpec::Id(n) => Ok(*n),
        IdSpec::Name(name) => match nix::unistd::Group::from_name(checked(name)?) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            Ok(None) => name
                .parse::<u32>()
                .map_err(|_| format!("no such group {name:?}")),
            Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
        },
    }
}

/// A name fit to pass to the C library: non-empty, no NUL.
fn checked(name: &str) -> Result<&str, String> {
    match CString::new(name) {
        Ok(_) if !name.is_empty() => Ok(name),
        _ => Err(format!("invalid user or group name {name:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip_and_empty_means_default() {
        let a = NsAccess {
            uid: 998,
            gid: 65534,
            mode: 0o1750,
        };
        assert_eq!(a.encode(), "owner=998 group=65534 mode=1750\n");
        assert_eq!(NsAccess::decode(a.encode().as_bytes()), Ok(Some(a)));
        assert_eq!(NsAccess::decode(b""), Ok(None));
        assert_eq!(NsAccess::decode(b"\n"), Ok(None));
    }

    #[test]
    fn malformed_records_are_errors() {
        for bad in [
            &b"owner=1 group=2"[..],
            b"owner=1 group=2 mode=99999",
            b"owner=1 group=2 mode=0755 owner=3",
            b"owner=-1 group=2 mode=0755",
            b"owner=1 group=2 mode=0755 size=1",
            b"owner",
            b"\xff\xfe",
        ] {
            assert!(NsAccess::decode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn modes_parse_as_chmod_takes_them() {
        assert_eq!(parse_mode("0750"), Ok(0o750));
        assert_eq!(parse_mode("750"), Ok(0o750));
        assert_eq!(parse_mode("0o1777"), Ok(0o1777));
        for bad in ["", "0o", "8", "rwx", "17777", "-1"] {
            assert!(parse_mode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn users_and_groups_resolve_by_name_or_number() {
        assert_eq!(resolve_user(&IdSpec::Name("root".into())), Ok(0));
        assert_eq!(resolve_group(&IdSpec::Name("root".into())), Ok(0));
        assert_eq!(resolve_user(&IdSpec::Id(4242)), Ok(4242));
        assert_eq!(resolve_user(&IdSpec::Name("4242".into())), Ok(4242));
        assert_eq!(resolve_group(&IdSpec::Name("4243".into())), Ok(4243));
        let err = resolve_user(&IdSpec::Name("no-such-user-cachefs".into())).unwrap_err();
        assert!(err.contains("no such user"), "{err}");
        let err = resolve_group(&IdSpec::Name("no-such-group-cachefs".into())).unwrap_err();
        assert!(err.contains("no such group"), "{err}");
        assert!(resolve_user(&IdSpec::Name("a\0b".into())).is_err());
    }

    proptest! {
        /// Whatever is found in a marker file: an answer, never a panic.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = NsAccess::decode(&bytes);
        }
    }
}
