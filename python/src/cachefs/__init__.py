"""cachefs: the common patterns of a cachefs mount in one line each.

    import cachefs
    cache = cachefs.Cache("/cache", "enrichment")

    @cache.cached(key=cachefs.key, ttl=7 * 86400, codec=cachefs.TEXT)
    def enrich(text: str) -> str: ...      # runs once per text, across processes

Pure standard library. Values are bytes; text, JSON and pickle are
opt-in codecs.
"""

from ._cache import TTL, Bytes, Cache
from ._claim import ClaimTimeout
from ._codecs import BYTES, JSON, PICKLE, TEXT, BytesCodec, Codec, JsonCodec, PickleCodec, TextCodec
from ._keys import default_key, key
from ._shortcuts import acached, cached

__all__ = [
    "BYTES",
    "Bytes",
    "JSON",
    "PICKLE",
    "TEXT",
    "TTL",
    "BytesCodec",
    "Cache",
    "ClaimTimeout",
    "Codec",
    "JsonCodec",
    "PickleCodec",
    "TextCodec",
    "acached",
    "cached",
    "default_key",
    "key",
]
__version__ = "0.1.0"
