"""Running one CNI plugin: its environment, its stdin config, the timeout and its errors (CNI spec 1.x)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crio_py.network.cni_config import NetworkConfigList

# CNI error codes (spec "Error"): the plugin could not do its job yet, or not at all.
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
PLUGIN_NOT_AVAILABLE_LIMITED = 51
CONFIG_ERROR_CODES = (1, 2, 4, 6, 7)
_STDERR_LIMIT = 4096


@dataclass(frozen=True)
class Invocation:
    """The CNI_* variables of one call; empty ones are left out of the environment."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""


class PluginError(Exception):
    """A plugin failed, timed out, was missing, or printed nonsense. ``code`` is its CNI error code."""

    def __init__(
        self,
        plugin: str,
        command: str,
        msg: str,
        code: int | None = None,
        details: str = "",
        stderr: str = "",
        timed_out: bool = False,
    ):
        self.plugin = plugin
        self.command = command
        self.msg = msg
        self.code = code
        self.details = details
        self.stderr = stderr
        self.timed_out = timed_out
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line for people: plugin, command, message, details, code and the tail of stderr."""
        text = f"plugin {self.plugin!r} {self.command} failed: {self.msg}"
        if self.details:
            text += f" ({self.details})"
        if self.code is not None:
            text += f" [CNI error code {self.code}]"
        if self.stderr:
            text += f"; stderr: {self.stderr}"
        return text


def cni_args(pairs: list[tuple[str, str]]) -> str:
    """``CNI_ARGS``: ``K=V;K=V`` (the caller has made sure no key or value holds ';' or '=')."""
    return ";".join(f"{k}={v}" for k, v in pairs)


def plugin_env(inv: Invocation, plugin_dirs: list[str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The plugin's environment: ours (plugins need PATH for iptables and the like) plus the CNI_* set."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("CNI_")}
    env["CNI_COMMAND"] = inv.command
    env["CNI_PATH"] = os.pathsep.join(plugin_dirs)
    for key, value in (
        ("CNI_CONTAINERID", inv.container_id),
        ("CNI_NETNS", inv.netns),
        ("CNI_IFNAME", inv.ifname),
        ("CNI_ARGS", inv.args),
    ):
        if value:
            env[key] = value
    return env


def find_plugin(plugin_type: str, plugin_dirs: list[str]) -> Path | None:
    """The first executable named ``plugin_type`` in the plugin dirs."""
    for directory in plugin_dirs:
        path = Path(directory) / plugin_type
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def plugin_conf(
    net: NetworkConfigList,
    plugin: dict[str, Any],
    prev_result: dict[str, Any] | None = None,
    capability_args: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The config one plugin of the list reads: its own keys plus the list's name and version,
    ``prevResult`` when given, and ``runtimeConfig`` holding only the capabilities it declares."""
    conf = dict(plugin)
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    conf.pop("prevResult", None)
    if prev_result is not None:
        conf["prevResult"] = prev_result
    declared = plugin.get("capabilities")
    if isinstance(declared, dict) and capability_args:
        wanted = {k: v for k, v in capability_args.items() if declared.get(k) is True}
        if wanted:
            base = conf.get("runtimeConfig")
            conf["runtimeConfig"] = {**(base if isinstance(base, dict) else {}), **wanted}
    if extra:
        conf.update(extra)
    return conf


def plugin_stdin(
    net: NetworkConfigList,
    plugin: dict[str, Any],
    prev_result: dict[str, Any] | None = None,
    capability_args: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """``plugin_conf`` as the bytes a plugin executable reads on stdin."""
    return json.dumps(plugin_conf(net, plugin, prev_result, capability_args, extra)).encode()


def error_from_output(plugin: str, command: str, rc: int, stdout: bytes, stderr: str) -> PluginError:
    """The plugin's error JSON (``code``, ``msg``, ``details``), or its raw output when it printed none."""
    text = stdout.decode(errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and ("msg" in data or "code" in data):
        code = data.get("code")
        return PluginError(
            plugin,
            command,
            str(data.get("msg") or f"exit status {rc}"),
            code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            details=str(data.get("details") or ""),
            stderr=stderr,
        )
    return PluginError(plugin, command, text or f"exit status {rc}", stderr=stderr)


def exec_plugin(path: Path, command: str, env: dict[str, str], stdin: bytes, timeout: float) -> bytes:
    """Run the plugin and return its stdout; PluginError on failure or after ``timeout`` seconds."""
    try:
        # A session of its own, so a timeout kills the plugin and anything it started (iptables...).
        proc = subprocess.Popen(
            [str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,
        )
    except OSError as exc:
        raise PluginError(path.name, command, f"cannot execute {path}: {exc.strerror}") from exc
    try:
        stdout, stderr_b = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            _, stderr_b = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            stderr_b = b""
        proc.wait()
        raise PluginError(
            path.name,
            command,
            f"timed out after {timeout:g}s and was killed",
            stderr=_tail(stderr_b),
            timed_out=True,
        ) from None
    if proc.returncode != 0:
        raise error_from_output(path.name, command, proc.returncode, stdout, _tail(stderr_b))
    return stdout


def _tail(stderr: bytes) -> str:
    text = stderr.decode(errors="replace").strip()
    return text if len(text) <= _STDERR_LIMIT else "..." + text[-_STDERR_LIMIT:]


def run_plugin(
    net: NetworkConfigList,
    plugin: dict[str, Any],
    inv: Invocation,
    plugin_dirs: list[str],
    timeout: float,
    prev_result: dict[str, Any] | None = None,
    capability_args: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """Find and run one plugin of ``net`` for ``inv``; its stdout."""
    ptype = plugin["type"]
    path = find_plugin(ptype, plugin_dirs)
    if path is None:
        raise PluginError(ptype, inv.command, f"not found in {', '.join(plugin_dirs)}")
    stdin = plugin_stdin(net, plugin, prev_result, capability_args, extra)
    return exec_plugin(path, inv.command, plugin_env(inv, plugin_dirs), stdin, timeout)


def parse_json(plugin: str, command: str, stdout: bytes) -> Any:
    """The plugin's stdout as JSON; PluginError when it is not."""
    try:
        return json.loads(stdout)
    except ValueError as exc:
        text = stdout.decode(errors="replace").strip()[:200]
        raise PluginError(plugin, command, f"printed invalid JSON ({exc}): {text!r}") from exc
