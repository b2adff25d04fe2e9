"""Fixtures: a real cachefs mount per test.

The binary is $CACHEFS_BIN, else $CARGO_TARGET_DIR/debug/cachefs, else
the repository's target/debug/cachefs (`cargo build` first). Each mount
is a daemon this fixture started; teardown ends it by its PID (SIGTERM,
then SIGKILL) and detaches a mount still listed, even when the test
failed. Without FUSE a test skips, and fails under CI=true.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent

CONFIG = """
[cache]
default_ttl = "2h"

[namespace.plain]

[namespace.forever]
ttl = 0

[namespace.hex]
key_format = "sha256"

[namespace.small]
max_entry_bytes = 1000

[namespace."dotted.name"]
ttl = "90s"
"""


def cachefs_bin() -> Path:
    env = os.environ.get("CACHEFS_BIN")
    if env:
        return Path(env)
    target = os.environ.get("CARGO_TARGET_DIR")
    return (Path(target) if target else REPO / "target") / "debug" / "cachefs"


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, every: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(every)
    return cond()


def is_mounted(mnt: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(mnt) for line in f)


def fuse_problem() -> Optional[str]:
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        return f"cannot open /dev/fuse: {e}"
    if os.geteuid() != 0 and not any(
        Path(p).exists() for p in ("/usr/bin/fusermount3", "/bin/fusermount3")
    ):
        return "not root and no fusermount3"
    return None


class Mount:
    def __init__(self, backing: Path, mnt: Path, config: Path, log: Path) -> None:
        self.backing = backing
        self.mnt = mnt
        self.log = log
        mnt.mkdir(parents=True, exist_ok=True)
        binary = cachefs_bin()
        if not binary.exists():
            pytest.fail(f"{binary} not found: run `cargo build` or set CACHEFS_BIN")
        self.proc = subprocess.Popen(
            [str(binary), "mount", str(backing), str(mnt), "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
        )
        ready = wait_until(
            lambda: self.proc.poll() is not None
            or (is_mounted(mnt) and (mnt / ".cachefs" / "stats.json").exists())
        )
        if self.proc.poll() is not None or not ready:
            self.stop()
            pytest.fail(f"cachefs did not mount {mnt}: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        if is_mounted(self.mnt):
            subprocess.run(["umount", "-l", str(self.mnt)], check=False)


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Callable[[str], Mount]]:
    """mounts(name) -> a Mount of the test's one backing dir at tmp/name."""
    problem = fuse_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"FUSE is unavailable but CI=true, refusing to skip: {problem}")
        pytest.skip(f"FUSE unavailable: {problem}")
    config = tmp_path / "cachefs.toml"
    config.write_text(CONFIG)
    started: List[Mount] = []

    def start(name: str) -> Mount:
        m = Mount(tmp_path / "backing", tmp_path / name, config, tmp_path / f"{name}.log")
        started.append(m)
        return m

    try:
        yield start
    finally:
        for m in reversed(started):
            m.stop()


@pytest.fixture
def mount(mounts: Callable[[str], Mount]) -> Mount:
    return mounts("mnt")


class Workers:
    """Processes running tests/worker.py; all are ended by PID at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: List[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
        p = subprocess.Popen(
            [sys.executable, str(TESTS / "worker.py"), *args],
            stdin=subprocess.PIPE,
            stdout=open(self.tmp / f"worker{n}.out", "wb"),
            stderr=open(self.tmp / f"worker{n}.err", "wb"),
            env=env,
        )
        self.procs.append(p)
        return p

    def out(self, p: subprocess.Popen[bytes]) -> bytes:
        return (self.tmp / f"worker{self.procs.index(p)}.out").read_bytes()

    def err(self, p: subprocess.Popen[bytes]) -> str:
        return (self.tmp / f"worker{self.procs.index(p)}.err").read_text()

    def go(self, procs: List[subprocess.Popen[bytes]]) -> None:
        """Releases workers waiting on their stdin, all at once."""
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()

    def finish(self, p: subprocess.Popen[bytes], timeout: float = 60) -> int:
        rc = p.wait(timeout=timeout)
        return rc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=15)


@pytest.fixture
def workers(tmp_path: Path, mounts: Callable[[str], Mount]) -> Iterator[Workers]:
    # Depends on `mounts` so that its processes end before the unmount.
    w = Workers(tmp_path)
    try:
        yield w
    finally:
        w.stop_all()
