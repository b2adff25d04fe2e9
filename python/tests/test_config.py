"""The namespace TTL the write protocol reads, and its plan of TTLs."""

from __future__ import annotations

import time

import cachefs
from cachefs._config import namespace_ttl, parse_fallback, ttl_in
from cachefs._pending import plan
from conftest import Mount

try:
    import tomllib
except ImportError:  # pragma: no cover
    tomllib = None  # type: ignore[assignment]


def test_namespace_ttls_from_the_mount(mount: Mount) -> None:
    m = str(mount.mnt)
    assert namespace_ttl(m, "plain") == 7200, "a section without ttl: the default"
    assert namespace_ttl(m, "forever") == 0
    assert namespace_ttl(m, "dotted.name") == 90
    assert namespace_ttl(m, "made-by-mkdir") == 7200
    assert namespace_ttl(str(mount.mnt / "nowhere"), "plain") is None


def test_fallback_parser_agrees_with_tomllib(mount: Mount) -> None:
    text = (mount.mnt / ".cachefs" / "config.toml").read_text()
    fallback = parse_fallback(text)
    if tomllib is not None:
        real = tomllib.loads(text)
        for ns in ["plain", "forever", "dotted.name", "hex", "unknown"]:
            assert ttl_in(fallback, ns) == ttl_in(real, ns), ns
    assert ttl_in(fallback, "dotted.name") == 90
    assert ttl_in(fallback, "forever") == 0


def test_plan_expires_every_unfinished_write() -> None:
    now = time.time()
    # (ttl, namespace ttl) -> (guard xattr, final xattr)
    assert plan(60, 7200, now) == (60, None)
    assert plan(None, 7200, now) == (None, None)
    assert plan(0, 7200, now) == (1, 0)
    assert plan(None, 0, now) == (1, 0)
    assert plan(None, None, now) == (None, None)
    huge = int(now) + 10
    assert plan(huge, None, now) == (1, huge)
    for ttl, ns in [(60, 0), (None, 7200), (0, None), (None, 0), (huge, 5)]:
        guard, _ = plan(ttl, ns, now)
        effective = guard if guard is not None else (ttl if ttl is not None else ns)
        assert effective is not None and 0 < effective and 1 + effective < now, (ttl, ns)


def test_cache_reads_the_namespace_ttl_once_a_second(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "forever")
    assert cache._namespace_ttl() == 0
    at, _ = cache._ns_ttl
    assert cache._namespace_ttl() == 0
    assert cache._ns_ttl[0] == at
