//! mkdir inside a namespace the config declares, the moment a daemon
//! serves: on a fresh backing dir, and on one whose index is still being
//! rebuilt behind the mount (after a clean stop and after `kill -9`). A
//! benchmark run once got EPERM from `mkdir ns/d` right after a start;
//! these loops hold the answer to success.

mod common;

use common::*;
use std::fs;

const CFG: &str = r#"
[cache]
max_bytes = "32GiB"
max_entries = 20000000
default_ttl = "7d"
allow_new_namespaces = true

[namespace.n]
ttl = "7d"
max_bytes = "8GiB"
"#;

/// Waits until the mount is listed (not for stats.json): the earliest a
/// user can reach it.
fn start_early(backing: Option<&std::path::Path>) -> Mount {
    let m = Mount::start(MountOpts {
        config: Some(CFG.to_string()),
        backing: backing.map(|b| b.to_path_buf()),
        no_wait: true,
        ..Default::default()
    });
    assert!(
        wait_until(MOUNT_DEADLINE, || is_mounted(&m.mnt)),
        "no mount: {}",
        m.log()
    );
    m
}

fn mkdir_write_read(m: &Mount, dir: &str) {
    let d = m.ns("n").join(dir);
    if let Err(e) = fs::create_dir(&d) {
        panic!("mkdir {}: {e}\n{}", d.display(), m.log());
    }
    let k = d.join("k");
    write_file(&k, dir.as_bytes()).unwrap();
    assert_eq!(read_file(&k).unwrap(), dir.as_bytes());
}

#[test]
fn mkdir_in_a_configured_namespace_right_after_a_fresh_start() {
    if skip_without_fuse() {
        return;
    }
    for i in 0..15 {
        let m = start_early(None);
        mkdir_write_read(&m, &format!("d{i}"));
    }
}

#[test]
fn mkdir_in_a_configured_namespace_while_the_index_is_rebuilt() {
    if skip_without_fuse() {
        return;
    }
    let keep = tempfile::tempdir().unwrap();
    let backing = keep.path().join("b");
    {
        let m = Mount::with_backing(CFG, &backing);
        fs::create_dir(m.ns("n").join("old")).unwrap();
        for i in 0..3000 {
            write_file(&m.ns("n").join("old").join(format!("k{i}")), b"x").unwrap();
        }
    }
    for i in 0..10 {
        let mut m = start_early(Some(&backing));
        mkdir_write_read(&m, &format!("d{i}"));
        assert_eq!(read_file(&m.ns("n").join("old/k7")).unwrap(), b"x");
        // Every other start follows a crash: the next rebuild scans.
        if i % 2 == 0 {
            m.kill9();
        }
    }
}
