//! Permissions hold (PRODUCT.md section 2; issue 12): on an `allow_other`
//! mount, other users are held to the owners and modes `ls -l` shows.
//! The test process is root; other users' commands run through
//! `setpriv` (`nobody`, and a numeric user with no passwd entry), with the
//! plain shell tools, and each refusal is checked by its message
//! (`LC_ALL=C`: "Permission denied" is EACCES, "Operation not permitted"
//! EPERM).

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const NOBODY: u32 = 65534;
/// A user with no passwd entry and no group in common with anyone.
const STRANGER: u32 = 43210;
const EACCES: &str = "Permission denied";
const EPERM: &str = "Operation not permitted";

/// FUSE, and root to run commands as other users; with CI=true a
/// missing one fails the test.
fn skip() -> bool {
    if skip_without_fuse() {
        return true;
    }
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("permission tests run commands as other users: they need root");
        }
        eprintln!("SKIP: not root; set CI=true to make this a failure");
        return true;
    }
    false
}

/// Mounts with `allow_other` and lets other users reach the mountpoint
/// (the test's temp dir is 0700).
fn mount(config: &str, backing: Option<&Path>) -> Mount {
    let m = Mount::start(MountOpts {
        config: Some(config.to_string()),
        backing: backing.map(Path::to_path_buf),
        args: vec!["-o".into(), "allow_other".into()],
        ..Default::default()
    });
    fs::set_permissions(m.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    m
}

/// Runs `cmdline` with `sh -c` as user `uid` (its group the same number,
/// no supplementary groups, umask 022 unless it sets its own):
/// (success, stderr).
fn run_as(uid: u32, cmdline: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "sh", "-c"])
        .arg(format!("umask 022; {cmdline}"))
        .env("LC_ALL", "C")
        .output()
        .expect("run setpriv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn works(uid: u32, cmdline: &str) {
    let (ok, err) = run_as(uid, cmdline);
    assert!(ok, "as uid {uid}: `{cmdline}` failed: {err}");
}

#[track_caller]
fn refused(uid: u32, cmdline: &str, why: &str) {
    let (ok, err) = run_as(uid, cmdline);
    assert!(!ok, "as uid {uid}: `{cmdline}` worked; expected {why}");
    assert!(
        err.contains(why),
        "as uid {uid}: `{cmdline}`: expected {why}, got: {err}"
    );
}

fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let md = fs::metadata(p).unwrap();
    (md.uid(), md.gid(), md.mode() & 0o7777)
}

#[test]
fn other_users_are_held_to_the_modes_shown() {
    if skip() {
        return;
    }
    let m = mount("[namespace.ns]\n", None);
    let secret = m.path("ns", "secret");
    let open = m.path("ns", "open");
    write_file(&secret, b"root's value").unwrap();
    sh(&format!("chmod 600 {}", q(&secret)));
    write_file(&open, b"for all").unwrap();
    sh(&format!("chmod 644 {}", q(&open)));
    // What `ls -l` shows: root's 0755 namespace, root's entries.
    assert_eq!(owner_mode(&m.ns("ns")), (0, 0, 0o755));
    assert_eq!(owner_mode(&secret), (0, 0, 0o600));

    let s = q(&secret);
    // Reading: the 0644 entry yes, the 0600 one no; access(2) agrees.
    works(NOBODY, &format!("cat {} >/dev/null", q(&open)));
    works(
        NOBODY,
        &format!(
            "test -r {} && ! test -r {s} && ! test -w {}",
            q(&open),
            q(&open)
        ),
    );
    refused(NOBODY, &format!("cat {s}"), EACCES);
    refused(
        NOBODY,
        &format!("getfattr -n user.cachefs.sha256 {s}"),
        EACCES,
    );
    // Overwriting, truncating, appending, setting its TTL: refused, and
    // the entry is intact.
    refused(NOBODY, &format!("echo poisoned > {s}"), EACCES);
    refused(NOBODY, &format!("echo poisoned >> {s}"), EACCES);
    refused(NOBODY, &format!("truncate -s 0 {s}"), EACCES);
    refused(
        NOBODY,
        &format!("setfattr -n user.cachefs.ttl -v 1 {s}"),
        EACCES,
    );
    refused(NOBODY, &format!("echo poisoned > {}", q(&open)), EACCES);
    assert_eq!(read_file(&secret).unwrap(), b"root's value");
    assert_eq!(read_file(&open).unwrap(), b"for all");
    // Creating, renaming, unlinking in root's 0755 namespace: refused.
    let new = m.path("ns", "new");
    refused(NOBODY, &format!("echo x > {}", q(&new)), EACCES);
    assert_errno(fs::metadata(&new), libc::ENOENT, "the refused create");
    refused(NOBODY, &format!("mv {} {}", q(&open), q(&new)), EACCES);
    refused(NOBODY, &format!("rm -f {s}"), EACCES);
    assert_eq!(read_file(&secret).unwrap(), b"root's value");
    // chmod and chown of root's entry and namespace: not the owner.
    refused(NOBODY, &format!("chmod 666 {s}"), EPERM);
    refused(NOBODY, &format!("chown nobody {s}"), EPERM);
    refused(NOBODY, &format!("chmod 777 {}", q(&m.ns("ns"))), EPERM);
    assert_eq!(owner_mode(&secret), (0, 0, 0o600));
    assert_eq!(owner_mode(&m.ns("ns")), (0, 0, 0o755));
    // Purging root's namespace needs write permission on it; purging
    // every namespace is for root and the mount's owner.
    let ns = q(&m.ns("ns"));
    refused(
        NOBODY,
        &format!("setfattr -n user.cachefs.purge -v all {ns}"),
        EACCES,
    );
    refused(
        NOBODY,
        &format!("setfattr -n user.cachefs.purge -v all {}", q(&m.mnt)),
        EPERM,
    );
    assert_eq!(read_file(&secret).unwrap(), b"root's value");
    // The control dir stays read-only, readable by all.
    works(
        NOBODY,
        &format!("cat {} >/dev/null", q(&m.mnt.join(".cachefs/stats.json"))),
    );
    refused(NOBODY, &format!("rmdir {ns}"), EPERM);
    // Root, as before, may do anything.
    write_file(&secret, b"root again").unwrap();
    assert_eq!(read_file(&secret).unwrap(), b"root again");
}

