//! Acceptance 4: overwrite (O_TRUNC), append, in-place `r+` writes, truncate, `rename`
//! replacing a target, Python `tempfile` + `os.replace`, and shell `>`, `cp`, `mv`
//! (within a namespace and across namespaces, which copies after EXDEV), `dd`, `tee`,
//! `sed -i` and `rsync` all give the expected bytes.

mod common;

use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

const CFG: &str = r#"
[cache]
max_bytes = "256MiB"
default_ttl = "2h"

[namespace.a]
[namespace.b]
"#;

#[track_caller]
fn assert_content(p: &Path, want: &[u8], what: &str) {
    let got = fs::read(p).unwrap_or_else(|e| panic!("{what}: read {}: {e}", p.display()));
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(x, y)| x != y)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: got {} bytes, want {} bytes; first difference at byte {first}",
            got.len(),
            want.len()
        );
    }
    assert_eq!(
        fs::metadata(p).unwrap().len(),
        want.len() as u64,
        "{what}: st_size"
    );
    // And the same bytes through another process.
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&sha256_hex(want)),
        "{what}: another process reads other bytes"
    );
}

#[test]
fn overwrite_append_inplace_truncate() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let mut rng = Rng::from_time("overwrite_append_inplace_truncate");
    let p = m.path("a", "k");
    let v1 = rng.bytes(10_000);
    write_file(&p, &v1).unwrap();
    assert_content(&p, &v1, "first write");

    // O_TRUNC overwrite with shorter content: no stale tail.
    let v2 = rng.bytes(3000);
    write_file(&p, &v2).unwrap();
    assert_content(&p, &v2, "O_TRUNC overwrite, shorter");
    // O_TRUNC with nothing written: empty entry.
    close_file(File::create(&p).unwrap()).unwrap();
    assert_content(&p, b"", "O_TRUNC and close");
    write_file(&p, &v2).unwrap();

    // Append, twice.
    let mut want = v2.clone();
    for i in 0..2 {
        let extra = rng.bytes(5000 + i);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&extra).unwrap();
        close_file(f).unwrap();
        want.extend_from_slice(&extra);
        assert_content(&p, &want, "append");
    }

    // r+ : the writer sees the old bytes, patches the middle, extends past the end.
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let mut head = vec![0u8; 100];
    f.read_exact(&mut head).unwrap();
    assert_eq!(head, want[..100], "r+ handle reads the current bytes");
    f.seek(SeekFrom::Start(5000)).unwrap();
    f.write_all(b"0123456789").unwrap();
    want[5000..5010].copy_from_slice(b"0123456789");
    f.seek(SeekFrom::Start(5000)).unwrap();
    let mut back = [0u8; 10];
    f.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"0123456789", "r+ handle reads its own write");
    let end = want.len() as u64;
    f.seek(SeekFrom::Start(end + 100)).unwrap();
    f.write_all(b"tail").unwrap();
    want.resize(end as usize + 100, 0);
    want.extend_from_slice(b"tail");
    close_file(f).unwrap();
    assert_content(&p, &want, "r+ in-place writes");

    // ftruncate on an open fd, shrinking then extending.
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(100).unwrap();
    f.set_len(150).unwrap();
    close_file(f).unwrap();
    want.truncate(100);
    want.resize(150, 0);
    assert_content(&p, &want, "ftruncate");

    // truncate(2) by path (coreutils truncate), shrink and extend.
    sh(&format!("truncate -s 50 {}", q(&p)));
    want.truncate(50);
    assert_content(&p, &want, "truncate -s 50");
    sh(&format!("truncate -s 8000 {}", q(&p)));
    want.resize(8000, 0);
    assert_content(&p, &want, "truncate -s 8000");
    assert_eq!(m.ns_stat("a", "entries"), 1);
}

