"""Rows are written by msgspec and read by msgpack on the edge (and the other way round in
old rows): both must agree on every value a row can hold."""

from __future__ import annotations

import math

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from personalize import codec

keys = st.one_of(st.text(max_size=12), st.integers(-(2**63), 2**64 - 1))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                    st.text(max_size=20), st.binary(max_size=20))
rows = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(keys, inner, max_size=5)), max_leaves=30)


@settings(max_examples=1000, deadline=None)
@given(rows)
def test_msgspec_writes_and_reads_what_msgpack_does(row):
    packed = codec.pack(row)
    assert packed == msgpack.packb(row, use_bin_type=True)
    assert codec.unpack(packed) == msgpack.unpackb(packed, raw=False, strict_map_key=False) == row


def test_what_cannot_be_stored_raises_as_msgpack_did():
    for value in (2**64, -(2**63) - 1):
        try:
            codec.pack({"n": [value]})
        except OverflowError:
            continue
        raise AssertionError(f"{value} was packed")
    assert math.isnan(codec.unpack(codec.pack(float("nan"))))


def test_without_msgspec_the_edge_bundle_packs_the_same_bytes(monkeypatch):
    """The edge bundle carries no msgspec and reads the sold-out log through this module
    (found merging issue 19: the bundle failed to import)."""
    import builtins
    import importlib

    real_import = builtins.__import__

    def no_msgspec(name, *args, **kwargs):
        if name == "msgspec" or name.startswith("msgspec."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_msgspec)
    fallback = importlib.reload(codec)
    try:
        assert getattr(fallback._encode, "__module__", None) == "personalize.codec"  # the msgpack fallback
        row = {"t": {1: [2, 3.5, None, b"x"]}, "s": "é"}
        assert fallback.pack(row) == msgpack.packb(row, use_bin_type=True)
        assert fallback.unpack(fallback.pack(row)) == row
    finally:
        monkeypatch.undo()
        importlib.reload(codec)
