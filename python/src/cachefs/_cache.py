"""`Cache`: one namespace of a cachefs mount, through plain file I/O.

get is one open and a read (a miss is ENOENT, fast); set writes and
closes (cachefs publishes at close). get_or_compute and the decorators
compute a missing value once: who computes and how the others wait is
`_claim.py`; how a value is written (and a claim given up), `_pending.py`.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import functools
import json
import logging
import os
import stat
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Coroutine,
    Optional,
    Tuple,
    TypeVar,
    Union,
    overload,
)

from ._claim import (
    ClaimTimeout,
    Claimed,
    Flight,
    Hit,
    Step,
    aacquire,
    acquire,
    check_on_timeout,
)
from ._codecs import BYTES, Codec
from ._keys import check_key, check_namespace, default_key
from ._pending import Pending

if TYPE_CHECKING:
    from typing import ParamSpec

    P = ParamSpec("P")

T = TypeVar("T")
log = logging.getLogger("cachefs")

TTL = Union[int, float, datetime.timedelta, None]
Bytes = Union[bytes, bytearray, memoryview]


def ttl_seconds(ttl: TTL) -> Optional[int]:
    """Whole seconds (rounded up), 0 = never, None = the namespace's."""
    if ttl is None:
        return None
    secs = ttl.total_seconds() if isinstance(ttl, datetime.timedelta) else float(ttl)
    if secs < 0:
        raise ValueError(f"negative ttl: {ttl!r}")
    whole = int(secs)
    return whole + 1 if secs > whole else whole


