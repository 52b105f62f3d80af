"""The on-disk record of each attachment, in libcni's cache layout and format.

``<cache_dir>/results/<network>-<containerid>-<ifname>`` holds the network config the ADD used, its
CNI_ARGS and capability args, and the result; DEL after a daemon restart replays exactly those. An
entry without a result marks an ADD in progress, so GC can undo one a crash interrupted.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
CACHE_KIND = "cniCacheV1"


@dataclass(frozen=True)
class CacheEntry:
    """One attachment: enough to run DEL or CHECK exactly as the ADD ran."""

    network: str
    container_id: str
    ifname: str
    config: bytes
    netns: str = ""
    cni_args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as libcni writes it (config base64-encoded, result only once ADD completed)."""
        data: dict[str, Any] = {
            "kind": CACHE_KIND,
            "containerId": self.container_id,
            "config": base64.b64encode(self.config).decode(),
            "ifName": self.ifname,
            "networkName": self.network,
            "netns": self.netns,
            "cniArgs": [list(p) for p in self.cni_args],
            "capabilityArgs": self.capability_args,
        }
        if self.result is not None:
            data["result"] = self.result
        return data

    @classmethod
    def from_json(cls, data: Any) -> CacheEntry:
        """Parse an entry; ValueError when it is not one."""
        if not isinstance(data, dict) or data.get("kind") != CACHE_KIND:
            raise ValueError(f"not a {CACHE_KIND} entry")
        try:
            result = data.get("result")
            return cls(
                network=str(data["networkName"]),
                container_id=str(data["containerId"]),
                ifname=str(data["ifName"]),
                config=base64.b64decode(data["config"], validate=True),
                netns=str(data.get("netns") or ""),
                cni_args=[(str(k), str(v)) for k, v in data.get("cniArgs") or []],
                capability_args=dict(data.get("capabilityArgs") or {}),
                result=result if isinstance(result, dict) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed cache entry: {exc}") from exc


class ResultCache:
    """The entries under ``<cache_dir>/results``; writes are atomic (temp file + rename)."""

    def __init__(self, cache_dir: Path):
        self.dir = cache_dir / "results"
        # Entries the daemon cannot use (unreadable, or whose DEL cannot even be run) are moved
        # here with an error log, out of every later GC's way.
        self.quarantine_dir = cache_dir / "quarantine"

    def path(self, network: str, container_id: str, ifname: str) -> Path:
        """Where the entry of one attachment lives."""
        return self.dir / f"{network}-{container_id}-{ifname}"

    def write(self, entry: CacheEntry) -> None:
        """Store ``entry`` (replacing any previous one); OSError when the disk says no.

        Renamed into place, not fsynced (libcni does not either): a crash of the daemon keeps
        it, and a power loss takes the attachment's netns with it; the records are what must
        survive that."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path(entry.network, entry.container_id, entry.ifname)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entry.to_json(), f)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def remove(self, entry: CacheEntry) -> None:
        """Forget an attachment; nothing to do when it is already gone."""
        self.path(entry.network, entry.container_id, entry.ifname).unlink(missing_ok=True)

    def quarantine(self, entry: CacheEntry, error: Exception) -> None:
        """Move an entry the daemon cannot act on aside, with an error log (never raises)."""
        self._quarantine(self.path(entry.network, entry.container_id, entry.ifname), error)

    def _quarantine(self, path: Path, error: Exception) -> None:
        try:
            self.quarantine_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            dest = self.quarantine_dir / path.name
            os.replace(path, dest)
        except (OSError, ValueError) as exc:
            log.error("CNI cache entry cannot be moved aside", extra={"file": repr(str(path)), "error": str(exc)})
            return
        log.error("bad CNI cache entry moved aside", extra={"file": str(dest), "error": str(error)})

    def _load(self, path: Path) -> CacheEntry | None:
        try:
            entry = CacheEntry.from_json(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._quarantine(path, exc)
            return None
        if self.path(entry.network, entry.container_id, entry.ifname) != path:
            self._quarantine(path, ValueError("the entry's network, container id and ifname do not match its name"))
            return None
        return entry

    def all(self) -> list[CacheEntry]:
        """Every readable entry, in file-name order."""
        try:
            names = sorted(p for p in self.dir.iterdir() if not p.name.startswith(".") and p.is_file())
        except FileNotFoundError:
            return []
        return [e for e in (self._load(p) for p in names) if e is not None]

    def find(self, container_id: str, ifname: str) -> list[CacheEntry]:
        """The entries of one attachment, whatever network they were made on."""
        suffix = f"-{container_id}-{ifname}"
        try:
            names = sorted(p for p in self.dir.iterdir() if p.name.endswith(suffix))
        except FileNotFoundError:
            return []
        entries = (self._load(p) for p in names)
        return [e for e in entries if e is not None and e.container_id == container_id and e.ifname == ifname]
