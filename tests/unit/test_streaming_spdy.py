"""SPDY/3.1 framing and the server session: frames, header compression, flow control, RST and GOAWAY."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from crio_py.streaming import spdy
from crio_py.streaming.spdy_session import SpdySession, SpdyStream, StreamReset


def test_dictionary_is_spdy3s() -> None:
    # The zlib header of every first header block carries this Adler-32: a wrong byte breaks interop.
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 3821447106
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")


def test_every_frame_round_trips_across_arbitrary_splits() -> None:
    frames: list[spdy.Frame] = [
        spdy.SynStream(1, {"streamtype": ["error"], "port": ["8080"], "multi": ["a", "b"]}, spdy.FLAG_FIN, 0, 3),
        spdy.SynReply(1, {}),
        spdy.HeadersFrame(1, {"x": ["y"]}, spdy.FLAG_FIN),
        spdy.DataFrame(1, b"hello", spdy.FLAG_FIN),
        spdy.DataFrame(3, b""),
        spdy.RstStream(5, spdy.CANCEL),
        spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20, spdy.SETTINGS_MAX_CONCURRENT_STREAMS: 100}),
        spdy.Ping(7),
        spdy.GoAway(9, spdy.GOAWAY_PROTOCOL_ERROR),
        spdy.WindowUpdate(0, 12345),
        spdy.SynStream(3, {"streamtype": ["data"], "port": ["8080"]}),  # reuses the compression context
    ]
    encoder = spdy.Encoder()
    wire = b"".join(encoder.encode(f) for f in frames)
    for step in (1, 7, len(wire)):
        decoder = spdy.Decoder()
        got: list[spdy.Frame] = []
        for i in range(0, len(wire), step):
            got += decoder.feed(wire[i : i + step])
        assert got == frames


def test_wire_format_of_a_data_frame_and_a_control_frame() -> None:
    encoder = spdy.Encoder()
    assert encoder.encode(spdy.DataFrame(5, b"ab", spdy.FLAG_FIN)) == b"\x00\x00\x00\x05\x01\x00\x00\x02ab"
    assert encoder.encode(spdy.Ping(1)) == b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"
    assert encoder.encode(spdy.RstStream(3, 5)) == b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x03\x00\x00\x00\x05"


def test_header_blocks_decompress_with_the_dictionary_as_zlib_would() -> None:
    block = spdy.Encoder().encode(spdy.SynReply(1, {"streamtype": ["stdout"]}))[12:]
    raw = zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(block)
    assert raw == struct.pack(">II", 1, 10) + b"streamtype" + struct.pack(">I", 6) + b"stdout"


def test_unknown_control_frames_are_ignored() -> None:
    unknown = b"\x80\x03\x00\x0a\x00\x00\x00\x02zz"  # type 10 (CREDENTIAL, dropped in SPDY/3.1)
    assert spdy.Decoder().feed(unknown + spdy.Encoder().encode(spdy.Ping(3))) == [spdy.Ping(3)]


@pytest.mark.parametrize(
    ("wire", "what"),
    [
        (b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01", "version"),
        (b"\x80\x03\x00\x03\x00\x00\x00\x04\x00\x00\x00\x01", "length"),
        (b"\x80\x03\x00\x09\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00", "delta of 0"),
        (b"\x80\x03\x00\x02\x00\x00\x00\x08\x00\x00\x00\x01garbage!", "decompress"),
        (b"\x80\x03\x00\x01\x01\x00\x00\x00", "limit"),
    ],
)
def test_malformed_frames_are_protocol_errors(wire: bytes, what: str) -> None:
    if what == "limit":
        wire = b"\x80\x03\x00\x01\x00\xff\xff\xff"
    with pytest.raises(spdy.ProtocolError):
        spdy.Decoder().feed(wire)


def test_header_names_must_be_lowercase_and_unique() -> None:
    raw = struct.pack(">II", 1, 4) + b"Port" + struct.pack(">I", 2) + b"80"
    compressor = zlib.compressobj(zdict=spdy.DICTIONARY)
    block = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
    frame = b"\x80\x03\x00\x02" + struct.pack(">I", 4 + len(block)) + struct.pack(">I", 1) + block
    with pytest.raises(spdy.ProtocolError, match="bad header name"):
        spdy.Decoder().feed(frame)


class FakeTransport:
    """The server's side of a connection: bytes from the test in, frames to the test out."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.decoder = spdy.Decoder()
        self.sent: list[spdy.Frame] = []
        self.closed = False

    async def read(self, n: int) -> bytes:
        return await self.incoming.get()

    def write(self, data: bytes) -> None:
        self.sent += self.decoder.feed(data)

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        self.incoming.put_nowait(b"")  # as a closed socket: the pending read ends


