"""CNI network configuration: finding, parsing and validating the conf dir's network list.

The rule is CRI-O's and containerd's: the files ending in .conflist, .conf or .json are read in
lexical order and the first valid one wins, unless ``default_network`` names the one to use. A .conf
(or .json holding a single plugin) is wrapped into a one-plugin list, as libcni does.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONF_EXTENSIONS = (".conflist", ".conf", ".json")
# Versions whose configs and results this runtime speaks (0.1.0/0.2.0 predate chaining).
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


def version_tuple(version: str) -> tuple[int, ...]:
    """``"0.4.0"`` -> ``(0, 4, 0)``; ValueError for anything else."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"malformed CNI version {version!r}")
    return tuple(int(p) for p in parts)


def version_at_least(version: str, minimum: str) -> bool:
    """True when ``version`` is ``minimum`` or newer."""
    return version_tuple(version) >= version_tuple(minimum)


class ConfigInvalid(Exception):
    """A network config file that cannot be used; the message says why."""


@dataclass(frozen=True)
class NetworkConfigList:
    """One network: its name, version and plugins, in the order ADD runs them."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    source: str = ""
    disable_check: bool = False
    disable_gc: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def supports_check(self) -> bool:
        """CHECK exists from 0.4.0 on, unless the list opts out with disableCheck."""
        return version_at_least(self.cni_version, "0.4.0") and not self.disable_check

    @property
    def supports_gc(self) -> bool:
        """GC exists from 1.1.0 on, unless the list opts out with disableGC."""
        return version_at_least(self.cni_version, "1.1.0") and not self.disable_gc

    @property
    def supports_status(self) -> bool:
        """STATUS exists from 1.1.0 on."""
        return version_at_least(self.cni_version, "1.1.0")

    def to_bytes(self) -> bytes:
        """The list as JSON, for the result cache (DEL after a restart must use the same config)."""
        return json.dumps(self.raw, sort_keys=True).encode()


def _pick_version(data: dict[str, Any]) -> str:
    """The list's version: the highest supported entry of ``cniVersions`` (CNI 1.1), else ``cniVersion``."""
    versions = data.get("cniVersions")
    if versions is not None:
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise ConfigInvalid("cniVersions must be a list of version strings")
        usable = [v for v in versions if v in SUPPORTED_VERSIONS]
        if not usable:
            raise ConfigInvalid(
                f"none of cniVersions {versions} is supported (supported: {', '.join(SUPPORTED_VERSIONS)})"
            )
        return max(usable, key=version_tuple)
    version = data.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise ConfigInvalid("cniVersion is missing")
    if version not in SUPPORTED_VERSIONS:
        raise ConfigInvalid(f"cniVersion {version!r} is not supported (supported: {', '.join(SUPPORTED_VERSIONS)})")
    return version


def parse_config(data: Any, source: str = "", single: bool = False) -> NetworkConfigList:
    """Validate a decoded config; ``single`` for a .conf, which is wrapped into a one-plugin list."""
    if not isinstance(data, dict):
        raise ConfigInvalid("the config must be a JSON object")
    if single:
        if "plugins" in data:
            raise ConfigInvalid("a .conf file holds one plugin; a list of plugins belongs in a .conflist")
        data = {k: data[k] for k in ("cniVersion", "cniVersions", "name") if k in data} | {"plugins": [data]}
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigInvalid(f"network name {name!r} is missing or invalid (letters, digits, '_', '.', '-')")
    version = _pick_version(data)
    plugins = data.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ConfigInvalid("plugins must be a non-empty list")
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise ConfigInvalid(f"plugins[{i}] must be a JSON object")
        ptype = plugin.get("type")
        if not isinstance(ptype, str) or not ptype or "/" in ptype or ptype in (".", ".."):
            raise ConfigInvalid(f"plugins[{i}].type {ptype!r} is missing or not a plain executable name")
    for flag in ("disableCheck", "disableGC"):
        if not isinstance(data.get(flag, False), bool):
            raise ConfigInvalid(f"{flag} must be true or false")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=tuple(plugins),
        source=source,
        disable_check=data.get("disableCheck", False),
        disable_gc=data.get("disableGC", False),
        raw=data,
    )


def parse_bytes(raw: bytes, source: str = "", single: bool = False) -> NetworkConfigList:
    """Decode and validate a config file's content."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigInvalid(f"invalid JSON: {exc}") from exc
    return parse_config(data, source, single)


def load_file(path: Path) -> NetworkConfigList:
    """Read one file; .conflist is a list, .conf a single plugin, .json whichever it holds."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigInvalid(f"cannot read: {exc.strerror}") from exc
    if path.suffix == ".json":
        try:
            single = not isinstance(json.loads(raw), dict) or "plugins" not in json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigInvalid(f"invalid JSON: {exc}") from exc
    else:
        single = path.suffix == ".conf"
    return parse_bytes(raw, str(path), single)


def config_files(conf_dir: Path) -> list[Path]:
    """Candidate files in lexical order (hidden and other files are ignored)."""
    return sorted(
        p for p in conf_dir.iterdir() if p.suffix in CONF_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


@dataclass(frozen=True)
class Discovery:
    """The outcome of a scan: the chosen network, or why there is none."""

    network: NetworkConfigList | None
    problem: str


def discover(conf_dir: Path, default_network: str = "") -> Discovery:
    """Choose the network: the first valid file, or the one named ``default_network``."""
    try:
        files = config_files(conf_dir)
    except FileNotFoundError:
        return Discovery(None, f"no CNI configuration in {conf_dir}: the directory does not exist")
    except OSError as exc:
        return Discovery(None, f"cannot read the CNI configuration directory {conf_dir}: {exc.strerror}")
    skipped: list[str] = []
    for path in files:
        try:
            net = load_file(path)
        except ConfigInvalid as exc:
            log.warning("CNI config skipped", extra={"file": str(path), "error": str(exc)})
            skipped.append(f"{path.name}: {exc}")
            continue
        if not default_network or net.name == default_network:
            return Discovery(net, "")
    what = f"no CNI network named {default_network!r}" if default_network else "no valid CNI configuration"
    detail = f" (skipped: {'; '.join(skipped)})" if skipped else ""
    return Discovery(None, f"{what} in {conf_dir}{detail}")


def _dir_state(conf_dir: Path) -> tuple[Any, ...] | None:
    """A cheap fingerprint of the conf dir: a file added, removed or rewritten changes it."""
    try:
        st = conf_dir.stat()
        entries = []
        with os.scandir(conf_dir) as it:
            for entry in it:
                if entry.name.endswith(CONF_EXTENSIONS):
                    est = entry.stat()
                    entries.append((entry.name, est.st_mtime_ns, est.st_size, est.st_ino))
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, tuple(sorted(entries)))


class ConfigWatcher:
    """The current network of a conf dir, re-read only when the directory's content changed."""

    def __init__(self, conf_dir: Path, default_network: str = ""):
        self.conf_dir = conf_dir
        self.default_network = default_network
        self._lock = threading.Lock()
        self._state: tuple[Any, ...] | None = None
        self._scanned = False
        self._current = Discovery(None, "")

    def current(self) -> Discovery:
        """The chosen network now (a cheap stat of the directory when nothing changed)."""
        state = _dir_state(self.conf_dir)
        with self._lock:
            if not self._scanned or state != self._state:
                self._current = discover(self.conf_dir, self.default_network)
                self._state = state
                self._scanned = True
                if self._current.network is not None:
                    log.info(
                        "CNI network config loaded",
                        extra={"network": self._current.network.name, "file": self._current.network.source},
                    )
            return self._current
