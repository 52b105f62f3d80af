"""conmon.wire: JSON lines through the C codec, compatible with the json package."""

from __future__ import annotations

import json

import pytest

from conmon import wire


def test_round_trip_matches_json() -> None:
    value = {"op": "create", "id": "c1", "tty": False, "n": 3, "f": 1.5, "args": ["a", "é\n"], "none": None}
    line = wire.dumps(value)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == value
    assert wire.loads(json.dumps(value).encode()) == value


@pytest.mark.parametrize("line", [b"", b"   ", b"{", b'{"a": 1} x', b"nul"])
def test_bad_lines_raise_value_error(line: bytes) -> None:
    with pytest.raises(ValueError):
        wire.loads(line)
