"""A namespace's TTL as the daemon runs it, from `MOUNT/.cachefs/config.toml`.

The write protocol (`_pending.py`) needs it to know whether an old mtime
alone makes an unfinished write expired at birth (any TTL but 0, "never").
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Optional

try:
    import tomllib as _toml  # Python 3.11+
except ImportError:  # pragma: no cover - exercised through parse_fallback
    _toml = None  # type: ignore[assignment]


def namespace_ttl(mount: str, namespace: str) -> Optional[int]:
    """Seconds (0 = never), or None when the mount does not say."""
    try:
        with open(os.path.join(mount, ".cachefs", "config.toml"), "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return ttl_in(parse(text), namespace)


def parse(text: str) -> Dict[str, Any]:
    if _toml is not None:
        try:
            return _toml.loads(text)
        except ValueError:
            return {}
    return parse_fallback(text)


def ttl_in(config: Dict[str, Any], namespace: str) -> Optional[int]:
    ns = config.get("namespace", {}).get(namespace, {})
    ttl = ns.get("ttl", config.get("cache", {}).get("default_ttl"))
    return ttl if isinstance(ttl, int) and ttl >= 0 else None


_HEADER = re.compile(r'^\[namespace\.(?:"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_-]+))\]$')
_INT = re.compile(r"^(ttl|default_ttl)\s*=\s*(\d+)$")


def parse_fallback(text: str) -> Dict[str, Any]:
    """Before Python 3.11 (no tomllib): the two fields this module reads,
    from the daemon's own rendering (one `key = value` a line)."""
    config: Dict[str, Any] = {"cache": {}, "namespace": {}}
    section: Optional[Dict[str, Any]] = None
    for raw in text.splitlines():
        line = raw.strip()
        if line == "[cache]":
            section = config["cache"]
            continue
        m = _HEADER.match(line)
        if m:
            name = m.group(2) if m.group(2) is not None else _unquote(m.group(1))
            section = config["namespace"].setdefault(name, {})
            continue
        if line.startswith("["):
            section = None
            continue
        m = _INT.match(line)
        if m and section is not None:
            section[m.group(1)] = int(m.group(2))
    return config


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)
