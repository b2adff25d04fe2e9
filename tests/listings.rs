//! Listings the kernel keeps (FOPEN_CACHE_DIR): a repeated `ls` of an
//! unchanged directory is answered from the kernel's copy, and any change
//! shows in the next listing all the same, whoever made it: this mount
//! (publish, rm, mv), the clock (expiry) or another daemon on the same
//! backing dir, at the top of a namespace and in a directory inside it
//! (where a change made elsewhere, an eviction, a live purge, a change
//! by another daemon, leaves the directory's own kernel inode untouched:
//! only the daemon's generation of the listing tells). And what `ls -l` and `du` show right after a start
//! (READDIRPLUS) is each entry's size, mode and blocks.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;

const CFG: &str =
    "[namespace.a]\n\n[namespace.t]\nttl = \"3s\"\n\n[namespace.q]\nmax_bytes = \"12KiB\"\n";

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// What `ls -f` prints for `dir`, without `.` and `..`.
fn ls_f(dir: &Path) -> BTreeSet<String> {
    sh(&format!("ls -f {}", q(dir)))
        .lines()
        .filter(|l| *l != "." && *l != "..")
        .map(str::to_owned)
        .collect()
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A mount whose log counts its requests (fuser logs each at debug).
fn counted(cfg: &str, backing: Option<&Path>) -> Mount {
    Mount::start(MountOpts {
        config: Some(cfg.to_string()),
        backing: backing.map(Path::to_path_buf),
        env: vec![("RUST_LOG".into(), "fuser=debug".into())],
        ..Default::default()
    })
}

/// READDIR and READDIRPLUS requests the daemon has had so far.
fn listing_requests(m: &Mount) -> usize {
    m.log().lines().filter(|l| l.contains(" READDIR")).count()
}

/// `ls -f dir` is `want`, and a second one is answered from the kernel's
/// copy (no READDIR reaches the daemon).
fn listed_and_kept(m: &Mount, dir: &Path, want: &[&str]) {
    assert_eq!(ls_f(dir), names(want), "{}", dir.display());
    let n = listing_requests(m);
    assert_eq!(ls_f(dir), names(want), "{}", dir.display());
    assert_eq!(listing_requests(m), n, "{} kept", dir.display());
}

#[test]
fn a_repeated_listing_comes_from_the_kernel_and_every_change_shows_at_once() {
    if skip_without_fuse() {
        return;
    }
    let m = counted(CFG, None);
    let ns = m.ns("a");
    for k in ["k1", "k2", "k3"] {
        write_file(&m.path("a", k), k.as_bytes()).unwrap();
    }
    let want = names(&["k1", "k2", "k3"]);
    assert_eq!(ls_f(&ns), want);
    let after_first = listing_requests(&m);
    assert!(after_first > 0, "the first listing is the daemon's");
    assert_eq!(ls_f(&ns), want);
    assert_eq!(ls_f(&ns), want);
    assert_eq!(
        listing_requests(&m),
        after_first,
        "an unchanged directory is listed from the kernel's copy"
    );

    // Changes through this mount, each right after a kept listing.
    write_file(&m.path("a", "k4"), b"4").unwrap();
    assert_eq!(ls_f(&ns), names(&["k1", "k2", "k3", "k4"]), "a publish");
    sh(&format!("rm {}", q(&m.path("a", "k1"))));
    assert_eq!(ls_f(&ns), names(&["k2", "k3", "k4"]), "an rm");
    sh(&format!(
        "mv {} {}",
        q(&m.path("a", "k2")),
        q(&m.path("a", "k9"))
    ));
    assert_eq!(ls_f(&ns), names(&["k3", "k4", "k9"]), "an mv");
    // A rewrite changes the version (the inode) a line names.
    let before = fs::metadata(m.path("a", "k3")).unwrap().ino();
    write_file(&m.path("a", "k3"), b"three").unwrap();
    let ino = sh(&format!("ls -fi {} | grep -w k3", q(&ns)));
    let listed: u64 = ino.split_whitespace().next().unwrap().parse().unwrap();
    assert_ne!(
        listed, before,
        "a rewritten entry is listed with its new inode"
    );
    assert_eq!(listed, fs::metadata(m.path("a", "k3")).unwrap().ino());

    // And the same in a directory inside the namespace.
    fs::create_dir(ns.join("d")).unwrap();
    write_file(&ns.join("d/x"), b"x").unwrap();
    assert_eq!(ls_f(&ns.join("d")), names(&["x"]));
    assert_eq!(ls_f(&ns.join("d")), names(&["x"]));
    sh(&format!("rm {}", q(&ns.join("d/x"))));
    assert_eq!(ls_f(&ns.join("d")), names(&[]));
}

#[test]
fn an_expired_entry_leaves_a_kept_listing_at_its_expiry() {
    if skip_without_fuse() {
        return;
    }
    let m = counted(CFG, None);
    let ns = m.ns("t");
    let sub = ns.join("s/u");
    fs::create_dir_all(&sub).unwrap();
    write_file(&m.path("t", "old"), b"o").unwrap();
    write_file(&sub.join("old"), b"o").unwrap();
    let expires = mtime_of(&fs::metadata(m.path("t", "old")).unwrap()) + Duration::from_secs(3);
    // Written a second later: alive after "old" is gone.
    sleep_until_wall(SystemTime::now() + Duration::from_secs(1));
    write_file(&m.path("t", "new"), b"n").unwrap();
    write_file(&sub.join("new"), b"n").unwrap();
    listed_and_kept(&m, &ns, &["new", "old", "s"]);
    listed_and_kept(&m, &sub, &["new", "old"]);
    // Nothing is made through the mount: only the clock moves.
    sleep_until_wall(expires + Duration::from_millis(50));
    assert_eq!(ls_f(&ns), names(&["new", "s"]), "gone at its expiry");
    assert_eq!(ls_f(&sub), names(&["new"]), "gone at its expiry");
}

#[test]
fn changes_in_a_kept_subdirectory_listing_show_at_once() {
    if skip_without_fuse() {
        return;
    }
    let m = counted(CFG, None);
    let ns = m.ns("a");
    let d = ns.join("p/d");
    fs::create_dir_all(&d).unwrap();
    fs::create_dir_all(ns.join("other")).unwrap();
    write_file(&d.join("x"), b"x").unwrap();
    write_file(&ns.join("other/y"), b"y").unwrap();
    listed_and_kept(&m, &d, &["x"]);

    write_file(&d.join("z"), b"z").unwrap();
    listed_and_kept(&m, &d, &["x", "z"]);
    // A rewrite: the line names the new version's inode.
    write_file(&d.join("z"), b"zz").unwrap();
    let line = sh(&format!("ls -fi {} | grep -w z", q(&d)));
    let listed: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(listed, fs::metadata(d.join("z")).unwrap().ino());
    listed_and_kept(&m, &d, &["x", "z"]);
    sh(&format!("rm {}", q(&d.join("x"))));
    listed_and_kept(&m, &d, &["z"]);
    sh(&format!("mv {} {}", q(&d.join("z")), q(&d.join("w"))));
    listed_and_kept(&m, &d, &["w"]);
    // In from another directory, out to another, a directory in and out.
    sh(&format!(
        "mv {} {}",
        q(&ns.join("other/y")),
        q(&d.join("y"))
    ));
    listed_and_kept(&m, &d, &["w", "y"]);
    sh(&format!(
        "mv {} {}",
        q(&d.join("w")),
        q(&ns.join("other/w"))
    ));
    listed_and_kept(&m, &d, &["y"]);
    fs::create_dir(d.join("c")).unwrap();
    listed_and_kept(&m, &d, &["c", "y"]);
    fs::remove_dir(d.join("c")).unwrap();
    listed_and_kept(&m, &d, &["y"]);
    sh(&format!("mv {} {}", q(&ns.join("other")), q(&d.join("o"))));
    listed_and_kept(&m, &d, &["o", "y"]);
    listed_and_kept(&m, &d.join("o"), &["w"]);
    sh(&format!("mv {} {}", q(&d.join("o")), q(&ns.join("back"))));
    listed_and_kept(&m, &d, &["y"]);

    // Made by the daemon, not by the kernel on this directory: a publish
    // in a child only (the child's name was already listed), a live
    // purge of a child's subtree, an eviction by a write elsewhere.
    fs::create_dir(d.join("c")).unwrap();
    listed_and_kept(&m, &d, &["c", "y"]);
    write_file(&d.join("c/k"), b"k").unwrap();
    listed_and_kept(&m, &d.join("c"), &["k"]);
    listed_and_kept(&m, &d, &["c", "y"]);
    let mnt = m.mnt.to_str().unwrap();
    cachefs_ok(&["purge", mnt, "--prefix", "a/p/d/c", "--all"]);
    assert_eq!(
        ls_f(&d),
        names(&["y"]),
        "a purged directory leaves the listing"
    );

    let qd = m.ns("q").join("d");
    fs::create_dir_all(&qd).unwrap();
    fs::create_dir_all(m.ns("q").join("e")).unwrap();
    for k in ["k1", "k2", "k3"] {
        write_file(&qd.join(k), &[b'k'; 3000]).unwrap();
    }
    listed_and_kept(&m, &qd, &["k1", "k2", "k3"]);
    // 12 KiB of quota: 8 KiB in another directory evict the oldest here.
    write_file(&m.ns("q").join("e/big"), &[b'b'; 8192]).unwrap();
    let left: BTreeSet<String> = ["k1", "k2", "k3"]
        .iter()
        .filter(|k| fs::read(qd.join(k)).is_ok())
        .map(|k| k.to_string())
        .collect();
    assert!(left.len() < 3, "something was evicted");
    assert_eq!(ls_f(&qd), left, "evicted entries leave the listing");
}

#[test]
fn changes_by_another_daemon_show_in_a_kept_listing() {
    if skip_without_fuse() {
        return;
    }
    let m1 = counted(CFG, None);
    let m2 = Mount::with_backing(CFG, &m1.backing);
    let ns = m1.ns("a");
    fs::create_dir(ns.join("d")).unwrap();
    write_file(&m1.path("a", "k1"), b"1").unwrap();
    write_file(&ns.join("d/x"), b"x").unwrap();
    for dir in [ns.clone(), ns.join("d")] {
        ls_f(&dir);
    }
    let n = listing_requests(&m1);
    assert_eq!(ls_f(&ns), names(&["d", "k1"]));
    assert_eq!(ls_f(&ns.join("d")), names(&["x"]));
    assert_eq!(listing_requests(&m1), n, "both kept");

    // Through the other daemon: a publish, then a removal, in each.
    write_file(&m2.path("a", "k2"), b"2").unwrap();
    write_file(&m2.ns("a").join("d/y"), b"y").unwrap();
    let want_ns = names(&["d", "k1", "k2"]);
    let want_d = names(&["x", "y"]);
    // The contract's bound on one host is 100 ms; a listing that stayed
    // stale would stay so for the kernel copy's whole life (30 s).
    assert!(
        wait_until(Duration::from_secs(5), || ls_f(&ns) == want_ns
            && ls_f(&ns.join("d")) == want_d),
        "publishes: {:?} {:?}",
        ls_f(&ns),
        ls_f(&ns.join("d"))
    );
    fs::remove_file(m2.path("a", "k1")).unwrap();
    fs::remove_file(m2.ns("a").join("d/x")).unwrap();
    let want_ns = names(&["d", "k2"]);
    let want_d = names(&["y"]);
    assert!(
        wait_until(Duration::from_secs(5), || ls_f(&ns) == want_ns
            && ls_f(&ns.join("d")) == want_d),
        "removals: {:?} {:?}",
        ls_f(&ns),
        ls_f(&ns.join("d"))
    );
}

#[test]
fn changes_by_another_daemon_in_a_kept_subdirectory_show() {
    if skip_without_fuse() {
        return;
    }
    let m1 = counted(CFG, None);
    let m2 = Mount::with_backing(CFG, &m1.backing);
    let (ns1, ns2) = (m1.ns("a"), m2.ns("a"));
    fs::create_dir_all(ns1.join("d/e")).unwrap();
    fs::create_dir_all(ns1.join("f")).unwrap();
    write_file(&ns1.join("d/e/x"), b"x").unwrap();
    write_file(&ns1.join("f/y"), b"y").unwrap();
    let e = ns1.join("d/e");
    listed_and_kept(&m1, &e, &["x"]);
    // Each change on the other mount, then this mount's listing until it
    // shows (a stale one would stay so for the copy's whole life, 30 s).
    let shows = |want: &[&str], what: &str| {
        let want = names(want);
        assert!(
            wait_until(Duration::from_secs(5), || ls_f(&e) == want),
            "{what}: {:?}",
            ls_f(&e)
        );
        listed_and_kept(
            &m1,
            &e,
            &want.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    };
    let ino = fs::metadata(e.join("x")).unwrap().ino();
    write_file(&ns2.join("d/e/x"), b"rewritten").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let line = sh(&format!("ls -fi {} | grep -w x", q(&e)));
            line.split_whitespace().next() != Some(&ino.to_string())
        }),
        "a rewrite on the other mount: x listed with its old inode"
    );
    write_file(&ns2.join("d/e/z"), b"z").unwrap();
    shows(&["x", "z"], "a publish");
    sh(&format!(
        "mv {} {}",
        q(&ns2.join("f/y")),
        q(&ns2.join("d/e/y"))
    ));
    shows(&["x", "y", "z"], "an mv in");
    sh(&format!(
        "mv {} {}",
        q(&ns2.join("d/e/z")),
        q(&ns2.join("f/z"))
    ));
    shows(&["x", "y"], "an mv out");
    fs::create_dir(ns2.join("d/e/c")).unwrap();
    shows(&["c", "x", "y"], "a mkdir");
    fs::remove_dir(ns2.join("d/e/c")).unwrap();
    shows(&["x", "y"], "an rmdir");
    fs::remove_file(ns2.join("d/e/x")).unwrap();
    shows(&["y"], "an rm");
}

