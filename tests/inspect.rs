//! Acceptance 8: inspection with the usual tools. `ls -l` shows logical sizes and
//! publish mtimes; `du` shows stored bytes; `df` shows the quota as the size and the
//! room left in it. Also the read-only xattrs and metrics.prom.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const CFG: &str = r#"
[cache]
max_bytes = "64MiB"

[namespace.i]
"#;

fn stored(p: &Path) -> u64 {
    getxattr_str(p, "user.cachefs.stored_bytes")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn write_set(m: &Mount) -> Vec<(String, usize, f64, f64)> {
    let mut rng = Rng::from_time("inspect");
    let mut out = Vec::new();
    for n in [0usize, 1, 10_000, 123_457, 1_000_000] {
        let name = format!("e{n}");
        let t0 = now_f64();
        write_file(&m.path("i", &name), &rng.bytes(n)).unwrap();
        let t1 = now_f64();
        out.push((name, n, t0, t1));
    }
    out
}

#[test]
fn ls_l_shows_logical_sizes_and_publish_mtimes() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let set = write_set(&m);
    let out = sh(&format!("ls -l --time-style=+%s {}", q(&m.ns("i"))));
    let mut seen = 0;
    for line in out.lines().filter(|l| !l.starts_with("total")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 7, "ls -l line: {line}");
        let (mode, size, mtime, name) = (f[0], f[4], f[5], f[6]);
        let (_, n, t0, t1) = set
            .iter()
            .find(|(k, ..)| k == name)
            .unwrap_or_else(|| panic!("ls lists unknown {name}"));
        assert!(
            mode.starts_with('-'),
            "{name}: not a regular file in ls -l: {line}"
        );
        assert_eq!(size.parse::<usize>().unwrap(), *n, "{name}: ls -l size");
        let mt: f64 = mtime.parse().unwrap();
        assert!(
            mt >= t0.floor() && mt <= t1.ceil(),
            "{name}: ls -l mtime {mt} not the publish time ({t0}..{t1})"
        );
        seen += 1;
    }
    assert_eq!(seen, set.len(), "ls -l output:\n{out}");
    // Owner and mode: what the writer created (root here, umask-masked 0666).
    let md = fs::metadata(m.path("i", "e1")).unwrap();
    assert_eq!(md.uid(), unsafe { libc::geteuid() }, "owner of a new entry");
    assert_eq!(
        md.mode() & 0o777,
        0o666 & !current_umask(),
        "mode of a new entry"
    );
    // chmod works and shows in ls.
    sh(&format!("chmod 600 {}", q(&m.path("i", "e1"))));
    assert_eq!(
        fs::metadata(m.path("i", "e1")).unwrap().mode() & 0o777,
        0o600,
        "mode after chmod"
    );
    // The namespace shows as a directory at the root.
    let root = sh(&format!("ls -l {}", q(&m.mnt)));
    assert!(
        root.lines()
            .any(|l| l.starts_with('d') && l.ends_with(" i")),
        "ls -l of the root:\n{root}"
    );
    // stat(1) agrees: logical size and st_blocks = stored/512.
    for (name, n, ..) in &set {
        let p = m.path("i", name);
        let s = sh(&format!("stat -c '%s %b %B' {}", q(&p)));
        let v: Vec<u64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
        assert_eq!(v[0], *n as u64, "{name}: stat %s");
        assert_eq!(
            v[1] * v[2],
            stored(&p),
            "{name}: stat %b*%B vs stored_bytes"
        );
    }
}

fn current_umask() -> u32 {
    let old = unsafe { libc::umask(0o022) };
    unsafe { libc::umask(old) };
    old as u32
}

#[test]
fn du_shows_stored_bytes() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let set = write_set(&m);
    let mut sum = 0;
    for (name, n, ..) in &set {
        let p = m.path("i", name);
        let s = stored(&p);
        let backing = fs::metadata(m.backing_path("i", name.as_bytes())).unwrap();
        assert_eq!(
            s,
            backing.blocks() * 512,
            "{name}: stored_bytes vs the backing file's st_blocks*512"
        );
        assert!(s >= *n as u64, "{name}: stored {s} < logical {n}");
        let du: u64 = sh(&format!("du -B1 {}", q(&p)))
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(du, s, "{name}: du -B1");
        let apparent: u64 = sh(&format!("du -B1 --apparent-size {}", q(&p)))
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(apparent, *n as u64, "{name}: du --apparent-size");
        sum += s;
    }
    let dir_blocks = fs::metadata(m.ns("i")).unwrap().blocks() * 512;
    let du_s: u64 = sh(&format!("du -sB1 {}", q(&m.ns("i"))))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        du_s - dir_blocks,
        sum,
        "du -s of the namespace = sum of stored bytes"
    );
    assert_eq!(
        m.ns_stat("i", "bytes"),
        sum,
        "stats.json bytes: {}",
        m.stats()
    );
}

