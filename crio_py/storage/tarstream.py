"""A streaming reader of tar archives (ustar, GNU and pax), for unpacking image layers.

Python's tarfile costs about 30 µs of interpreter time per member before anything is written,
which dominates layers of many small files; this reader parses headers with one struct call and
hands out entries whose data the caller copies straight into its file. It reads what image
builders write: ustar (with the name prefix), GNU long names and links, base-256 numbers, pax
records (per entry and global; binary-safe, so ``SCHILY.xattr.*`` values keep their bytes).
Sparse files are refused: no image builder writes them.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

BLOCK = 512
REGULAR, HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO = "0", "1", "2", "3", "4", "5", "6"
# name, mode, uid, gid, size, mtime, chksum, type, linkname, magic+version, uname, gname, devmajor,
# devminor, prefix (the GNU format keeps other things where ustar has the prefix).
_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s155s12x")
_USTAR = b"ustar\x0000"
# Types whose size says nothing about data: none follows them (as tarfile and Go's archive/tar read it).
_HEADER_ONLY = (HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO)


class TarFormatError(Exception):
    """The archive is not a tar stream we can read (garbled, truncated, or of a kind not supported)."""


@dataclass
class Entry:
    """One member: its metadata, and (for regular files) ``size`` bytes of data to read next."""

    name: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: float
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


def _number(field_: bytes) -> int:
    if field_ and field_[0] & 0x80:  # base-256 (GNU), two's complement when the sign byte is 0xff
        value = int.from_bytes(field_, "big")
        return value - (1 << (8 * len(field_))) if field_[0] == 0xFF else value & ~(0x80 << (8 * (len(field_) - 1)))
    text = field_.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(f"bad number {field_!r} in a tar header") from None


def _signed_checksum_ok(header: bytes) -> bool:
    """Some old tars summed the header as signed bytes."""
    chksum = _number(header[148:156])
    return chksum == sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 8 * 32


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    """``<length> <key>=<value>\\n`` records; values are raw bytes (xattrs may be binary)."""
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("bad pax record length") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("bad pax record")
        key, _, value = record[:-1].partition(b"=")
        out[key] = value
        pos += length
    return out


class TarReader:
    """Iterate ``entries()``; for each regular file read exactly ``entry.size`` bytes with
    ``read_data`` or ``copy_data`` before asking for the next entry (``skip`` does it otherwise)."""

    def __init__(self, stream: IO[bytes]):
        self._stream = stream
        self._left = 0  # data bytes of the current entry not read yet
        self._pad = 0
        self._global: dict[bytes, bytes] = {}

    def _read_exact(self, n: int) -> bytes:
        data = self._stream.read(n)
        if len(data) != n:
            raise TarFormatError("the archive ends in the middle of an entry")
        return data

    def skip(self) -> None:
        """Pass over whatever remains of the current entry's data and padding."""
        while self._left:
            self._left -= len(self._read_exact(min(self._left, 1 << 20)))
        if self._pad:
            self._read_exact(self._pad)
            self._pad = 0

    def read_data(self) -> bytes:
        """All the current entry's data at once (for small files)."""
        data = self._read_exact(self._left)
        self._left = 0
        return data

    def copy_data(self, fd: int, buffer: memoryview) -> None:
        """Write the current entry's data to ``fd``, through ``buffer``."""
        while self._left:
            view = buffer[: min(self._left, len(buffer))]
            got = self._stream.readinto(view)  # type: ignore[attr-defined]
            if not got:
                raise TarFormatError("the archive ends in the middle of an entry")
            self._left -= got
            chunk = view[:got]
            while chunk:
                chunk = chunk[os.write(fd, chunk) :]

    def _block_payload(self, size: int) -> bytes:
        data = self._read_exact(size)
        pad = -size % BLOCK
        if pad:
            self._read_exact(pad)
        return data

    def entries(self) -> Iterator[Entry]:
        """Each member in order; stops at the end-of-archive block (the rest stays unread)."""
        pax: dict[bytes, bytes] = {}
        long_name = long_link = b""
        while True:
            self.skip()
            header = self._stream.read(BLOCK)
            if len(header) < BLOCK:
                if not header:
                    return  # no end-of-archive blocks: tolerated, as tar does
                raise TarFormatError("the archive ends in the middle of a header")
            if header == bytes(BLOCK):
                return
            (name, mode, uid, gid, size, mtime, chksum, kind, linkname, magic, _un, _gn, major, minor,
             prefix) = _HEADER.unpack(header)
            if _number(chksum) != sum(header) - sum(header[148:156]) + 8 * 32 and not _signed_checksum_ok(header):
                raise TarFormatError("a tar header checksum does not match (corrupt archive)")
            length = _number(size)
            if kind in (b"x", b"g", b"L", b"K"):
                payload = self._block_payload(length)
                if kind == b"x":
                    pax.update(_pax_records(payload))
                elif kind == b"g":
                    self._global.update(_pax_records(payload))
                elif kind == b"L":
                    long_name = payload.split(b"\0", 1)[0]
                else:
                    long_link = payload.split(b"\0", 1)[0]
                continue
            if kind == b"S" or any(k.startswith(b"GNU.sparse.") for k in pax):
                raise TarFormatError("sparse files in a layer are not supported")
            records = {**self._global, **pax}
            path = long_name or records.get(b"path") or (
                prefix.split(b"\0", 1)[0] + b"/" + name.split(b"\0", 1)[0]
                if magic == _USTAR and prefix[0] else name.split(b"\0", 1)[0]
            )
            link = long_link or records.get(b"linkpath") or linkname.split(b"\0", 1)[0]
            if b"size" in records:
                length = int(records[b"size"])
            entry = Entry(
                name=os.fsdecode(path),
                type=REGULAR if kind in (b"\0", b"7") else kind.decode("latin-1"),
                mode=_number(mode) & 0o7777,
                uid=int(records[b"uid"]) if b"uid" in records else _number(uid),
                gid=int(records[b"gid"]) if b"gid" in records else _number(gid),
                size=length,
                mtime=float(records[b"mtime"]) if b"mtime" in records else _number(mtime),
                linkname=os.fsdecode(link),
                devmajor=_number(major),
                devminor=_number(minor),
                xattrs={os.fsdecode(k[len(b"SCHILY.xattr.") :]): v for k, v in records.items()
                        if k.startswith(b"SCHILY.xattr.")},
            )
            pax, long_name, long_link = {}, b"", b""
            self._left = 0 if entry.type in _HEADER_ONLY else length
            self._pad = -self._left % BLOCK
            yield entry


__all__ = [
    "BLOCKDEV", "CHARDEV", "DIRECTORY", "FIFO", "HARDLINK", "REGULAR", "SYMLINK", "Entry", "TarFormatError",
    "TarReader",
]
