//! Issue 15: other tools keep their caches in a namespace. ccache with
//! `CCACHE_DIR` in one (two compiles of one file to different outputs: a
//! miss then a hit; its stats files, `-c` cleanup and `-C` clear work), and
//! pip with `PIP_CACHE_DIR` in one (a package built from an sdist once is
//! installed from the cached wheel the second time). What they do there:
//! mkdir 5 levels deep, tmp-then-rename, utimensat, and ccache's lock
//! files, which are symlinks: EPERM (which ccache takes for "no symlinks
//! here" and goes on), answered without a daemon warning per call.
//!
//! Go too (`GOCACHE` in a namespace: the second build compiles nothing;
//! `go clean -cache` works).
//!
//! Each tool is installed by .ci/run; without it a test skips, unless
//! CI=true, where it fails.

mod common;

use common::*;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const CFG: &str = r#"
[cache]
max_bytes = "256MiB"

[namespace.cc]
ttl = "1d"

[namespace.pip]
ttl = "1d"
"#;

/// Whether `probe` runs; else skip (or, under CI=true, fail).
fn tool_present(what: &str, probe: &mut Command) -> bool {
    let ok = probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{what} is missing but CI=true (.ci/run installs it)");
        }
        eprintln!("SKIP: {what} is missing");
    }
    ok
}

