"""Claim or wait: how the callers of one key agree on who computes.

Each look reads the key (a hit ends it) and else tries the claim,
O_CREAT|O_EXCL, which cachefs refuses with EEXIST while the key is
published or being written (PRODUCT.md section 4). A refused caller
waits: an inotify watch on the key's directory wakes it at the claim's
close, and a re-check that backs off from POLL_MIN to POLL_MAX catches
what no watch sees (a publish through another mount or host).

Within one process the claims held are known (`Flight`): a caller of a
key this process is computing waits for that computation in-process,
without reading the key. It must not read it: cachefs shows the thread
that opened a claim its pending (empty) file under the key, and that
thread may be an asyncio worker thread serving every coroutine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Union

from ._pending import Pending
from ._watch import Watch

if TYPE_CHECKING:
    from ._cache import Cache

log = logging.getLogger("cachefs")

POLL_MIN = 0.01
POLL_MAX = 0.5


class Flight:
    """A claim this process holds on one path, from its open to its close."""

    _lock = threading.Lock()
    _held: Dict[str, Flight] = {}

    def __init__(self, path: str) -> None:
        self.path = path
        self.done = threading.Event()
        self._waiters: List[Tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @classmethod
    def of(cls, path: str) -> Optional[Flight]:
        """The claim this process holds on `path`, if any."""
        with cls._lock:
            return cls._held.get(path)

    @classmethod
    def begin(cls, path: str) -> Tuple[Flight, bool]:
        """A new flight on `path` (True), or the one already there."""
        with cls._lock:
            held = cls._held.get(path)
            if held is not None:
                return held, False
            f = cls._held[path] = cls(path)
            return f, True

    def finish(self) -> None:
        """The claim's descriptor is closed: in-process waiters look again."""
        with self._lock:
            if self._held.get(self.path) is self:
                del self._held[self.path]
            self.done.set()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:
                pass  # that loop is closed: no one waits there any more

    def future(self) -> asyncio.Future[None]:
        """Resolved (on the running loop) once the claim is closed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.done.is_set():
                fut.set_result(None)
            else:
                self._waiters.append((loop, fut))
        return fut


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


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
    """Compute without a claim, then `set` (a wait that timed out)."""


class Local:
    """Being computed by this process: wait for `flight`."""

    __slots__ = ("flight",)

    def __init__(self, flight: Flight) -> None:
        self.flight = flight


BUSY = Busy()
UNCACHED = Uncached()
Step = Union[Hit, Claimed, Busy, Uncached, Local]


def check_on_timeout(on_timeout: str) -> None:
    if on_timeout not in ("compute", "raise"):
        raise ValueError(f"on_timeout is 'compute' or 'raise', not {on_timeout!r}")


def attempt(cache: Cache, key: str, ttl: Optional[int]) -> Step:
    """One look: computed here already, the value, a claim of ours, or
    busy."""
    path = cache.path(key)
    flight = Flight.of(path)
    if flight is not None:
        return Local(flight)
    value = cache._read(path)
    if value is not None:
        return Hit(value)
    # Registered before the claim exists: the thread that opens it would
    # read its pending file as the value, were it to look.
    flight, mine = Flight.begin(path)
    if not mine:
        return Local(flight)
    try:
        return Claimed(cache._open(key, exclusive=True, ttl=ttl, on_close=flight.finish))
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
    deadline = None if timeout is None else time.monotonic() + timeout
    step = attempt(cache, key, ttl)
    while isinstance(step, Local):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return _timed_out(cache, key, timeout, on_timeout)
        step.flight.done.wait(left)
        step = attempt(cache, key, ttl)
    if not isinstance(step, Busy):
        return step
    delay = POLL_MIN
    # Watch first, then look again: a publish between the first look and
    # the watch would otherwise be waited for until the next poll.
    with _watch(cache, key) as watch:
        log.debug("cachefs: waiting for %s", cache.path(key))
        while True:
            step = attempt(cache, key, ttl)
            left = None if deadline is None else deadline - time.monotonic()
            if isinstance(step, Local):
                # Another thread here claimed it meanwhile: wait for it.
                if left is None or left > 0:
                    step.flight.done.wait(left)
                    continue
            elif not isinstance(step, Busy):
                return step
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
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    step = await _aattempt(cache, key, ttl)
    while isinstance(step, Local):
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            return _timed_out(cache, key, timeout, on_timeout)
        await _await_flight(step.flight, left)
        step = await _aattempt(cache, key, ttl)
    if not isinstance(step, Busy):
        return step
    delay = POLL_MIN
    watch = await asyncio.to_thread(_watch, cache, key)
    try:
        log.debug("cachefs: waiting for %s", cache.path(key))
        while True:
            step = await _aattempt(cache, key, ttl)
            left = None if deadline is None else deadline - loop.time()
            if isinstance(step, Local):
                if left is None or left > 0:
                    await _await_flight(step.flight, left)
                    continue
            elif not isinstance(step, Busy):
                return step
            if left is not None and left <= 0:
                return _timed_out(cache, key, timeout, on_timeout)
            await watch.await_event(delay if left is None else min(delay, left))
            delay = min(delay * 2, POLL_MAX)
    finally:
        watch.close()


async def _await_flight(flight: Flight, timeout: Optional[float]) -> None:
    """Waits on the event loop (no worker thread held) for `flight`."""
    try:
        await asyncio.wait_for(flight.future(), timeout)
    except asyncio.TimeoutError:
        pass


def _abandon_claim(task: asyncio.Future[Step]) -> None:
    if not task.cancelled() and task.exception() is None:
        step = task.result()
        if isinstance(step, Claimed):
            step.pending.abandon()