#[test]
fn ls_l_and_du_right_after_a_start_show_each_entry() {
    if skip_without_fuse() {
        return;
    }
    let backing = tempfile::tempdir().unwrap();
    let backing = backing.path().join("b");
    let sizes = [0usize, 1, 4096, 4097, 70_000];
    let mut m = Mount::with_backing(CFG, &backing);
    for (i, size) in sizes.iter().enumerate() {
        let p = m.path("a", &format!("e{i}"));
        write_file(&p, &vec![b'x'; *size]).unwrap();
        fs::set_permissions(
            &p,
            fs::Permissions::from_mode(0o600 + (i as u32 % 2) * 0o40),
        )
        .unwrap();
    }
    let want: Vec<(String, u64, u32, u64)> = sizes
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let md = fs::metadata(m.path("a", &format!("e{i}"))).unwrap();
            (format!("e{i}"), md.len(), md.mode() & 0o7777, md.blocks())
        })
        .collect();
    let du = |m: &Mount| -> u64 {
        sh(&format!("du -s --block-size=1 {}", q(&m.ns("a"))))
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let du_before = du(&m);
    assert!(m.stop().success());

    let m = counted(CFG, Some(&backing));
    let out = sh(&format!("ls -ln --time-style=+ {}", q(&m.ns("a"))));
    let listing_only = m
        .log()
        .lines()
        .filter(|l| l.contains(" LOOKUP") && l.contains("\"e"))
        .count();
    assert_eq!(
        listing_only, 0,
        "ls -l after a start looks no name up alone"
    );
    for (name, size, mode, _) in &want {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in {out}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        let shown_mode = if *mode == 0o600 {
            "-rw-------"
        } else {
            "-rw-r-----"
        };
        assert_eq!(f[0], shown_mode, "{line}");
        assert_eq!(f[4].parse::<u64>().unwrap(), *size, "{line}");
    }
    assert_eq!(du(&m), du_before, "du after a start");
    let blocks: u64 = want.iter().map(|w| w.3).sum();
    assert!(blocks > 0);
    let du_blocks: u64 = sh(&format!("du -s -B512 {}", q(&m.ns("a"))))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        du_blocks >= blocks,
        "du counts every entry's blocks: {du_blocks} < {blocks}"
    );
}
