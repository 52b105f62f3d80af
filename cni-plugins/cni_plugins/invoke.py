"""Delegating to another plugin (the IPAM plugin of bridge) the way libcni's invoke does.

The delegate is looked up in CNI_PATH and run as an executable with the caller's environment and
stdin. When the executable found is one of ours, it runs in this process instead: same code,
same files, no second interpreter start-up.
"""

from __future__ import annotations

import json
import os
import subprocess

from cni_plugins.skel import CmdArgs, Outcome, Plugin, run
from cni_plugins.spec import ERR_INTERNAL, CNIError, Result

MARKER = b"crio-py-cni-plugin"


def find(plugin_type: str, cni_path: str) -> str:
    """The first executable named ``plugin_type`` in the CNI_PATH directories."""
    dirs = [d for d in cni_path.split(os.pathsep) if d]
    if "/" in plugin_type or not plugin_type:
        raise CNIError(ERR_INTERNAL, f"invalid plugin name {plugin_type!r}")
    for d in dirs:
        path = os.path.join(d, plugin_type)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise CNIError(ERR_INTERNAL, f'failed to find plugin "{plugin_type}" in path {dirs}')


def is_ours(path: str) -> bool:
    """Whether the executable is one of our thin launchers (they carry MARKER near the top)."""
    try:
        with open(path, "rb") as f:
            return MARKER in f.read(512)
    except OSError:
        return False


def _in_process(plugin_type: str) -> Plugin | None:
    if plugin_type == "host-local":
        from cni_plugins import host_local

        return host_local.PLUGIN
    return None


def delegate(plugin_type: str, command: str, args: CmdArgs) -> Outcome:
    """Run ``command`` of the delegate with the caller's environment and stdin."""
    path = find(plugin_type, args.path)
    env = dict(args.env)
    env["CNI_COMMAND"] = command
    plugin = _in_process(plugin_type) if is_ours(path) else None
    if plugin is not None:
        return run(plugin, env, args.stdin)
    proc = subprocess.run([path], input=args.stdin, env=env, capture_output=True, check=False)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def _raise_for(outcome: Outcome, plugin_type: str) -> None:
    if outcome.rc == 0:
        return
    try:
        obj = json.loads(outcome.stdout)
        raise CNIError(int(obj["code"]), str(obj.get("msg", "")), str(obj.get("details", "")))
    except (ValueError, KeyError, TypeError):
        text = (outcome.stdout + outcome.stderr).decode(errors="replace").strip()
        raise CNIError(ERR_INTERNAL, f"plugin {plugin_type} failed (exit {outcome.rc}): {text}") from None


def delegate_add(plugin_type: str, args: CmdArgs) -> Result:
    """ADD on the delegate; its result in the current version."""
    outcome = delegate(plugin_type, "ADD", args)
    _raise_for(outcome, plugin_type)
    return Result.from_json(outcome.stdout, args.cni_version)


def delegate_command(plugin_type: str, command: str, args: CmdArgs) -> None:
    """DEL, CHECK, STATUS or GC on the delegate."""
    _raise_for(delegate(plugin_type, command, args), plugin_type)
