"""JSON lines on the wire, through the C codec that the ``json`` package wraps.

``import json`` costs the monitor about half a MiB (it pulls in ``re``, ``enum`` and friends); the
``_json`` accelerator alone encodes and decodes everything the protocol uses.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_encoder = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, True)


class _DecodeOptions:
    """The attributes ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo: dict[str, str] = {}


_scanner = _json.make_scanner(_DecodeOptions())


def dumps(obj: Any) -> bytes:
    """``obj`` as one compact ASCII JSON line, newline included."""
    return "".join(_encoder(obj, 0)).encode() + b"\n"


def loads(line: bytes) -> Any:
    """The JSON value in ``line``; ValueError if it is not exactly one JSON value."""
    text = line.decode().strip()
    try:
        value, end = _scanner(text, 0)
    except StopIteration:
        raise ValueError("not a JSON value") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value
