"""Compute once across processes: claims, waiters, dead claimers, timeouts."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

import pytest

import cachefs
import cachefs._claim
from conftest import Mount, Workers, wait_until


def runs(counter: Path) -> List[int]:
    """The pids whose compute ran, in order."""
    if not counter.exists():
        return []
    return [int(line) for line in counter.read_text().split()]


def check_once(workers: Workers, procs: List["subprocess.Popen[bytes]"], counter: Path) -> None:
    for p in procs:
        assert workers.finish(p) == 0, workers.err(p)
    ran = runs(counter)
    assert len(ran) == 1, f"the function ran {len(ran)} times: {ran}"
    want = f"value-{ran[0]}".encode()
    for p in procs:
        assert workers.out(p) == want, workers.err(p)


@pytest.mark.parametrize("how", ["sync", "async", "poll"])
def test_eight_processes_one_mount_compute_once(
    mount: Mount, workers: Workers, tmp_path: Path, how: str
) -> None:
    counter = tmp_path / "runs"
    key = cachefs.key(f"one key {how}")
    flags = {"sync": [], "async": ["--async"], "poll": ["--poll"]}[how]
    procs = [
        workers.start("cached", str(mount.mnt), "plain", key, str(counter), "0.5", "--go", *flags)
        for _ in range(8)
    ]
    workers.go(procs)
    check_once(workers, procs, counter)
    assert cachefs.Cache(mount.mnt, "plain").get(key) == f"value-{runs(counter)[0]}".encode()


def test_eight_processes_two_mounts_compute_once(
    mounts: Callable[[str], Mount], workers: Workers, tmp_path: Path
) -> None:
    a, b = mounts("a"), mounts("b")
    counter = tmp_path / "runs"
    key = cachefs.key("one key, two mounts")
    procs = [
        workers.start("cached", str(m.mnt), "plain", key, str(counter), "0.5", "--go")
        for m in [a, b] * 4
    ]
    workers.go(procs)
    check_once(workers, procs, counter)


def test_killed_claimer_mid_compute_waiters_compute(
    mount: Mount, workers: Workers, tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    key = cachefs.key("the claimer dies")
    cache = cachefs.Cache(mount.mnt, "plain")
    claimer = workers.start("cached", str(mount.mnt), "plain", key, str(counter), "600")
    assert wait_until(lambda: runs(counter) == [claimer.pid]), workers.err(claimer)
    waiters = [
        workers.start("cached", str(mount.mnt), "plain", key, str(counter), "0.3")
        for _ in range(7)
    ]
    # Every waiter is waiting on the claim (it logs so before its first wait).
    assert wait_until(lambda: all("waiting for" in workers.err(w) for w in waiters), timeout=30)
    assert cache.get(key) is None
    os.kill(claimer.pid, signal.SIGKILL)
    assert claimer.wait(timeout=30) == -signal.SIGKILL
    check_once_more = runs
    for w in waiters:
        assert workers.finish(w) == 0, workers.err(w)
    ran = check_once_more(counter)
    assert ran[0] == claimer.pid
    assert len(ran) == 2, f"after the claimer's death one waiter computes: {ran}"
    want = f"value-{ran[1]}".encode()
    assert all(workers.out(w) == want for w in waiters), [workers.out(w) for w in waiters]
    assert cache.get(key) == want


@pytest.mark.parametrize("stage", ["create", "claimed", "partial"])
def test_dead_claim_is_never_a_value(mount: Mount, workers: Workers, stage: str) -> None:
    """A claimer SIGKILLed at each point before its value was whole: no
    reader takes what it left for a value, and the next caller computes."""
    cache = cachefs.Cache(mount.mnt, "plain")
    key = cachefs.key(f"dies at {stage}")
    p = workers.start("die", str(mount.mnt), "plain", key, stage)
    assert p.wait(timeout=30) == -signal.SIGKILL, workers.err(p)
    assert workers.out(p) == b"claimed\n"
    assert cache.get(key) is None
    # cachefs publishes nothing from a killed writer: no entry for any
    # reader, `cat` included.
    with pytest.raises(FileNotFoundError):
        open(cache.path(key), "rb")
    calls = []

    @cache.cached(key=lambda: key)
    def compute() -> bytes:
        calls.append(1)
        return b"the real value"

    assert compute() == b"the real value"
    assert compute() == b"the real value"
    assert calls == [1]
    with open(cache.path(key), "rb") as f:
        assert f.read() == b"the real value"


def test_dead_claim_in_the_never_expiring_namespace(mount: Mount, workers: Workers) -> None:
    cache = cachefs.Cache(mount.mnt, "forever")
    p = workers.start("die", str(mount.mnt), "forever", "k", "partial")
    assert p.wait(timeout=30) == -signal.SIGKILL
    with pytest.raises(FileNotFoundError):
        open(cache.path("k"), "rb")
    assert cache.get_or_compute("k", lambda: b"v") == b"v"
    assert os.getxattr(cache.path("k"), "user.cachefs.expires") == b"never"


def test_wait_timeout(mount: Mount, workers: Workers, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    cache = cachefs.Cache(mount.mnt, "plain")
    holder = workers.start("cached", str(mount.mnt), "plain", "slow", str(counter), "600")
    assert wait_until(lambda: runs(counter) == [holder.pid])
    with pytest.raises(cachefs.ClaimTimeout):
        cache.get_or_compute("slow", lambda: b"mine", timeout=0.3, on_timeout="raise")
    assert cache.get_or_compute("slow", lambda: b"mine", timeout=0.3) == b"mine"
    assert cache.get("slow") == b"mine", "a waiter that timed out publishes its own"
    with pytest.raises(ValueError):
        cache.get_or_compute("slow", lambda: b"x", on_timeout="never")


def test_delete_of_a_claimed_key(mount: Mount, workers: Workers, tmp_path: Path) -> None:
    """A key being computed has no published version: there is nothing
    to delete, and the claimer's value is published as usual."""
    counter = tmp_path / "runs"
    cache = cachefs.Cache(mount.mnt, "plain")
    holder = workers.start("cached", str(mount.mnt), "plain", "del", str(counter), "0.5")
    assert wait_until(lambda: runs(counter) == [holder.pid])
    assert cache.delete("del") is False
    assert holder.wait(timeout=30) == 0, workers.err(holder)
    assert cache.get("del") == f"value-{holder.pid}".encode()
    assert cache.delete("del") is True
    assert cache.get("del") is None