#[test]
fn rename_replaces_target_and_exdev_across_namespaces() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let (a, b, c) = (
        m.path("a", "src"),
        m.path("a", "dst"),
        m.path("a", "fresh-name"),
    );
    write_file(&a, b"source bytes").unwrap();
    write_file(&b, b"old target bytes, longer than the source").unwrap();
    let held = File::open(&b).unwrap();
    fs::rename(&a, &b).unwrap();
    assert_content(&b, b"source bytes", "target after rename");
    assert_errno(File::open(&a), libc::ENOENT, "source after rename");
    assert_eq!(list_str(&m.ns("a")), vec!["dst"]);
    let mut old = String::new();
    (&held).read_to_string(&mut old).unwrap();
    assert_eq!(
        old, "old target bytes, longer than the source",
        "fd on the replaced target"
    );
    // Rename to a new name.
    fs::rename(&b, &c).unwrap();
    assert_content(&c, b"source bytes", "renamed to a new name");
    assert_errno(fs::metadata(&b), libc::ENOENT, "old name after rename");
    // Across namespaces: EXDEV, nothing moves.
    assert_errno(
        fs::rename(&c, m.path("b", "x")),
        libc::EXDEV,
        "rename across namespaces",
    );
    assert_content(
        &c,
        b"source bytes",
        "source after refused cross-namespace rename",
    );
    assert_errno(
        File::open(m.path("b", "x")),
        libc::ENOENT,
        "target after refused rename",
    );
    // Missing source.
    assert_errno(
        fs::rename(m.path("a", "missing"), m.path("a", "y")),
        libc::ENOENT,
        "rename of a missing key",
    );
    assert_eq!(m.ns_stat("a", "entries"), 1, "stats: {}", m.stats());
    assert_eq!(m.ns_stat("b", "entries"), 0, "stats: {}", m.stats());
}

#[test]
fn python_tempfile_and_os_replace() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let target = m.path("a", "result.json");
    write_file(&target, b"{\"stale\": true}").unwrap();
    let script = r#"
import os, sys, tempfile, json, hashlib
d, target = sys.argv[1], sys.argv[2]
data = json.dumps({"answer": 42, "pad": "x" * 20000}).encode()
fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".part")
with os.fdopen(fd, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, target)
with open(target, "rb") as f:
    assert f.read() == data, "read-back after os.replace"
with tempfile.NamedTemporaryFile(dir=d, delete=False) as f:
    f.write(b"second " * 1000)
    name = f.name
os.replace(name, os.path.join(d, "second"))
with open(os.path.join(d, "text.txt"), "w") as f:
    f.write("line1\nline2\n")
with open(os.path.join(d, "text.txt"), "a") as f:
    f.write("line3\n")
print(hashlib.sha256(data).hexdigest())
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(m.ns("a"))
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let got = fs::read(&target).unwrap();
    assert_eq!(sha256_hex(&got), sha, "os.replace target content");
    assert!(got.starts_with(b"{\"answer\": 42"));
    assert_content(
        &m.path("a", "second"),
        "second ".repeat(1000).as_bytes(),
        "NamedTemporaryFile + os.replace",
    );
    assert_content(
        &m.path("a", "text.txt"),
        b"line1\nline2\nline3\n",
        "python text write + append",
    );
    assert_eq!(
        list_str(&m.ns("a")),
        vec!["result.json", "second", "text.txt"],
        "no temp files left"
    );
}

#[test]
fn shell_redirection_tee_sed() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let (f1, f2, f3) = (m.path("a", "f1"), m.path("a", "f2"), m.path("b", "f3"));
    sh(&format!("echo hello > {}", q(&f1)));
    assert_content(&f1, b"hello\n", "echo >");
    sh(&format!("echo world >> {}", q(&f1)));
    assert_content(&f1, b"hello\nworld\n", "echo >>");
    sh(&format!("echo replaced > {}", q(&f1)));
    assert_content(&f1, b"replaced\n", "echo > over an entry");
    sh(&format!(": > {}", q(&f1)));
    assert_content(&f1, b"", ": > (truncate to empty)");
    sh(&format!("seq 1 20000 > {}", q(&f1)));
    let seq: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    assert_content(&f1, seq.as_bytes(), "seq > (many writes)");
    // Reading with shell tools.
    assert_eq!(sh(&format!("wc -l < {}", q(&f1))).trim(), "20000");
    assert_eq!(sh(&format!("tail -n 1 {}", q(&f1))).trim(), "20000");
    // tee into two namespaces, then tee -a.
    sh(&format!(
        "seq 1 1000 | tee {} {} > /dev/null",
        q(&f2),
        q(&f3)
    ));
    let s1000: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    assert_content(&f2, s1000.as_bytes(), "tee file 1");
    assert_content(&f3, s1000.as_bytes(), "tee file 2 (other namespace)");
    sh(&format!("echo more | tee -a {} > /dev/null", q(&f2)));
    assert_content(&f2, format!("{s1000}more\n").as_bytes(), "tee -a");
    // Pipe from the mount to the mount.
    sh(&format!(
        "cat {} {} > {}",
        q(&f2),
        q(&f3),
        q(&m.path("a", "cat"))
    ));
    assert_content(
        &m.path("a", "cat"),
        format!("{s1000}more\n{s1000}").as_bytes(),
        "cat a b > c",
    );
    // sed -i writes a temp file in the namespace and renames it over the entry.
    sh(&format!("sed -i 's/^1000$/thousand/' {}", q(&f3)));
    let want = s1000.replace("\n1000\n", "\nthousand\n");
    assert_content(&f3, want.as_bytes(), "sed -i");
    assert_eq!(list_str(&m.ns("b")), vec!["f3"], "sed left no temp file");
}

