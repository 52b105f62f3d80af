"""WebSocket connections (framing by wsproto) and the Kubernetes channel protocols over them.

``channel.k8s.io`` (v1..v5): each binary message starts with a channel byte (0 stdin, 1 stdout,
2 stderr, 3 error, 4 resize for exec/attach; 2n data and 2n+1 error for the n-th port of a
port-forward). ``base64.channel.k8s.io`` variants send text messages: the channel as an ASCII digit,
then the data in base64. v5 adds ``[255, channel]``: the client closed that channel (stdin's end).
``SPDY/3.1+portforward.k8s.io`` (and its early name ``v2.portforward.k8s.io``) carries a SPDY
session in binary messages: see :class:`TunnelTransport`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    TextMessage,
)
from wsproto.events import Request as WSRequest
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from crio_py.streaming.http import Request
from crio_py.streaming.transport import IdleWatch

log = logging.getLogger(__name__)

MAX_MESSAGE = 16 * 1024 * 1024
CLOSE_SIGNAL = 255
NORMAL_CLOSURE = 1000
READ_SIZE = 64 * 1024


class HandshakeError(Exception):
    pass


class WebSocket:
    """One accepted WebSocket connection: send and receive whole messages, answer pings, close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: WSConnection, protocol: str):
        self._reader = reader
        self._writer = writer
        self._ws = ws
        self.protocol = protocol
        self.closed = False
        self._partial: list[bytes | str] = []
        self._size = 0

    @classmethod
    async def accept(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: Request,
        choose: dict[str, str],
    ) -> WebSocket:
        """Complete the handshake of ``request``, choosing the first offered subprotocol in ``choose``.

        ``choose`` maps each accepted subprotocol to what the session runs ("" stands for a client that
        offered none). HandshakeError (after answering 400) when none fits.
        """
        ws = WSConnection(ConnectionType.SERVER)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers]
        ws.initiate_upgrade_connection(headers, request.target.encode("latin-1"))
        offered: list[str] = []
        for event in ws.events():
            if isinstance(event, WSRequest):
                offered = list(event.subprotocols)
        chosen = next((p for p in offered if p in choose), None)
        if chosen is None and not offered and "" in choose:
            chosen = ""
        if chosen is None:
            message = f"none of the WebSocket subprotocols {offered} is supported; supported: {sorted(choose)}"
            body = message.encode()
            writer.write(
                ws.send(
                    RejectConnection(
                        status_code=400,
                        headers=[(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
                        has_body=True,
                    )
                )
                + ws.send(RejectData(data=body))
            )
            await writer.drain()
            raise HandshakeError(message)
        writer.write(ws.send(AcceptConnection(subprotocol=chosen or None)))
        await writer.drain()
        if request.rest:
            ws.receive_data(request.rest)
        return cls(reader, writer, ws, chosen)

    async def receive(self) -> bytes | str | None:
        """The next whole message; None once the connection ended (close, EOF, error)."""
        while not self.closed:
            for event in self._ws.events():
                message = self._handle(event)
                if message is not None:
                    return message
            if self.closed:
                break
            try:
                data = await self._reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self.closed = True
                break
            try:
                self._ws.receive_data(data)
            except RemoteProtocolError as exc:
                log.warning("WebSocket protocol error: closing the connection", extra={"error": str(exc)})
                await self.close(1002, str(exc)[:100])
                return None
        return None

    def _handle(self, event: object) -> bytes | str | None:
        if isinstance(event, BytesMessage | TextMessage):
            self._partial.append(event.data)
            self._size += len(event.data)
            if self._size > MAX_MESSAGE:
                raise RemoteProtocolError("message too large", None)
            if not event.message_finished:
                return None
            parts, self._partial, self._size = self._partial, [], 0
            return b"".join(parts) if isinstance(event, BytesMessage) else "".join(parts)  # type: ignore[arg-type]
        if isinstance(event, Ping):
            self._send(event.response())
        elif isinstance(event, CloseConnection):
            self._send(event.response())
            self.closed = True
        return None

    def _send(self, event: object) -> None:
        try:
            data = self._ws.send(event)  # type: ignore[arg-type]
        except LocalProtocolError:
            return
        if not self._writer.is_closing():
            self._writer.write(data)

    async def send(self, message: bytes | str) -> None:
        """Send one message; ConnectionResetError when the connection is gone."""
        if self.closed or self._writer.is_closing():
            raise ConnectionResetError("the WebSocket connection is closed")
        self._send(BytesMessage(data=message) if isinstance(message, bytes) else TextMessage(data=message))
        await self._writer.drain()

    def abort(self, code: int = 1001) -> None:
        """Send a close frame and close the connection now (no waiting: for the idle timer)."""
        if not self._writer.is_closing():
            self._send(CloseConnection(code=code))
        self.closed = True
        self._writer.close()

    async def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame (once) and close the connection."""
        if not self._writer.is_closing():
            self._send(CloseConnection(code=code, reason=reason or None))
            with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._writer.drain(), 2)
        self.closed = True
        self._writer.close()


class ChannelReader:
    """The client's data on one channel (stdin, resize, a port's data)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self._ended = False

    async def read(self, n: int = 0) -> bytes:
        """The next message's data; b"" once the channel ended."""
        if self._ended and self._queue.empty():
            return b""
        return await self._queue.get()

    async def put(self, data: bytes) -> None:
        if not self._ended and data:
            await self._queue.put(data)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            if not self._queue.full():  # else the reader drains the queue first, then sees the end
                self._queue.put_nowait(b"")


class ChannelWriter:
    """Our data on one channel."""

    def __init__(self, conn: ChannelConnection, channel: int):
        self._conn = conn
        self.channel = channel

    async def write(self, data: bytes) -> None:
        await self._conn.send(self.channel, data)

    def close(self) -> None:
        """Channels end with the connection; nothing to send."""


class ChannelConnection:
    """The channel protocol over a WebSocket: route incoming messages to readers, frame outgoing data."""

    def __init__(self, ws: WebSocket, readable: list[int], idle_timeout: float | None):
        self.ws = ws
        self.binary = "base64" not in ws.protocol
        self.close_signal = ws.protocol.startswith("v5.")
        self.readers = {channel: ChannelReader() for channel in readable}
        self._idle = IdleWatch(idle_timeout, ws.abort)

    def writer(self, channel: int) -> ChannelWriter:
        return ChannelWriter(self, channel)

    async def send(self, channel: int, data: bytes) -> None:
        self._idle.touch()
        if self.binary:
            await self.ws.send(bytes([channel]) + data)
        else:
            await self.ws.send(chr(ord("0") + channel) + base64.b64encode(data).decode())

    async def run(self) -> None:
        """Dispatch the client's messages until the connection ends; then every reader sees its end."""
        self._idle.start()
        try:
            while True:
                message = await self.ws.receive()
                if message is None:
                    break
                self._idle.touch()
                if isinstance(message, str):
                    if self.binary or not message:
                        continue
                    channel = ord(message[0]) - ord("0")
                    try:
                        data = base64.b64decode(message[1:], validate=True)
                    except binascii.Error:
                        log.warning("undecodable base64 message on a streaming channel", extra={"channel": channel})
                        continue
                else:
                    if not message:
                        continue
                    channel, data = message[0], message[1:]
                    if self.close_signal and channel == CLOSE_SIGNAL:
                        if len(data) == 1 and data[0] in self.readers:
                            self.readers[data[0]].end()
                        continue
                reader = self.readers.get(channel)
                if reader is not None:
                    await reader.put(data)
        finally:
            self._idle.stop()
            for reader in self.readers.values():
                reader.end()


class TunnelTransport:
    """A SPDY session's byte stream carried in binary WebSocket messages (``SPDY/3.1+portforward.k8s.io``)."""

    def __init__(self, ws: WebSocket):
        self._ws = ws
        self._pending = b""

    async def read(self, n: int) -> bytes:
        while not self._pending:
            message = await self._ws.receive()
            if message is None:
                return b""
            if isinstance(message, bytes):
                self._pending = message
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def write(self, data: bytes) -> None:
        if not self._ws.closed and not self._ws._writer.is_closing():
            self._ws._send(BytesMessage(data=data))

    async def drain(self) -> None:
        if self._ws.closed:
            raise ConnectionResetError("the WebSocket connection is closed")
        await self._ws._writer.drain()

    def write_eof(self) -> None:
        """WebSocket has no half-close; the close frame comes with close()."""

    def close(self) -> None:
        if not self._ws._writer.is_closing():
            self._ws._send(CloseConnection(code=NORMAL_CLOSURE))
        self._ws.closed = True
        self._ws._writer.close()
