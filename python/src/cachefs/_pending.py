"""Writing one entry: the open, the value through that descriptor, the
close that publishes it.

cachefs publishes a file at its writer's last close, and publishes
nothing when that close comes from a process being killed by a signal
(SIGKILL, the OOM killer, SIGTERM's default action): a claimer killed
before its value is whole leaves no entry, its claim gone with its
descriptor (PRODUCT.md section 4). So a claim is just the `O_EXCL` open
and a value is written through it, nothing guards it.

Only a live process giving a claim up on purpose (its computation raised,
its coroutine was cancelled) must close without leaving a value: its
close would publish what is there, empty. It publishes an entry expired
at birth instead (a 1 s TTL and an mtime at the epoch), which cachefs
treats as gone for every reader and for the next `O_EXCL`.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

TTL_XATTR = "user.cachefs.ttl"
# atime, mtime of a given-up entry: 1 s after the epoch (0 may read as "unset").
_BORN_EXPIRED = (1, 1)


class Pending:
    """A value being written through the mount."""

    def __init__(self, fd: int, chmod: Optional[int], on_close: Callable[[], None]) -> None:
        self.fd = fd
        self._chmod = chmod
        self._on_close = on_close

    @classmethod
    def open(
        cls,
        path: str,
        *,
        exclusive: bool,
        ttl: Optional[int],
        mode: int,
        exact_mode: bool = False,
        on_close: Callable[[], None] = lambda: None,
    ) -> Pending:
        """Opens `path` for a new version. `exclusive`: claims the key
        (FileExistsError while it is published or being written). Not
        exclusive: truncates it (a killed writer publishes nothing, so
        the old value stays until the new one is whole). `exact_mode`:
        the create's mode, after the umask, is `mode` (no chmod needed
        for a new file). `on_close` runs once the descriptor is closed."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        flags |= os.O_EXCL if exclusive else os.O_TRUNC
        fd = os.open(path, flags, mode)
        try:
            if ttl is not None:
                os.setxattr(fd, TTL_XATTR, str(ttl).encode())
        except BaseException:
            os.close(fd)
            on_close()
            raise
        # An existing file keeps its mode through O_TRUNC.
        chmod = None if exclusive and exact_mode else mode
        return cls(fd, chmod, on_close)

    def commit(self, data: bytes) -> None:
        """Writes the value and publishes it (close). Raises the publish's
        error: EFBIG over a limit, ENOSPC, EIO."""
        fd, self.fd = self.fd, -1
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._chmod is not None:
                os.fchmod(fd, self._chmod)
        except BaseException:
            self._give_up(fd)
            raise
        try:
            os.close(fd)
        finally:
            self._on_close()

    def abandon(self) -> None:
        """Gives the claim up: what is published is expired at birth."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self._give_up(fd)

    def _give_up(self, fd: int) -> None:
        try:
            try:
                os.setxattr(fd, TTL_XATTR, b"1")
                os.utime(fd, _BORN_EXPIRED)
            except OSError:
                pass
            try:
                os.close(fd)
            except OSError:
                pass
        finally:
            self._on_close()

    def __del__(self) -> None:
        self.abandon()
