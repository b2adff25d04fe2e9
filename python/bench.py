"""What the helper costs over plain file I/O on a mount (medians, us).

    python3 bench.py MOUNTPOINT [N]

Hot get of a 10 KB entry, a miss, and a publish of 15 KB, each through
the helper and as the plain Python a service would write by hand.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Callable, List

import cachefs


def median_us(n: int, op: Callable[[int], object]) -> float:
    times: List[float] = []
    for i in range(n):
        t = time.perf_counter()
        op(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    mount = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    cache = cachefs.Cache(mount, "bench-helper")
    cache.set("hot", os.urandom(10_000))
    plain_hot = cache.path("hot")
    value = os.urandom(15_000)

    def plain_get(_: int) -> bytes:
        with open(plain_hot, "rb") as f:
            return f.read()

    def plain_miss(i: int) -> None:
        try:
            open(cache.path(f"miss-plain-{i}"), "rb")
        except FileNotFoundError:
            pass

    def plain_set(i: int) -> None:
        with open(cache.path(f"plain-{i}"), "wb") as f:
            f.write(value)

    rows = [
        ("hot get 10KB", lambda i: cache.get("hot"), plain_get),
        ("miss", lambda i: cache.get(f"miss-{i}"), plain_miss),
        ("set 15KB", lambda i: cache.set(f"set-{i}", value), plain_set),
        ("set 15KB ttl=60", lambda i: cache.set(f"ttl-{i}", value, ttl=60), plain_set),
    ]
    print(f"{'median (us)':<18} {'helper':>8} {'plain':>8}")
    for name, helper, plain in rows:
        h = median_us(n, helper)
        p = median_us(n, plain)
        print(f"{name:<18} {h:>8.1f} {p:>8.1f}")


if __name__ == "__main__":
    main()
