//! The write path at speed (issue 14), through a real mount: listings
//! carry attributes (READDIRPLUS), so `ls -l` and `du` right after a
//! start show the right sizes and modes without a LOOKUP per entry, and
//! what a listing hands the kernel expires with the entry; staging files
//! are unnamed where the backing filesystem has O_TMPFILE and named where
//! it refuses (the fault seam plays such a filesystem); many writers at
//! once publish every key whole.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

const CONFIG: &str = "[namespace.a]\nttl = \"1h\"\n[namespace.short]\nttl = \"3s\"\n";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// LOOKUP requests of keys (names starting with `k`) in the daemon's
/// log since byte `from` (fuser's debug log has one line per request).
fn lookups_since(m: &Mount, from: usize) -> usize {
    m.log()[from..]
        .lines()
        .filter(|l| l.contains(" LOOKUP name \"k"))
        .count()
}

/// A fresh daemon on `backing`, logging every request.
fn restart(backing: &Path) -> Mount {
    Mount::start(MountOpts {
        config: Some(CONFIG.into()),
        backing: Some(backing.to_path_buf()),
        env: vec![("RUST_LOG".into(), "fuser=debug".into())],
        ..Default::default()
    })
}

#[test]
fn ls_l_and_du_right_after_a_start_need_no_lookup_per_entry() {
    let backing = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    {
        let mut m = Mount::with_backing(CONFIG, backing.path());
        for i in 0..40u32 {
            let name = format!("k{i:02}");
            let body = vec![b'x'; (i as usize) * 1000 + 1];
            fs::write(m.path("a", &name), &body).unwrap();
            let mode = [0o600, 0o640, 0o644, 0o444][i as usize % 4];
            fs::set_permissions(m.path("a", &name), fs::Permissions::from_mode(mode)).unwrap();
            let md = fs::metadata(m.path("a", &name)).unwrap();
            want.push((name, body.len() as u64, mode, md.blocks()));
        }
        m.stop();
    }
    let m = restart(backing.path());
    let from = m.log().len();
    let ls = run("ls", &["-ln", m.ns("a").to_str().unwrap()]);
    let du = run("du", &["-a", "-B1", m.ns("a").to_str().unwrap()]);
    assert_eq!(
        lookups_since(&m, from),
        0,
        "the listing's names were looked up one by one"
    );
    for (name, size, mode, blocks) in &want {
        let line = ls
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} not in ls -l:\n{ls}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        let perm = match mode {
            0o600 => "-rw-------",
            0o640 => "-rw-r-----",
            0o644 => "-rw-r--r--",
            _ => "-r--r--r--",
        };
        assert_eq!(cols[0], perm, "{line}");
        assert_eq!(cols[4], size.to_string(), "{line}");
        let used = du
            .lines()
            .find(|l| l.ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{name} not in du -a:\n{du}"));
        assert_eq!(
            used.split_whitespace().next().unwrap(),
            (blocks * 512).to_string()
        );
    }
    // And stat(2) of every name is answered from what the listing gave.
    let from = m.log().len();
    for (name, size, mode, _) in &want {
        let md = fs::metadata(m.path("a", name)).unwrap();
        assert_eq!((md.len(), md.mode() & 0o7777), (*size, *mode));
    }
    assert_eq!(lookups_since(&m, from), 0);
}

#[test]
fn an_entry_a_listing_showed_is_gone_once_its_ttl_passes() {
    let backing = tempfile::tempdir().unwrap();
    let written;
    {
        let mut m = Mount::with_backing(CONFIG, backing.path());
        fs::write(m.path("short", "k"), b"soon gone").unwrap();
        written = SystemTime::now();
        m.stop();
    }
    let m = restart(backing.path());
    // The kernel learns of `k` from the listing alone.
    let ls = run("ls", &["-l", m.ns("short").to_str().unwrap()]);
    assert!(ls.contains(" 9 ") && ls.contains(" k"), "{ls}");
    assert_eq!(fs::metadata(m.path("short", "k")).unwrap().len(), 9);
    sleep_until_wall(written + Duration::from_secs(3) + Duration::from_millis(300));
    assert_errno(
        fs::metadata(m.path("short", "k")),
        libc::ENOENT,
        "stat after its TTL",
    );
    assert_errno(
        fs::read(m.path("short", "k")),
        libc::ENOENT,
        "open after its TTL",
    );
    assert_eq!(list_str(&m.ns("short")), Vec::<String>::new());
}

