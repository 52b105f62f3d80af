"""The streaming tar reader against archives written by Python's tarfile in every format."""

from __future__ import annotations

import io
import tarfile
import tempfile

import pytest

from crio_py.storage.tarstream import DIRECTORY, HARDLINK, REGULAR, SYMLINK, Entry, TarFormatError, TarReader

LONG = "d" * 120 + "/" + "f" * 120  # longer than a ustar name, too long for its prefix split too
PREFIXED = "p" * 90 + "/" + "n" * 90  # fits ustar's prefix + name


def archive(fmt: int, *members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo,
                                                                                                   bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime, info.mode = kind, len(data), 1_234_567_890, 0o640
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def read_all(data: bytes) -> list[tuple[Entry, bytes]]:
    reader = TarReader(io.BufferedReader(io.BytesIO(data)))  # type: ignore[arg-type]
    out = []
    for entry in reader.entries():
        out.append((entry, reader.read_data() if entry.type == REGULAR else b""))
    return out


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_every_format_reads_back_names_links_and_metadata(fmt: int) -> None:
    members = [
        member("dir", tarfile.DIRTYPE, mode=0o755),
        member(PREFIXED, data=b"prefixed"),
        member("dir/file", data=b"x" * 1000, uid=1000, gid=100, mode=0o4755),
        member("dir/link", tarfile.SYMTYPE, linkname="file"),
        member("dir/hard", tarfile.LNKTYPE, linkname="dir/file"),
        member("empty", data=b""),
    ]
    if fmt != tarfile.USTAR_FORMAT:
        members.append(member(LONG, data=b"long", uid=3_000_000_000))  # big uid: base-256 (GNU) or pax
        members.append(member("longlink", tarfile.SYMTYPE, linkname=LONG))
    got = read_all(archive(fmt, *members))
    assert [(e.name.rstrip("/"), e.type, data) for e, data in got] == [
        (info.name, info.type.decode() if info.type != tarfile.REGTYPE else REGULAR, data) for info, data in members
    ]
    by_name = {e.name.rstrip("/"): e for e, _d in got}
    assert (by_name["dir/file"].uid, by_name["dir/file"].gid, by_name["dir/file"].mode) == (1000, 100, 0o4755)
    assert by_name["dir/file"].mtime == 1_234_567_890
    assert by_name["dir/link"].linkname == "file" and by_name["dir/hard"].type == HARDLINK
    assert by_name["dir"].type == DIRECTORY and by_name["dir/link"].type == SYMLINK
    if fmt != tarfile.USTAR_FORMAT:
        assert by_name[LONG].uid == 3_000_000_000 and by_name["longlink"].linkname == LONG


def test_pax_records_keep_binary_xattrs_fractional_times_and_global_headers() -> None:
    info, data = member("f", data=b"1", pax_headers={"SCHILY.xattr.security.capability": "\x01\x00\udcff",
                                                     "mtime": "1600000000.5"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"uid": "4242"}) as tar:
        tar.addfile(info, io.BytesIO(data))
    (entry, content), = read_all(buf.getvalue())
    assert entry.xattrs == {"security.capability": b"\x01\x00\xff"}
    assert entry.mtime == 1600000000.5 and content == b"1"
    assert entry.uid == 4242  # from the global header


def test_copy_data_streams_big_files_through_a_small_buffer() -> None:
    payload = bytes(range(256)) * 5000
    reader = TarReader(io.BufferedReader(io.BytesIO(archive(tarfile.PAX_FORMAT, member("big", data=payload),
                                                            member("after", data=b"ok")))))  # type: ignore[arg-type]
    entries = reader.entries()
    assert next(entries).size == len(payload)
    with tempfile.TemporaryFile() as out:
        reader.copy_data(out.fileno(), memoryview(bytearray(4096)))
        out.seek(0)
        assert out.read() == payload
    after = next(entries)
    assert after.name == "after" and reader.read_data() == b"ok"
    assert list(entries) == []


def test_entries_not_read_are_skipped() -> None:
    data = archive(tarfile.GNU_FORMAT, member("a", data=b"a" * 700), member("b", data=b"b"))
    reader = TarReader(io.BufferedReader(io.BytesIO(data)))  # type: ignore[arg-type]
    assert [e.name for e in reader.entries()] == ["a", "b"]


def test_a_corrupt_header_a_truncated_archive_and_sparse_files_are_format_errors() -> None:
    good = archive(tarfile.GNU_FORMAT, member("a", data=b"a" * 700))
    corrupt = bytearray(good)
    corrupt[0] ^= 0xFF
    with pytest.raises(TarFormatError, match="checksum"):
        read_all(bytes(corrupt))
    with pytest.raises(TarFormatError, match="ends in the middle"):
        read_all(good[:600])
    with pytest.raises(TarFormatError, match="ends in the middle of a header"):
        read_all(good[:100])
    sparse = archive(tarfile.GNU_FORMAT, member("s", tarfile.GNUTYPE_SPARSE))
    with pytest.raises(TarFormatError, match="sparse"):
        read_all(sparse)
    assert len(read_all(good[:1536])) == 1  # no end-of-archive blocks at all: tolerated