#[track_caller]
fn ok(out: Output, what: &str) -> String {
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

fn ccache(dir: &Path, work: &Path, args: &[&str]) -> Output {
    Command::new("ccache")
        .args(args)
        .current_dir(work)
        .env("CCACHE_DIR", dir)
        // Only what this test sets: no user or system config.
        .env("CCACHE_CONFIGPATH", dir.join("ccache.conf"))
        .env_remove("CCACHE_DISABLE")
        .env_remove("CCACHE_RECACHE")
        .env_remove("CCACHE_READONLY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ccache_stats(dir: &Path, work: &Path) -> HashMap<String, u64> {
    ok(
        ccache(dir, work, &["--print-stats"]),
        "ccache --print-stats",
    )
    .lines()
    .filter_map(|l| {
        let (k, v) = l.split_once('\t')?;
        Some((k.to_string(), v.trim().parse().ok()?))
    })
    .collect()
}

#[test]
fn ccache_dir_in_a_namespace_hits_the_second_time() {
    if skip_without_fuse() || !tool_present("ccache", Command::new("ccache").arg("--version")) {
        return;
    }
    let mut m = Mount::new(CFG);
    let dir = m.ns("cc").join("ccache");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    fs::write(
        w.join("hello.c"),
        "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n",
    )
    .unwrap();
    ok(ccache(&dir, w, &["-z"]), "ccache -z");
    ok(
        ccache(&dir, w, &["gcc", "-c", "hello.c", "-o", "first.o"]),
        "first compile",
    );
    ok(
        ccache(&dir, w, &["gcc", "-c", "hello.c", "-o", "second.o"]),
        "second compile",
    );
    let st = ccache_stats(&dir, w);
    assert_eq!(st.get("cache_miss"), Some(&1), "{st:?}");
    assert_eq!(st.get("direct_cache_hit"), Some(&1), "{st:?}");
    assert_eq!(
        fs::read(w.join("first.o")).unwrap(),
        fs::read(w.join("second.o")).unwrap(),
        "the hit gives the object the miss compiled"
    );
    // Its layout: a result file two levels of hash dirs down, in the
    // namespace; stats files per shard dir.
    let files = files_under(&dir);
    assert!(
        files.iter().any(|f| f.ends_with("stats")),
        "stats files: {files:?}"
    );
    let results = files
        .iter()
        .filter(|f| {
            f.extension().is_none() && f.components().count() > dir.components().count() + 2
        })
        .count();
    assert!(results >= 1, "a cached result: {files:?}");
    // The lock files are symlinks: EPERM, deliberately; hard links too.
    let lock = dir.join("lock-probe");
    assert_errno(
        std::os::unix::fs::symlink("target", &lock),
        libc::EPERM,
        "symlink in a namespace",
    );
    assert_errno(
        fs::hard_link(&files[0], dir.join("link-probe")),
        libc::EPERM,
        "hard link in a namespace",
    );
    assert!(
        !m.log().contains("Not Implemented"),
        "no warning per refused symlink:\n{}",
        m.log()
    );

    // The stats and the cache outlive a restart of the daemon.
    m.stop();
    let m = Mount::with_backing(CFG, &m.backing);
    let dir = m.ns("cc").join("ccache");
    ok(
        ccache(&dir, w, &["gcc", "-c", "hello.c", "-o", "third.o"]),
        "compile after a restart",
    );
    assert_eq!(ccache_stats(&dir, w).get("direct_cache_hit"), Some(&2));

    // ccache's own cleanup: a limit far under what is cached, then -c.
    ok(ccache(&dir, w, &["-M", "1k"]), "ccache -M");
    ok(ccache(&dir, w, &["-c"]), "ccache -c");
    let st = ccache_stats(&dir, w);
    assert!(
        st.get("cleanups_performed").is_some_and(|&n| n >= 1),
        "{st:?}"
    );
    // And -C clears: the next compile is a miss again.
    ok(ccache(&dir, w, &["-M", "1G"]), "ccache -M");
    ok(ccache(&dir, w, &["-C"]), "ccache -C");
    ok(ccache(&dir, w, &["-z"]), "ccache -z");
    ok(
        ccache(&dir, w, &["gcc", "-c", "hello.c", "-o", "fourth.o"]),
        "compile after -C",
    );
    let st = ccache_stats(&dir, w);
    assert_eq!(
        (st.get("cache_miss"), st.get("direct_cache_hit")),
        (Some(&1), Some(&0)),
        "{st:?}"
    );
}

/// Debian's python3 with pip, setuptools and wheel (.ci/run installs
/// them): the build needs no index.
const PY: &str = "/usr/bin/python3";

fn pip(cache: &Path, work: &Path, args: &[&str]) -> Output {
    Command::new(PY)
        .args(["-m", "pip"])
        .args(args)
        .current_dir(work)
        .env("PIP_CACHE_DIR", cache)
        // Only what this test says: no user config, no extra links.
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env_remove("PIP_FIND_LINKS")
        .env_remove("PIP_NO_CACHE_DIR")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn pip_cache_dir_in_a_namespace_serves_the_built_wheel() {
    if skip_without_fuse()
        || !tool_present(
            "python3 with pip, setuptools and wheel",
            Command::new(PY).args(["-c", "import setuptools, wheel, pip"]),
        )
    {
        return;
    }
    let m = Mount::new(CFG);
    let cache = m.ns("pip").join("cache");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let pkg = w.join("pkg");
    fs::create_dir_all(pkg.join("tinypkg")).unwrap();
    fs::write(
        pkg.join("setup.py"),
        "from setuptools import setup\nsetup(name='tinypkg', version='0.1', packages=['tinypkg'])\n",
    )
    .unwrap();
    fs::write(pkg.join("tinypkg/__init__.py"), "X = 42\n").unwrap();
    ok(
        Command::new(PY)
            .args(["setup.py", "-q", "sdist", "-d", "../dist"])
            .current_dir(&pkg)
            .output()
            .unwrap(),
        "setup.py sdist",
    );
    let install = |target: &str| {
        pip(
            &cache,
            w,
            &[
                "install",
                "--no-index",
                "--no-build-isolation",
                "--find-links",
                "dist",
                "--target",
                target,
                "tinypkg",
            ],
        )
    };
    let first = ok(install("t1"), "first pip install");
    assert!(first.contains("Building wheel for tinypkg"), "{first}");
    assert!(
        first.contains(&format!("Stored in directory: {}", cache.display())),
        "{first}"
    );
    let wheels: Vec<_> = files_under(&cache.join("wheels"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "one wheel cached, hash dirs deep");
    let listed = ok(pip(&cache, w, &["cache", "list"]), "pip cache list");
    assert!(listed.contains("tinypkg-0.1-py3-none-any.whl"), "{listed}");

    let second = ok(install("t2"), "second pip install");
    assert!(
        second.contains("Using cached tinypkg-0.1-py3-none-any.whl"),
        "{second}"
    );
    assert!(!second.contains("Building wheel"), "{second}");
    assert_eq!(
        fs::read_to_string(w.join("t2/tinypkg/__init__.py")).unwrap(),
        "X = 42\n"
    );
    assert!(m.ns_stat("pip", "hits") >= 1, "the wheel was read back");
}

fn go(cache: &Path, work: &Path, args: &[&str]) -> Output {
    Command::new("go")
        .args(args)
        .current_dir(work)
        .env("GOCACHE", cache)
        // No network, no module downloads, a GOPATH of the test's own.
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOPATH", work.join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn compiles(build_x: &str) -> usize {
    build_x
        .lines()
        .filter(|l| l.contains("/compile ") && l.contains("-p main"))
        .count()
}

#[test]
fn go_cache_in_a_namespace_skips_the_compile_the_second_time() {
    if skip_without_fuse() || !tool_present("go (golang-go)", Command::new("go").arg("version")) {
        return;
    }
    let m = Mount::new(CFG);
    fs::create_dir(m.ns("cc").join("go")).unwrap();
    let cache = m.ns("cc").join("go/cache");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    fs::write(w.join("go.mod"), "module example.com/hi\n\ngo 1.19\n").unwrap();
    fs::write(
        w.join("main.go"),
        "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n",
    )
    .unwrap();
    let first = ok(
        go(&cache, w, &["build", "-x", "-o", "hi1", "."]),
        "go build",
    );
    assert_eq!(compiles(&first), 1, "{first}");
    let second = ok(
        go(&cache, w, &["build", "-x", "-o", "hi2", "."]),
        "go build",
    );
    assert_eq!(compiles(&second), 0, "served from GOCACHE: {second}");
    let run = ok(
        Command::new(w.join("hi2")).output().unwrap(),
        "the binary built from the cache",
    );
    assert_eq!(run, "hi\n");
    // Its own cleanup empties it, and the next build compiles again.
    ok(go(&cache, w, &["clean", "-cache"]), "go clean -cache");
    let third = ok(
        go(&cache, w, &["build", "-x", "-o", "hi3", "."]),
        "go build",
    );
    assert_eq!(compiles(&third), 1, "{third}");
}
