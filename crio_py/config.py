"""The daemon's configuration: schema, defaults, layered loading and validation.

Every setting is a field below; its default lives in ``defaults/crio-py.yaml`` (shipped in the
package and documented there). Files are layered (defaults, main file, drop-ins in lexical order,
CLI flags), each checked on its own so a mistake is reported as ``file:key: what is wrong``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG_FILE = Path("/etc/crio-py/crio-py.yaml")
DEFAULT_DROPIN_DIR = Path("/etc/crio-py/crio-py.d")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Settings that a SIGHUP may change; everything else needs a restart.
RELOADABLE = ("log_level", "registries", "default_sysctls")


class ConfigError(Exception):
    """One or more mistakes in the configuration, each as ``source:key: problem``."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class RuntimeHandler:
    """An OCI runtime that pods can select by name."""

    path: str = "runc"
    root: str = "/run/crio-py/runc"
    type: str = "oci"


@dataclass(frozen=True)
class CNIConfig:
    conf_dir: str = "/etc/cni/net.d"
    default_network: str = ""
    plugin_dirs: list[str] = field(default_factory=list)
    cache_dir: str = "/var/lib/cni/crio-py"
    plugin_timeout: int = 60
    plugin_service: bool = True
    require_network: bool = True


@dataclass(frozen=True)
class RegistriesConfig:
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    insecure: list[str] = field(default_factory=list)
    auth_file: str = ""
    max_concurrent_downloads: int = 4


@dataclass(frozen=True)
class StreamingConfig:
    """The exec/attach/port-forward server (see defaults/crio-py.yaml)."""

    address: str = "127.0.0.1"
    port: int = 0
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    token_ttl: int = 60
    idle_timeout: int = 14400
    stream_creation_timeout: int = 30
    max_connections: int = 128
    max_sessions: int = 64


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 9537


