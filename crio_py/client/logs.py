"""``crio-py logs``: print a container's CRI log (as the monitor writes it), optionally following it.

Like crictl, the client reads the log file itself (the path ContainerStatus reports): each line is
``<RFC 3339 time> <stdout|stderr> <P|F> <content>``, P marking a partial line that the next
continues.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

# How often a follower looks for new lines and asks whether the container still runs.
FOLLOW_POLL = 0.2


def parse_line(line: bytes) -> tuple[str, bytes] | None:
    """(stream, content with its newline if the line was full) of one CRI log line; None if malformed."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"P", b"F"):
        return None
    content = parts[3] if len(parts) == 4 else b""
    return parts[1].decode(), content + (b"\n" if parts[2] == b"F" else b"")


def _lines(f: BinaryIO) -> Iterator[bytes]:
    """Complete lines from ``f``'s position on (a line the monitor is still writing waits)."""
    while True:
        pos = f.tell()
        line = f.readline()
        if not line:
            return
        if not line.endswith(b"\n"):
            f.seek(pos)
            return
        yield line


def _emit(line: bytes, out: BinaryIO, err: BinaryIO) -> None:
    parsed = parse_line(line)
    if parsed is not None:
        stream, content = parsed
        target = out if stream == "stdout" else err
        target.write(content)
        target.flush()


def print_log(
    path: str,
    *,
    tail: int = -1,
    follow: bool = False,
    running: Callable[[], bool] = lambda: False,
    out: BinaryIO | None = None,
    err: BinaryIO | None = None,
) -> None:
    """Print the log at ``path`` (its last ``tail`` lines if >= 0); with ``follow`` keep printing
    new lines until ``running()`` says the container stopped and nothing more came."""
    out = out or sys.stdout.buffer
    err = err or sys.stderr.buffer
    f = open(path, "rb")  # noqa: SIM115 (reopened when the monitor rotates the file)
    try:
        lines = list(_lines(f))
        for line in lines if tail < 0 else lines[max(0, len(lines) - tail) :]:
            _emit(line, out, err)
        while follow:
            more = False
            for line in _lines(f):
                _emit(line, out, err)
                more = True
            if more:
                continue
            if _rotated(path, f):
                f.close()
                f = open(path, "rb")  # noqa: SIM115
                continue
            if not running():
                for line in _lines(f):  # written between the last read and the exit
                    _emit(line, out, err)
                return
            time.sleep(FOLLOW_POLL)
    finally:
        f.close()


def _rotated(path: str, f: BinaryIO) -> bool:
    """Whether ``path`` is now another file than the one open (ReopenContainerLog after a rotation)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    was = os.fstat(f.fileno())
    return (now.st_dev, now.st_ino) != (was.st_dev, was.st_ino)