#[test]
fn cp_and_mv() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let mut rng = Rng::from_time("cp_and_mv");
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src.bin");
    let data = rng.bytes(1_234_567);
    fs::write(&src, &data).unwrap();

    let k1 = m.path("a", "k1");
    sh(&format!("cp {} {}", q(&src), q(&k1)));
    assert_content(&k1, &data, "cp local -> mount");
    // cp over an existing entry (O_TRUNC) with a shorter file.
    let small = local.path().join("small");
    fs::write(&small, b"small").unwrap();
    let k2 = m.path("a", "k2");
    sh(&format!("cp {} {}", q(&src), q(&k2)));
    sh(&format!("cp {} {}", q(&small), q(&k2)));
    assert_content(&k2, b"small", "cp over an entry");
    // cp -p keeps the mtime it is given; within the mount.
    let k3 = m.path("a", "k3");
    sh(&format!("cp -p {} {}", q(&k1), q(&k3)));
    assert_content(&k3, &data, "cp -p within the mount");
    let (mt1, mt3) = (
        fs::metadata(&k1).unwrap().modified().unwrap(),
        fs::metadata(&k3).unwrap().modified().unwrap(),
    );
    assert_eq!(
        mt1.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        mt3.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        "cp -p preserved mtime"
    );
    // cp mount -> local.
    let out = local.path().join("out.bin");
    sh(&format!("cp {} {}", q(&k1), q(&out)));
    assert!(fs::read(&out).unwrap() == data, "cp mount -> local");

    // mv within a namespace: a rename.
    let k4 = m.path("a", "k4");
    sh(&format!("mv {} {}", q(&k3), q(&k4)));
    assert_content(&k4, &data, "mv within a namespace");
    assert_errno(fs::metadata(&k3), libc::ENOENT, "mv source");
    // mv over an existing entry.
    sh(&format!("mv {} {}", q(&k2), q(&k4)));
    assert_content(&k4, b"small", "mv over an existing entry");
    // mv across namespaces: EXDEV, so mv copies and unlinks.
    let kb = m.path("b", "moved");
    let out = Command::new("mv").arg(&k1).arg(&kb).output().unwrap();
    assert!(
        out.status.success(),
        "mv across namespaces failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_content(&kb, &data, "mv across namespaces");
    assert_errno(
        fs::metadata(&k1),
        libc::ENOENT,
        "mv source across namespaces",
    );
    // mv local -> mount (a copy, the local file is gone).
    let k5 = m.path("b", "from-local");
    sh(&format!("mv {} {}", q(&src), q(&k5)));
    assert_content(&k5, &data, "mv local -> mount");
    assert!(!src.exists());
    assert_eq!(list_str(&m.ns("a")), vec!["k4"]);
    assert_eq!(list_str(&m.ns("b")), vec!["from-local", "moved"]);
}

