//! Directories inside a namespace behave as local directories where
//! pjdfstest looks (issue 15, issue 12's peer suites): each has its own
//! owner, group and mode (mkdir's mode less the umask, chmod, chown, kept
//! across a restart and a rename, enforced for other users), its own times
//! (a name made or removed in it moves its mtime and ctime, not the
//! namespace's; utimensat sets them), and a link count of 2 plus its
//! subdirectories.

mod common;

use common::*;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CFG: &str = "[namespace.ns]\nttl = \"1h\"\n";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

/// mkdir(1) (mode 0777 asked) under umask `mask`, in a child process
/// (the umask is per process; the test harness runs threads).
fn mkdir_with_umask(p: &Path, mask: u32) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {mask:03o} && mkdir \"$0\""))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "mkdir {} under umask {mask:03o}", p.display());
}

#[test]
fn a_directory_keeps_its_own_mode_and_owner_across_a_rename_and_a_restart() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new(CFG);
    let ns = m.ns("ns");
    // mkdir(2)'s mode, less the umask, is the directory's (the namespace
    // is 0755): the kernel's umask applies, and what it leaves holds.
    let sub = ns.join("sub");
    fs::create_dir(&sub).unwrap();
    let ns_mode = mode_of(&ns);
    let before = fs::metadata(&sub).unwrap();
    sleep_until_wall(mtime_of(&before) + Duration::from_millis(20));
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o1750)).unwrap();
    let after = fs::metadata(&sub).unwrap();
    assert_eq!(mode_of(&sub), 0o1750, "chmod of a directory holds");
    assert_eq!(mode_of(&ns), ns_mode, "the namespace keeps its own mode");
    assert!(
        (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
        "chmod moves the directory's ctime"
    );
    assert_eq!(mtime_of(&after), mtime_of(&before), "and not its mtime");
    mkdir_with_umask(&sub.join("inner"), 0o027);
    assert_eq!(mode_of(&sub.join("inner")), 0o750, "mkdir under umask 027");
    if is_root() {
        let c = CString::new(sub.as_os_str().as_bytes()).unwrap();
        // SAFETY: c is a valid NUL-terminated path for the call's duration.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
        let md = fs::metadata(&sub).unwrap();
        assert_eq!(
            (md.uid(), md.gid()),
            (65534, 65534),
            "chown of a directory holds"
        );
    }

    // A rename carries the mode with the directory and its subdirectories.
    fs::rename(&sub, ns.join("moved")).unwrap();
    assert_eq!(mode_of(&ns.join("moved")), 0o1750);
    assert_eq!(mode_of(&ns.join("moved/inner")), 0o750);

    // rmdir and a new mkdir of the same name: the new directory's own.
    fs::remove_dir(ns.join("moved/inner")).unwrap();
    mkdir_with_umask(&ns.join("moved/inner"), 0o066);
    assert_eq!(mode_of(&ns.join("moved/inner")), 0o711, "no mode left over");

    m.stop();
    let m = Mount::with_backing(CFG, &m.backing.clone());
    let ns = m.ns("ns");
    assert_eq!(mode_of(&ns.join("moved")), 0o1750, "after a restart");
    assert_eq!(mode_of(&ns.join("moved/inner")), 0o711);
    if is_root() {
        let md = fs::metadata(ns.join("moved")).unwrap();
        assert_eq!(
            (md.uid(), md.gid()),
            (65534, 65534),
            "owner after a restart"
        );
    }
}

