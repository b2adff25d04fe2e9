"""get / set / delete / path and the opt-in codecs, through a real mount."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import subprocess
import time
from datetime import timedelta
from typing import Dict, List

import pytest

import cachefs
from cachefs._cache import _umask
from conftest import Mount, cachefs_bin, wait_until


def test_key_is_the_cli_key() -> None:
    for text in ["", "hello", "héllo wörld\n", "a\nb\n\n", "🙂" * 100]:
        out = subprocess.run(
            [str(cachefs_bin()), "key", text], check=True, capture_output=True
        ).stdout
        assert cachefs.key(text) == out.decode().strip(), text
        assert cachefs.key(text.encode()) == cachefs.key(text)
    raw = b"\xff\x00\xfe not utf-8"
    out = subprocess.run(
        [str(cachefs_bin()), "key", "-"], input=raw, check=True, capture_output=True
    ).stdout
    assert cachefs.key(raw) == out.decode().strip()


def test_get_set_delete_and_plain_files(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")
    k = cachefs.key("some input")
    assert cache.path(k) == os.path.join(str(mount.mnt), "plain", k)
    assert cache.get(k) is None
    cache.set(k, b"first")
    assert cache.get(k) == b"first"
    # The entry is a plain file for every other program.
    with open(cache.path(k), "rb") as f:
        assert f.read() == b"first"
    st = os.stat(cache.path(k))
    assert stat.S_IMODE(st.st_mode) == 0o666 & ~_umask()
    assert abs(st.st_mtime - time.time()) < 60, "mtime is the publish time"
    cache.set(k, bytearray(b"second, longer than the first"))
    assert cache.get(k) == b"second, longer than the first"
    cache.set(k, b"")
    assert cache.get(k) == b"", "an empty value is a value"
    assert cache.delete(k) is True
    assert cache.get(k) is None
    assert cache.delete(k) is False
    # What another program wrote is read as is.
    with open(cache.path("from-shell"), "wb") as f:
        f.write(b"written by hand")
    assert cache.get("from-shell") == b"written by hand"


def test_large_value_round_trips(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")
    big = os.urandom(3 * 1024 * 1024 + 17)
    cache.set("big", big)
    assert cache.get("big") == big
    assert os.path.getsize(cache.path("big")) == len(big)


def test_ttl_goes_to_the_xattr(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")
    cache.set("a", b"x", ttl=90)
    assert os.getxattr(cache.path("a"), "user.cachefs.ttl") == b"90"
    expires = int(os.getxattr(cache.path("a"), "user.cachefs.expires"))
    assert abs(expires - (time.time() + 90)) < 30
    cache.set("b", b"x", ttl=timedelta(minutes=2, milliseconds=1))
    assert os.getxattr(cache.path("b"), "user.cachefs.ttl") == b"121"
    cache.set("c", b"x")
    assert os.getxattr(cache.path("c"), "user.cachefs.ttl") == b"7200", "the namespace's"
    cache.set("d", b"x", ttl=0)
    assert os.getxattr(cache.path("d"), "user.cachefs.expires") == b"never"
    with pytest.raises(ValueError):
        cache.set("e", b"x", ttl=-1)


def test_never_expiring_namespace(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "forever")
    cache.set("k", b"v")
    assert cache.get("k") == b"v"
    assert os.getxattr(cache.path("k"), "user.cachefs.expires") == b"never"
    cache.set("k2", b"v", ttl=60)
    assert os.getxattr(cache.path("k2"), "user.cachefs.ttl") == b"60"


def test_short_ttl_expires(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")
    cache.set("short", b"v", ttl=2)
    assert cache.get("short") == b"v"
    assert wait_until(lambda: cache.get("short") is None, timeout=10)


def test_new_namespace_made_by_the_first_write(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "made-on-first-write")
    assert cache.get("k") is None
    cache.set("k", b"v")
    assert cache.get("k") == b"v"
    assert "made-on-first-write" in os.listdir(mount.mnt)


def test_key_paths_make_their_directories(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")
    cache.set("news/espn/2026/123", b"article")
    assert cache.get("news/espn/2026/123") == b"article"
    assert os.listdir(os.path.join(cache.dir, "news", "espn", "2026")) == ["123"]


def test_bad_names_are_refused(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")
    for bad in ["", "/abs", "a/../b", "a//b", ".", "x\0y"]:
        with pytest.raises(ValueError):
            cache.path(bad)
    with pytest.raises(ValueError):
        cachefs.Cache(mount.mnt, "a/b")


def test_key_format_and_limits_are_the_mounts(mount: Mount) -> None:
    hexed = cachefs.Cache(mount.mnt, "hex")
    with pytest.raises(OSError) as e:
        hexed.set("not-a-sha256", b"x")
    assert e.value.errno == errno.EINVAL
    hexed.set(cachefs.key("text"), b"x")
    assert hexed.get(cachefs.key("text")) == b"x"

    small = cachefs.Cache(mount.mnt, "small")
    small.set("fits", b"y" * 1000)
    with pytest.raises(OSError) as e:
        small.set("fits", b"y" * 1001)
    assert e.value.errno == errno.EFBIG
    assert small.get("fits") == b"y" * 1000, "a failed publish leaves the old value"


def test_values_are_bytes_codecs_opt_in(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")
    with pytest.raises(TypeError):
        cache.set("s", "a str")  # type: ignore[arg-type]
    cache.set_text("t", "héllo")
    assert cache.get("t") == "héllo".encode()
    assert cache.get_text("t") == "héllo"
    cache.set_json("j", {"b": [1, 2], "a": "é"})
    assert cache.get_json("j") == {"b": [1, 2], "a": "é"}
    assert cache.get_json("missing") is None
    assert cachefs.PICKLE.decode(cachefs.PICKLE.encode({1, 2})) == {1, 2}


def test_cached_decorator_with_codecs(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")
    calls = []

    @cache.cached(key=cachefs.key, ttl=60, codec=cachefs.JSON)
    def enrich(text: str) -> Dict[str, object]:
        calls.append(text)
        return {"len": len(text), "text": text}

    assert enrich("abc") == {"len": 3, "text": "abc"}
    assert enrich("abc") == {"len": 3, "text": "abc"}
    assert calls == ["abc"]
    assert cache.get(cachefs.key("abc")) == b'{"len":3,"text":"abc"}'
    assert os.getxattr(cache.path(cachefs.key("abc")), "user.cachefs.ttl") == b"60"

    @cache.cached()
    def by_args(a: int, b: str = "x") -> bytes:
        calls.append(f"{a}{b}")
        return f"{a}{b}".encode()

    assert by_args(1, b="y") == b"1y"
    assert by_args(1, b="y") == b"1y"
    assert by_args(2) == b"2x"
    assert calls[1:] == ["1y", "2x"]
    with pytest.raises(TypeError, match="pass key="):
        by_args(object())  # type: ignore[arg-type]

    @cache.cached(key=lambda: "wrong-type")
    def returns_str() -> bytes:
        return "not bytes"  # type: ignore[return-value]

    with pytest.raises(TypeError):
        returns_str()
    assert cache.get("wrong-type") is None, "nothing published for a failed call"


def test_compute_error_frees_the_key(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")
    attempts = []

    @cache.cached(key=lambda: "flaky")
    def flaky() -> bytes:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("upstream down")
        return b"ok"

    with pytest.raises(RuntimeError):
        flaky()
    assert not os.path.exists(cache.path("flaky")), "a failed compute leaves nothing"
    assert flaky() == b"ok"
    assert flaky() == b"ok"
    assert len(attempts) == 2


def test_cache_errors_degrade_to_computing(mount: Mount) -> None:
    small = cachefs.Cache(mount.mnt, "small")

    @small.cached(key=lambda: "too-big")
    def big() -> bytes:
        return b"z" * 5000

    assert big() == b"z" * 5000, "EFBIG at publish: the value is still returned"
    assert small.get("too-big") is None

    gone = cachefs.Cache(mount.mnt / "not-a-mount" / "x", "ns")

    @gone.cached(key=lambda: "k")
    def value() -> bytes:
        return b"computed"

    assert value() == b"computed"


def test_module_level_decorators(mount: Mount, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEFS_MOUNT", str(mount.mnt))
    calls: List[str] = []

    @cachefs.cached("plain", key=cachefs.key, ttl=60, codec=cachefs.TEXT)
    def upper(text: str) -> str:
        calls.append(text)
        return text.upper()

    assert upper("abc") == "ABC"
    assert upper("abc") == "ABC"
    assert calls == ["abc"]
    assert cachefs.Cache(mount.mnt, "plain").get(cachefs.key("abc")) == b"ABC"

    monkeypatch.delenv("CACHEFS_MOUNT")

    @cachefs.acached("plain", mount=str(mount.mnt), key=lambda: "async-key")
    async def value() -> bytes:
        return b"from a coroutine"

    assert asyncio.run(value()) == b"from a coroutine"
    assert cachefs.Cache(mount.mnt, "plain").get("async-key") == b"from a coroutine"
