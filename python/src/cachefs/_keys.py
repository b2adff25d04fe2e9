"""Keys: how clients name entries, and which names the helper accepts."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Union

Text = Union[str, bytes]


def key(text: Text) -> str:
    """The sha256 key of a text, as `cachefs key TEXT` prints it.

    A `str` is hashed as its UTF-8 bytes, exactly as given (no newline
    added or stripped), so a key computed here names the same entry as
    one computed by the CLI or by `hashlib.sha256(text.encode())`.
    """
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return hashlib.sha256(data).hexdigest()


def check_namespace(namespace: str) -> str:
    if (
        not namespace
        or "/" in namespace
        or "\0" in namespace
        or namespace in (".", "..", ".cachefs")
    ):
        raise ValueError(f"bad namespace {namespace!r}: one directory name")
    return namespace


def check_key(name: str) -> str:
    """A key is a file name, or a relative path of them (`news/espn/123`)."""
    if not isinstance(name, str):
        raise TypeError(f"a key is a str, not {type(name).__name__}")
    parts = name.split("/")
    if "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"bad key {name!r}: file names joined by '/', none empty, '.' or '..'"
        )
    return name


def default_key(func: Callable[..., Any], args: Any, kwargs: Any) -> str:
    """The sha256 of the function's qualified name and arguments as JSON."""
    name = f"{func.__module__}.{func.__qualname__}"
    try:
        text = json.dumps(
            [name, list(args), kwargs], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    except (TypeError, ValueError) as e:
        raise TypeError(f"cached {name}: arguments are not JSON ({e}); pass key=") from None
    return key(text)