#[test]
fn a_directorys_mode_is_enforced_for_other_users() {
    if skip_without_fuse() {
        return;
    }
    if !is_root() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test runs commands as another user: it needs root");
        }
        eprintln!("SKIP: not root; set CI=true to make this a failure");
        return;
    }
    let m = Mount::start(MountOpts {
        config: Some(CFG.to_string()),
        args: vec!["-o".into(), "allow_other".into()],
        ..Default::default()
    });
    fs::set_permissions(m.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let ns = m.ns("ns");
    fs::set_permissions(&ns, fs::Permissions::from_mode(0o777)).unwrap();
    fs::create_dir(ns.join("private")).unwrap();
    fs::set_permissions(ns.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir(ns.join("open")).unwrap();
    fs::set_permissions(ns.join("open"), fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |cmd: &str| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
                cmd,
            ])
            .output()
            .unwrap()
    };
    let p = ns.join("private");
    let out = as_nobody(&format!("echo x > {}/k", p.display()));
    assert!(
        !out.status.success(),
        "nobody wrote into root's 0700 directory"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    assert!(!as_nobody(&format!("ls {}", p.display())).status.success());
    let o = ns.join("open");
    let out = as_nobody(&format!(
        "mkdir {0}/mine && echo x > {0}/mine/k",
        o.display()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = fs::metadata(o.join("mine")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (65534, 65534),
        "the creator's directory"
    );
    assert_eq!(read_file(&o.join("mine/k")).unwrap(), b"x\n");
}

#[test]
fn names_made_or_removed_move_their_own_directorys_times_and_utimensat_sets_them() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let ns = m.ns("ns");
    fs::create_dir_all(ns.join("d/e")).unwrap();
    let ns_before = fs::metadata(&ns).unwrap();
    let d_before = fs::metadata(ns.join("d")).unwrap();
    let later = mtime_of(&d_before) + Duration::from_millis(20);
    sleep_until_wall(later);
    write_file(&ns.join("d/k"), b"v").unwrap();
    let d_after = fs::metadata(ns.join("d")).unwrap();
    assert!(
        mtime_of(&d_after) > mtime_of(&d_before),
        "a create moves its dir's mtime"
    );
    assert!(
        d_after.ctime() * 1_000_000_000 + d_after.ctime_nsec()
            > d_before.ctime() * 1_000_000_000 + d_before.ctime_nsec()
    );
    let ns_after = fs::metadata(&ns).unwrap();
    assert_eq!(
        mtime_of(&ns_after),
        mtime_of(&ns_before),
        "the namespace's mtime: no name changed in it"
    );
    sleep_until_wall(mtime_of(&d_after) + Duration::from_millis(20));
    fs::remove_file(ns.join("d/k")).unwrap();
    let d_unlinked = fs::metadata(ns.join("d")).unwrap();
    assert!(
        mtime_of(&d_unlinked) > mtime_of(&d_after),
        "an unlink moves it"
    );

    // utimensat with explicit times, nanoseconds and past 2038.
    let c = CString::new(ns.join("d/e").as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: 5_000_000_000,
            tv_nsec: 987_654_321,
        },
    ];
    // SAFETY: c is a valid path and times two valid timespecs, for the call.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(
        r,
        0,
        "utimensat of a directory: {}",
        std::io::Error::last_os_error()
    );
    let md = fs::metadata(ns.join("d/e")).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((md.mtime(), md.mtime_nsec()), (5_000_000_000, 987_654_321));
}

#[test]
fn link_counts_are_two_plus_subdirectories_and_rmdir_refuses_non_empty() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let ns = m.ns("ns");
    let nlink = |p: &Path| fs::metadata(p).unwrap().nlink();
    fs::create_dir(ns.join("p")).unwrap();
    assert_eq!(nlink(&ns.join("p")), 2);
    fs::create_dir(ns.join("p/a")).unwrap();
    fs::create_dir(ns.join("p/b")).unwrap();
    write_file(&ns.join("p/file"), b"f").unwrap();
    assert_eq!(
        nlink(&ns.join("p")),
        4,
        "2 + two subdirectories (files do not count)"
    );
    assert_eq!(nlink(&ns), 3, "the namespace: 2 + p");
    fs::create_dir(ns.join("q")).unwrap();
    fs::rename(ns.join("p/a"), ns.join("q/a")).unwrap();
    assert_eq!(nlink(&ns.join("p")), 3, "a subdirectory moved out");
    assert_eq!(nlink(&ns.join("q")), 3, "and in");
    assert_errno(
        fs::remove_dir(ns.join("p")),
        libc::ENOTEMPTY,
        "rmdir of a non-empty dir",
    );
    assert_errno(
        fs::rename(ns.join("q"), ns.join("p")),
        libc::ENOTEMPTY,
        "rename of a dir over a non-empty dir",
    );
    fs::remove_dir(ns.join("p/b")).unwrap();
    assert_eq!(nlink(&ns.join("p")), 2);
}

