//! Issue 16, compression: a namespace with `compression = "zstd"` stores
//! entries compressed and reads them back plain, through a real mount:
//! every size round-trips, random reads of a big entry are right, `ls -l`
//! shows logical sizes while `du` and the quota count stored bytes, a
//! damaged entry is never served, old and new entries live side by side
//! after the setting changes, and export/import carry plain bytes.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

const ZSTD: &str = "[namespace.z]\nttl = \"1d\"\ncompression = \"zstd\"\ncompression_level = 3\n";
const PLAIN: &str = "[namespace.z]\nttl = \"1d\"\n";

/// JSON-like text: compresses several times, like LLM outputs and API JSON.
fn json_like(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        let r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        out.extend_from_slice(
            format!(
                "{{\"id\":{i},\"score\":{r},\"label\":\"item-{}\",\"ok\":true}},\n",
                r % 97
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `du -B1` of a path through the mount.
fn du_bytes(p: &Path) -> u64 {
    let out = Command::new("du").arg("-sB1").arg(p).output().unwrap();
    assert!(out.status.success(), "du: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// The size of a key's backing file: its stored content and trailer
/// (a plain entry's is larger than its content, a compressed one's not).
fn backing_content_len(m: &Mount, key: &str) -> u64 {
    fs::metadata(m.backing_path("z", key.as_bytes()))
        .unwrap()
        .len()
}

#[test]
fn every_size_round_trips_json_and_random() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(ZSTD);
    let sizes = [0, 1, 4095, 4096, 128 * 1024 + 1, 1 << 20, 20 << 20];
    for &n in &sizes {
        for (kind, body) in [("json", json_like(n)), ("random", random(n, n as u64 + 3))] {
            let k = format!("{kind}-{n}");
            write_file(&m.path("z", &k), &body).unwrap();
            let back = read_file(&m.path("z", &k)).unwrap();
            assert!(back == body, "{k}: read back plain");
            let md = fs::metadata(m.path("z", &k)).unwrap();
            assert_eq!(md.len(), n as u64, "{k}: ls -l shows the logical size");
            assert_eq!(
                getxattr_str(&m.path("z", &k), "user.cachefs.sha256").unwrap(),
                sha256_hex(&body),
                "{k}: the digest of what a reader gets"
            );
            let file = backing_content_len(&m, &k);
            if kind == "json" && n >= 4096 {
                assert!(file * 3 < n as u64, "{k}: stored compressed ({file} bytes)");
            }
            if kind == "random" {
                assert!(
                    file > n as u64,
                    "{k}: incompressible, stored plain ({file})"
                );
            }
        }
    }
    // Through `cat` and `cmp` too: the tools users use.
    let src = m.dir.path().join("src.json");
    fs::write(&src, json_like(1 << 20)).unwrap();
    let st = Command::new("cmp")
        .arg(&src)
        .arg(m.path("z", "json-1048576"))
        .status()
        .unwrap();
    assert!(st.success(), "cmp of the compressed entry with its source");
}

#[test]
fn random_reads_of_a_compressed_20_mb_entry() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new(ZSTD);
    let body = json_like(20 << 20);
    write_file(&m.path("z", "big"), &body).unwrap();
    assert!(backing_content_len(&m, "big") * 3 < body.len() as u64);
    // After a restart: nothing in the daemon's or the kernel's caches.
    m.stop();
    let m = Mount::with_backing(ZSTD, &m.backing.clone());
    let f = File::open(m.path("z", "big")).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut buf = vec![0u8; 4096];
    for i in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = x % (body.len() as u64 - 100);
        let n = f.read_at(&mut buf, off).unwrap();
        let end = (off as usize + 4096).min(body.len());
        assert_eq!(n, end - off as usize, "read {i} at {off}");
        assert!(buf[..n] == body[off as usize..end], "read {i} at {off}");
    }
}

#[test]
fn du_and_the_quota_count_stored_bytes() {
    if skip_without_fuse() {
        return;
    }
    let m =
        Mount::new("[namespace.z]\nttl = \"1d\"\ncompression = \"zstd\"\nmax_bytes = \"2MiB\"\n");
    let body = json_like(500_000);
    for i in 0..16 {
        write_file(&m.path("z", &format!("k{i}")), &body).unwrap();
    }
    // 8 MB of content in a 2 MiB quota, and nothing evicted.
    let names = list_str(&m.ns("z"));
    assert_eq!(names.len(), 16, "{names:?}");
    assert_eq!(m.ns_stat("z", "evictions"), 0);
    let logical: u64 = names
        .iter()
        .map(|k| fs::metadata(m.path("z", k)).unwrap().len())
        .sum();
    assert_eq!(logical, 16 * 500_000, "ls -l: logical sizes");
    let du = du_bytes(&m.ns("z"));
    assert!(du <= 2 << 20, "du counts stored bytes: {du}");
    assert!(du * 3 < logical, "du {du} vs logical {logical}");
    let stored = getxattr_str(&m.path("z", "k0"), "user.cachefs.stored_bytes").unwrap();
    let stored: u64 = stored.trim().parse().unwrap();
    assert_eq!(
        fs::metadata(m.path("z", "k0")).unwrap().blocks() * 512,
        stored
    );
    // stats: the ratio, in stats.json and metrics.prom.
    let s = m.stats();
    let ratio = s["namespaces"]["z"]["compression_ratio"].as_f64().unwrap();
    assert!(ratio > 3.0, "{s}");
    let prom = fs::read_to_string(m.mnt.join(".cachefs/metrics.prom")).unwrap();
    assert!(
        prom.contains("cachefs_logical_bytes{namespace=\"z\"} 8000000"),
        "{prom}"
    );
}

#[test]
fn a_corrupt_compressed_entry_is_never_served() {
    if skip_without_fuse() {
        return;
    }
    let mut m = Mount::new(ZSTD);
    let body = json_like(300_000);
    write_file(&m.path("z", "k"), &body).unwrap();
    m.stop();
    let backing = m.backing.clone();
    let path = m.backing_path("z", b"k");
    let mut bytes = fs::read(&path).unwrap();
    bytes[5_000] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    let m = Mount::with_backing(ZSTD, &backing);
    let r = read_file(&m.path("z", "k"));
    assert!(
        matches!(errno(&r), Some(libc::ENOENT) | Some(libc::EIO)),
        "a miss or EIO, never bytes: {:?}",
        r.as_ref().map(|b| b.len())
    );
    assert_eq!(m.stats()["corrupt_entries"], 1, "counted as corrupt");
    assert!(!path.exists(), "quarantined");
    assert!(!files_under(&backing.join("quarantine")).is_empty());
    // And the key works again for a new value.
    write_file(&m.path("z", "k"), b"fresh").unwrap();
    assert_eq!(read_file(&m.path("z", "k")).unwrap(), b"fresh");
}

#[test]
fn old_and_new_entries_after_a_setting_change_and_restarts() {
    if skip_without_fuse() {
        return;
    }
    let body = json_like(100_000);
    let mut m = Mount::new(PLAIN);
    write_file(&m.path("z", "plain"), &body).unwrap();
    let plain_len = backing_content_len(&m, "plain");
    assert!(plain_len > body.len() as u64);
    m.stop();
    let backing = m.backing.clone();
    let mut m = Mount::with_backing(ZSTD, &backing);
    write_file(&m.path("z", "packed"), &body).unwrap();
    assert!(backing_content_len(&m, "packed") * 3 < body.len() as u64);
    assert_eq!(
        backing_content_len(&m, "plain"),
        plain_len,
        "left as it was"
    );
    // An append to a compressed entry starts from its plain bytes.
    let mut more = body.clone();
    more.extend_from_slice(b"tail\n");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'tail\\n' >> '{}'",
            m.path("z", "packed").display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(read_file(&m.path("z", "packed")).unwrap() == more);
    // A rename keeps it compressed and valid.
    fs::rename(m.path("z", "packed"), m.path("z", "moved")).unwrap();
    m.stop();
    for config in [PLAIN, ZSTD] {
        let mut m = Mount::with_backing(config, &backing);
        assert!(
            read_file(&m.path("z", "plain")).unwrap() == body,
            "{config}"
        );
        assert!(
            read_file(&m.path("z", "moved")).unwrap() == more,
            "{config}"
        );
        assert!(backing_content_len(&m, "moved") * 3 < more.len() as u64);
        m.stop();
    }
}

fn cachefs<S: AsRef<OsStr>>(args: &[S]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn export_gives_plain_bytes_and_import_compresses() {
    if skip_without_fuse() {
        return;
    }
    let src = Mount::new(ZSTD);
    let body = json_like(200_000);
    write_file(&src.path("z", "k"), &body).unwrap();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("z.tar.zst");
    let out = cachefs(&[
        OsStr::new("export"),
        OsStr::new("--mount"),
        src.mnt.as_os_str(),
        OsStr::new("--json"),
        archive.as_os_str(),
    ]);
    assert_eq!(out["entries"], 1, "{out}");
    // Plain `tar` gets the plain bytes.
    let x = work.path().join("x");
    fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(fs::read(x.join("z/k")).unwrap() == body);

    // Into a live mount whose namespace compresses: stored compressed.
    let dst = Mount::new(ZSTD);
    let out = cachefs(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        dst.mnt.as_os_str(),
        OsStr::new("--json"),
        archive.as_os_str(),
    ]);
    assert_eq!(out["imported"], 1, "{out}");
    assert!(read_file(&dst.path("z", "k")).unwrap() == body);
    assert!(backing_content_len(&dst, "k") * 3 < body.len() as u64);
    // Into one that does not: stored plain.
    let plain = Mount::new(PLAIN);
    cachefs(&[
        OsStr::new("import"),
        OsStr::new("--mount"),
        plain.mnt.as_os_str(),
        OsStr::new("--json"),
        archive.as_os_str(),
    ]);
    assert!(read_file(&plain.path("z", "k")).unwrap() == body);
    assert!(backing_content_len(&plain, "k") > body.len() as u64);
}