@dataclass(frozen=True)
class Config:
    """The effective configuration. Immutable: a reload builds a new one."""

    root: str = "/var/lib/crio-py"
    run_root: str = "/run/crio-py"
    listen: str = "/run/crio-py/crio-py.sock"
    log_level: str = "info"
    log_format: str = "logfmt"
    default_runtime: str = "runc"
    runtimes: dict[str, RuntimeHandler] = field(default_factory=dict)
    cgroup_manager: str = "cgroupfs"
    pause_image: str = "registry.k8s.io/pause:3.10"
    pause_command: str = ""
    shm_size: int = 64 * 1024 * 1024
    cni: CNIConfig = field(default_factory=CNIConfig)
    registries: RegistriesConfig = field(default_factory=RegistriesConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    default_capabilities: list[str] = field(default_factory=list)
    default_sysctls: dict[str, str] = field(default_factory=dict)
    seccomp_profile: str = ""
    seccomp_use_default_when_empty: bool = False
    log_size_max: int = -1
    container_log_dir: str = "/var/log/crio-py/pods"
    shutdown_grace: int = 10

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (for ``crio-py config`` and ``Status`` verbose)."""
        return dataclasses.asdict(self)

    def runtime_handler(self, name: str) -> RuntimeHandler:
        """The handler for ``name`` ("" is the default); KeyError when unknown."""
        return self.runtimes[name or self.default_runtime]


@dataclass
class ConfigSources:
    """Where the configuration came from, so SIGHUP can read the same layers again."""

    config_file: Path | None = DEFAULT_CONFIG_FILE
    dropin_dir: Path | None = DEFAULT_DROPIN_DIR
    overrides: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Config:
        return load(self.config_file, self.dropin_dir, self.overrides)


def default_text() -> str:
    """The commented built-in defaults file."""
    return resources.files("crio_py").joinpath("defaults/crio-py.yaml").read_text()


def _check(value: Any, tp: Any, where: str, problems: list[str]) -> None:
    """Check ``value`` against the type annotation ``tp``, appending ``where: problem``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return
        hints = typing.get_type_hints(tp)
        for key, sub in value.items():
            name = f"{where}{key}" if where.endswith(":") else f"{where}.{key}"
            if key not in hints:
                problems.append(f"{name}: unknown key (known: {', '.join(sorted(hints))})")
            else:
                _check(sub, hints[key], name, problems)
    elif origin is dict:
        _key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return
        for key, sub in value.items():
            if not isinstance(key, str):
                problems.append(f"{where}: key {key!r} must be a string")
            _check(sub, val_tp, f"{where}.{key}", problems)
    elif origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return
        for i, sub in enumerate(value):
            _check(sub, item_tp, f"{where}[{i}]", problems)
    elif tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected an integer, got {value!r}")
    elif tp is str and not isinstance(value, str):
        problems.append(f"{where}: expected a string, got {value!r}")


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Merge ``top`` over ``base``: mappings key by key, everything else replaced."""
    out = dict(base)
    for key, val in top.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict) and key != "runtimes":
            out[key] = _merge(out[key], val)
        elif isinstance(val, dict) and key == "runtimes":
            # A runtime handler given in a later file replaces the whole handler definition.
            out[key] = {**out.get(key, {}), **val}
        else:
            out[key] = val
    return out


def _build(tp: Any, data: Any) -> Any:
    """Turn validated plain data into the dataclass tree."""
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{k: _build(hints[k], v) for k, v in data.items()})
    if typing.get_origin(tp) is dict:
        _, val_tp = typing.get_args(tp)
        return {k: _build(val_tp, v) for k, v in data.items()}
    return data


def _semantic_problems(data: dict[str, Any], source_of: dict[str, str]) -> list[str]:
    """Checks beyond types; each names the file that last set the key."""
    problems: list[str] = []

    def bad(key: str, msg: str) -> None:
        top = key.split(".")[0]
        problems.append(f"{source_of.get(key, source_of.get(top, '<defaults>'))}:{key}: {msg}")

    if data["log_level"] not in LOG_LEVELS:
        bad("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {data['log_level']!r}")
    if data["log_format"] not in ("logfmt", "json"):
        bad("log_format", f"must be logfmt or json, got {data['log_format']!r}")
    if data["cgroup_manager"] not in ("cgroupfs", "systemd"):
        bad("cgroup_manager", f"must be cgroupfs or systemd, got {data['cgroup_manager']!r}")
    for key in ("root", "run_root", "listen", "container_log_dir"):
        if not str(data[key]).startswith("/"):
            bad(key, f"must be an absolute path, got {data[key]!r}")
    if not data["runtimes"]:
        bad("runtimes", "at least one runtime handler is needed")
    elif data["default_runtime"] not in data["runtimes"]:
        bad("default_runtime", f"{data['default_runtime']!r} is not in runtimes ({', '.join(data['runtimes'])})")
    for name, handler in data["runtimes"].items():
        if handler.get("type", "oci") != "oci":
            bad(f"runtimes.{name}.type", f"only 'oci' is supported, got {handler['type']!r}")
    for section in ("streaming", "metrics"):
        port = data[section]["port"]
        if not 0 <= port <= 65535:
            bad(f"{section}.port", f"must be 0..65535, got {port}")
    streaming = data["streaming"]
    for key in ("token_ttl", "stream_creation_timeout", "max_connections", "max_sessions"):
        if streaming[key] <= 0:
            bad(f"streaming.{key}", f"must be positive, got {streaming[key]}")
    if streaming["idle_timeout"] < 0:
        bad("streaming.idle_timeout", "must be 0 (none) or a number of seconds")
    if bool(streaming["tls_cert"]) != bool(streaming["tls_key"]):
        bad("streaming.tls_cert", "tls_cert and tls_key go together")
    if streaming["tls_ca"] and not streaming["tls_cert"]:
        bad("streaming.tls_ca", "client certificates need tls_cert and tls_key too")
    if data["shm_size"] <= 0:
        bad("shm_size", f"must be positive, got {data['shm_size']}")
    if data["cni"]["plugin_timeout"] <= 0:
        bad("cni.plugin_timeout", "must be positive")
    if data["registries"]["max_concurrent_downloads"] < 1:
        bad("registries.max_concurrent_downloads", "must be at least 1")
    if data["log_size_max"] < -1 or data["log_size_max"] == 0:
        bad("log_size_max", "must be -1 (no limit) or a positive number of bytes")
    for host, urls in data["registries"]["mirrors"].items():
        for url in urls:
            if not url.startswith(("http://", "https://")) and "/" in url:
                bad(f"registries.mirrors.{host}", f"mirror {url!r} must be host[:port] or an http(s) URL")
    return problems


def load(
    config_file: Path | None = DEFAULT_CONFIG_FILE,
    dropin_dir: Path | None = DEFAULT_DROPIN_DIR,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Load the layered configuration; raise ConfigError listing every mistake."""
    layers: list[tuple[str, Any]] = [("<defaults>", yaml.safe_load(default_text()))]
    files: list[Path] = []
    problems: list[str] = []
    # The default file may be absent; another one named must be there, or a typo in --config
    # would silently run the defaults.
    if config_file is not None and config_file.exists():
        files.append(config_file)
    elif config_file is not None and config_file != DEFAULT_CONFIG_FILE:
        problems.append(f"{config_file}: no such config file (the default {DEFAULT_CONFIG_FILE} may be absent, "
                        "a file named otherwise must exist)")
    if dropin_dir is not None and dropin_dir.is_dir():
        files.extend(sorted(p for p in dropin_dir.iterdir() if p.suffix in (".yaml", ".yml")))
    for path in files:
        try:
            layers.append((str(path), yaml.safe_load(path.read_text()) or {}))
        except (OSError, yaml.YAMLError) as exc:
            problems.append(f"{path}: cannot read: {exc}".replace("\n", " "))
    if overrides:
        layers.append(("<command line>", overrides))
    merged: dict[str, Any] = {}
    source_of: dict[str, str] = {}
    for source, data in layers:
        _check(data, Config, f"{source}:", problems)
        if problems or not isinstance(data, dict):
            continue
        merged = _merge(merged, data)
        for key, val in data.items():
            source_of[key] = source
            if isinstance(val, dict):
                for sub in val:
                    source_of[f"{key}.{sub}"] = source
    if problems:
        raise ConfigError(problems)
    problems = _semantic_problems(merged, source_of)
    if problems:
        raise ConfigError(problems)
    return _build(Config, merged)


def reload_changes(old: Config, new: Config) -> tuple[dict[str, Any], list[str]]:
    """Split what changed between two configs into live-reloadable values and restart-only keys."""
    old_d, new_d = old.to_dict(), new.to_dict()
    live = {k: new_d[k] for k in RELOADABLE if old_d[k] != new_d[k]}
    restart = [k for k in new_d if k not in RELOADABLE and old_d[k] != new_d[k]]
    return live, restart
