"""The byte pipe a SPDY session runs over: a TCP (or TLS) connection, or WebSocket messages (tunnelling)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class ByteTransport(Protocol):
    """A bidirectional byte stream."""

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" at the end."""
        ...

    def write(self, data: bytes) -> None:
        """Queue ``data`` for sending (never blocks)."""
        ...

    async def drain(self) -> None:
        """Wait until the queued bytes are small enough to queue more."""
        ...

    def write_eof(self) -> None:
        """Half-close: nothing more will be written."""
        ...

    def close(self) -> None: ...


class StreamTransport:
    """An asyncio (reader, writer) pair as a ByteTransport."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes = b""):
        self._reader = reader
        self._writer = writer
        self._head = head

    async def read(self, n: int) -> bytes:
        if self._head:
            data, self._head = self._head[:n], self._head[n:]
            return data
        try:
            return await self._reader.read(n)
        except (ConnectionError, OSError):
            return b""

    def write(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)

    async def drain(self) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("connection closed")
        await self._writer.drain()

    def write_eof(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
            if not self._writer.is_closing() and self._writer.can_write_eof():
                self._writer.write_eof()

    def close(self) -> None:
        self._writer.close()


class IdleWatch:
    """Calls ``on_idle`` once nothing moved for ``timeout`` seconds: one timer per connection, not one per read."""

    def __init__(self, timeout: float | None, on_idle: Callable[[], None]):
        self.timeout = timeout
        self._on_idle = on_idle
        self._active_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def touch(self) -> None:
        self._active_at = time.monotonic()

    def start(self) -> None:
        if self.timeout:
            self.touch()
            self._task = asyncio.create_task(self._watch(self.timeout))

    async def _watch(self, timeout: float) -> None:
        while (remaining := self._active_at + timeout - time.monotonic()) > 0:
            await asyncio.sleep(remaining)
        log.info("streaming connection idle: closing", extra={"idle_seconds": timeout})
        self._on_idle()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
