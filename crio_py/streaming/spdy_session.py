"""A server-side SPDY/3.1 session over a byte transport: streams, flow control, PING, RST_STREAM, GOAWAY.

The peer opens every stream (odd ids, increasing); each SYN_STREAM is answered at once with an empty
SYN_REPLY, as kubelet's server does, and handed to ``on_stream``.

Flow control. We grant the peer a receive window per stream and for the session, and send
WINDOW_UPDATE as the application consumes data. Go's spdystream (kubectl, crictl, kubelet) neither
sends WINDOW_UPDATE nor honours windows; a peer that sent neither SETTINGS nor WINDOW_UPDATE is
therefore treated as not flow-controlled: we do not wait for windows it will never open, and
TCP's own flow control is what slows us down. A peer that announces itself (SETTINGS or
WINDOW_UPDATE) gets its windows honoured. Incoming data is buffered per stream up to a bound; past it
the session stops reading the connection until the application catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from crio_py.streaming import spdy
from crio_py.streaming.transport import ByteTransport, IdleWatch

log = logging.getLogger(__name__)

# Largest DATA frame we send; spdystream's own writer uses 32 KiB buffers.
MAX_SEND_FRAME = 32 * 1024
# Window we grant the peer per stream (announced in SETTINGS) and for the session.
RECEIVE_WINDOW = 1024 * 1024
# Bytes buffered for one stream before the session stops reading the connection.
MAX_STREAM_BUFFER = 1024 * 1024
READ_SIZE = 64 * 1024


class StreamReset(ConnectionError):
    """The stream was reset (by the peer, or because the connection ended)."""


class SpdyStream:
    """One stream the peer opened; read its data, write ours, half-close, reset."""

    def __init__(self, session: SpdySession, stream_id: int, headers: spdy.Headers, fin: bool):
        self.session = session
        self.id = stream_id
        self.headers = {k: v[0] if v else "" for k, v in headers.items()}
        self._buffer = bytearray()
        self._remote_closed = fin
        self._local_closed = False
        self.reset_status: int | None = None
        self._readable = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._window_open = asyncio.Event()
        self._window_open.set()
        self.send_window = session.peer_initial_window
        self._consumed = 0
        if fin:
            self._readable.set()

    def __repr__(self) -> str:
        return f"SpdyStream({self.id}, {self.headers})"

    @property
    def done(self) -> bool:
        return self.reset_status is not None or (self._local_closed and self._remote_closed)

    # ---- reading ---------------------------------------------------------------------------

    async def read(self, n: int = READ_SIZE) -> bytes:
        """Up to ``n`` bytes of the peer's data; b"" once the peer half-closed or the stream was reset."""
        while not self._buffer:
            if self._remote_closed or self.reset_status is not None:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        if len(self._buffer) < MAX_STREAM_BUFFER:
            self._drained.set()
        self._consumed += len(data)
        if self._consumed >= RECEIVE_WINDOW // 2 and not self._remote_closed:
            self.session.send(spdy.WindowUpdate(self.id, self._consumed))
            self._consumed = 0
        self.session.consumed(len(data))
        return data

    def _receive(self, data: bytes, fin: bool) -> None:
        if data and not self._remote_closed:
            self._buffer += data
            if len(self._buffer) >= MAX_STREAM_BUFFER:
                self._drained.clear()
        if fin:
            self._remote_closed = True
        self._readable.set()

    # ---- writing ---------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Send ``data``; StreamReset if the stream or the connection is gone."""
        view = memoryview(data)
        while view:
            self._check_writable()
            size = min(len(view), MAX_SEND_FRAME)
            if self.session.peer_flow_control:
                size = min(size, self.send_window, self.session.send_window)
                if size <= 0:
                    self._window_open.clear()
                    await self._window_open.wait()
                    continue
                self.send_window -= size
                self.session.send_window -= size
            self.session.send(spdy.DataFrame(self.id, bytes(view[:size])))
            view = view[size:]
            await self.session.drain()

    def _check_writable(self) -> None:
        if self.reset_status is not None:
            raise StreamReset(f"stream {self.id} was reset (status {self.reset_status})")
        if self._local_closed:
            raise StreamReset(f"stream {self.id} is closed for writing")
        if self.session.closed:
            raise StreamReset("the connection is closed")

    def close(self) -> None:
        """Half-close: tell the peer we will send nothing more (empty DATA with FIN)."""
        if self._local_closed or self.reset_status is not None or self.session.closed:
            return
        self._local_closed = True
        self.session.send(spdy.DataFrame(self.id, b"", spdy.FLAG_FIN))
        self.session.forget_if_done(self)

    def reset(self, status: int = spdy.CANCEL) -> None:
        """Abort the stream in both directions (RST_STREAM)."""
        if self.reset_status is not None:
            return
        if not self.session.closed:
            self.session.send(spdy.RstStream(self.id, status))
        self._on_reset(status)

    def _on_reset(self, status: int) -> None:
        self.reset_status = status
        self._readable.set()
        self._drained.set()
        self._window_open.set()
        self.session.forget_if_done(self)


