//! Write-temp-then-rename (PRODUCT.md section 4: "rename within a
//! namespace is atomic and replaces the target"; the usual tools,
//! Python's write-temp-then-`os.replace`, work unchanged): C-style
//! open/write/close/rename and Python's `mkstemp` + `os.replace`, with
//! readers racing the renames, two writers replacing one key, a daemon
//! killed between the temp's close and its rename, and another daemon
//! reading what was renamed. Each renamed name acts on the renamed
//! version at once (xattrs, chmod, stat), also after `ls -l` of a big
//! namespace made the kernel hold an inode per entry (a rename then
//! moves the inodes it names, without looking through all it holds).

#[path = "common/bindview.rs"]
mod bindview;
mod common;

use bindview::MountPair;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const CFG: &str = "[cache]\nmax_bytes = \"512MiB\"\n[namespace.a]\n[namespace.big]\n";

/// C's atomic write: the temp, then the rename over the key.
fn write_then_rename(dir: &std::path::Path, tmp: &str, key: &str, data: &[u8]) {
    let t = dir.join(tmp);
    write_file(&t, data).unwrap_or_else(|e| panic!("write {tmp}: {e}"));
    fs::rename(&t, dir.join(key)).unwrap_or_else(|e| panic!("rename {tmp} -> {key}: {e}"));
}

#[test]
fn tmp_then_rename_with_an_inode_per_entry_held_and_a_reader_racing() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    // `ls -l` of a namespace of 3,000: the kernel holds an inode each.
    for i in 0..3000 {
        write_file(&m.path("big", &format!("e{i}")), b"x").unwrap();
    }
    let listed = fs::read_dir(m.ns("big"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .filter(|&len| len == 1)
        .count();
    assert_eq!(listed, 3000);
    let dir = m.ns("a");
    let keys = 8;
    let stop = AtomicBool::new(false);
    let mut rng = Rng::from_time("tmp_then_rename");
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut seen = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for k in 0..keys {
                    match fs::read(dir.join(format!("k{k}"))) {
                        Ok(b) => {
                            check_payload(&b).unwrap_or_else(|e| panic!("k{k}: {e}"));
                            seen += 1;
                        }
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        Err(e) => panic!("read k{k}: {e}"),
                    }
                }
            }
            seen
        });
        for round in 0..200 {
            let key = format!("k{}", round % keys);
            let tmp = format!(".tmp-{key}-{round}");
            let data = make_payload(&mut rng, 15_000 + round, key.as_bytes());
            let t = dir.join(&tmp);
            write_file(&t, &data).unwrap();
            let etag = format!("etag-{round}");
            setxattr(&t, "user.etag", etag.as_bytes()).unwrap();
            fs::rename(&t, dir.join(&key)).unwrap_or_else(|e| panic!("round {round}: {e}"));
            let to = dir.join(&key);
            // The kernel moved its dentry without asking: each request on
            // the new name must reach the renamed version.
            assert_eq!(
                getxattr(&to, "user.etag").unwrap(),
                etag.as_bytes(),
                "round {round}: the xattr through the new name"
            );
            let mode = if round % 2 == 0 { 0o600 } else { 0o640 };
            fs::set_permissions(&to, fs::Permissions::from_mode(mode)).unwrap();
            let md = fs::metadata(&to).unwrap();
            assert_eq!(md.permissions().mode() & 0o777, mode, "round {round}");
            assert_eq!(md.len(), data.len() as u64, "round {round}");
            assert!(read_file(&to).unwrap() == data, "round {round}: content");
            assert_errno(fs::metadata(&t), libc::ENOENT, "the temp is gone");
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0, "the reader read something");
    });
    let mut names = list_str(&dir);
    names.sort();
    let want: Vec<String> = (0..keys).map(|k| format!("k{k}")).collect();
    assert_eq!(names, want, "no temp left");
    assert_eq!(m.ns_stat("a", "entries"), keys as u64);
}

/// Python's atomic-write idiom, by two processes replacing the same keys
/// while a third reads them: whole values only, the last replace wins.
#[test]
fn python_mkstemp_and_os_replace_racing_onto_one_key_with_a_reader() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let script = r#"
import hashlib, os, sys, tempfile
d, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    body = (f"{who}:{i}:".encode() * 2000)[: 12000 + i]
    data = hashlib.sha256(body).hexdigest().encode() + body
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, os.path.join(d, f"k{i % 3}"))
"#;
    let reader = r#"
import hashlib, os, sys
d, stop = sys.argv[1], sys.argv[2]
seen = 0
while not os.path.exists(stop):
    for k in range(3):
        try:
            with open(os.path.join(d, f"k{k}"), "rb") as f:
                b = f.read()
        except FileNotFoundError:
            continue
        assert hashlib.sha256(b[64:]).hexdigest().encode() == b[:64], f"k{k}: torn, {len(b)} bytes"
        seen += 1