#[test]
fn the_config_grants_a_service_user_its_namespace_and_it_persists() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    let config = "[namespace.svc]\nowner = \"nobody\"\ngroup = \"nogroup\"\nmode = \"0750\"\n\
                  [namespace.team]\ngroup = 43210\nmode = \"0770\"\n";
    let mut m = mount(config, Some(&backing));
    assert_eq!(owner_mode(&m.ns("svc")), (NOBODY, NOBODY, 0o750));
    assert_eq!(owner_mode(&m.ns("team")), (0, STRANGER, 0o770));
    let key = m.path("svc", "k");
    let k = q(&key);
    // The owner writes, reads, overwrites, renames, chmods, removes.
    works(
        NOBODY,
        &format!("umask 022; echo one > {k} && cat {k} >/dev/null"),
    );
    assert_eq!(owner_mode(&key), (NOBODY, NOBODY, 0o644));
    works(NOBODY, &format!("echo two > {k}; printf x >> {k}"));
    assert_eq!(read_file(&key).unwrap(), b"two\nx");
    works(NOBODY, &format!("chmod 600 {k}"));
    assert_eq!(owner_mode(&key), (NOBODY, NOBODY, 0o600));
    let tmpkey = q(&m.path("svc", "k.tmp"));
    works(NOBODY, &format!("echo three > {tmpkey} && mv {tmpkey} {k}"));
    assert_eq!(read_file(&key).unwrap(), b"three\n");
    works(NOBODY, &format!("setfattr -n user.cachefs.ttl -v 60 {k}"));
    // The service user may purge its own namespace.
    let svc = q(&m.ns("svc"));
    works(NOBODY, &format!("echo y > {}", q(&m.path("svc", "y"))));
    works(
        NOBODY,
        &format!("setfattr -n user.cachefs.purge -v all {svc}"),
    );
    assert_errno(fs::metadata(m.path("svc", "y")), libc::ENOENT, "purged");
    works(NOBODY, &format!("echo four > {k}"));
    // Others: not even a listing (0750, not in the group).
    refused(STRANGER, &format!("ls {svc}"), EACCES);
    refused(STRANGER, &format!("cat {k}"), EACCES);
    // The group grants: 43210 writes in `team`, nobody may not.
    works(STRANGER, &format!("echo t > {}", q(&m.path("team", "t"))));
    refused(
        NOBODY,
        &format!("echo t > {}", q(&m.path("team", "u"))),
        EACCES,
    );
    // A new file renamed over a key is the renamer's, as on a local disk.
    let r = m.path("team", "r");
    write_file(&r, b"root's").unwrap();
    let rtmp = q(&m.path("team", "r.tmp"));
    works(STRANGER, &format!("echo s > {rtmp} && mv {rtmp} {}", q(&r)));
    assert_eq!(owner_mode(&r), (STRANGER, STRANGER, 0o644));
    assert_eq!(read_file(&r).unwrap(), b"s\n");
    // A rewrite by a permitted other user (root here) keeps the entry's
    // owner and mode, as an overwrite of a local file does.
    write_file(&key, b"root wrote").unwrap();
    assert_eq!(owner_mode(&key), (NOBODY, NOBODY, 0o644));
    works(NOBODY, &format!("cat {k} >/dev/null"));

    // A restart keeps every owner and mode; a config change of them
    // applies at the start.
    m.stop();
    drop(m);
    let config = "[namespace.svc]\nowner = \"nobody\"\nmode = \"0700\"\n";
    let m = mount(config, Some(&backing));
    assert_eq!(owner_mode(&m.ns("svc")), (NOBODY, 0, 0o700));
    assert_eq!(owner_mode(&m.path("svc", "k")), (NOBODY, NOBODY, 0o644));
    assert_eq!(
        owner_mode(&m.path("team", "t")),
        (STRANGER, STRANGER, 0o644)
    );
    works(
        NOBODY,
        &format!("cat {} >/dev/null", q(&m.path("svc", "k"))),
    );
}

