"""Waiting for a key to change: inotify through ctypes where the kernel
delivers it, else plain sleeps; the caller polls either way.

inotify sees what goes through this host's kernel: closes, renames and
unlinks made through this mount by any local process (a killed
process's close too). It sees nothing done through another mount or on
another host, so a waiter also re-checks after a timeout that backs off.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import select
import struct
import time
from typing import Optional

IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = 0o2000000
MASK = IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
_EVENT = struct.Struct("iIII")

_libc: Optional[ctypes.CDLL] = None


def _inotify() -> Optional[ctypes.CDLL]:
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            lib.inotify_init1.argtypes = [ctypes.c_int]
            lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            _libc = lib
        except (OSError, AttributeError):
            return None
    return _libc


class Watch:
    """Events on one name in one directory. `fd` is None where inotify
    is unavailable (or `inotify=False`): waits are then plain sleeps."""

    def __init__(self, directory: str, name: str, inotify: bool = True) -> None:
        self.name = os.fsencode(name)
        self.fd: Optional[int] = None
        lib = _inotify() if inotify else None
        if lib is None:
            return
        fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return
        if lib.inotify_add_watch(fd, os.fsencode(directory), MASK) < 0:
            os.close(fd)
            return
        self.fd = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drain(self) -> bool:
        """Reads what is queued; True if any of it may concern our name."""
        assert self.fd is not None
        hit = False
        while True:
            try:
                buf = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return hit
            if not buf:
                return hit
            off = 0
            while off + _EVENT.size <= len(buf):
                _wd, mask, _cookie, length = _EVENT.unpack_from(buf, off)
                name = buf[off + _EVENT.size : off + _EVENT.size + length].rstrip(b"\0")
                off += _EVENT.size + length
                if mask & (IN_Q_OVERFLOW | IN_IGNORED) or name == self.name:
                    hit = True

    def wait(self, timeout: float) -> None:
        """Returns after an event on the name, or after `timeout` seconds."""
        if self.fd is None:
            time.sleep(timeout)
            return
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready and self._drain():
                return

    async def await_event(self, timeout: float) -> None:
        """`wait`, without blocking the event loop."""
        if self.fd is None:
            await asyncio.sleep(timeout)
            return
        loop = asyncio.get_running_loop()
        fd = self.fd
        end = loop.time() + timeout
        while True:
            left = end - loop.time()
            if left <= 0:
                return
            ready = loop.create_future()

            def wake(f: asyncio.Future[None] = ready) -> None:
                if not f.done():
                    f.set_result(None)

            loop.add_reader(fd, wake)
            try:
                await asyncio.wait_for(ready, left)
            except asyncio.TimeoutError:
                return
            finally:
                loop.remove_reader(fd)
            if self._drain():
                return
