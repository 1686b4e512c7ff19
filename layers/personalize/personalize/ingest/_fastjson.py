"""Fast JSON for the ingest hot path, with exactly the contract's semantics (``events.loads``).

msgspec decodes a typical event several times faster than the standard library. It differs
from ``events.loads`` in a few corners (NaN and Infinity, lone surrogates, a UTF-8 BOM or
UTF-16 input, numbers past a float's range, integers over 4,000 digits, how deep nesting
fails). So its answer is taken only when it is one that ``events.loads`` would give too:
an object whose values are strings, booleans, nulls, floats, integers within 64 bits, or
lists of those. Anything else (including every input msgspec refuses) goes through
``events.loads``, which decides as it always has. A property test pins the agreement.

Only aggregate imports this module (the edge bundle does not carry msgspec).
"""

from __future__ import annotations

import msgspec

from personalize.ingest import events

_decode = msgspec.json.Decoder().decode
_INT_LOW, _INT_HIGH = -(2**63), 2**63 - 1


def _plain(value: object) -> bool:
    """A value both decoders read alike: a scalar (an integer within 64 bits)."""
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None:
        return True
    return kind is int and _INT_LOW <= value <= _INT_HIGH


def loads(raw: bytes) -> object:
    """``events.loads(raw)``: the same value, or the same ``EventError``."""
    try:
        obj = _decode(raw)
    except Exception:  # noqa: BLE001 - msgspec refuses it: the strict path says why (or accepts it)
        return events.loads(raw)
    if type(obj) is not dict:
        return events.loads(raw)
    for value in obj.values():
        kind = type(value)
        if kind is str:
            continue
        if kind is list:
            for element in value:
                if not _plain(element):
                    return events.loads(raw)
        elif not _plain(value):
            return events.loads(raw)
    return obj