#[test]
fn df_shows_quota_and_room_left() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let quota = 64 * 1024 * 1024u64;
    let df = || -> (u64, u64, u64) {
        let out = sh(&format!("df -B1 --output=size,used,avail {}", q(&m.mnt)));
        let v: Vec<u64> = out
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1], v[2])
    };
    let (size, used, avail) = df();
    assert_eq!(size, quota, "df size = quota");
    assert_eq!(used, 0, "df used of an empty cache");
    assert_eq!(avail, quota, "df avail of an empty cache");
    let s = statvfs(&m.mnt);
    assert_eq!((s.f_bsize, s.f_frsize), (4096, 4096), "statfs block sizes");
    assert_eq!(s.f_bfree, s.f_bavail, "f_bfree = f_bavail");
    write_set(&m);
    let total = m.total_stat("bytes");
    assert!(total > 1_000_000);
    let (size, used, avail) = df();
    assert_eq!(size, quota, "df size after writes");
    assert_eq!(used, total, "df used = stored bytes of all entries");
    assert_eq!(avail, quota - total, "df avail = quota - used");
    // Deleting frees the room at once.
    fs::remove_file(m.path("i", "e1000000")).unwrap();
    let (_, used2, _) = df();
    assert_eq!(used2, m.total_stat("bytes"), "df used after unlink");
    assert!(used2 < used, "unlink frees room");
    // Human-readable df works too.
    let h = sh(&format!("df -h {}", q(&m.mnt)));
    assert!(h.contains("64M"), "df -h shows 64M:\n{h}");
}

#[test]
fn quota_is_capped_by_the_backing_volume() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new("[cache]\nmax_bytes = \"1PiB\"\n");
    let vol = statvfs(&m.backing);
    let vol_size = vol.f_blocks * vol.f_frsize;
    let s = statvfs(&m.mnt);
    let size = s.f_blocks * s.f_frsize;
    assert!(size > 0, "df size of a mount");
    assert!(
        size <= vol_size,
        "quota {size} larger than the backing volume ({vol_size})"
    );
    drop(m);
    let m = Mount::start(MountOpts {
        config: None,
        ..Default::default()
    });
    let s = statvfs(&m.mnt);
    let size = s.f_blocks * s.f_frsize;
    assert!(size <= 1 << 30, "default quota {size} > 1 GiB");
    let free = vol.f_bavail * vol.f_frsize;
    assert!(
        size == 1 << 30 || size <= free + (64 << 20),
        "default quota {size}: neither 1 GiB nor the free room {free}"
    );
}

#[test]
fn read_only_xattrs_and_metrics() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let p = m.path("i", "x");
    let data = b"some cached value".repeat(100);
    write_file(&p, &data).unwrap();
    let sha = getxattr_str(&p, "user.cachefs.sha256").unwrap();
    assert_eq!(sha, sha256_hex(&data));
    let exp = getxattr_str(&p, "user.cachefs.expires").unwrap();
    let sb = getxattr_str(&p, "user.cachefs.stored_bytes").unwrap();
    for (name, old) in [
        ("user.cachefs.sha256", &sha),
        ("user.cachefs.expires", &exp),
        ("user.cachefs.stored_bytes", &sb),
    ] {
        assert!(
            setxattr(&p, name, b"123").is_err(),
            "setxattr {name} must be refused"
        );
        assert_eq!(
            &getxattr_str(&p, name).unwrap(),
            old,
            "{name} changed by a refused setxattr"
        );
    }
    assert_eq!(
        fs::read(&p).unwrap(),
        data,
        "entry intact after refused setxattrs"
    );
    // getfattr (attr package) reads them.
    let out = sh(&format!(
        "getfattr -n user.cachefs.sha256 --only-values {}",
        q(&p)
    ));
    assert_eq!(out.trim(), sha);
    // metrics.prom: Prometheus text with per-namespace counters.
    let _ = fs::read(m.path("i", "missing"));
    let prom = fs::read_to_string(m.mnt.join(".cachefs/metrics.prom")).unwrap();
    let value = |metric: &str| -> Option<f64> {
        prom.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(&format!("{metric}{{namespace=\"i\"}}")))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    };
    assert!(
        value("cachefs_hits_total").unwrap_or(0.0) >= 1.0,
        "cachefs_hits_total for i:\n{prom}"
    );
    assert!(
        value("cachefs_misses_total").unwrap_or(0.0) >= 1.0,
        "cachefs_misses_total for i:\n{prom}"
    );
    assert!(
        value("cachefs_publishes_total").unwrap_or(0.0) >= 1.0,
        "cachefs_publishes_total for i:\n{prom}"
    );
}
