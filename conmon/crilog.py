"""The container log in the CRI format kubelet reads: ``<timestamp> <stream> <P|F> <content>\\n``.

Timestamps are RFC 3339 in UTC with nine fraction digits (``2026-11-23T07:05:14.123456789Z``),
which Go's time.RFC3339Nano parser accepts. Lines of one read share its timestamp.

A line is written ``F`` (full) when its newline arrives. Until then it waits in a per-stream
buffer of at most LINE_LIMIT bytes: a longer line is cut into ``P`` (partial) entries of
LINE_LIMIT bytes and ends with an ``F`` entry; a fragment that sees no newline for
PARTIAL_DELAY seconds (a prompt), or stays at end of stream, is written ``P`` as it is.
So memory per stream is bounded by LINE_LIMIT whatever the container writes.

Size limit (``log_size_max`` > 0), like conmon's ``--log-size-max``: when the next write would
take the file past the limit, the file is truncated to zero and writing continues, so the log
holds the newest output and never stops. kubelet's own rotation (rename, then reopen) is the
better tool; this limit is the last line of defence for a node's disk.
"""

from __future__ import annotations

import posix
import sys
import time

LINE_LIMIT = 16 * 1024
PARTIAL_DELAY = 0.5
_FLAGS = posix.O_WRONLY | posix.O_CREAT | posix.O_APPEND | posix.O_CLOEXEC

_second = -1
_second_text = b""


def timestamp(ns: int) -> bytes:
    """``ns`` (since the epoch) as RFC 3339 UTC with nanoseconds."""
    global _second, _second_text
    second, fraction = divmod(ns, 1_000_000_000)
    if second != _second:
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        _second = second
    return b"%s.%09dZ" % (_second_text, fraction)


def open_log(path: str) -> int:
    """An append fd for ``path``; OSError names the path (the directory may be unwritable)."""
    try:
        return posix.open(path, _FLAGS, 0o640)
    except OSError as e:
        raise OSError(e.errno, f"cannot open log file {path}: {e.strerror}") from None


class CriLog:
    """One container's log file, written from its stdout and stderr."""

    def __init__(self, path: str, max_size: int) -> None:
        self.path = path
        self.max_size = max(max_size, 0)
        self._fd = open_log(path)
        self._size = posix.fstat(self._fd).st_size
        self._partial: dict[bytes, bytes] = {}
        # When each buffered fragment must be written even without its newline.
        self._deadline: dict[bytes, float] = {}
        self._write_error = ""

    def write(self, stream: bytes, data: bytes) -> None:
        """Log ``data`` read from ``stream`` (b"stdout" or b"stderr")."""
        head = timestamp(time.time_ns()) + b" " + stream
        partial = self._partial.pop(stream, b"")
        lines = (partial + data if partial else data).split(b"\n")
        tail = lines.pop()
        full = head + b" F "
        if max(map(len, lines), default=0) <= LINE_LIMIT:
            out = full + (b"\n" + full).join(lines) + b"\n" if lines else b""
        else:
            out = b"".join(self._cut(head, line, full) for line in lines)
        if len(tail) > LINE_LIMIT:
            keep = len(tail) % LINE_LIMIT or LINE_LIMIT
            out += self._cut(head, tail[:-keep], b"")
            tail = tail[-keep:]
        if tail:
            self._partial[stream] = tail
            # A fragment after a newline is new: its wait starts now; a growing one keeps its start.
            if lines or not partial:
                self._deadline[stream] = time.monotonic() + PARTIAL_DELAY
        else:
            self._deadline.pop(stream, None)
        if out:
            self._emit(out)

    @staticmethod
    def _cut(head: bytes, line: bytes, full: bytes) -> bytes:
        """``line`` as P entries of LINE_LIMIT bytes, then an F entry with the rest (if ``full``)."""
        partial = head + b" P "
        # A full line keeps its last 1..LINE_LIMIT bytes for the F entry.
        cut = max(len(line) - 1, 0) // LINE_LIMIT * LINE_LIMIT if full else len(line)
        pieces = [partial + line[i : i + LINE_LIMIT] + b"\n" for i in range(0, cut, LINE_LIMIT)]
        if full:
            pieces.append(full + line[cut:] + b"\n")
        return b"".join(pieces)

    def flush(self, stream: bytes) -> None:
        """Write the fragment waiting for a newline on ``stream`` as a P entry (end of stream)."""
        tail = self._partial.pop(stream, b"")
        self._deadline.pop(stream, None)
        if tail:
            self._emit(timestamp(time.time_ns()) + b" " + stream + b" P " + tail + b"\n")

    def next_deadline(self) -> float:
        """When :meth:`flush_due` has work (monotonic seconds), or 0.0 if never."""
        return min(self._deadline.values(), default=0.0)

    def flush_due(self, now: float) -> None:
        """Write fragments that waited PARTIAL_DELAY for their newline."""
        for stream, deadline in list(self._deadline.items()):
            if deadline <= now:
                self.flush(stream)

    def reopen(self) -> None:
        """Continue in a new file at ``path`` (kubelet renamed the old one); buffered bytes follow."""
        if self._fd < 0:
            return
        fd = open_log(self.path)
        posix.close(self._fd)
        self._fd = fd
        self._size = posix.fstat(fd).st_size

    def close(self) -> None:
        """Flush both streams and close the file (once the container's output has ended)."""
        if self._fd < 0:
            return
        self.flush(b"stdout")
        self.flush(b"stderr")
        posix.close(self._fd)
        self._fd = -1

    def _emit(self, out: bytes) -> None:
        if self.max_size and self._size + len(out) > self.max_size:
            posix.ftruncate(self._fd, 0)
            self._size = 0
        view = memoryview(out)
        try:
            while view:
                view = view[posix.write(self._fd, view) :]
        except OSError as e:
            # A full disk must not stop the monitor (the container would block on its pipes):
            # drop the output and say so once per distinct error.
            if e.strerror != self._write_error:
                self._write_error = e.strerror or str(e)
                sys.stderr.write(f"conmon: writing {self.path}: {self._write_error}\n")
                sys.stderr.flush()
            return
        self._write_error = ""
        self._size += len(out)
