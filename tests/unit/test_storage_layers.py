"""The layer store: unpacking in overlay form, metadata kept, escapes refused, digests checked."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from crio_py.errors import Internal, InvalidArgument
from crio_py.storage.layers import LayerStore, chain_ids, unpack

MTIME = 1_600_000_000

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="ownership, devices and trusted xattrs need root")


Entry = tuple[tarfile.TarInfo, bytes]


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, len(data), MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def tar_bytes(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def unpacked(tmp_path: Path, *entries: Entry) -> Path:
    root = tmp_path / "diff"
    root.mkdir()
    unpack(io.BytesIO(tar_bytes(*entries)), root)
    return root


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_chain_ids_follow_the_oci_definition() -> None:
    a, b = sha(b"a"), sha(b"b")
    assert chain_ids([a]) == [a]
    assert chain_ids([a, b]) == [a, sha(f"{a} {b}".encode())]


@needs_root
def test_whiteouts_become_overlay_form(tmp_path: Path) -> None:
    root = unpacked(
        tmp_path,
        entry("etc", tarfile.DIRTYPE),
        entry("etc/.wh.gone"),
        entry("opaque", tarfile.DIRTYPE),
        entry("opaque/.wh..wh..opq"),
        entry("opaque/kept", data=b"k"),
        entry(".wh..wh.plnk", tarfile.DIRTYPE),
    )
    gone = os.lstat(root / "etc" / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert not (root / "etc" / ".wh.gone").exists()
    assert os.getxattr(root / "opaque", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(root / "opaque")) == ["kept"]
    assert not (root / ".wh..wh.plnk").exists()  # aufs bookkeeping is dropped


@needs_root
def test_metadata_links_and_devices_are_kept(tmp_path: Path) -> None:
    root = unpacked(
        tmp_path,
        entry("./", tarfile.DIRTYPE, mode=0o751),
        entry("bin", tarfile.DIRTYPE, uid=0, gid=0),
        entry("bin/tool", data=b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=2000,
              pax_headers={"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.user.bin": "\udcff\x00\x01"}),
        entry("bin/hard", tarfile.LNKTYPE, linkname="bin/tool"),
        entry("bin/soft", tarfile.SYMTYPE, linkname="/bin/tool", uid=7, gid=7),
        entry("dev", tarfile.DIRTYPE),
        entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        entry("dev/loop9", tarfile.BLKTYPE, devmajor=7, devminor=9, mode=0o660),
        entry("dev/pipe", tarfile.FIFOTYPE, mode=0o600),
    )
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o751
    tool = os.lstat(root / "bin" / "tool")
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid, tool.st_gid, tool.st_mtime) == (0o4755, 1000, 2000, MTIME)
    assert os.getxattr(root / "bin" / "tool", "user.note") == b"hello"
    assert os.getxattr(root / "bin" / "tool", "user.bin") == b"\xff\x00\x01"
    assert os.lstat(root / "bin" / "hard").st_ino == tool.st_ino
    soft = os.lstat(root / "bin" / "soft")
    assert os.readlink(root / "bin" / "soft") == "/bin/tool"
    assert (soft.st_uid, soft.st_mtime) == (7, MTIME)
    null = os.lstat(root / "dev" / "null")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK(os.lstat(root / "dev" / "loop9").st_mode)
    assert stat.S_ISFIFO(os.lstat(root / "dev" / "pipe").st_mode)
    # Directory mtimes survive the entries created in them afterwards.
    assert os.lstat(root / "bin").st_mtime == MTIME and os.lstat(root / "dev").st_mtime == MTIME


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    root = unpacked(
        tmp_path,
        entry("x", data=b"first"),
        entry("x", data=b"second"),
        entry("d", tarfile.SYMTYPE, linkname="/tmp"),
        entry("d", tarfile.DIRTYPE),
        entry("d/f", data=b"in a real dir"),
        entry("was-dir", tarfile.DIRTYPE),
        entry("was-dir/f", data=b"1"),
        entry("was-dir", data=b"now a file"),
    )
    assert (root / "x").read_bytes() == b"second"
    assert (root / "was-dir").read_bytes() == b"now a file"
    assert not (root / "d").is_symlink() and (root / "d" / "f").read_bytes() == b"in a real dir"


@pytest.mark.parametrize(
    "evil",
    [
        [entry("../escaped", data=b"x")],
        [entry("a/../../escaped", data=b"x")],
        [entry("/etc/escaped", data=b"x")],
        [entry("link", tarfile.SYMTYPE, linkname="/"), entry("link/escaped", data=b"x")],
        [entry("link", tarfile.SYMTYPE, linkname="../../.."), entry("link/escaped", data=b"x")],
        [entry("hard", tarfile.LNKTYPE, linkname="../../etc/passwd")],
        [entry("link", tarfile.SYMTYPE, linkname="/etc"), entry("hard", tarfile.LNKTYPE, linkname="link/passwd")],
        [entry(".wh..", data=b"")],
        [entry("file", data=b"x"), entry("file/under", data=b"x")],
    ],
)
def test_entries_escaping_the_layer_are_refused(tmp_path: Path, evil: list[Entry]) -> None:
    # Two levels down, so that "../.." from the layer root still lands inside tmp_path.
    root = tmp_path / "a" / "b"
    root.mkdir(parents=True)
    with pytest.raises(InvalidArgument):
        unpack(io.BytesIO(tar_bytes(*evil)), root)
    outside = {p for p in tmp_path.rglob("*") if p != root and root not in p.parents}
    assert outside == {tmp_path / "a"}
    assert not Path("/etc/escaped").exists()


COMPRESSIONS: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda data: data,
    "gzip": lambda data: gzip.compress(data, compresslevel=1),
    # Two frames: a layer may be written in several, all of them are the layer.
    "zstd": lambda data: (zstandard.ZstdCompressor().compress(data[:700])
                          + zstandard.ZstdCompressor().compress(data[700:])),
}


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_store_unpacks_each_compression_once_shared_by_chain_id(tmp_path: Path, compression: str) -> None:
    layer = tar_bytes(entry("hello", data=b"world" * 300))
    diff_id = sha(layer)
    store = LayerStore(tmp_path)
    info = store.add(diff_id, diff_id, io.BytesIO(COMPRESSIONS[compression](layer)))  # type: ignore[arg-type]
    assert info.size == len(layer) and store.has(diff_id)
    assert (store.diff_dir(diff_id) / "hello").read_bytes() == b"world" * 300
    assert store.chain_ids() == [diff_id]
    store.remove(diff_id)
    assert not store.has(diff_id) and store.chain_ids() == []
    assert sorted(os.listdir(store.root)) == []


def test_store_refuses_content_that_is_not_the_diff_id_and_keeps_nothing(tmp_path: Path) -> None:
    layer = tar_bytes(entry("a", data=b"a"))
    claimed = sha(b"something else")
    store = LayerStore(tmp_path)
    with pytest.raises(Internal) as err:
        store.add(claimed, claimed, io.BytesIO(gzip.compress(layer)))  # type: ignore[arg-type]
    assert claimed in err.value.message and sha(layer) in err.value.message
    assert os.listdir(store.root) == []


def test_store_failing_unpack_keeps_nothing(tmp_path: Path) -> None:
    layer = tar_bytes(entry("ok", data=b"1"), entry("../bad", data=b"2"))
    store = LayerStore(tmp_path)
    with pytest.raises(InvalidArgument):
        store.add(sha(layer), sha(layer), io.BytesIO(layer))  # type: ignore[arg-type]
    assert os.listdir(store.root) == []


def test_store_start_removes_leftovers_of_a_crash(tmp_path: Path) -> None:
    store = LayerStore(tmp_path)
    (store.root / ".tmp-half-made" / "diff").mkdir(parents=True)
    (store.root / ".tmp-blob").write_bytes(b"partial")
    incomplete = store.root / ("c" * 64)
    (incomplete / "diff").mkdir(parents=True)  # no layer.json: never finished
    LayerStore(tmp_path)
    assert sorted(os.listdir(store.root)) == ["c" * 64]
    assert not store.has("sha256:" + "c" * 64)


def test_gzip_members_in_a_row_and_zero_padding_are_one_layer(tmp_path: Path) -> None:
    layer = tar_bytes(entry("big", data=os.urandom(300_000)), entry("small", data=b"1"))
    blob = gzip.compress(layer[:1000]) + gzip.compress(layer[1000:]) + b"\0" * 512
    store = LayerStore(tmp_path)
    store.add(sha(layer), sha(layer), io.BytesIO(blob))  # type: ignore[arg-type]
    assert (store.diff_dir(sha(layer)) / "small").read_bytes() == b"1"


@pytest.mark.parametrize("damage", ["truncated", "bad-crc", "junk-after"])
def test_a_damaged_gzip_stream_is_a_readable_error_and_keeps_nothing(tmp_path: Path, damage: str) -> None:
    layer = tar_bytes(entry("f", data=b"x" * 5000))
    blob = bytearray(gzip.compress(layer))
    if damage == "truncated":
        del blob[-20:]
    elif damage == "bad-crc":
        blob[-6] ^= 0xFF  # the member's CRC32 (its last 8 bytes are CRC and length)
    else:
        blob += b"junk"
    store = LayerStore(tmp_path)
    with pytest.raises(Internal, match="not a readable tar archive"):
        store.add(sha(layer), sha(layer), io.BytesIO(bytes(blob)))  # type: ignore[arg-type]
    assert os.listdir(store.root) == []