#[test]
fn a_setgid_directory_gives_its_group_and_a_sticky_one_protects_others_entries() {
    if skip_without_fuse() {
        return;
    }
    if !is_root() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test runs commands as another user: it needs root");
        }
        eprintln!("SKIP: not root; set CI=true to make this a failure");
        return;
    }
    let m = Mount::start(MountOpts {
        config: Some(CFG.to_string()),
        args: vec!["-o".into(), "allow_other".into()],
        ..Default::default()
    });
    fs::set_permissions(m.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let ns = m.ns("ns");
    let team = ns.join("team");
    fs::create_dir(&team).unwrap();
    let c = CString::new(team.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path for the call's duration.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 0, 4321) }, 0);
    fs::set_permissions(&team, fs::Permissions::from_mode(0o3777)).unwrap();
    fs::create_dir(team.join("sub")).unwrap();
    let sub = fs::metadata(team.join("sub")).unwrap();
    assert_eq!(sub.gid(), 4321, "a setgid parent's group");
    assert_ne!(sub.mode() & 0o2000, 0, "and setgid itself");
    write_file(&team.join("k"), b"root's").unwrap();
    assert_eq!(
        fs::metadata(team.join("k")).unwrap().gid(),
        4321,
        "entries too"
    );
    let as_nobody = |cmd: &str| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
                cmd,
            ])
            .output()
            .unwrap()
    };
    let out = as_nobody(&format!("rm -f {}", team.join("k").display()));
    assert!(
        !out.status.success(),
        "nobody removed root's entry in a sticky dir"
    );
    assert_eq!(read_file(&team.join("k")).unwrap(), b"root's");
    let out = as_nobody(&format!("echo mine > {0}/n && rm {0}/n", team.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rmdir_refuses_a_directory_with_a_name_being_written() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let ns = m.ns("ns");
    fs::create_dir(ns.join("d")).unwrap();
    let mut f = fs::File::create(ns.join("d/k")).unwrap();
    assert_errno(
        fs::remove_dir(ns.join("d")),
        libc::ENOTEMPTY,
        "rmdir while d/k is being written",
    );
    std::io::Write::write_all(&mut f, b"v").unwrap();
    drop(f);
    assert_eq!(read_file(&ns.join("d/k")).unwrap(), b"v", "published in d");
    fs::remove_file(ns.join("d/k")).unwrap();
    fs::remove_dir(ns.join("d")).unwrap();
}

/// The same for a namespace, and for the target of a directory rename:
/// pjdfstest's `rmdir::eexist_enotempty_non_empty_dir` and
/// `rename::eexist_enotempty_to_non_empty` create a file, close it and at
/// once remove (or rename over) its directory, before the file's RELEASE
/// has published it: the directory must not look empty meanwhile.
#[test]
fn a_namespace_or_a_rename_target_with_a_name_being_written_is_not_empty() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    fs::create_dir(m.ns("fresh")).unwrap();
    let f = fs::File::create(m.ns("fresh").join("k")).unwrap();
    assert_errno(
        fs::remove_dir(m.ns("fresh")),
        libc::ENOTEMPTY,
        "rmdir of a namespace while fresh/k is being written",
    );
    drop(f);
    assert_eq!(read_file(&m.ns("fresh").join("k")).unwrap(), b"");

    let ns = m.ns("ns");
    fs::create_dir(ns.join("from")).unwrap();
    fs::create_dir(ns.join("to")).unwrap();
    let f = fs::File::create(ns.join("to/k")).unwrap();
    assert_errno(
        fs::rename(ns.join("from"), ns.join("to")),
        libc::ENOTEMPTY,
        "rename over a directory while to/k is being written",
    );
    drop(f);
    assert!(ns.join("from").is_dir() && ns.join("to/k").exists());
}
