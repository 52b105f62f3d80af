"""SPDY/3.1 framing, without I/O: frames to bytes and bytes to frames, header blocks through zlib.

What kubectl, kubelet and crictl speak for exec/attach/port-forward (the ``SPDY/3.1`` HTTP upgrade,
Go's ``moby/spdystream``). Every frame starts with 8 bytes: a control frame is
``1 | version(15) | type(16) | flags(8) | length(24)``, a data frame ``0 | stream id(31) | flags(8) |
length(24)``. Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are compressed by one zlib stream per
direction and connection, primed with the dictionary of the SPDY/3 draft, each block ending with a
sync flush: the compression context spans the whole connection, so blocks must be decoded in the
order they arrive and encoded in the order they are sent.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes.
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
UNSUPPORTED_VERSION = 4
CANCEL = 5
INTERNAL_ERROR = 6
FLOW_CONTROL_ERROR = 7
STREAM_IN_USE = 8
STREAM_ALREADY_CLOSED = 9
FRAME_TOO_LARGE = 11

# GOAWAY status codes.
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

SETTINGS_MAX_CONCURRENT_STREAMS = 4
SETTINGS_INITIAL_WINDOW_SIZE = 7

# Every stream and the session start with this send window (SPDY/3.1 section 2.6.8).
DEFAULT_WINDOW = 64 * 1024
MAX_WINDOW = 0x7FFFFFFF
MAX_STREAM_ID = 0x7FFFFFFF
# Lengths are 24 bits; a header block larger than this, compressed or not, is refused.
MAX_LENGTH = 0xFFFFFF
MAX_HEADER_BLOCK = 256 * 1024

_HEADER = struct.Struct(">II")

# The zlib dictionary of SPDY/3: length-prefixed header names and values, then common text.
_DICTIONARY_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date etag "
    "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
    "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
    "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
    "method get status 200_OK version HTTP/1.1 url public set-cookie keep-alive origin"
)
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _dictionary() -> bytes:
    out = bytearray()
    for word in (w.replace("_", " ") for w in _DICTIONARY_WORDS.split()):
        out += struct.pack(">I", len(word)) + word.encode()
    return bytes(out) + _DICTIONARY_TAIL.encode()


DICTIONARY = _dictionary()

Headers = dict[str, list[str]]


class ProtocolError(Exception):
    """The peer broke the framing: the session ends with GOAWAY ``status``."""

    def __init__(self, message: str, status: int = GOAWAY_PROTOCOL_ERROR):
        super().__init__(message)
        self.status = status


class _Fin:
    flags: int

    @property
    def fin(self) -> bool:
        """The sender's last frame on this stream."""
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class DataFrame(_Fin):
    stream_id: int
    data: bytes
    flags: int = 0


@dataclass(frozen=True)
class SynStream(_Fin):
    stream_id: int
    headers: Headers
    flags: int = 0
    associated_id: int = 0
    priority: int = 0


@dataclass(frozen=True)
class SynReply(_Fin):
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass(frozen=True)
class HeadersFrame(_Fin):
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    values: dict[int, int] = field(default_factory=dict)
    flags: int = 0


@dataclass(frozen=True)
class Ping:
    id: int


@dataclass(frozen=True)
class GoAway:
    last_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = DataFrame | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"SPDY frame payload of {len(payload)} bytes is too large")
    return _HEADER.pack(0x80000000 | VERSION << 16 | kind, flags << 24 | len(payload)) + payload