#[test]
fn a_rewrite_after_a_listing_is_what_stat_and_read_see() {
    let m = Mount::new(CONFIG);
    fs::write(m.path("a", "k"), b"one").unwrap();
    run("ls", &["-l", m.ns("a").to_str().unwrap()]);
    fs::write(m.path("a", "k"), b"two, longer").unwrap();
    assert_eq!(fs::metadata(m.path("a", "k")).unwrap().len(), 11);
    assert_eq!(fs::read(m.path("a", "k")).unwrap(), b"two, longer");
    // The listing's dentries, and the kernel's FORGET of them, leave a
    // mount that still serves every name.
    for i in 0..200 {
        fs::write(m.path("a", &format!("n{i}")), b"n").unwrap();
    }
    for _ in 0..3 {
        run("ls", &["-l", m.ns("a").to_str().unwrap()]);
    }
    fs::remove_file(m.path("a", "n7")).unwrap();
    assert_errno(
        fs::metadata(m.path("a", "n7")),
        libc::ENOENT,
        "stat of a removed name",
    );
    assert_eq!(list_str(&m.ns("a")).len(), 200);
}

#[test]
fn eight_writers_at_once_publish_every_key_whole() {
    let m = Mount::new(CONFIG);
    std::thread::scope(|t| {
        for w in 0..8 {
            let m = &m;
            t.spawn(move || {
                for i in 0..60 {
                    let body = format!("writer {w} entry {i} ").repeat(700);
                    fs::write(m.path("a", &format!("w{w}-{i}")), body.as_bytes()).unwrap();
                    fs::write(m.path("a", "shared"), body.as_bytes()).unwrap();
                }
            });
        }
    });
    for w in 0..8 {
        for i in 0..60 {
            let body = format!("writer {w} entry {i} ").repeat(700);
            assert!(fs::read(m.path("a", &format!("w{w}-{i}"))).unwrap() == body.as_bytes());
        }
    }
    let shared = String::from_utf8(fs::read(m.path("a", "shared")).unwrap()).unwrap();
    let first = shared.split(' ').take(4).collect::<Vec<_>>().join(" ") + " ";
    assert_eq!(shared, first.repeat(700), "a mix of two writers' bytes");
    assert_eq!(
        staged_files(&m.backing.join("staging")),
        Vec::<std::path::PathBuf>::new()
    );
}

/// A filesystem without O_TMPFILE (the fault seam refuses it): staging
/// files have names, and everything publishes as before.
#[cfg(debug_assertions)]
#[test]
fn without_o_tmpfile_staging_files_are_named_and_publish_whole() {
    let faults = tempfile::tempdir().unwrap();
    let control = faults.path().join("faults");
    fs::write(&control, "tmpfile EOPNOTSUPP\n").unwrap();
    let m = Mount::start(MountOpts {
        config: Some(CONFIG.into()),
        env: vec![(
            "CACHEFS_FAULTS".into(),
            control.to_string_lossy().into_owned(),
        )],
        ..Default::default()
    });
    let staging = m.backing.join("staging");
    use std::io::Write;
    let mut f = fs::File::create(m.path("a", "k")).unwrap();
    f.write_all(b"being written").unwrap();
    assert_eq!(
        staged_files(&staging).len(),
        1,
        "a named staging file while it is written"
    );
    close_file(f).unwrap();
    assert_eq!(fs::read(m.path("a", "k")).unwrap(), b"being written");
    fs::write(m.path("a", "k"), b"replaced").unwrap();
    assert_eq!(fs::read(m.path("a", "k")).unwrap(), b"replaced");
    assert_eq!(staged_files(&staging), Vec::<std::path::PathBuf>::new());
}

#[test]
fn with_o_tmpfile_a_file_being_written_has_no_name_in_staging() {
    let m = Mount::new(CONFIG);
    let staging = m.backing.join("staging");
    use std::io::Write;
    let mut f = fs::File::create(m.path("a", "k")).unwrap();
    f.write_all(b"being written").unwrap();
    assert_eq!(staged_files(&staging), Vec::<std::path::PathBuf>::new());
    close_file(f).unwrap();
    assert_eq!(fs::read(m.path("a", "k")).unwrap(), b"being written");
}

#[test]
fn ls_l_of_a_directory_inside_a_namespace_right_after_a_start() {
    let backing = tempfile::tempdir().unwrap();
    {
        let mut m = Mount::with_backing(CONFIG, backing.path());
        fs::create_dir_all(m.ns("a").join("sub/deeper")).unwrap();
        fs::write(m.ns("a").join("sub/k1"), b"12345").unwrap();
        fs::write(m.ns("a").join("sub/deeper/k2"), b"1").unwrap();
        m.stop();
    }
    let m = restart(backing.path());
    let ls = run("ls", &["-ln", m.ns("a").join("sub").to_str().unwrap()]);
    let k1 = ls
        .lines()
        .find(|l| l.ends_with(" k1"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert_eq!(k1.split_whitespace().nth(4), Some("5"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with('d') && l.ends_with(" deeper")),
        "{ls}"
    );
    let du = run("du", &["-a", "-B1", m.ns("a").to_str().unwrap()]);
    assert!(du.lines().any(|l| l.ends_with("/sub/deeper/k2")), "{du}");
    assert_eq!(fs::read(m.ns("a").join("sub/deeper/k2")).unwrap(), b"1");
}