#[test]
fn root_grants_by_chmod_and_mkdir_makes_the_creators_namespace() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    let mut m = mount("[namespace.ns]\n", Some(&backing));
    // The root is where namespaces are made: writable by all, sticky.
    assert_eq!(owner_mode(&m.mnt).2, 0o1777);
    // chmod of a namespace by root grants at once.
    let ns = q(&m.ns("ns"));
    refused(NOBODY, &format!("echo x > {ns}/a"), EACCES);
    sh(&format!("chmod 1777 {ns}"));
    assert_eq!(owner_mode(&m.ns("ns")), (0, 0, 0o1777));
    works(NOBODY, &format!("echo x > {ns}/a"));
    // Sticky: another user may not remove or replace nobody's entry.
    works(STRANGER, &format!("echo s > {ns}/s"));
    refused(STRANGER, &format!("rm -f {ns}/a"), EPERM);
    refused(STRANGER, &format!("mv -f {ns}/s {ns}/a"), EPERM);
    assert_eq!(read_file(&m.path("ns", "a")).unwrap(), b"x\n");
    // Setgid: entries made in it take the namespace's group, as in a
    // local directory (a team's shared namespace).
    sh(&format!("chgrp {STRANGER} {ns} && chmod 3777 {ns}"));
    assert_eq!(owner_mode(&m.ns("ns")), (0, STRANGER, 0o3777));
    works(NOBODY, &format!("echo g > {ns}/g"));
    assert_eq!(owner_mode(&m.path("ns", "g")), (NOBODY, STRANGER, 0o644));

    // mkdir: the creator's namespace, with the mode asked less the umask;
    // its entries are the creator's, less the umask too.
    let mine = m.ns("mine");
    works(NOBODY, &format!("umask 027; mkdir {}", q(&mine)));
    assert_eq!(owner_mode(&mine), (NOBODY, NOBODY, 0o750));
    works(
        NOBODY,
        &format!("umask 077; echo v > {}", q(&mine.join("v"))),
    );
    assert_eq!(owner_mode(&mine.join("v")), (NOBODY, NOBODY, 0o600));
    works(NOBODY, &format!("mkdir -m 0700 {}", q(&m.ns("private"))));
    assert_eq!(owner_mode(&m.ns("private")).2, 0o700);
    refused(STRANGER, &format!("ls {}", q(&mine)), EACCES);
    refused(STRANGER, &format!("rmdir {}", q(&m.ns("private"))), EPERM);
    // Its owner may open it up, and chown is root's.
    works(NOBODY, &format!("chmod 0755 {}", q(&mine)));
    refused(NOBODY, &format!("chown {STRANGER} {}", q(&mine)), EPERM);
    works(STRANGER, &format!("ls {} >/dev/null", q(&mine)));
    refused(
        STRANGER,
        &format!("echo w > {}", q(&mine.join("w"))),
        EACCES,
    );

    // All of it survives a restart.
    m.stop();
    drop(m);
    let m = mount("[namespace.ns]\n", Some(&backing));
    assert_eq!(owner_mode(&m.ns("ns")), (0, STRANGER, 0o3777));
    assert_eq!(owner_mode(&m.ns("mine")), (NOBODY, NOBODY, 0o755));
    assert_eq!(owner_mode(&m.ns("private")), (NOBODY, NOBODY, 0o700));
    assert_eq!(owner_mode(&m.ns("mine").join("v")), (NOBODY, NOBODY, 0o600));
    refused(
        STRANGER,
        &format!("cat {}", q(&m.ns("mine").join("v"))),
        EACCES,
    );
}

#[test]
fn without_new_namespaces_the_root_is_closed_and_unknown_owners_are_config_errors() {
    if skip() {
        return;
    }
    let m = mount("[cache]\nallow_new_namespaces = false\n", None);
    assert_eq!(owner_mode(&m.mnt).2, 0o755);
    refused(NOBODY, &format!("mkdir {}", q(&m.ns("n"))), EACCES);
    drop(m);
    let mnt = tempfile::tempdir().unwrap();
    let cfg = mnt.path().join("c.toml");
    fs::write(&cfg, "[namespace.a]\nowner = \"no-such-user-cachefs\"\n").unwrap();
    let (status, stderr) = run_expect_exit(
        &[
            "mount".as_ref(),
            mnt.path().join("b").as_os_str(),
            mnt.path().as_os_str(),
            "--config".as_ref(),
            cfg.as_os_str(),
        ],
        Some(mnt.path()),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no such user \"no-such-user-cachefs\"") && stderr.lines().count() == 1,
        "{stderr}"
    );
}
