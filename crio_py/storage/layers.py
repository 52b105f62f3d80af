"""The layer store: each image layer unpacked once into ``<root>/layers/<chain-id>/diff``.

Layers are keyed by chain id (the diff id of a layer combined with its parents', as in the OCI
image spec), so images sharing a base share its directories. Unpacking converts OCI whiteouts
to overlayfs form (``.wh.x`` -> a 0:0 character device, ``.wh..wh..opq`` -> the
``trusted.overlay.opaque`` xattr), keeps ownership, modes, mtimes, xattrs, links and devices, and
refuses entries that would land outside the layer. A layer becomes visible only once complete
(unpacked into a temporary directory, then renamed).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import stat
import sys
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from crio_py.errors import Internal, InvalidArgument
from crio_py.state import write_atomic
from crio_py.storage.tarstream import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Entry,
    TarFormatError,
    TarReader,
)

log = logging.getLogger(__name__)
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib reads the gzip header and trailer itself
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The HTTP stack hands blobs over in 64 KiB pieces; larger buffers measured slower (more copying
# and fresh allocations past malloc's mmap threshold), smaller ones cost more Python calls.
CHUNK = 64 * 1024


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


class _HashingReader(io.RawIOBase):
    """Counts and hashes what is read through it (the uncompressed layer: its diff id)."""

    def __init__(self, inner: IO[bytes]):
        self._inner = inner
        self.hasher = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        self.hasher.update(memoryview(buffer)[:n])
        self.size += n
        return n


def _drain(stream: IO[bytes]) -> None:
    while stream.read(CHUNK):
        pass


def _format_errors() -> tuple[type[Exception], ...]:
    """What a truncated or garbled layer raises from the tar reader and the decompressors."""
    errors: tuple[type[Exception], ...] = (TarFormatError, zlib.error, EOFError)
    zstd = sys.modules.get("zstandard")  # loaded only if a zstd layer was seen
    return (*errors, zstd.ZstdError) if zstd else errors


class _Gunzip(io.RawIOBase):
    """A gzip stream (members one after another) inflated by zlib itself, which also checks each
    member's CRC and length. The gzip module frames members in Python and copies each piece
    three more times: this costs a pull about a fifth less CPU."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self._inflate = zlib.decompressobj(_GZIP_WBITS)
        self._input = b""
        self._in_member = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while True:
            if self._inflate.eof:
                # Another member may follow; zero padding after the last one is allowed (as gzip does).
                self._input = self._inflate.unused_data.lstrip(b"\0")
                self._inflate = zlib.decompressobj(_GZIP_WBITS)
                self._in_member = False
            if not self._input:
                self._input = self._raw.read(CHUNK)
                if not self._input:
                    if self._in_member:
                        raise EOFError("the gzip stream ends inside a member")
                    return 0
                if not self._in_member:
                    self._input = self._input.lstrip(b"\0")
                    continue
            self._in_member = True
            out = self._inflate.decompress(self._input, len(buffer))
            self._input = self._inflate.unconsumed_tail
            if out:
                n = len(out)
                buffer[:n] = out
                return n


def _decompressed(raw: io.BufferedReader) -> IO[bytes]:
    head = raw.peek(4)[:4]
    if head.startswith(_GZIP_MAGIC):
        return _Gunzip(raw)  # type: ignore[return-value]
    if head == _ZSTD_MAGIC:
        import zstandard  # only zstd layers need it; the daemon starts without it

        # Layers may hold several frames: all of them are the layer.
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    return raw


@dataclass(frozen=True)
class LayerInfo:
    chain_id: str
    diff_id: str
    size: int


