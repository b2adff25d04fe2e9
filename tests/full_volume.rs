//! PRODUCT.md section 5: a cache on a volume of its own never wedges.
//! On a 32 MiB tmpfs with the default quota, writing three times the
//! volume as 1 MiB entries keeps working (alone and with four writers at
//! once); a file of another's taking the volume makes writes fail cleanly
//! with ENOSPC, losing nothing published, until it is removed.

mod common;
#[path = "common/volume.rs"]
mod volume;

use common::*;
use std::fs::{self, File};
use std::io::Write;
use volume::Volume;

const MIB: usize = 1 << 20;

/// A cache with the default config whose backing dir is on `vol`.
fn cache_on(vol: &Volume) -> Mount {
    let m = Mount::start(MountOpts {
        backing: Some(vol.join("backing")),
        ..Default::default()
    });
    fs::create_dir(m.ns("v")).unwrap();
    m
}

fn payload(i: usize, tag: &str) -> Vec<u8> {
    make_payload(&mut Rng::new(i as u64), MIB - 64, tag.as_bytes())
}

/// Writes refused with ENOSPC, over the whole mount.
fn enospc(m: &Mount) -> u64 {
    m.stats()["total"]["rejected_writes"]["enospc"]
        .as_u64()
        .unwrap()
}

/// Every entry still listed reads back whole (none torn, none foreign).
fn all_listed_intact(m: &Mount) -> usize {
    let keys = list_str(&m.ns("v"));
    for k in &keys {
        let b = read_file(&m.path("v", k)).unwrap_or_else(|e| panic!("{k}: {e}"));
        check_payload(&b).unwrap_or_else(|e| panic!("{k} is torn: {e}"));
    }
    keys.len()
}

#[test]
fn writing_three_times_the_volume_keeps_working() {
    if skip_without_fuse() {
        return;
    }
    let Some(vol) = Volume::tmpfs("32m") else {
        return;
    };
    let m = cache_on(&vol);
    let n = 96;
    for i in 0..n {
        let data = payload(i, &format!("k{i}"));
        write_file(&m.path("v", &format!("k{i}")), &data)
            .unwrap_or_else(|e| panic!("write {i} of {n} (3x the volume): {e}"));
    }
    for i in n - 8..n {
        let got = read_file(&m.path("v", &format!("k{i}"))).unwrap();
        assert_eq!(got, payload(i, &format!("k{i}")), "k{i} (among the newest)");
    }
    let kept = all_listed_intact(&m);
    assert!(kept >= 16, "only {kept} entries kept on a 32 MiB volume");
    assert!(m.total_stat("evictions") >= (n - kept) as u64);
    assert_eq!(enospc(&m), 0);
}

#[test]
fn four_writers_on_a_full_volume() {
    if skip_without_fuse() {
        return;
    }
    let Some(vol) = Volume::tmpfs("32m") else {
        return;
    };
    let m = cache_on(&vol);
    let per = 24;
    std::thread::scope(|s| {
        for w in 0..4 {
            let m = &m;
            s.spawn(move || {
                for i in 0..per {
                    let k = format!("w{w}-{i}");
                    write_file(&m.path("v", &k), &payload(w * 1000 + i, &k))
                        .unwrap_or_else(|e| panic!("writer {w}, write {i}: {e}"));
                }
            });
        }
    });
    for w in 0..4 {
        let k = format!("w{w}-{}", per - 1);
        let got = read_file(&m.path("v", &k)).unwrap();
        assert_eq!(got, payload(w * 1000 + per - 1, &k), "{k}");
    }
    all_listed_intact(&m);
    assert_eq!(enospc(&m), 0);
}

#[test]
fn a_filler_taking_the_volume_refuses_cleanly_until_it_goes() {
    if skip_without_fuse() {
        return;
    }
    let Some(vol) = Volume::tmpfs("32m") else {
        return;
    };
    let m = cache_on(&vol);
    let small: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("small{i}"),
                make_payload(&mut Rng::new(i), 3000, b"s"),
            )
        })
        .collect();
    for (k, v) in &small {
        write_file(&m.path("v", k), v).unwrap();
    }
    // Another process's file takes every free byte of the volume.
    let filler_path = vol.join("filler");
    let mut filler = File::create(&filler_path).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    loop {
        match filler.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filler: {e}"),
        }
    }
    drop(filler);
    assert!(
        vol.free() < 64 << 10,
        "the filler left {} bytes",
        vol.free()
    );

    for attempt in 0..3 {
        let path = m.path("v", "big");
        let mut f = File::create(&path).unwrap();
        let wrote = f.write_all(&payload(7, "big"));
        let closed = close_file(f);
        assert_errno(closed, libc::ENOSPC, "close() of a write on a full volume");
        if let Err(e) = wrote {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "attempt {attempt}");
        }
        assert_errno(fs::metadata(&path), libc::ENOENT, "the refused key");
    }
    for (k, v) in &small {
        assert_eq!(
            &read_file(&m.path("v", k)).unwrap(),
            v,
            "{k} after the refusals"
        );
    }
    assert!(
        staged_files(&m.backing.join("staging")).is_empty(),
        "a refused write left staging behind"
    );
    assert!(enospc(&m) >= 3);
    assert!(m.stats()["backing_full"].as_u64().unwrap() >= 3);
    assert_eq!(m.total_stat("evictions"), 0, "evicted for nothing");

    // Room is back: so are writes.
    fs::remove_file(&filler_path).unwrap();
    write_file(&m.path("v", "big"), &payload(7, "big")).unwrap();
    assert_eq!(read_file(&m.path("v", "big")).unwrap(), payload(7, "big"));
    for (k, v) in &small {
        assert_eq!(&read_file(&m.path("v", k)).unwrap(), v, "{k} at the end");
    }
}
