"""JSON text in and out on the hot paths: orjson where it gives the same data, the standard
library where it would not.

What forebay reads is strict JSON (RFC 8259): ``NaN`` and ``Infinity`` are refused, and so are
numbers too large for a float (``1e400``), so every value read is finite and can be written
back. Integers of any size keep their value.

orjson is several times faster than the standard library both ways, but it reads integers
beyond 64 bits as floats (losing digits), refuses lone surrogates, and cannot write integers
beyond 64 bits. So :func:`loads` hands text holding a run of 19 digits (a check that costs a
small fraction of the parse) and text orjson refuses to the standard library, which either
reads it exactly as before or raises with its usual message. :func:`dumps` falls back in the
same way. Output differs from ``json.dumps`` only in how some floats are spelled (``1e-7``,
not ``1e-07``); both read back to the same number.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

import orjson

__all__ = ["dumps", "dumps_sorted", "dumps_strict", "loads", "unicode_only"]

_DIGITS: Final = bytes.maketrans(b"0123456789", b"0" * 10)
_ZEROS: Final = b"0" * 19  # -(2**63) - 1 has 19 digits: orjson reads it as a float
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_SORTED: Final = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True
)


def loads(data: bytes | str) -> Any:
    """Parse JSON text (bytes or str). Raises ``ValueError`` (``json.JSONDecodeError`` and
    ``UnicodeDecodeError`` are both kinds of it) or ``RecursionError`` when it is not JSON."""
    raw = data.encode(errors="surrogatepass") if isinstance(data, str) else data
    if _ZEROS not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite)


def dumps(value: object) -> str:
    """Compact JSON text of ``value``: data as :func:`loads` returns it (dicts with string
    keys, lists, strings, integers, finite floats, booleans, None). ``ValueError`` or
    ``TypeError`` for anything else."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return dumps_strict(value)


def dumps_strict(value: object) -> str:
    """Compact JSON text of any Python value, by the standard library alone (so tuples, int
    keys and the like are written as ``json.dumps`` writes them). ``ValueError`` for NaN,
    infinities and lone surrogates, ``TypeError`` for what is not JSON."""
    return unicode_only(_COMPACT.encode(value))


def dumps_sorted(value: object) -> str:
    """As :func:`dumps`, with the keys of every object sorted (a canonical spelling)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return unicode_only(_SORTED.encode(value))


def unicode_only(text: str) -> str:
    """``text``, or ``UnicodeEncodeError`` (a ``ValueError``) when it holds a lone surrogate
    (JSON may spell one, ``"\\ud800"``, but it is not Unicode: no job store could keep it)."""
    text.encode()
    return text


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is too large for a float")
    return number
