"""Writing one entry so that no reader ever takes a dead writer's bytes
for a value.

cachefs publishes a file at its writer's last close, and a killed
process's descriptors are closed by the kernel like any other: a writer
killed before it wrote, or halfway, would publish an empty or partial
version. So until its last byte is written, a pending entry carries an
mtime at the epoch (and, where the TTL would not expire it, a 1 s TTL):
published by a death, it is expired at birth, which cachefs treats as
gone for every reader (`cat` included) and for `O_EXCL`. Only once the
value is whole does the writer give the entry its real mode, TTL and an
mtime of now, then close.

One gap is left between the create and the first of those calls. An
entry published from it is empty and has the create's mode, CLAIM_MODE
(write-only for its owner): a mode nobody gives a value, which the
helper's readers take as a miss.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Tuple

TTL_XATTR = "user.cachefs.ttl"
CLAIM_MODE = 0o200
# atime, mtime of a pending entry: 1 s after the epoch (0 may read as "unset").
_BORN_EXPIRED = (1, 1)
# A TTL this long would keep an entry with the old mtime alive today.
_SLACK = 86400


def plan(ttl: Optional[int], ns_ttl: Optional[int], now: float) -> Tuple[Optional[int], Optional[int]]:
    """(TTL xattr to set before the first byte, TTL xattr to set once the
    value is whole); None = leave it.

    `ttl` is the caller's (None: the namespace's), `ns_ttl` the
    namespace's as the mount says (None: unknown). The old mtime expires
    the entry unless its TTL is 0 (never) or longer than the time since
    the epoch: then a 1 s TTL covers the write, and the real one is set
    at the end (for a namespace that never expires, 0 is written
    explicitly: a TTL set on a file being written cannot be removed).
    """
    effective = ttl if ttl is not None else ns_ttl
    if effective is None:
        # Nothing known: the old mtime alone (it expires the entry under
        # every TTL but "never").
        return None, None
    if 0 < effective < now - _SLACK:
        return ttl, None
    return 1, effective


class Pending:
    """A value being written through the mount."""

    def __init__(self, fd: int, mode: int, final_ttl: Optional[int]) -> None:
        self.fd = fd
        self.mode = mode
        self.final_ttl = final_ttl

    @classmethod
    def open(
        cls,
        path: str,
        *,
        exclusive: bool,
        ttl: Optional[int],
        ns_ttl: Optional[int],
        mode: int,
    ) -> Pending:
        """Opens `path` for a new version. `exclusive`: claims the key
        (FileExistsError while it is published or being written). Not
        exclusive: O_TRUNC is left out on purpose, since an O_TRUNC open
        killed before the guard would publish an empty value over the old
        one; the truncate comes after the guard."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        if exclusive:
            flags |= os.O_EXCL
        guard, final = plan(ttl, ns_ttl, time.time())
        fd = os.open(path, flags, CLAIM_MODE)
        try:
            if guard is not None:
                os.setxattr(fd, TTL_XATTR, str(guard).encode())
            os.utime(fd, _BORN_EXPIRED)
            if not exclusive:
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, mode, final)

    def commit(self, data: bytes) -> None:
        """Writes the value and publishes it (close). Raises the publish's
        error: EFBIG over a limit, ENOSPC, EIO."""
        fd, self.fd = self.fd, -1
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, self.mode)
            if self.final_ttl is not None:
                os.setxattr(fd, TTL_XATTR, str(self.final_ttl).encode())
            # The commit point: from here the entry is live once closed.
            os.utime(fd, None)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)

    def abandon(self) -> None:
        """Gives the claim up: what is published is expired at birth."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        self.abandon()
