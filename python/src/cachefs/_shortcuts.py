"""`cachefs.cached(namespace, ttl=...)`: the decorator without naming a Cache.

The mount is `mount=`, else $CACHEFS_MOUNT, else /cache (where the
shipped systemd unit mounts `cachefs@NAME`'s parent).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Optional, TypeVar, overload

from ._cache import TTL, Cache
from ._codecs import Codec

if TYPE_CHECKING:
    from typing import ParamSpec

    P = ParamSpec("P")

T = TypeVar("T")


def default_mount() -> str:
    return os.environ.get("CACHEFS_MOUNT") or "/cache"


@overload
def cached(
    namespace: str,
    *,
    mount: Optional[str] = None,
    key: Optional[Callable[..., str]] = None,
    ttl: TTL = None,
    codec: None = None,
    timeout: Optional[float] = 300.0,
    on_timeout: str = "compute",
) -> Callable[[Callable[P, bytes]], Callable[P, bytes]]: ...


@overload
def cached(
    namespace: str,
    *,
    mount: Optional[str] = None,
    key: Optional[Callable[..., str]] = None,
    ttl: TTL = None,
    codec: Codec[T],
    timeout: Optional[float] = 300.0,
    on_timeout: str = "compute",
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


def cached(
    namespace: str,
    *,
    mount: Optional[str] = None,
    key: Optional[Callable[..., str]] = None,
    ttl: TTL = None,
    codec: Optional[Codec[Any]] = None,
    timeout: Optional[float] = 300.0,
    on_timeout: str = "compute",
) -> Any:
    """`Cache(mount, namespace).cached(...)`."""
    cache = Cache(mount or default_mount(), namespace)
    return cache.cached(key=key, ttl=ttl, codec=codec, timeout=timeout, on_timeout=on_timeout)


@overload
def acached(
    namespace: str,
    *,
    mount: Optional[str] = None,
    key: Optional[Callable[..., str]] = None,
    ttl: TTL = None,
    codec: None = None,
    timeout: Optional[float] = 300.0,
    on_timeout: str = "compute",
) -> Callable[[Callable[P, Awaitable[bytes]]], Callable[P, Coroutine[Any, Any, bytes]]]: ...


@overload
def acached(
    namespace: str,
    *,
    mount: Optional[str] = None,
    key: Optional[Callable[..., str]] = None,
    ttl: TTL = None,
    codec: Codec[T],
    timeout: Optional[float] = 300.0,
    on_timeout: str = "compute",
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]: ...


def acached(
    namespace: str,
    *,
    mount: Optional[str] = None,
    key: Optional[Callable[..., str]] = None,
    ttl: TTL = None,
    codec: Optional[Codec[Any]] = None,
    timeout: Optional[float] = 300.0,
    on_timeout: str = "compute",
) -> Any:
    """`Cache(mount, namespace).acached(...)`."""
    cache = Cache(mount or default_mount(), namespace)
    return cache.acached(key=key, ttl=ttl, codec=codec, timeout=timeout, on_timeout=on_timeout)