class Cache:
    """One namespace of a cachefs mount: `Cache("/cache", "enrichment")`.

    Values are bytes. Nothing touches the filesystem before the first
    call; a missing namespace (or subdirectory of a key path) is made by
    the first write into it.
    """

    def __init__(
        self,
        mount: Union[str, "os.PathLike[str]"],
        namespace: str,
        *,
        mode: Optional[int] = None,
        inotify: bool = True,
    ) -> None:
        self.mount = os.fspath(mount)
        self.namespace = check_namespace(namespace)
        self.dir = os.path.join(self.mount, self.namespace)
        umask = _umask()
        self.mode = (0o666 & ~umask) if mode is None else mode
        # Whether a create gives a new file this mode without a chmod.
        self._exact_mode = self.mode & umask == 0
        self.inotify = inotify

    def __repr__(self) -> str:
        return f"Cache({self.mount!r}, {self.namespace!r})"

    def path(self, key: str) -> str:
        """The entry's path: MOUNT/NAMESPACE/KEY."""
        return os.path.join(self.dir, check_key(key))

    # -- bytes ------------------------------------------------------------

    def get(self, key: str) -> Optional[bytes]:
        """The value, or None on a miss (absent, expired, or being computed
        by this process)."""
        path = self.path(key)
        if Flight.of(path) is not None:
            # The thread that claimed it would read its pending file.
            return None
        return self._read(path)

    def set(self, key: str, value: Bytes, ttl: TTL = None) -> None:
        """Publishes `value` whole (readers see the old value or this one);
        `ttl` (seconds or timedelta; 0 = never) goes to user.cachefs.ttl.
        Raises OSError: EFBIG over a limit, ENOSPC, EIO, EINVAL for a key
        the namespace's key_format refuses."""
        data = _as_bytes(value)
        pending = self._open(key, exclusive=False, ttl=ttl_seconds(ttl))
        pending.commit(data)

    def delete(self, key: str) -> bool:
        """Removes the published value; False if there was none. A key
        that is only being written (claimed) has none; a rewrite in
        progress of a published key is dropped with it by cachefs."""
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            return False
        return True

    # -- opt-in codecs --------------------------------------------------

    def get_text(self, key: str, encoding: str = "utf-8") -> Optional[str]:
        v = self.get(key)
        return None if v is None else v.decode(encoding)

    def set_text(self, key: str, value: str, ttl: TTL = None, encoding: str = "utf-8") -> None:
        self.set(key, value.encode(encoding), ttl)

    def get_json(self, key: str) -> Any:
        """The decoded JSON value, or None on a miss."""
        v = self.get(key)
        return None if v is None else json.loads(v)

    def set_json(self, key: str, value: Any, ttl: TTL = None) -> None:
        self.set(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(), ttl)

    # -- asyncio ----------------------------------------------------------

    async def aget(self, key: str) -> Optional[bytes]:
        return await asyncio.to_thread(self.get, key)

    async def aset(self, key: str, value: Bytes, ttl: TTL = None) -> None:
        await asyncio.to_thread(self.set, key, value, ttl)

    async def adelete(self, key: str) -> bool:
        return await asyncio.to_thread(self.delete, key)

    # -- compute once -----------------------------------------------------

    def get_or_compute(
        self,
        key: str,
        compute: Callable[[], bytes],
        *,
        ttl: TTL = None,
        timeout: Optional[float] = 300.0,
        on_timeout: str = "compute",
    ) -> bytes:
        """The cached value, or `compute()`'s, computed once across the
        processes sharing the cache: the first caller claims the key, the
        others wait for its publish. A claimer that dies (or raises)
        frees the key, and one waiter then computes. After `timeout`
        seconds of waiting (None: no limit) a waiter computes by itself
        (on_timeout="compute") or raises ClaimTimeout ("raise").

        A cache that fails (a dead mount, EIO, a quota) is logged and
        the value computed and returned uncached: the cache never breaks
        the caller. Errors of `compute` itself propagate."""
        return self.once(key, compute, BYTES, ttl=ttl, timeout=timeout, on_timeout=on_timeout)

    async def aget_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[bytes]],
        *,
        ttl: TTL = None,
        timeout: Optional[float] = 300.0,
        on_timeout: str = "compute",
    ) -> bytes:
        """`get_or_compute` for a coroutine. File system calls run in
        worker threads and waits on the event loop: nothing blocks it."""
        return await self.aonce(
            key, compute, BYTES, ttl=ttl, timeout=timeout, on_timeout=on_timeout
        )

    def once(
        self,
        key: str,
        compute: Callable[[], T],
        codec: Codec[T],
        *,
        ttl: TTL = None,
        timeout: Optional[float] = 300.0,
        on_timeout: str = "compute",
    ) -> T:
        """`get_or_compute` of any value through `codec`. The caller that
        computes gets its own value back, the others the decoded bytes."""
        secs = ttl_seconds(ttl)
        check_on_timeout(on_timeout)
        try:
            step = acquire(self, key, secs, timeout, on_timeout)
        except ClaimTimeout:
            raise
        except OSError as e:
            log.warning("cachefs: %s unavailable (%s); computing uncached", self.dir, e)
            return compute()
        if isinstance(step, Hit):
            return codec.decode(step.value)
        try:
            value = compute()
            data = codec.encode(value)
        except BaseException:
            if isinstance(step, Claimed):
                step.pending.abandon()
            raise
        self._store(key, step, data, secs)
        return value

    async def aonce(
        self,
        key: str,
        compute: Callable[[], Awaitable[T]],
        codec: Codec[T],
        *,
        ttl: TTL = None,
        timeout: Optional[float] = 300.0,
        on_timeout: str = "compute",
    ) -> T:
        """`once` for a coroutine."""
        secs = ttl_seconds(ttl)
        check_on_timeout(on_timeout)
        try:
            step = await aacquire(self, key, secs, timeout, on_timeout)
        except ClaimTimeout:
            raise
        except OSError as e:
            log.warning("cachefs: %s unavailable (%s); computing uncached", self.dir, e)
            return await compute()
        if isinstance(step, Hit):
            return codec.decode(step.value)
        try:
            value = await compute()
            data = codec.encode(value)
        except BaseException:
            if isinstance(step, Claimed):
                step.pending.abandon()
            raise
        await asyncio.to_thread(self._store, key, step, data, secs)
        return value

    @overload
    def cached(
        self,
        *,
        key: Optional[Callable[..., str]] = None,
        ttl: TTL = None,
        codec: None = None,
        timeout: Optional[float] = 300.0,
        on_timeout: str = "compute",
    ) -> Callable[[Callable[P, bytes]], Callable[P, bytes]]: ...

    @overload
    def cached(
        self,
        *,
        key: Optional[Callable[..., str]] = None,
        ttl: TTL = None,
        codec: Codec[T],
        timeout: Optional[float] = 300.0,
        on_timeout: str = "compute",
    ) -> Callable[[Callable[P, T]], Callable[P, T]]: ...

    def cached(
        self,
        *,
        key: Optional[Callable[..., str]] = None,
        ttl: TTL = None,
        codec: Optional[Codec[Any]] = None,
        timeout: Optional[float] = 300.0,
        on_timeout: str = "compute",
    ) -> Callable[[Callable[P, Any]], Callable[P, Any]]:
        """Get or compute, once across processes: `@cache.cached(key=cachefs.key)`.

        `key(*args, **kwargs)` names the entry (default: the sha256 of
        the function's qualified name and its arguments as JSON). The
        function returns bytes, or values `codec` encodes (cachefs.TEXT,
        cachefs.JSON; cachefs.PICKLE only among trusted writers)."""
        use = BYTES if codec is None else codec
        check_on_timeout(on_timeout)
        ttl_seconds(ttl)

        def decorate(func: Callable[P, Any]) -> Callable[P, Any]:
            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                k = key(*args, **kwargs) if key is not None else default_key(func, args, kwargs)
                return self.once(
                    k,
                    lambda: func(*args, **kwargs),
                    use,
                    ttl=ttl,
                    timeout=timeout,
                    on_timeout=on_timeout,
                )

            return wrapper

        return decorate

    @overload
    def acached(
        self,
        *,
        key: Optional[Callable[..., str]] = None,
        ttl: TTL = None,
        codec: None = None,
        timeout: Optional[float] = 300.0,
        on_timeout: str = "compute",
    ) -> Callable[[Callable[P, Awaitable[bytes]]], Callable[P, Coroutine[Any, Any, bytes]]]: ...

    @overload
    def acached(
        self,
        *,
        key: Optional[Callable[..., str]] = None,
        ttl: TTL = None,
        codec: Codec[T],
        timeout: Optional[float] = 300.0,
        on_timeout: str = "compute",
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]: ...

    def acached(
        self,
        *,
        key: Optional[Callable[..., str]] = None,
        ttl: TTL = None,
        codec: Optional[Codec[Any]] = None,
        timeout: Optional[float] = 300.0,
        on_timeout: str = "compute",
    ) -> Callable[[Callable[P, Awaitable[Any]]], Callable[P, Coroutine[Any, Any, Any]]]:
        """`cached` for coroutine functions; the event loop never blocks."""
        use = BYTES if codec is None else codec
        check_on_timeout(on_timeout)
        ttl_seconds(ttl)

        def decorate(func: Callable[P, Awaitable[Any]]) -> Callable[P, Coroutine[Any, Any, Any]]:
            @functools.wraps(func)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                k = key(*args, **kwargs) if key is not None else default_key(func, args, kwargs)
                return await self.aonce(
                    k,
                    lambda: func(*args, **kwargs),
                    use,
                    ttl=ttl,
                    timeout=timeout,
                    on_timeout=on_timeout,
                )

            return wrapper

        return decorate

    # -- internals --------------------------------------------------------

    def _read(self, path: str) -> Optional[bytes]:
        """The value, or None on a miss."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            # A published version never changes, so its size is known:
            # one read, and one more that finds the end.
            parts = []
            want = st.st_size + 1
            while True:
                chunk = os.read(fd, min(max(want, 1), 1 << 30))
                if not chunk:
                    break
                parts.append(chunk)
                want -= len(chunk)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        finally:
            os.close(fd)

    def _open(
        self,
        key: str,
        *,
        exclusive: bool,
        ttl: Optional[int],
        on_close: Callable[[], None] = lambda: None,
    ) -> Pending:
        """Opens `key` for a new version; `on_close` runs once its
        descriptor is closed (or the open failed)."""
        path = self.path(key)

        def open_() -> Pending:
            return Pending.open(
                path,
                exclusive=exclusive,
                ttl=ttl,
                mode=self.mode,
                exact_mode=self._exact_mode,
                on_close=on_close,
            )

        try:
            try:
                return open_()
            except FileNotFoundError:
                # The namespace or a directory of the key's path is missing.
                os.makedirs(os.path.dirname(path), exist_ok=True)
                return open_()
        except BaseException:
            on_close()
            raise

    def _store(self, key: str, step: Step, value: bytes, ttl: Optional[int]) -> None:
        """Publishes a computed value; a failure is logged, not raised (the
        caller has its value)."""
        try:
            if isinstance(step, Claimed):
                step.pending.commit(value)
            else:
                self._open(key, exclusive=False, ttl=ttl).commit(value)
        except OSError as e:
            log.warning("cachefs: %s not cached: %s", self.path(key), e)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(
        f"a cached value is bytes, not {type(value).__name__}: "
        "use get_text/set_text, get_json/set_json, or codec= with cached()"
    )


def _umask() -> int:
    """The process's umask, without setting it (Linux 4.7+), else 022."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022

