"""Port-forward: pipe the client's streams to 127.0.0.1:PORT inside the pod's network namespace.

Over SPDY (``portforward.k8s.io``, also tunnelled in WebSocket) the client opens two streams per
forwarded connection, ``error`` then ``data``, both carrying the ``port`` and ``requestID`` headers.
A failed connection is reported on that pair's error stream only; the connection stays usable. Over
WebSocket channels (kubelet's other form) the ports come from the URL query and each gets a data
and an error channel, whose first message is the port number (two bytes, little endian).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from concurrent.futures import Executor
from dataclasses import dataclass

from crio_py.errors import CrioError
from crio_py.streaming.backend import Backend
from crio_py.streaming.spdy import CANCEL, PROTOCOL_ERROR
from crio_py.streaming.spdy_session import SpdyStream, StreamReset
from crio_py.streaming.websocket import ChannelConnection

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


def _reason(exc: Exception) -> str:
    if isinstance(exc, CrioError):
        return exc.message
    if isinstance(exc, OSError) and exc.errno:
        return f"connect to 127.0.0.1 in the pod's network namespace: {os.strerror(exc.errno).lower()}"
    return str(exc)


async def connect(backend: Backend, pod_id: str, port: int, executor: Executor) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port`` in the pod's network namespace."""
    loop = asyncio.get_running_loop()
    sock = await loop.run_in_executor(executor, backend.port_socket, pod_id)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


def parse_port(value: str) -> int:
    """A port number from a header or query value; ValueError naming it otherwise."""
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"invalid port {value!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return port


@dataclass
class _Pair:
    request_id: str
    error: SpdyStream | None = None
    data: SpdyStream | None = None
    timer: asyncio.TimerHandle | None = None


class SpdyPortForward:
    """Pairs the streams of a SPDY port-forward connection and forwards each complete pair."""

    def __init__(self, backend: Backend, pod_id: str, executor: Executor, creation_timeout: float):
        self.backend = backend
        self.pod_id = pod_id
        self.executor = executor
        self.creation_timeout = creation_timeout
        self._pairs: dict[str, _Pair] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def on_stream(self, stream: SpdyStream) -> None:
        kind = stream.headers.get("streamtype", "")
        request_id = stream.headers.get("requestid", "")
        if not request_id:
            # Clients older than request ids open error then data with consecutive odd ids.
            request_id = str(stream.id if kind == "error" else stream.id - 2)
        if kind not in ("error", "data"):
            log.warning("port-forward stream of unknown type refused", extra={"stream_type": kind})
            stream.reset(PROTOCOL_ERROR)
            return
        pair = self._pairs.get(request_id)
        if pair is None:
            pair = self._pairs[request_id] = _Pair(request_id)
            loop = asyncio.get_running_loop()
            pair.timer = loop.call_later(self.creation_timeout, self._expire, request_id)
        if getattr(pair, kind) is not None:
            stream.reset(PROTOCOL_ERROR)
            return
        setattr(pair, kind, stream)
        if pair.error is not None and pair.data is not None:
            del self._pairs[request_id]
            if pair.timer is not None:
                pair.timer.cancel()
            task = asyncio.create_task(self._forward(pair.error, pair.data))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _expire(self, request_id: str) -> None:
        pair = self._pairs.pop(request_id, None)
        if pair is None:
            return
        log.warning("port-forward stream pair incomplete: dropped", extra={"request_id": request_id})
        for stream in (pair.error, pair.data):
            if stream is not None:
                stream.reset(CANCEL)

    async def _forward(self, error: SpdyStream, data: SpdyStream) -> None:
        try:
            port = parse_port(data.headers.get("port", ""))
            sock = await connect(self.backend, self.pod_id, port, self.executor)
        except (ValueError, OSError, CrioError) as exc:
            detail = _reason(exc)
            message = f"error forwarding port {data.headers.get('port', '')} to pod {self.pod_id}: {detail}"
            log.info("port-forward failed", extra={"pod_id": self.pod_id, "error": detail})
            with contextlib.suppress(StreamReset):
                await error.write(message.encode())
            error.close()
            data.close()
            return
        try:
            await pipe(sock, data.read, data.write, data.close)
        finally:
            sock.close()
            error.close()

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for request_id in list(self._pairs):
            self._expire(request_id)


async def pipe(sock: socket.socket, read, write, close) -> None:  # type: ignore[no-untyped-def]
    """Copy the client's data to ``sock`` and back until both directions ended (each half-closes)."""
    loop = asyncio.get_running_loop()

    async def upstream() -> None:
        try:
            while data := await read(READ_SIZE):
                await loop.sock_sendall(sock, data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    async def downstream() -> None:
        try:
            while data := await loop.sock_recv(sock, READ_SIZE):
                await write(data)
        except (OSError, StreamReset):
            pass
        close()

    up = asyncio.create_task(upstream())
    try:
        await downstream()
        # The pod ended its side: the client's remaining data has nowhere useful to go.
        if not up.done():
            await asyncio.wait({up}, timeout=1.0)
    finally:
        up.cancel()
        await asyncio.gather(up, return_exceptions=True)


async def websocket_port_forward(
    conn: ChannelConnection, backend: Backend, pod_id: str, ports: list[int], executor: Executor
) -> None:
    """kubelet's WebSocket form: one connection per port, channel 2n for data and 2n+1 for errors."""
    for index, port in enumerate(ports):
        for channel in (2 * index, 2 * index + 1):
            await conn.send(channel, struct.pack("<H", port))

    async def one(index: int, port: int) -> None:
        data_channel, error_channel = 2 * index, 2 * index + 1
        try:
            sock = await connect(backend, pod_id, port, executor)
        except (OSError, CrioError) as exc:
            detail = _reason(exc)
            with contextlib.suppress(ConnectionError, OSError):
                await conn.send(error_channel, f"error forwarding port {port} to pod {pod_id}: {detail}".encode())
            return
        try:
            await pipe(sock, conn.readers[data_channel].read, lambda d: conn.send(data_channel, d), lambda: None)
        finally:
            sock.close()

    await asyncio.gather(*(one(i, p) for i, p in enumerate(ports)))
