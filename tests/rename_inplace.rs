//! Renames within a namespace move the entry without copying it
//! (`src/store/trailer.rs`): a large entry renamed while another process
//! reads it, renames racing onto one target, a rename racing a write of
//! its target. Readers get whole versions, never a mix.

mod common;

use common::*;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

const CFG: &str = "[cache]\nmax_bytes = \"512MiB\"\n[namespace.a]\n";

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn a_large_entry_renamed_while_another_process_reads_it() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let big = pattern(8 << 20, 7);
    let from = m.path("a", "big.tmp");
    fs::write(&from, &big).unwrap();
    let ino = fs::metadata(m.backing_path("a", b"big.tmp")).unwrap().ino();
    // `cat` blocks on the full pipe part way through: it is mid-read
    // when the rename happens.
    let mut cat = Command::new("cat")
        .arg(&from)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = cat.stdout.take().unwrap();
    let mut got = vec![0u8; 1 << 20];
    out.read_exact(&mut got).unwrap();
    let to = m.path("a", "big");
    fs::rename(&from, &to).unwrap();
    out.read_to_end(&mut got).unwrap();
    assert!(cat.wait().unwrap().success());
    assert!(got == big, "the reader got the whole old bytes");
    assert!(fs::read(&to).unwrap() == big, "the new name has them");
    assert_errno(fs::read(&from), libc::ENOENT, "the old name is gone");
    let moved = fs::metadata(m.backing_path("a", b"big")).unwrap().ino();
    assert_eq!(moved, ino, "the backing file was moved, not copied");
}

#[test]
fn renames_and_writes_racing_onto_one_target_leave_one_whole_version() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let target = m.path("a", "t");
    for round in 0..20u8 {
        let a = pattern(300_000, round);
        let b = pattern(200_000, round.wrapping_add(100));
        let c = pattern(100_000, round.wrapping_add(200));
        fs::write(m.path("a", "x"), &a).unwrap();
        fs::write(m.path("a", "y"), &b).unwrap();
        fs::write(&target, b"old").unwrap();
        std::thread::scope(|s| {
            s.spawn(|| fs::rename(m.path("a", "x"), &target).unwrap());
            s.spawn(|| fs::rename(m.path("a", "y"), &target).unwrap());
            s.spawn(|| fs::write(&target, &c).unwrap());
            s.spawn(|| {
                // A reader during the race sees some whole version.
                if let Ok(now) = fs::read(&target) {
                    assert!(
                        [&b"old"[..], &a, &b, &c].contains(&now.as_slice()),
                        "round {round}: a mix of {} bytes",
                        now.len()
                    );
                }
            });
        });
        let now = fs::read(&target).unwrap();
        assert!(
            [&a, &b, &c].contains(&&now),
            "round {round}: {} bytes",
            now.len()
        );
        assert_errno(fs::read(m.path("a", "x")), libc::ENOENT, "x moved");
        assert_errno(fs::read(m.path("a", "y")), libc::ENOENT, "y moved");
    }
    // One entry, accounted once.
    assert_eq!(m.ns_stat("a", "entries"), 1);
}
