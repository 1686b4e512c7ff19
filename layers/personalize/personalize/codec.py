"""How rows are stored: msgpack (shared by the row stores and the size guard)."""

from __future__ import annotations

import msgpack


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
