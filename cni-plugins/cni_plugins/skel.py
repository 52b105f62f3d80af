"""The plugin skeleton: environment and stdin in, result or error JSON and an exit code out.

It checks what the reference ``skel`` checks, in the same order, so that a runtime sees the same
error codes from our plugins as from the reference ones.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cni_plugins.spec import (
    CURRENT_VERSION,
    ERR_DECODING,
    ERR_INCOMPATIBLE_VERSION,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_UNKNOWN_CONTAINER,
    SUPPORTED_VERSIONS,
    CNIError,
    Result,
    parse_version,
    version_at_least,
    version_info_json,
)

_VALID_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_MAX_IFNAME = 15

# Which variables each command needs (CNI spec, "Parameters").
_REQUIRED: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}


@dataclass
class CmdArgs:
    """One invocation: the CNI_* variables, the raw config and its parsed form."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: str
    path: str
    stdin: bytes
    conf: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def cni_version(self) -> str:
        """The config's cniVersion (results are printed in it)."""
        return str(self.conf.get("cniVersion") or "0.1.0")

    @property
    def name(self) -> str:
        """The network name."""
        return str(self.conf.get("name", ""))

    def prev_result(self) -> Result | None:
        """The chained prevResult converted to the current version, if any."""
        raw = self.conf.get("prevResult")
        if raw is None:
            return None
        return Result.from_obj(raw, self.cni_version)

    def families(self) -> set[int]:
        """IP versions the prevResult holds (both when there is none): what DEL must undo."""
        try:
            prev = self.prev_result()
        except CNIError:
            prev = None
        found = {ipc.iface.version for ipc in prev.ips} if prev is not None else set()
        return found or {4, 6}


class Plugin:
    """Base of our plugins: override the commands the plugin implements."""

    name = "plugin"
    supported_versions: tuple[str, ...] = SUPPORTED_VERSIONS

    def add(self, args: CmdArgs) -> Result:
        """ADD: attach the container; returns the result to print."""
        raise NotImplementedError

    def delete(self, args: CmdArgs) -> None:
        """DEL: detach; must succeed when things are already gone."""
        raise NotImplementedError

    def check(self, args: CmdArgs) -> None:
        """CHECK: raise a CNIError when the attachment is not as ADD left it."""

    def status(self, args: CmdArgs) -> None:
        """STATUS: raise CNIError 50/51 when the plugin cannot serve ADDs."""

    def gc(self, args: CmdArgs) -> None:
        """GC: release resources not in cni.dev/valid-attachments."""


@dataclass
class Outcome:
    """What a plugin run writes and returns."""

    rc: int
    stdout: bytes
    stderr: bytes = b""


def _config_version(stdin: bytes) -> str:
    try:
        conf = json.loads(stdin)
    except ValueError as e:
        raise CNIError(ERR_DECODING, f"decoding version from network config: {e}") from None
    if not isinstance(conf, dict):
        raise CNIError(ERR_DECODING, "decoding version from network config: not a JSON object")
    return str(conf.get("cniVersion") or "0.1.0")


def _validate_ifname(ifname: str) -> None:
    if len(ifname) > _MAX_IFNAME:
        raise CNIError(
            ERR_INVALID_ENV,
            "interface name is too long",
            f"interface name should be less than {_MAX_IFNAME + 1} characters",
        )
    if ifname in (".", ".."):
        raise CNIError(ERR_INVALID_ENV, "interface name is . or ..")
    if any(c in "/:" or c.isspace() for c in ifname):
        raise CNIError(ERR_INVALID_ENV, "interface name contains / or : or whitespace characters")


def _parse(env: Mapping[str, str], stdin: bytes) -> CmdArgs:
    command = env.get("CNI_COMMAND", "")
    required = _REQUIRED.get(command, ())
    missing = [v for v in ("CNI_COMMAND", *required) if not env.get(v)]
    if missing:
        raise CNIError(ERR_INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    if command not in _REQUIRED:
        raise CNIError(ERR_INVALID_ENV, f"unknown CNI_COMMAND: {command}")
    conf: dict[str, Any] = {}
    if command != "VERSION":
        try:
            parsed = json.loads(stdin)
        except ValueError as e:
            raise CNIError(ERR_DECODING, f"error unmarshall network config: {e}") from None
        if not isinstance(parsed, dict):
            raise CNIError(ERR_DECODING, "error unmarshall network config: not a JSON object")
        conf = parsed
        name = conf.get("name")
        if not isinstance(name, str) or not name:
            raise CNIError(ERR_INVALID_CONFIG, "missing network name")
        if not _VALID_NAME.match(name):
            raise CNIError(ERR_INVALID_CONFIG, "invalid characters found in network name", name)
        if command in ("ADD", "CHECK", "DEL"):
            cid = env.get("CNI_CONTAINERID", "")
            if not cid:
                raise CNIError(ERR_UNKNOWN_CONTAINER, "missing containerID")
            if not _VALID_NAME.match(cid):
                raise CNIError(ERR_INVALID_ENV, "invalid characters in containerID", cid)
            _validate_ifname(env.get("CNI_IFNAME", ""))
    return CmdArgs(
        command=command,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        args=env.get("CNI_ARGS", ""),
        path=env.get("CNI_PATH", ""),
        stdin=stdin,
        conf=conf,
        env=dict(env),
    )


def _check_version(args: CmdArgs, plugin: Plugin) -> None:
    version = _config_version(args.stdin)
    if args.command == "CHECK" and not _at_least(version, "0.4.0"):
        raise CNIError(ERR_INCOMPATIBLE_VERSION, "config version does not allow CHECK")
    if args.command in ("GC", "STATUS") and not _at_least(version, "1.1.0"):
        raise CNIError(ERR_INCOMPATIBLE_VERSION, f"config version does not allow {args.command}")
    if version not in plugin.supported_versions:
        details = f'config is "{version}", plugin supports [{" ".join(plugin.supported_versions)}]'
        raise CNIError(ERR_INCOMPATIBLE_VERSION, "incompatible CNI versions", details)


def _at_least(version: str, minimum: str) -> bool:
    try:
        parse_version(version)
    except ValueError as e:
        raise CNIError(ERR_DECODING, str(e)) from None
    return version_at_least(version, minimum)


def run(plugin: Plugin, env: Mapping[str, str], stdin: bytes) -> Outcome:
    """Run one command of ``plugin`` as its executable would, returning exit code and output."""
    version = CURRENT_VERSION
    try:
        args = _parse(env, stdin)
        if args.command == "VERSION":
            return Outcome(0, version_info_json(plugin.supported_versions))
        version = _config_version(stdin)
        _check_version(args, plugin)
        if args.command == "ADD":
            return Outcome(0, plugin.add(args).to_json(version))
        if args.command == "DEL":
            plugin.delete(args)
        elif args.command == "CHECK":
            plugin.check(args)
        elif args.command == "STATUS":
            plugin.status(args)
        else:
            plugin.gc(args)
        return Outcome(0, b"")
    except CNIError as e:
        return Outcome(1, e.to_json(version if version in SUPPORTED_VERSIONS else CURRENT_VERSION))
    except Exception as e:  # every failure must reach the runtime as error JSON, never a traceback alone
        err = CNIError(ERR_INTERNAL, f"{type(e).__name__}: {e}")
        return Outcome(
            1,
            err.to_json(version if version in SUPPORTED_VERSIONS else CURRENT_VERSION),
            traceback.format_exc().encode(),
        )