class LayerStore:
    """Unpacked layers under ``<root>/layers``; safe for concurrent pulls of shared layers."""

    def __init__(self, root: Path):
        self.root = root / "layers"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        # Whatever a crash left half made or half removed (directories and blob files).
        for leftover in self.root.glob(".tmp-*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    def _dir(self, chain_id: str) -> Path:
        return self.root / chain_id.removeprefix("sha256:")

    def diff_dir(self, chain_id: str) -> Path:
        """The overlay lowerdir of a layer."""
        return self._dir(chain_id) / "diff"

    def has(self, chain_id: str) -> bool:
        return (self._dir(chain_id) / "layer.json").exists()

    def lock(self, chain_id: str) -> threading.Lock:
        """One lock per layer: two pulls sharing a layer unpack it once."""
        with self._guard:
            return self._locks.setdefault(chain_id, threading.Lock())

    def _scratch(self, what: str) -> Path:
        """A path for temporary work; leftovers of a crash are removed at the next start."""
        return self.root / f".tmp-{what}-{os.getpid()}-{threading.get_ident()}"

    def add(self, chain_id: str, diff_id: str, source: io.RawIOBase) -> LayerInfo:
        """Unpack a layer (gzip, zstd or plain tar) read from ``source`` to its end.

        The uncompressed stream must hash to ``diff_id``. ``source`` may verify itself when its
        end is read (a registry blob does): it is always read to the end, and only then does the
        layer become visible, so a failed check anywhere leaves nothing behind.
        """
        tmp = self._scratch(chain_id.removeprefix("sha256:"))
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "diff").mkdir(parents=True)
        try:
            raw = io.BufferedReader(source, CHUNK)
            reader = _HashingReader(_decompressed(raw))
            unpack(io.BufferedReader(reader, CHUNK), tmp / "diff")
            _drain(reader)  # tar stops at its end-of-archive blocks; the diff id covers the padding too
            _drain(raw)  # a compressed stream may end before its source does
            got = "sha256:" + reader.hasher.hexdigest()
            if got != diff_id:
                raise Internal(f"layer {chain_id}: uncompressed content is {got}, the image config says {diff_id}")
            info = LayerInfo(chain_id=chain_id, diff_id=diff_id, size=reader.size)
            write_atomic(tmp / "layer.json", json.dumps(info.__dict__).encode())
            target = self._dir(chain_id)
            if target.exists():  # a directory without layer.json: an interrupted add or remove
                self._discard(target)
            os.rename(tmp, target)
            return info
        except _format_errors() as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise Internal(f"layer {chain_id} is not a readable tar archive: {type(exc).__name__}: {exc}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def add_tar_bytes(self, chain_id: str, diff_id: str, data: bytes) -> LayerInfo:
        """Unpack an in-memory uncompressed tar (locally built layers, e.g. the pause image)."""
        return self.add(chain_id, diff_id, io.BytesIO(data))  # type: ignore[arg-type]

    def chain_ids(self) -> list[str]:
        return ["sha256:" + p.name for p in self.root.iterdir() if not p.name.startswith(".")]

    def remove(self, chain_id: str) -> None:
        """Delete a layer; it stops being visible before its files go."""
        self._discard(self._dir(chain_id))

    def _discard(self, path: Path) -> None:
        # Renamed first so that a crash half way through leaves a leftover, not a broken layer.
        doomed = self._scratch("rm-" + path.name)
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)


# Files up to this size are read in one call rather than copied through the buffer.
_SMALL_FILE = 256 * 1024
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def unpack(stream: IO[bytes], root: Path) -> None:
    """Extract a layer tar from ``stream`` into ``root`` in overlayfs form (see module docs)."""
    unpacker = _Unpacker(str(root))
    reader = TarReader(stream)
    for entry in reader.entries():
        unpacker.extract(entry, reader)
    # Directory mtimes last: creating entries inside them changed them.
    for path, mtime in reversed(unpacker.dir_times):
        os.utime(path, (mtime, mtime), follow_symlinks=False)


