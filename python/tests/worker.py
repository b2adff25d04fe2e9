"""A process for the tests: calls the helper the way a service would.

    worker.py cached MNT NS KEY COUNTER SECONDS [--go] [--async] [--poll] [--timeout S]
        calls one @cache.cached function (or @acached) on KEY; the
        function appends its pid to COUNTER, sleeps SECONDS (the slow
        call it stands for) and returns b"value-PID". Prints the result.
    worker.py die MNT NS KEY STAGE
        claims KEY and SIGKILLs itself: STAGE "create" (a bare O_EXCL
        create), "claimed" (the helper's claim, nothing written),
        "partial" (half of a value written through it).

--go: wait for a line on stdin first (the test releases all at once).
--poll: no inotify (waits are sleeps that back off).
Logs the helper's DEBUG lines ("waiting for ...") on stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import List

import cachefs
from cachefs._pending import Pending


def main(argv: List[str]) -> None:
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(message)s")
    mode, mnt, ns, key = argv[:4]
    cache = cachefs.Cache(mnt, ns, inotify="--poll" not in argv)
    if mode == "die":
        die(cache, key, argv[4])
        return
    counter, seconds = argv[4], float(argv[5])
    rest = argv[6:]
    timeout = float(rest[rest.index("--timeout") + 1]) if "--timeout" in rest else 60.0
    if "--go" in rest:
        sys.stdin.readline()

    def slow() -> bytes:
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        return f"value-{os.getpid()}".encode()

    if "--async" in rest:

        @cache.acached(key=lambda: key, timeout=timeout)
        async def aslow() -> bytes:
            return await asyncio.to_thread(slow)

        value = asyncio.run(aslow())
    else:
        value = cache.cached(key=lambda: key, timeout=timeout)(slow)()
    sys.stdout.buffer.write(value)


def die(cache: cachefs.Cache, key: str, stage: str) -> None:
    path = cache.path(key)
    if stage == "create":
        os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    else:
        p = Pending.open(path, exclusive=True, ttl=None, mode=0o644)
        if stage == "partial":
            os.write(p.fd, b"half of a val")
    print("claimed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1:])
