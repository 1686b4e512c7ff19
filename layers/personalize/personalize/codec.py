"""How rows are stored: msgpack (shared by the row stores and the size guard).

Encoded and decoded with msgspec, which writes the same bytes as ``msgpack.packb(obj,
use_bin_type=True)`` and reads them as ``msgpack.unpackb(data, raw=False,
strict_map_key=False)`` does (a test pins both), at a fraction of the cost: ingest packs and
unpacks every row it touches once per batch. The edge bundle does not carry msgspec: there
this module falls back to msgpack (the edge reads the sold-out log through it).
"""

from __future__ import annotations

try:
    import msgspec
except ImportError:  # the edge bundle (no msgspec): msgpack, the same bytes (a test pins both)
    import msgpack

    def _encode(obj) -> bytes:
        return msgpack.packb(obj, use_bin_type=True)

    def _decode(data: bytes):
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
else:
    _encode = msgspec.msgpack.Encoder().encode
    _decode = msgspec.msgpack.Decoder().decode


def pack(obj) -> bytes:
    """Raises OverflowError for an integer past 64 bits, TypeError for a type it cannot encode."""
    return _encode(obj)


def unpack(data: bytes):
    return _decode(data)
