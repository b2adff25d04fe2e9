"""Claim or wait: how the callers of one key agree on who computes.

Each look reads the key (a hit ends it) and else tries the claim,
O_CREAT|O_EXCL, which cachefs refuses with EEXIST while the key is
published or being written (PRODUCT.md section 4). A refused caller
waits: an inotify watch on the key's directory wakes it at the claim's
close, and a re-check that backs off from POLL_MIN to POLL_MAX catches
what no watch sees (a publish through another mount or host).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Optional, Union

from ._pending import Pending
from ._watch import Watch

if TYPE_CHECKING:
    from ._cache import Cache

log = logging.getLogger("cachefs")

POLL_MIN = 0.01
POLL_MAX = 0.5


class ClaimTimeout(TimeoutError):
    """Waited `timeout` seconds for another caller's value (on_timeout="raise")."""


class Hit:
    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value


class Claimed:
    __slots__ = ("pending",)

    def __init__(self, pending: Pending) -> None:
        self.pending = pending


class Busy:
    """Claimed by another caller (or published since our read)."""


class Uncached:
    """Compute without a claim, then `set` (a claim that died in the gap
    `_pending.py` describes, or a wait that timed out)."""


BUSY = Busy()
UNCACHED = Uncached()
Step = Union[Hit, Claimed, Busy, Uncached]


def check_on_timeout(on_timeout: str) -> None:
    if on_timeout not in ("compute", "raise"):
        raise ValueError(f"on_timeout is 'compute' or 'raise', not {on_timeout!r}")


def attempt(cache: Cache, key: str, ttl: Optional[int]) -> Step:
    """One look: the value, a claim of ours, or busy."""
    value, dead = cache._read(cache.path(key))
    if value is not None:
        return Hit(value)
    if dead:
        log.warning("cachefs: %s: a claimer died before writing; computing", cache.path(key))
        return UNCACHED
    try:
        return Claimed(cache._open(key, exclusive=True, ttl=ttl))
    except FileExistsError:
        return BUSY


def _timed_out(cache: Cache, key: str, timeout: Optional[float], on_timeout: str) -> Step:
    if on_timeout == "raise":
        raise ClaimTimeout(f"{cache.path(key)}: no value after {timeout} s")
    log.warning("cachefs: %s: no value after %s s; computing", cache.path(key), timeout)
    return UNCACHED


def _watch(cache: Cache, key: str) -> Watch:
    path = cache.path(key)
    return Watch(os.path.dirname(path), os.path.basename(path), cache.inotify)


def acquire(
    cache: Cache, key: str, ttl: Optional[int], timeout: Optional[float], on_timeout: str
) -> Step:
    """A hit, our claim, or (dead claim, timeout) leave to compute."""
    step = attempt(cache, key, ttl)
    if not isinstance(step, Busy):
        return step
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = POLL_MIN
    # Watch first, then look again: a publish between the first look and
    # the watch would otherwise be waited for until the next poll.
    with _watch(cache, key) as watch:
        log.debug("cachefs: waiting for %s", cache.path(key))
        while True:
            step = attempt(cache, key, ttl)
            if not isinstance(step, Busy):
                return step
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return _timed_out(cache, key, timeout, on_timeout)
            watch.wait(delay if left is None else min(delay, left))
            delay = min(delay * 2, POLL_MAX)


async def _aattempt(cache: Cache, key: str, ttl: Optional[int]) -> Step:
    task = asyncio.ensure_future(asyncio.to_thread(attempt, cache, key, ttl))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # The thread goes on; a claim it makes is given up at once.
        task.add_done_callback(_abandon_claim)
        raise


async def aacquire(
    cache: Cache, key: str, ttl: Optional[int], timeout: Optional[float], on_timeout: str
) -> Step:
    """`acquire`: file calls in worker threads, waits on the event loop."""
    step = await _aattempt(cache, key, ttl)
    if not isinstance(step, Busy):
        return step
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay = POLL_MIN
    watch = await asyncio.to_thread(_watch, cache, key)
    try:
        log.debug("cachefs: waiting for %s", cache.path(key))
        while True:
            step = await _aattempt(cache, key, ttl)
            if not isinstance(step, Busy):
                return step
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return _timed_out(cache, key, timeout, on_timeout)
            await watch.await_event(delay if left is None else min(delay, left))
            delay = min(delay * 2, POLL_MAX)
    finally:
        watch.close()


def _abandon_claim(task: asyncio.Future[Step]) -> None:
    if not task.cancelled() and task.exception() is None:
        step = task.result()
        if isinstance(step, Claimed):
            step.pending.abandon()