def test_claim_refused_while_published_or_claimed(mount: Mount) -> None:
    """What the helper relies on (PRODUCT.md section 4), from Python."""
    cache = cachefs.Cache(mount.mnt, "plain")
    path = cache.path("c")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with pytest.raises(FileExistsError):
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        # Invisible to everyone but the thread that opened it, which sees
        # its pending file (PRODUCT.md section 4, the writer's view).
        seen: List[Optional[bytes]] = []
        reader = threading.Thread(target=lambda: seen.append(cache.get("c")))
        reader.start()
        reader.join()
        assert seen == [None], "a claim is invisible"
        assert os.stat(path).st_size == 0
        os.write(fd, b"v")
    finally:
        os.close(fd)
    with pytest.raises(OSError) as e:
        os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert e.value.errno == errno.EEXIST


def test_waiter_wakes_on_the_claims_close(
    mount: Mount, workers: Workers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the re-check slowed to a minute, only inotify can wake the
    waiter in time: the claimer's close through the mount does."""
    monkeypatch.setattr(cachefs._claim, "POLL_MIN", 60.0)
    monkeypatch.setattr(cachefs._claim, "POLL_MAX", 60.0)
    counter = tmp_path / "runs"
    cache = cachefs.Cache(mount.mnt, "plain")
    holder = workers.start("cached", str(mount.mnt), "plain", "wake", str(counter), "1.5")
    assert wait_until(lambda: runs(counter) == [holder.pid])
    started = time.monotonic()
    assert cache.get_or_compute("wake", lambda: b"mine") == f"value-{holder.pid}".encode()
    assert time.monotonic() - started < 20


def test_threads_of_one_process_compute_once(mount: Mount) -> None:
    """Threads of one process wait for the one computing in-process; the
    claiming thread, which cachefs shows its pending file, reads a miss."""
    cache = cachefs.Cache(mount.mnt, "plain")
    calls: List[Optional[bytes]] = []
    go = threading.Barrier(8)

    @cache.cached(key=lambda: "threads")
    def compute() -> bytes:
        calls.append(cache.get("threads"))
        time.sleep(0.3)  # the slow call it stands for
        return b"computed once"

    results: List[bytes] = []

    def call() -> None:
        go.wait()
        results.append(compute())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"computed once"] * 8
    assert calls == [None], "computed once, and its own claim read as a miss"
    assert cache.get("threads") == b"computed once"
