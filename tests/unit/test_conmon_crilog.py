"""conmon.crilog: CRI log lines, P/F splitting, delayed partials, size limit, reopen."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from conmon import crilog
from conmon.crilog import LINE_LIMIT, CriLog

LINE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([PF]) (.*)$")


def entries(path: Path) -> list[tuple[bytes, bytes, bytes]]:
    out = []
    for line in path.read_bytes().splitlines():
        match = LINE.match(line)
        assert match, line[:100]
        out.append((match[2], match[3], match[4]))
    return out


def test_timestamp_is_rfc3339_utc_with_nanoseconds() -> None:
    assert crilog.timestamp(1_795_419_122_000_000_007) == b"2026-11-23T07:32:02.000000007Z"
    assert crilog.timestamp(0) == b"1970-01-01T00:00:00.000000000Z"


def test_full_lines_and_streams(tmp_path: Path) -> None:
    log = CriLog(str(tmp_path / "c.log"), 0)
    log.write(b"stdout", b"one\ntwo\n")
    log.write(b"stderr", b"oops\n\n")
    log.close()
    assert entries(tmp_path / "c.log") == [
        (b"stdout", b"F", b"one"),
        (b"stdout", b"F", b"two"),
        (b"stderr", b"F", b"oops"),
        (b"stderr", b"F", b""),
    ]


def test_fragments_join_until_newline(tmp_path: Path) -> None:
    log = CriLog(str(tmp_path / "c.log"), 0)
    log.write(b"stdout", b"hel")
    log.write(b"stderr", b"e")
    log.write(b"stdout", b"lo\nwor")
    log.write(b"stdout", b"ld\n")
    log.write(b"stderr", b"\n")
    log.close()
    expected = [(b"stdout", b"F", b"hello"), (b"stdout", b"F", b"world"), (b"stderr", b"F", b"e")]
    assert entries(tmp_path / "c.log") == expected


def test_long_lines_are_cut_into_partials(tmp_path: Path) -> None:
    log = CriLog(str(tmp_path / "c.log"), 0)
    line = bytes(range(97, 123)) * 2000  # 52000 bytes
    log.write(b"stdout", b"short\n" + line + b"\nafter\n")
    log.close()
    got = entries(tmp_path / "c.log")
    assert got[0] == (b"stdout", b"F", b"short")
    assert got[-1] == (b"stdout", b"F", b"after")
    middle = got[1:-1]
    assert [tag for _, tag, _ in middle] == [b"P", b"P", b"P", b"F"]
    assert all(len(content) == LINE_LIMIT for _, _, content in middle[:-1])
    assert b"".join(content for _, _, content in middle) == line


def test_unterminated_output_is_bounded_and_flushed(tmp_path: Path) -> None:
    log = CriLog(str(tmp_path / "c.log"), 0)
    for _ in range(10):
        log.write(b"stdout", b"x" * 5000)
    log.close()
    got = entries(tmp_path / "c.log")
    assert all(tag == b"P" for _, tag, _ in got)
    assert [len(c) for _, _, c in got] == [LINE_LIMIT, LINE_LIMIT, LINE_LIMIT, 50000 - 3 * LINE_LIMIT]


def test_a_waiting_fragment_is_written_after_the_delay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = CriLog(str(tmp_path / "c.log"), 0)
    log.write(b"stdout", b"prompt> ")
    deadline = log.next_deadline()
    assert deadline > time.monotonic()
    log.flush_due(deadline - 0.01)
    assert (tmp_path / "c.log").read_bytes() == b""
    log.flush_due(deadline)
    assert entries(tmp_path / "c.log") == [(b"stdout", b"P", b"prompt> ")]
    assert log.next_deadline() == 0.0
    log.write(b"stdout", b"answer\n")
    log.close()
    assert entries(tmp_path / "c.log")[-1] == (b"stdout", b"F", b"answer")


def test_size_limit_truncates_and_continues(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    log = CriLog(str(path), 200)
    for i in range(20):
        log.write(b"stdout", b"line %02d\n" % i)
    log.close()
    assert path.stat().st_size <= 200
    assert entries(path)[-1] == (b"stdout", b"F", b"line 19")


def test_reopen_after_rename_continues_in_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    log = CriLog(str(path), 0)
    log.write(b"stdout", b"before\nhalf")
    path.rename(tmp_path / "c.log.1")
    log.reopen()
    log.write(b"stdout", b" line\n")
    log.close()
    assert entries(tmp_path / "c.log.1") == [(b"stdout", b"F", b"before")]
    assert entries(path) == [(b"stdout", b"F", b"half line")]


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"cannot open log file .*/missing/c\.log"):
        CriLog(str(tmp_path / "missing" / "c.log"), 0)