class Encoder:
    """Frames to bytes for one direction of one connection (owns that direction's zlib stream)."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
        )

    def _block(self, headers: Headers) -> bytes:
        raw = bytearray(struct.pack(">I", len(headers)))
        for name, values in headers.items():
            key, value = name.lower().encode(), "\0".join(values).encode()
            raw += struct.pack(">I", len(key)) + key + struct.pack(">I", len(value)) + value
        return self._zlib.compress(bytes(raw)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        """The bytes of ``frame``; header blocks must be encoded in sending order."""
        if isinstance(frame, DataFrame):
            if len(frame.data) > MAX_LENGTH:
                raise ValueError("SPDY data frame too large")
            return _HEADER.pack(frame.stream_id & MAX_STREAM_ID, frame.flags << 24 | len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            head = struct.pack(">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, 0)
            return _control(SYN_STREAM, frame.flags, head + self._block(frame.headers))
        if isinstance(frame, SynReply):
            return _control(SYN_REPLY, frame.flags, struct.pack(">I", frame.stream_id) + self._block(frame.headers))
        if isinstance(frame, HeadersFrame):
            return _control(HEADERS, frame.flags, struct.pack(">I", frame.stream_id) + self._block(frame.headers))
        if isinstance(frame, RstStream):
            return _control(RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            entries = b"".join(struct.pack(">II", key & 0xFFFFFF, value) for key, value in frame.values.items())
            return _control(SETTINGS, frame.flags, struct.pack(">I", len(frame.values)) + entries)
        if isinstance(frame, Ping):
            return _control(PING, 0, struct.pack(">I", frame.id))
        if isinstance(frame, GoAway):
            return _control(GOAWAY, 0, struct.pack(">II", frame.last_stream_id, frame.status))
        if isinstance(frame, WindowUpdate):
            return _control(WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


class Decoder:
    """Bytes to frames for one direction of one connection: ``feed()`` what arrived, get whole frames."""

    def __init__(self, max_data: int = MAX_LENGTH) -> None:
        self._zlib = zlib.decompressobj(15, DICTIONARY)
        self._buffer = bytearray()
        self._max_data = max_data

    def feed(self, data: bytes) -> list[Frame]:
        """Every frame completed by ``data``; ProtocolError on a malformed one."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, second = _HEADER.unpack_from(self._buffer)
            flags, length = second >> 24, second & 0xFFFFFF
            control = bool(first & 0x80000000)
            limit = MAX_HEADER_BLOCK + 16 if control else self._max_data
            if length > limit:
                raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            if not control:
                frames.append(DataFrame(first & MAX_STREAM_ID, payload, flags))
                continue
            version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
            if version != VERSION:
                raise ProtocolError(f"unsupported SPDY version {version}")
            frame = self._control(kind, flags, payload)
            if frame is not None:
                frames.append(frame)
        return frames

    def _control(self, kind: int, flags: int, payload: bytes) -> Frame | None:
        def need(size: int, exact: bool = True) -> None:
            if len(payload) < size or (exact and len(payload) != size):
                raise ProtocolError(f"control frame type {kind} has a bad length {len(payload)}")

        if kind == SYN_STREAM:
            need(10, exact=False)
            stream_id, assoc, pri, _slot = struct.unpack_from(">IIBB", payload)
            return SynStream(
                stream_id & MAX_STREAM_ID, self._headers(payload[10:]), flags, assoc & MAX_STREAM_ID, pri >> 5
            )
        if kind in (SYN_REPLY, HEADERS):
            need(4, exact=False)
            (stream_id,) = struct.unpack_from(">I", payload)
            cls = SynReply if kind == SYN_REPLY else HeadersFrame
            return cls(stream_id & MAX_STREAM_ID, self._headers(payload[4:]), flags)
        if kind == RST_STREAM:
            need(8)
            stream_id, status = struct.unpack(">II", payload)
            return RstStream(stream_id & MAX_STREAM_ID, status)
        if kind == SETTINGS:
            need(4, exact=False)
            (count,) = struct.unpack_from(">I", payload)
            need(4 + 8 * count)
            values = {}
            for i in range(count):
                key, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                values[key & 0xFFFFFF] = value
            return Settings(values, flags)
        if kind == PING:
            need(4)
            return Ping(struct.unpack(">I", payload)[0])
        if kind == GOAWAY:
            # SPDY/3 added the status; accept the older 4-byte form too.
            need(4, exact=False)
            last = struct.unpack_from(">I", payload)[0] & MAX_STREAM_ID
            status = struct.unpack_from(">I", payload, 4)[0] if len(payload) >= 8 else GOAWAY_OK
            return GoAway(last, status)
        if kind == WINDOW_UPDATE:
            need(8)
            stream_id, delta = struct.unpack(">II", payload)
            delta &= MAX_WINDOW
            if delta == 0:
                raise ProtocolError("WINDOW_UPDATE with a delta of 0")
            return WindowUpdate(stream_id & MAX_STREAM_ID, delta)
        return None  # unknown control frames are ignored (SPDY/3 section 2.2.1)

    def _headers(self, block: bytes) -> Headers:
        try:
            raw = self._zlib.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise ProtocolError(f"header block does not decompress: {exc}") from None
        if self._zlib.unconsumed_tail:
            raise ProtocolError(f"header block larger than {MAX_HEADER_BLOCK} bytes")
        try:
            (count,) = struct.unpack_from(">I", raw)
            offset = 4
            headers: Headers = {}
            for _ in range(count):
                (size,) = struct.unpack_from(">I", raw, offset)
                name = raw[offset + 4 : offset + 4 + size].decode()
                offset += 4 + size
                (size,) = struct.unpack_from(">I", raw, offset)
                value = raw[offset + 4 : offset + 4 + size].decode()
                offset += 4 + size
                if offset > len(raw) or not name or name != name.lower() or name in headers:
                    raise ProtocolError(f"bad header name {name!r} in header block")
                headers[name] = value.split("\0")
        except (struct.error, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed header block: {exc}") from None
        if offset != len(raw):
            raise ProtocolError("trailing bytes after the header block")
        return headers