#[test]
fn dd_writes_and_reads() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let mut rng = Rng::from_time("dd_writes_and_reads");
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    let mut data = rng.bytes(3 * 1024 * 1024 + 123);
    fs::write(&src, &data).unwrap();
    let k = m.path("a", "dd");
    sh(&format!(
        "dd if={} of={} bs=4096 status=none",
        q(&src),
        q(&k)
    ));
    assert_content(&k, &data, "dd bs=4096 into the mount");
    sh(&format!("dd if={} of={} bs=1M status=none", q(&src), q(&k)));
    assert_content(&k, &data, "dd bs=1M over the entry");
    // Read out with dd at an offset.
    let out = local.path().join("out");
    sh(&format!(
        "dd if={} of={} bs=1000 skip=7 count=13 status=none",
        q(&k),
        q(&out)
    ));
    assert!(
        fs::read(&out).unwrap() == data[7000..20_000],
        "dd skip/count read"
    );
    // In-place patch (conv=notrunc) at an offset.
    let patch = local.path().join("patch");
    fs::write(&patch, b"PATCHPATCH").unwrap();
    sh(&format!(
        "dd if={} of={} bs=1 seek=100000 conv=notrunc status=none",
        q(&patch),
        q(&k)
    ));
    data[100_000..100_010].copy_from_slice(b"PATCHPATCH");
    assert_content(&k, &data, "dd conv=notrunc patch");
    // Append.
    sh(&format!(
        "dd if={} of={} oflag=append conv=notrunc status=none",
        q(&patch),
        q(&k)
    ));
    data.extend_from_slice(b"PATCHPATCH");
    assert_content(&k, &data, "dd oflag=append");
    // dd with seek and no notrunc truncates at the end of the written part.
    sh(&format!(
        "dd if={} of={} bs=1 seek=50 status=none",
        q(&patch),
        q(&k)
    ));
    data.truncate(50);
    data.extend_from_slice(b"PATCHPATCH");
    assert_content(&k, &data, "dd seek=50 (truncating)");
}

#[test]
fn rsync_into_and_out_of_the_mount() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    let mut rng = Rng::from_time("rsync_into_and_out_of_the_mount");
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    fs::create_dir(&src).unwrap();
    let sizes = [0usize, 1, 4096, 10_000, 300_000, 1_000_000];
    let mut files = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let name = format!("file{i}.bin");
        let d = rng.bytes(*n);
        fs::write(src.join(&name), &d).unwrap();
        files.push((name, d));
    }
    let dst = m.ns("a");
    let rsync = |args: &str| sh(&format!("rsync {args} {}/ {}/", q(&src), q(&dst)));
    rsync("-a");
    for (name, d) in &files {
        assert_content(&dst.join(name), d, &format!("rsync -a {name}"));
    }
    let mut names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(list_str(&dst), names, "rsync left temp files");

    // Change two files (one same-size, one shorter) and sync again: delta transfer.
    let mut big = files[5].1.clone();
    big[500_000..500_100].copy_from_slice(&[0xAB; 100]);
    fs::write(src.join(&files[5].0), &big).unwrap();
    files[5].1 = big;
    files[4].1.truncate(123_456);
    fs::write(src.join(&files[4].0), &files[4].1).unwrap();
    // Make sure rsync sees a changed mtime even within one second.
    sh(&format!("touch -d '2 minutes ago' {}/*", q(&src)));
    rsync("-a");
    for (name, d) in &files {
        assert_content(&dst.join(name), d, &format!("rsync -a (update) {name}"));
    }
    // --inplace: writes into the existing entries.
    let mut big = files[5].1.clone();
    big[10..20].copy_from_slice(b"inplace!!!");
    fs::write(src.join(&files[5].0), &big).unwrap();
    files[5].1 = big;
    sh(&format!(
        "touch -d '1 minute ago' {}",
        q(&src.join(&files[5].0))
    ));
    rsync("-a --inplace --no-whole-file");
    for (name, d) in &files {
        assert_content(&dst.join(name), d, &format!("rsync --inplace {name}"));
    }
    assert_eq!(list_str(&dst), names);

    // Out of the mount into a fresh local dir.
    let back = local.path().join("back");
    sh(&format!("rsync -a {}/ {}/", q(&dst), q(&back)));
    for (name, d) in &files {
        assert!(
            fs::read(back.join(name)).unwrap() == *d,
            "rsync out of the mount: {name}"
        );
    }
}