print(seen)
"#;
    let dir = m.ns("a");
    let stop = m.dir.path().join("stop");
    let r = Command::new("python3")
        .args(["-c", reader])
        .arg(&dir)
        .arg(&stop)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let writers: Vec<_> = ["w1", "w2"]
        .iter()
        .map(|w| {
            Command::new("python3")
                .args(["-c", script])
                .arg(&dir)
                .arg(w)
                .arg("60")
                .spawn()
                .unwrap()
        })
        .collect();
    for mut w in writers {
        assert!(w.wait().unwrap().success(), "a writer failed");
    }
    fs::write(&stop, b"").unwrap();
    let out = r.wait_with_output().unwrap();
    assert!(out.status.success(), "the reader saw a torn value");
    for k in 0..3 {
        let b = fs::read(dir.join(format!("k{k}"))).unwrap();
        assert_eq!(sha256_hex(&b[64..]).as_bytes(), &b[..64], "k{k} whole");
        // Each writer's last replace of k is its i = 57 + k; one of the
        // two is last.
        let tail = format!(":{}:", 57 + k);
        assert!(
            b[64..].starts_with(format!("w1{tail}").as_bytes())
                || b[64..].starts_with(format!("w2{tail}").as_bytes()),
            "k{k}: a last version, not {:?}",
            String::from_utf8_lossy(&b[64..80])
        );
    }
    let mut names = list_str(&dir);
    names.sort();
    assert_eq!(names, ["k0", "k1", "k2"], "no temp left");
    assert_eq!(m.ns_stat("a", "entries"), 3);
}

/// A temp whose close() returned is an entry like any other: a daemon
/// killed before the rename leaves it whole (and the key's old version);
/// one killed right after the rename leaves the new version under the
/// key and no temp.
#[test]
fn a_daemon_killed_between_the_temps_close_and_its_rename() {
    if skip_without_fuse() {
        return;
    }
    let mut rng = Rng::from_time("killed_between");
    let old = make_payload(&mut rng, 15_000, b"old");
    let new = make_payload(&mut rng, 15_000, b"new");
    let mut m = Mount::new(CFG);
    let dir = m.ns("a");
    write_file(&dir.join("k"), &old).unwrap();
    write_file(&dir.join(".tmp-k"), &new).unwrap();
    m.kill9();
    let mut m2 = Mount::with_backing(CFG, &m.backing);
    let dir = m2.ns("a");
    assert!(read_file(&dir.join(".tmp-k")).unwrap() == new, "the temp");
    assert!(
        read_file(&dir.join("k")).unwrap() == old,
        "the key's old version"
    );
    fs::rename(dir.join(".tmp-k"), dir.join("k")).unwrap();
    m2.kill9();
    let m3 = Mount::with_backing(CFG, &m.backing);
    let dir = m3.ns("a");
    assert!(
        read_file(&dir.join("k")).unwrap() == new,
        "renamed before the kill"
    );
    assert_errno(fs::metadata(dir.join(".tmp-k")), libc::ENOENT, "no temp");
    assert!(
        wait_until(Duration::from_secs(10), || m3.ns_stat("a", "entries") == 1),
        "one entry once the index is rebuilt: {}",
        m3.stats()
    );
}

/// Another daemon on the backing dir: a key renamed into place is read
/// there right after rename() returned, and a key it had read is seen
/// replaced.
fn renamed_keys_reach_the_other_daemon(polled: bool) {
    let p = MountPair::new("[cache]\npoll_interval = \"1s\"\n[namespace.a]\n", polled);
    let (a, b) = (p.a.ns("a"), p.b.ns("a"));
    let mut rng = Rng::from_time("renamed_other");
    for round in 0..10 {
        let fresh = format!("fresh{round}");
        let data = make_payload(&mut rng, 15_000, fresh.as_bytes());
        assert_errno(
            fs::metadata(b.join(&fresh)),
            libc::ENOENT,
            "missed on B first",
        );
        write_then_rename(&a, &format!(".tmp-{round}"), &fresh, &data);
        assert!(
            read_file(&b.join(&fresh)).unwrap() == data,
            "round {round}: B reads the new key at once"
        );
        let old = make_payload(&mut rng, 15_000, b"old");
        write_file(&a.join("k"), &old).unwrap();
        assert!(
            wait_until(Duration::from_secs(5), || {
                read_file(&b.join("k")).is_ok_and(|got| got == old)
            }),
            "round {round}: B reads the old version first"
        );
        let new = make_payload(&mut rng, 15_000, b"new");
        write_then_rename(&a, &format!(".tmp-k{round}"), "k", &new);
        assert!(
            wait_until(Duration::from_secs(5), || {
                let got = read_file(&b.join("k")).unwrap();
                check_payload(&got).unwrap();
                got == new
            }),
            "round {round}: B sees the key replaced"
        );
        assert!(
            wait_until(Duration::from_secs(5), || {
                errno(&fs::metadata(b.join(format!(".tmp-k{round}")))) == Some(libc::ENOENT)
            }),
            "round {round}: B no longer finds the temp"
        );
    }
}

#[test]
fn renamed_keys_reach_a_daemon_on_the_same_host() {
    if skip_without_fuse() {
        return;
    }
    renamed_keys_reach_the_other_daemon(false);
}

#[test]
fn renamed_keys_reach_a_daemon_on_another_host() {
    if skip_without_fuse() {
        return;
    }
    renamed_keys_reach_the_other_daemon(true);
}
