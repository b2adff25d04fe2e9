"""The asyncio variants: same results, and the event loop keeps running."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import List

import cachefs
from conftest import Mount, Workers, wait_until
from test_once import runs


def test_aget_aset_adelete(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")

    async def main() -> None:
        assert await cache.aget("a") is None
        await cache.aset("a", b"value", ttl=30)
        assert await cache.aget("a") == b"value"
        assert cache.get("a") == b"value"
        assert await cache.adelete("a") is True
        assert await cache.aget("a") is None

    asyncio.run(main())


def test_acached_waits_without_blocking_the_loop(
    mount: Mount, workers: Workers, tmp_path: Path
) -> None:
    """Another process holds the claim for a while; a coroutine waiting
    for it lets a ticker run meanwhile, then gets that process's value."""
    counter = tmp_path / "runs"
    cache = cachefs.Cache(mount.mnt, "plain")
    holder = workers.start("cached", str(mount.mnt), "plain", "k", str(counter), "1.0")
    assert wait_until(lambda: runs(counter) == [holder.pid])
    ticks: List[float] = []

    @cache.acached(key=lambda: "k")
    async def compute() -> bytes:
        return b"computed here"

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main() -> bytes:
        stop = asyncio.Event()
        t = asyncio.create_task(ticker(stop))
        try:
            return await compute()
        finally:
            stop.set()
            await t

    started = time.monotonic()
    assert asyncio.run(main()) == f"value-{holder.pid}".encode()
    waited = time.monotonic() - started
    assert waited > 0.2
    # A blocked loop would leave one tick; the largest gap between ticks
    # stays far under the wait.
    assert len(ticks) > 10
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) < waited / 2, (max(gaps), waited)


def test_acached_coroutines_of_one_process_compute_once(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")
    calls: List[str] = []

    @cache.acached(key=cachefs.key, codec=cachefs.TEXT)
    async def enrich(text: str) -> str:
        calls.append(text)
        await asyncio.sleep(0.3)
        return text.upper()

    async def main() -> List[str]:
        return await asyncio.gather(*(enrich("abc") for _ in range(5)), enrich("xyz"))

    assert asyncio.run(main()) == ["ABC"] * 5 + ["XYZ"]
    assert sorted(calls) == ["abc", "xyz"]
    assert cache.get_text(cachefs.key("abc")) == "ABC"


def test_cancelled_claimer_frees_the_key(mount: Mount) -> None:
    cache = cachefs.Cache(mount.mnt, "plain")

    async def main() -> None:
        computing = asyncio.Event()

        async def never() -> bytes:
            computing.set()  # the key is claimed before compute runs
            await asyncio.sleep(3600)
            return b"never"

        task = asyncio.create_task(cache.aget_or_compute("cancel", never))
        await computing.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert await cache.aget("cancel") is None
        got = await cache.aget_or_compute("cancel", _value, timeout=5, on_timeout="raise")
        assert got == b"after the cancel"

    asyncio.run(main())
    assert cache.get("cancel") == b"after the cancel"


async def _value() -> bytes:
    return b"after the cancel"
