"""The ``crio-py`` command: ``daemon`` (the default), ``config``, ``version``, ``status``, and client
commands in crictl's spirit (``pods``, ``ps``, ``runp``, ``exec``, ``logs``...: see crio_py.client)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from crio_py import __version__
from crio_py import config as config_mod
from crio_py.client import commands as client_commands

# Flags that override a config key; (flag, key path, type).
_OVERRIDES: tuple[tuple[str, str, type], ...] = (
    ("--root", "root", str),
    ("--run-root", "run_root", str),
    ("--listen", "listen", str),
    ("--log-level", "log_level", str),
    ("--log-format", "log_format", str),
    ("--cgroup-manager", "cgroup_manager", str),
    ("--pause-image", "pause_image", str),
    ("--cni-conf-dir", "cni.conf_dir", str),
    ("--metrics-port", "metrics.port", int),
    ("--streaming-port", "streaming.port", int),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crio-py", description="A Kubernetes CRI runtime in Python.")
    parser.add_argument("--config", type=Path, default=config_mod.DEFAULT_CONFIG_FILE, help="main config file")
    parser.add_argument(
        "--config-dir", type=Path, default=config_mod.DEFAULT_DROPIN_DIR, help="drop-in directory (*.yaml)"
    )
    for flag, key, tp in _OVERRIDES:
        parser.add_argument(flag, dest=key.replace(".", "__"), type=tp, help=f"overrides {key}")
    parser.add_argument("--no-metrics", action="store_true", help="disable the metrics endpoint")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("daemon", help="serve the CRI (the default)")
    sub.add_parser("config", help="print the effective configuration as YAML")
    sub.add_parser("default-config", help="print the commented built-in defaults")
    sub.add_parser("version", help="print the version")
    status = sub.add_parser("status", help="ask the running daemon for its version and conditions")
    status.add_argument("--timeout", type=float, default=5.0)
    trace_cmd = sub.add_parser("trace", help="where the start-up of a pod (and its containers) or a container went")
    trace_cmd.add_argument("id", help="pod or container id, or a unique prefix")
    client_commands.add_commands(sub)
    return parser


def _overrides(ns: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _flag, key, _tp in _OVERRIDES:
        value = getattr(ns, key.replace(".", "__"))
        if value is None:
            continue
        head, _, tail = key.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = value
        else:
            out[head] = value
    if ns.no_metrics:
        out.setdefault("metrics", {})["enabled"] = False
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``crio-py`` console script."""
    ns = _parser().parse_args(argv)
    command = ns.command or "daemon"
    if command == "version":
        print(f"crio-py {__version__} (CRI runtime API v1)")
        return 0
    if command == "default-config":
        print(config_mod.default_text(), end="")
        return 0
    sources = config_mod.ConfigSources(ns.config, ns.config_dir, _overrides(ns))
    try:
        cfg = sources.load()
    except config_mod.ConfigError as exc:
        for problem in exc.problems:
            print(f"crio-py: invalid config: {problem}", file=sys.stderr)
        return 2
    if command == "config":
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if command == "status":
        from crio_py.client.status import print_status

        return print_status(cfg.listen, ns.timeout)
    if command == "trace":
        from crio_py.trace import print_trace

        return print_trace(Path(cfg.run_root) / "traces", ns.id)
    if command in client_commands.COMMANDS:
        return client_commands.run(command, ns, cfg.listen)
    return _run_daemon(cfg, sources)


def _run_daemon(cfg: config_mod.Config, sources: Any) -> int:
    from crio_py import log as log_mod
    from crio_py.daemon import AlreadyRunning, Daemon

    log_mod.setup(cfg.log_level, cfg.log_format)
    try:
        return Daemon(cfg, sources).serve()
    except AlreadyRunning as exc:
        print(f"crio-py: {exc}", file=sys.stderr)
        return 1
    except Exception:
        logging.getLogger("crio_py").exception("crio-py failed to start")
        return 1