class SpdySession:
    """Serves one SPDY connection until EOF, GOAWAY, a protocol error, the idle timeout or ``close()``."""

    def __init__(
        self,
        transport: ByteTransport,
        on_stream: Callable[[SpdyStream], None],
        idle_timeout: float | None = None,
        max_streams: int = 1000,
    ):
        self.transport = transport
        self.on_stream = on_stream
        self._idle = IdleWatch(idle_timeout, self._on_idle)
        self.max_streams = max_streams
        self.streams: dict[int, SpdyStream] = {}
        self.closed = False
        self.peer_flow_control = False
        self.peer_initial_window = spdy.DEFAULT_WINDOW
        self.send_window = spdy.DEFAULT_WINDOW
        self._encoder = spdy.Encoder()
        self._decoder = spdy.Decoder()
        self._last_peer_stream = 0
        self._goaway_sent = False
        self._session_consumed = 0
        self.ended = asyncio.Event()

    # ---- sending --------------------------------------------------------------------------

    def send(self, frame: spdy.Frame) -> None:
        """Queue one frame (header blocks are compressed here, so in sending order)."""
        if not self.closed:
            self.transport.write(self._encoder.encode(frame))
            self._idle.touch()

    async def drain(self) -> None:
        try:
            await self.transport.drain()
        except (ConnectionError, OSError) as exc:
            raise StreamReset(f"the connection is gone: {exc}") from None

    def consumed(self, size: int) -> None:
        self._session_consumed += size
        if self._session_consumed >= RECEIVE_WINDOW // 2:
            self.send(spdy.WindowUpdate(0, self._session_consumed))
            self._session_consumed = 0

    def forget_if_done(self, stream: SpdyStream) -> None:
        if stream.done:
            self.streams.pop(stream.id, None)

    def goaway(self, status: int = spdy.GOAWAY_OK) -> None:
        """Refuse new streams and tell the peer which ones we saw."""
        if not self._goaway_sent and not self.closed:
            self._goaway_sent = True
            self.send(spdy.GoAway(self._last_peer_stream, status))

    async def close(self, status: int = spdy.GOAWAY_OK, linger: float = 2.0) -> None:
        """GOAWAY, half-close, let the peer read what we sent (up to ``linger`` s), then close."""
        if self.closed:
            return
        self.goaway(status)
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.wait_for(self.transport.drain(), linger)
        self.transport.write_eof()
        # Closing while the peer still sends would answer with a TCP RST that can destroy data it
        # has not read yet: wait for its end of the connection first.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ended.wait(), linger)
        self._end()

    def _end(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in list(self.streams.values()):
            stream._on_reset(spdy.CANCEL)
        self.streams.clear()
        self.transport.close()

    # ---- receiving ------------------------------------------------------------------------

    async def run(self) -> None:
        """Read and dispatch frames until the connection ends."""
        self.send(spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: RECEIVE_WINDOW}))
        # The session's window starts at 64 KiB whatever SETTINGS says: open it to match the streams'.
        self.send(spdy.WindowUpdate(0, RECEIVE_WINDOW - spdy.DEFAULT_WINDOW))
        self._idle.start()
        try:
            while not self.closed:
                data = await self.transport.read(READ_SIZE)
                if not data:
                    break
                self._idle.touch()
                try:
                    frames = self._decoder.feed(data)
                except spdy.ProtocolError as exc:
                    log.warning("SPDY protocol error: closing the connection", extra={"error": str(exc)})
                    self.goaway(exc.status)
                    break
                for frame in frames:
                    await self._dispatch(frame)
                    if self.closed:
                        break
        finally:
            self._idle.stop()
            self.ended.set()
            self._end()

    def _on_idle(self) -> None:
        self.goaway()
        self._end()

    async def _dispatch(self, frame: spdy.Frame) -> None:
        if isinstance(frame, spdy.DataFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is None:
                if frame.stream_id > self._last_peer_stream or frame.stream_id % 2 == 0:
                    self.send(spdy.RstStream(frame.stream_id, spdy.INVALID_STREAM))
                return  # data racing our RST or FIN is dropped
            if stream._remote_closed:
                stream.reset(spdy.STREAM_ALREADY_CLOSED)
                return
            stream._receive(frame.data, frame.fin)
            self.forget_if_done(stream)
            # Backpressure for peers that ignore our windows: stop reading until the reader catches up.
            await stream._drained.wait()
        elif isinstance(frame, spdy.SynStream):
            self._open(frame)
        elif isinstance(frame, spdy.HeadersFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.headers.update({k: v[0] if v else "" for k, v in frame.headers.items()})
                stream._receive(b"", frame.fin)
                self.forget_if_done(stream)
        elif isinstance(frame, spdy.RstStream):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream._on_reset(frame.status)
        elif isinstance(frame, spdy.Settings):
            self.peer_flow_control = True
            window = frame.values.get(spdy.SETTINGS_INITIAL_WINDOW_SIZE)
            if window is not None and window <= spdy.MAX_WINDOW:
                delta = window - self.peer_initial_window
                self.peer_initial_window = window
                for stream in self.streams.values():
                    stream.send_window += delta
                    stream._window_open.set()
        elif isinstance(frame, spdy.WindowUpdate):
            self.peer_flow_control = True
            if frame.stream_id == 0:
                self.send_window += frame.delta
                for stream in self.streams.values():
                    stream._window_open.set()
            else:
                stream = self.streams.get(frame.stream_id)
                if stream is not None:
                    stream.send_window += frame.delta
                    if stream.send_window > spdy.MAX_WINDOW:
                        stream.reset(spdy.FLOW_CONTROL_ERROR)
                    else:
                        stream._window_open.set()
        elif isinstance(frame, spdy.Ping):
            if frame.id % 2 == 1:  # the peer's ping: answer it; our own (even) pings need nothing
                self.send(frame)
        elif isinstance(frame, spdy.GoAway):
            self._goaway_sent = True  # the peer is going away: no point telling it
            self.ended.set()
            self._end()
        # SYN_REPLY: we never open streams, so there is nothing to reply to; ignored.

    def _open(self, frame: spdy.SynStream) -> None:
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self._last_peer_stream:
            log.warning("SPDY stream id out of order: closing the connection", extra={"stream_id": sid})
            self.goaway(spdy.GOAWAY_PROTOCOL_ERROR)
            self._end()
            return
        self._last_peer_stream = sid
        if self._goaway_sent:
            self.send(spdy.RstStream(sid, spdy.REFUSED_STREAM))
            return
        if len(self.streams) >= self.max_streams:
            self.send(spdy.RstStream(sid, spdy.REFUSED_STREAM))
            return
        stream = SpdyStream(self, sid, frame.headers, frame.fin)
        self.streams[sid] = stream
        self.send(spdy.SynReply(sid, {}))
        self.on_stream(stream)
