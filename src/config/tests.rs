//! The config's parsing and validation, without a mount.

use super::*;

/// The shipped example documents every field, commented out: as
/// shipped it is the defaults, and uncommented it must still parse.
#[test]
fn the_shipped_example_config_is_valid_commented_and_uncommented() {
    let text = include_str!("../../systemd/example.toml");
    assert_eq!(Config::parse(text).unwrap(), Config::default());
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with('[')
                || l.split_once(" = ")
                    .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let c = Config::parse(&uncommented).unwrap();
    assert_eq!(c.cache.max_entries, Some(1_000_000));
    let ns = &c.namespaces["enrichment"];
    assert_eq!(ns.durability, Durability::Fsync);
    assert_eq!(ns.key_format, KeyFormat::Sha256);
    assert_eq!(ns.max_entry_bytes, Some(1 << 20));
    assert_eq!(ns.access.mode, Some(0o750));
    assert_eq!(ns.compression, Some(Compression::Zstd { level: 9 }));
}

#[test]
fn compression_per_namespace_and_by_default_validated() {
    let c = Config::parse(
        "[cache]\ncompression = \"zstd\"\ncompression_level = 5\n\
         [namespace.a]\n[namespace.b]\ncompression = \"none\"\n\
         [namespace.c]\ncompression_level = 19\n",
    )
    .unwrap();
    assert_eq!(c.cache.compression, Compression::Zstd { level: 5 });
    assert_eq!(c.namespaces["a"].compression, None, "the [cache] default");
    assert_eq!(c.namespaces["b"].compression, Some(Compression::None));
    assert_eq!(
        c.namespaces["c"].compression,
        Some(Compression::Zstd { level: 19 })
    );
    let again = Config::parse(&c.to_toml(1 << 30)).unwrap();
    assert_eq!(again.cache.compression, c.cache.compression);
    assert_eq!(again.namespaces, c.namespaces, "config.toml round-trips");
    let d = Config::parse("[namespace.a]\ncompression = \"zstd\"\n").unwrap();
    assert_eq!(
        d.namespaces["a"].compression,
        Some(Compression::Zstd { level: 3 })
    );
    for (text, needle) in [
        (
            "[namespace.a]\ncompression = \"lz4\"\n",
            "unknown variant `lz4`",
        ),
        (
            "[namespace.a]\ncompression = \"zstd\"\ncompression_level = 0\n",
            "out of range",
        ),
        (
            "[cache]\ncompression = \"zstd\"\ncompression_level = 23\n",
            "out of range",
        ),
        (
            "[namespace.a]\ncompression_level = 3\n",
            "needs compression",
        ),
    ] {
        let e = Config::parse(text).unwrap_err();
        assert!(e.contains(needle), "{text:?}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn empty_config_is_the_embedded_defaults() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.cache.default_ttl, DEFAULT_TTL);
    assert_eq!(c.cache.max_bytes, None);
    assert!(c.cache.allow_new_namespaces);
    assert!(c.namespaces.is_empty());
}

#[test]
fn human_sizes_and_durations() {
    let c = Config::parse(
        "[cache]\nmax_bytes = \"512MiB\"\ndefault_ttl = \"7d\"\n\
         [namespace.llm]\nttl = \"90s\"\nmax_bytes = \"10GB\"\nmax_entry_bytes = 4096\n\
         key_format = \"sha256\"\ndurability = \"fsync\"\n",
    )
    .unwrap();
    assert_eq!(c.cache.max_bytes, Some(512 << 20));
    assert_eq!(c.cache.default_ttl, Duration::from_secs(7 * 86400));
    let ns = &c.namespaces["llm"];
    assert_eq!(ns.ttl, Some(Duration::from_secs(90)));
    assert_eq!(ns.max_bytes, Some(10_000_000_000));
    assert_eq!(ns.max_entry_bytes, Some(4096));
    assert_eq!(ns.key_format, KeyFormat::Sha256);
    assert_eq!(ns.durability, Durability::Fsync);
}

#[test]
fn errors_are_one_line_and_name_the_problem() {
    for (text, needle) in [
        ("[cache]\nmax_byte = 1\n", "max_byte"),
        ("[cache]\nmax_bytes = \"lots\"\n", "invalid size"),
        ("[namespace.a]\nttl = \"soon\"\n", "invalid duration"),
        ("[namespace.a]\nkey_format = \"md5\"\n", "md5"),
        ("[cache\n", "line 1"),
    ] {
        let err = Config::parse(text).unwrap_err();
        assert!(!err.contains('\n'), "multi-line error: {err:?}");
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    }
}

#[test]
fn owner_group_and_mode_by_name_or_id() {
    let c = Config::parse(
        "[namespace.svc]\nowner = \"root\"\ngroup = \"root\"\nmode = \"0750\"\n\
         [namespace.num]\nowner = 998\ngroup = \"65534\"\nmode = \"1777\"\n\
         [namespace.plain]\n",
    )
    .unwrap();
    let svc = c.namespaces["svc"].access;
    assert_eq!(
        (svc.uid, svc.gid, svc.mode),
        (Some(0), Some(0), Some(0o750))
    );
    let num = c.namespaces["num"].access;
    assert_eq!(
        (num.uid, num.gid, num.mode),
        (Some(998), Some(65534), Some(0o1777))
    );
    assert!(c.namespaces["plain"].access.is_empty());
    // The effective config shows them, and reads back the same.
    let again = Config::parse(&c.to_toml(1 << 30)).unwrap();
    assert_eq!(again.namespaces, c.namespaces);
}

#[test]
fn bad_owners_groups_and_modes_are_one_line_errors() {
    for (text, needle) in [
        (
            "[namespace.a]\nowner = \"no-such-user-cachefs\"\n",
            "no such user \"no-such-user-cachefs\"",
        ),
        (
            "[namespace.a]\ngroup = \"no-such-group-cachefs\"\n",
            "no such group",
        ),
        ("[namespace.a]\nmode = 750\n", "quoted octal string"),
        ("[namespace.a]\nmode = \"rwx\"\n", "invalid mode"),
        ("[namespace.a]\nmode = \"17777\"\n", "invalid mode"),
        ("[namespace.a]\nowner = -1\n", "invalid user or group id -1"),
    ] {
        let err = Config::parse(text).unwrap_err();
        assert!(!err.contains('\n'), "multi-line error: {err:?}");
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    }
    let err = Config::parse("[namespace.a]\nowner = \"no-such-user-cachefs\"\n").unwrap_err();
    assert!(err.contains("[namespace.a]"), "{err}");
}

#[test]
fn bad_namespace_names_are_refused() {
    assert!(Config::parse("[namespace.\"a/b\"]\n").is_err());
    assert!(Config::parse("[namespace.\"..\"]\n").is_err());
}