class _Unpacker:
    """One layer's extraction. Paths are plain strings, and the directories known to be real
    (made here, or checked not to be symlinks) are remembered, so that an entry costs its own
    system calls and not a walk over its parents."""

    def __init__(self, root: str):
        self.root = root
        self.dirs: set[str] = {""}  # relative paths
        self.dir_times: list[tuple[str, float]] = []
        self.buffer = memoryview(bytearray(CHUNK))

    def extract(self, entry: Entry, reader: TarReader) -> None:
        rel = self._relative(entry.name)
        if not rel:
            if entry.type != DIRECTORY:
                raise InvalidArgument(f"layer entry {entry.name!r} is the layer root but not a directory")
            self._metadata(self.root, entry)
            return
        self._ensure_dirs(rel.rpartition("/")[0], entry.name)
        parent, _, base = rel.rpartition("/")
        full = os.path.join(self.root, rel)
        if base.startswith(WHITEOUT):
            self._whiteout(parent, base, entry.name)
        elif entry.type == REGULAR:
            self._file(rel, full, entry, reader)
        elif entry.type == DIRECTORY:
            try:
                os.mkdir(full, 0o700)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(full).st_mode):  # a symlink in the way is replaced, never followed
                    self._clear(rel, full)
                    os.mkdir(full, 0o700)
            self.dirs.add(rel)
            self._metadata(full, entry)
        elif entry.type == HARDLINK:
            source_rel = self._relative(entry.linkname)
            self._ensure_dirs(source_rel.rpartition("/")[0], entry.linkname)
            source = os.path.join(self.root, source_rel)
            if not source_rel or not os.path.lexists(source):
                raise InvalidArgument(f"layer hard link {entry.name!r} -> {entry.linkname!r}: no such entry")
            self._create(rel, full, lambda: os.link(source, full, follow_symlinks=False))
            # A hard link shares the source's metadata.
        elif entry.type in (SYMLINK, CHARDEV, BLOCKDEV, FIFO):
            if entry.type == SYMLINK:
                self._create(rel, full, lambda: os.symlink(entry.linkname, full))
            elif entry.type == FIFO:
                self._create(rel, full, lambda: os.mkfifo(full, entry.mode))
            else:
                kind = stat.S_IFCHR if entry.type == CHARDEV else stat.S_IFBLK
                device = os.makedev(entry.devmajor, entry.devminor)
                self._create(rel, full, lambda: os.mknod(full, kind | entry.mode, device))
            self._metadata(full, entry)
        # Anything else (volume labels and the like) has nothing to put on disk.

    def _relative(self, name: str) -> str:
        """The entry's path relative to the root ("" for the root); refuse anything that would leave it."""
        parts = [p for p in name.split("/") if p not in ("", ".")]
        # Absolute names are refused rather than re-rooted: no image builder writes them.
        if name.startswith("/") or ".." in parts:
            raise InvalidArgument(f"layer entry {name!r} escapes the layer root")
        return "/".join(parts)

    def _ensure_dirs(self, rel: str, name: str) -> None:
        """Make ``rel`` and its parents directories; refuse a symlink or a file among them."""
        if rel in self.dirs:
            return
        current = ""
        for part in rel.split("/"):
            current = f"{current}/{part}" if current else part
            if current in self.dirs:
                continue
            full = os.path.join(self.root, current)
            try:
                mode = os.lstat(full).st_mode
            except FileNotFoundError:
                os.mkdir(full, 0o755)
            else:
                if stat.S_ISLNK(mode):
                    raise InvalidArgument(f"layer entry {name!r} would be written through the symlink {part!r}")
                if not stat.S_ISDIR(mode):
                    raise InvalidArgument(f"layer entry {name!r} is under {part!r}, which is not a directory")
            self.dirs.add(current)

    def _clear(self, rel: str, full: str) -> None:
        """Remove what is at ``full``: a later entry replaces an earlier one (directories too)."""
        try:
            mode = os.lstat(full).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            shutil.rmtree(full)
            self.dirs = {d for d in self.dirs if d != rel and not d.startswith(rel + "/")}
        else:
            os.unlink(full)

    def _create(self, rel: str, full: str, make: Callable[[], None]) -> None:
        try:
            make()
        except FileExistsError:
            self._clear(rel, full)
            make()

    def _whiteout(self, parent: str, base: str, name: str) -> None:
        parent_full = os.path.join(self.root, parent) if parent else self.root
        if base == OPAQUE:
            os.setxattr(parent_full, "trusted.overlay.opaque", b"y", follow_symlinks=False)
            return
        if base.startswith(WHITEOUT + WHITEOUT):
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing of the image
        hidden = base[len(WHITEOUT) :]
        if hidden in ("", ".", ".."):
            raise InvalidArgument(f"layer entry {name!r} is a whiteout of nothing")
        rel = f"{parent}/{hidden}" if parent else hidden
        full = os.path.join(self.root, rel)
        self._create(rel, full, lambda: os.mknod(full, stat.S_IFCHR, os.makedev(0, 0)))

    def _file(self, rel: str, full: str, entry: Entry, reader: TarReader) -> None:
        try:
            fd = os.open(full, _O_NEW, 0o600)
        except FileExistsError:
            self._clear(rel, full)
            fd = os.open(full, _O_NEW, 0o600)
        try:
            if entry.size <= _SMALL_FILE:
                data = memoryview(reader.read_data())
                while data:
                    data = data[os.write(fd, data) :]
            else:
                reader.copy_data(fd, self.buffer)
            # Owner first: chown clears set-id bits and file capabilities, which come after it.
            os.fchown(fd, entry.uid, entry.gid)
            self._xattrs(fd, entry, full)
            os.fchmod(fd, entry.mode)
            os.utime(fd, (entry.mtime, entry.mtime))
        finally:
            os.close(fd)

    def _metadata(self, full: str, entry: Entry) -> None:
        os.chown(full, entry.uid, entry.gid, follow_symlinks=False)
        self._xattrs(full, entry, full)
        if entry.type == DIRECTORY:
            os.chmod(full, entry.mode)
            self.dir_times.append((full, entry.mtime))
            return
        if entry.type != SYMLINK:
            os.chmod(full, entry.mode)
        os.utime(full, (entry.mtime, entry.mtime), follow_symlinks=False)

    @staticmethod
    def _xattrs(target: str | int, entry: Entry, shown: str) -> None:
        for name, value in entry.xattrs.items():
            try:
                os.setxattr(target, name, value, follow_symlinks=isinstance(target, int))
            except OSError as exc:
                log.debug("xattr not kept", extra={"path": shown, "xattr": name, "error": str(exc)})
