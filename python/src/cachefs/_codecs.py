"""Codecs: what turns a value into an entry's bytes and back.

Entries are bytes, readable by any program. Text and JSON are opt-in;
pickle is opt-in too and only for caches whose every writer is trusted,
since unpickling runs code chosen by whoever wrote the entry.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Codec(Generic[T]):
    """Turns values of type T into bytes and back."""

    def encode(self, value: T) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> T:
        raise NotImplementedError


class BytesCodec(Codec[bytes]):
    """The identity: the function returns bytes (bytearray, memoryview)."""

    def encode(self, value: bytes) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"a cached value is bytes, not {type(value).__name__}: "
                "pass codec=cachefs.TEXT, cachefs.JSON or a Codec"
            )
        return bytes(value)

    def decode(self, data: bytes) -> bytes:
        return data


class TextCodec(Codec[str]):
    def __init__(self, encoding: str = "utf-8") -> None:
        self.encoding = encoding

    def encode(self, value: str) -> bytes:
        return value.encode(self.encoding)

    def decode(self, data: bytes) -> str:
        return data.decode(self.encoding)


class JsonCodec(Codec[Any]):
    """Compact UTF-8 JSON: readable with `cat` and `jq`, by any language."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


class PickleCodec(Codec[Any]):
    """Any picklable value. Only where every writer of the namespace is
    trusted: reading an entry runs whatever its writer put in it."""

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=self.protocol)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)


BYTES = BytesCodec()
TEXT = TextCodec()
JSON = JsonCodec()
PICKLE = PickleCodec()
