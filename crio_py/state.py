"""The one source of truth on disk: a JSON record per object, written atomically.

Records live in ``<root>/state/<kind>/<id>.json``. A write goes to a temporary file in the same
directory, is fsynced, renamed over the record and the directory is fsynced, so a crash at any
instant leaves either the old record or the new one, never a torn file. On start the daemon
reads every record back (``load_all``) and rebuilds its memory from them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import secrets
import threading
import time
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from crio_py.errors import AlreadyExists, InvalidArgument, NotFound

log = logging.getLogger(__name__)

ID_HEX_LEN = 64


def new_id() -> str:
    """A fresh object id: 64 hex characters, like CRI-O's and containerd's."""
    return secrets.token_hex(ID_HEX_LEN // 2)


def write_atomic(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers and crashes see all or nothing.

    ``durable``: the file and its directory entry are fsynced, so the new content survives a
    power loss too. Records need that; files under the run root (a tmpfs, gone at reboot) and
    files rebuilt from records do not: renaming alone is atomic for readers and for a crash of
    the daemon, and skips two fsyncs (milliseconds each on a busy disk).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class RecordStore:
    """Atomic JSON records grouped by kind (``pods``, ``containers``, ``images``...)."""

    def __init__(self, root: Path):
        self.root = root / "state"

    def _dir(self, kind: str) -> Path:
        path = self.root / kind
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def write(self, kind: str, record_id: str, record: dict[str, Any]) -> None:
        """Persist ``record`` as the current state of ``kind/record_id``."""
        payload = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        write_atomic(self._dir(kind) / f"{record_id}.json", payload)

    def delete(self, kind: str, record_id: str) -> None:
        """Forget ``kind/record_id``; deleting a missing record is not an error."""
        try:
            (self._dir(kind) / f"{record_id}.json").unlink()
        except FileNotFoundError:
            return

    def load_all(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every record of ``kind``; corrupt ones are moved to ``<kind>/corrupt/`` and logged."""
        out: dict[str, dict[str, Any]] = {}
        directory = self._dir(kind)
        for path in sorted(directory.iterdir()):
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                # A write interrupted before its rename: the record it was replacing is intact.
                path.unlink(missing_ok=True)
                continue
            if path.suffix != ".json" or not path.is_file():
                continue
            try:
                record = json.loads(path.read_bytes())
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, OSError) as exc:
                self._quarantine(kind, path, exc)
                continue
            out[path.stem] = record
        return out

    def quarantine(self, kind: str, record_id: str, exc: Exception) -> None:
        """Move a record the daemon cannot use aside (to ``<kind>/corrupt/``), with an error log:
        a bad record must never stop the daemon from starting."""
        path = self._dir(kind) / f"{record_id}.json"
        if path.exists():
            self._quarantine(kind, path, exc)

    def _quarantine(self, kind: str, path: Path, exc: Exception) -> None:
        corrupt = self._dir(kind) / "corrupt"
        corrupt.mkdir(exist_ok=True)
        dest = corrupt / f"{path.name}.{int(time.time())}"
        os.replace(path, dest)
        log.error("corrupt state record moved aside", extra={"kind": kind, "path": str(dest), "error": str(exc)})


class IdIndex:
    """Resolves full ids and unique prefixes (as crictl prints them) to full ids."""

    def __init__(self, what: str):
        self.what = what
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def add(self, object_id: str) -> None:
        with self._lock:
            self._ids.add(object_id)

    def remove(self, object_id: str) -> None:
        with self._lock:
            self._ids.discard(object_id)

    def resolve(self, prefix: str) -> str:
        """The one id starting with ``prefix``; NotFound if none, InvalidArgument if several."""
        if not prefix:
            raise InvalidArgument(f"{self.what} id must not be empty")
        with self._lock:
            if prefix in self._ids:
                return prefix
            matches = [i for i in self._ids if i.startswith(prefix)]
        if not matches:
            raise NotFound(f"{self.what} {prefix!r} not found")
        if len(matches) > 1:
            raise InvalidArgument(f"{self.what} id prefix {prefix!r} is ambiguous: matches {len(matches)} ids")
        return matches[0]

    def find(self, prefix: str) -> str | None:
        """Like ``resolve`` but None for an unknown id (for idempotent stop/remove)."""
        try:
            return self.resolve(prefix)
        except NotFound:
            return None

    def all(self) -> list[str]:
        with self._lock:
            return list(self._ids)


class NameRegistry:
    """Unique names (CRI reserved names): a second reservation names the holder's id."""

    def __init__(self, what: str):
        self.what = what
        self._holders: dict[str, str] = {}
        self._lock = threading.Lock()

    def reserve(self, name: str, object_id: str) -> None:
        """Give ``name`` to ``object_id``; AlreadyExists naming the holder if taken."""
        with self._lock:
            holder = self._holders.get(name)
            if holder is not None and holder != object_id:
                raise AlreadyExists(f"{self.what} name {name!r} is reserved for {holder}")
            self._holders[name] = object_id

    def holder(self, name: str) -> str | None:
        """The id holding ``name``, if any."""
        with self._lock:
            return self._holders.get(name)

    def release(self, name: str, object_id: str | None = None) -> None:
        """Free ``name`` (only if still held by ``object_id`` when one is given)."""
        with self._lock:
            if object_id is None or self._holders.get(name) == object_id:
                self._holders.pop(name, None)

    def rebuild(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Reset from (name, id) pairs read back from records."""
        with self._lock:
            self._holders = dict(pairs)


# Version of the records of pods and containers. A daemon reads records of every older version
# (fields added since take their defaults) and ignores keys it does not know (a newer daemon's).
SCHEMA_VERSION = 2
SCHEMA_KEY = "schema"


# Metadata of a dataclass field that lives in memory only (locks, conditions), never in the record.
TRANSIENT = {"transient": True}


def check_field_types(obj: Any) -> None:
    """TypeError naming the first field of a dataclass read back from a record whose value is not
    of its declared type (str, int, bool, float, lists and dicts of those, optionals): a record
    edited or damaged on disk is refused whole at start-up instead of failing later."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        hint = hints[f.name]
        if not _matches(getattr(obj, f.name), hint):
            raise TypeError(f"field {f.name!r} holds {type(getattr(obj, f.name)).__name__}, not {hint}")


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(hint, type) and hint in (str, bool):
        return isinstance(value, hint)
    return True  # messages, locks: built by from_record itself


class MessageRecord:
    """Mixin for dataclasses whose ``config`` field is a protobuf message (a CRI request part).

    ``to_record`` gives the JSON-able record (the message as base64 of its wire bytes, which keeps
    every field, known or not) with its schema version; ``from_record`` rebuilds the object from a
    record of this or an older version. Fields with ``TRANSIENT`` metadata are left out.
    """

    def to_record(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("transient")}
        data["config"] = base64.b64encode(data["config"].SerializeToString()).decode()
        data[SCHEMA_KEY] = SCHEMA_VERSION
        return data

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("transient")}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known - {SCHEMA_KEY})
        if unknown:
            log.debug("record keys ignored", extra={"kind": cls.__name__, "keys": unknown})
        fields = {k: v for k, v in data.items() if k in known}
        message = typing.get_type_hints(cls)["config"]()
        message.ParseFromString(base64.b64decode(fields.pop("config")))
        return cls(config=message, **fields)