class Peer:
    def __init__(self, transport: FakeTransport):
        self.transport = transport
        self.encoder = spdy.Encoder()

    def send(self, *frames: spdy.Frame) -> None:
        self.transport.incoming.put_nowait(b"".join(self.encoder.encode(f) for f in frames))

    def eof(self) -> None:
        self.transport.incoming.put_nowait(b"")


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _session(**kw: object) -> tuple[SpdySession, Peer, list[SpdyStream]]:
    transport = FakeTransport()
    opened: list[SpdyStream] = []
    session = SpdySession(transport, opened.append, **kw)  # type: ignore[arg-type]
    return session, Peer(transport), opened


def test_streams_are_replied_read_and_half_closed() -> None:
    async def main() -> None:
        session, peer, opened = _session()
        runner = asyncio.create_task(session.run())
        peer.send(spdy.SynStream(1, {"streamtype": ["stdin"]}), spdy.DataFrame(1, b"abc"), spdy.DataFrame(1, b"d", 1))
        await _settle()
        (stream,) = opened
        assert peer.transport.sent[:2] == [  # what a flow-controlled peer may send us, per stream and in all
            spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20}),
            spdy.WindowUpdate(0, (1 << 20) - spdy.DEFAULT_WINDOW),
        ]
        assert stream.headers == {"streamtype": "stdin"}
        assert spdy.SynReply(1, {}) in peer.transport.sent
        assert await stream.read() == b"abcd"
        assert await stream.read() == b""
        await stream.write(b"out")
        stream.close()
        assert peer.transport.sent[-2:] == [spdy.DataFrame(1, b"out"), spdy.DataFrame(1, b"", spdy.FLAG_FIN)]
        peer.send(spdy.Ping(1), spdy.Ping(2))
        await _settle()
        assert peer.transport.sent[-1] == spdy.Ping(1)  # answered the peer's ping, not an even one
        peer.eof()
        await runner
        assert peer.transport.closed

    asyncio.run(main())


def test_bad_stream_ids_end_the_session_with_goaway() -> None:
    async def main() -> None:
        session, peer, opened = _session()
        runner = asyncio.create_task(session.run())
        peer.send(spdy.SynStream(3, {}), spdy.SynStream(1, {}))
        await runner
        assert len(opened) == 1
        assert spdy.GoAway(3, spdy.GOAWAY_PROTOCOL_ERROR) in peer.transport.sent

    asyncio.run(main())


def test_reset_and_goaway_from_the_peer() -> None:
    async def main() -> None:
        session, peer, opened = _session()
        runner = asyncio.create_task(session.run())
        peer.send(spdy.SynStream(1, {}), spdy.SynStream(3, {}), spdy.RstStream(1, spdy.CANCEL))
        await _settle()
        first, second = opened
        assert await first.read() == b"" and first.reset_status == spdy.CANCEL
        with pytest.raises(StreamReset):
            await first.write(b"x")
        peer.send(spdy.DataFrame(99, b"x"))  # a stream that was never opened
        await _settle()
        assert spdy.RstStream(99, spdy.INVALID_STREAM) in peer.transport.sent
        peer.send(spdy.GoAway(3))
        await runner
        assert second.reset_status is not None
        with pytest.raises(StreamReset):
            await second.write(b"x")

    asyncio.run(main())


def test_send_windows_are_honoured_once_the_peer_does_flow_control() -> None:
    async def main() -> None:
        session, peer, opened = _session()
        runner = asyncio.create_task(session.run())
        peer.send(spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1000}), spdy.SynStream(1, {}))
        await _settle()
        (stream,) = opened
        writer = asyncio.create_task(stream.write(b"x" * 2500))
        await _settle()
        sent = sum(len(f.data) for f in peer.transport.sent if isinstance(f, spdy.DataFrame))
        assert sent == 1000 and not writer.done()
        peer.send(spdy.WindowUpdate(1, 1000))
        await _settle()
        assert sum(len(f.data) for f in peer.transport.sent if isinstance(f, spdy.DataFrame)) == 2000
        peer.send(spdy.WindowUpdate(1, 5000))
        await writer
        assert sum(len(f.data) for f in peer.transport.sent if isinstance(f, spdy.DataFrame)) == 2500
        peer.eof()
        await runner

    asyncio.run(main())


def test_peers_without_flow_control_are_not_waited_for_and_get_window_updates() -> None:
    async def main() -> None:
        session, peer, opened = _session()
        runner = asyncio.create_task(session.run())
        peer.send(spdy.SynStream(1, {}))
        await _settle()
        (stream,) = opened
        await stream.write(b"y" * 300_000)  # beyond the 64 KiB default window: Go's spdystream never opens it
        peer.send(spdy.DataFrame(1, b"z" * 600_000))
        await _settle()
        received = b""
        while len(received) < 600_000:
            received += await stream.read()
        updates = [f for f in peer.transport.sent if isinstance(f, spdy.WindowUpdate)]
        assert {u.stream_id for u in updates} == {0, 1}
        peer.eof()
        await runner

    asyncio.run(main())


def test_idle_sessions_end_with_goaway() -> None:
    async def main() -> None:
        session, peer, _ = _session(idle_timeout=0.05)
        await session.run()
        assert isinstance(peer.transport.sent[-1], spdy.GoAway)
        assert peer.transport.closed

    asyncio.run(main())
