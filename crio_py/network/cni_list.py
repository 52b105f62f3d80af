"""Running the plugins of a network list for one command: as one request to our plugin service
when every plugin of the list is ours, else each executable in turn (libcni's way)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crio_py import metrics, trace
from crio_py.network.cni_config import NetworkConfigList
from crio_py.network.cni_exec import (
    TRY_AGAIN_LATER,
    Invocation,
    PluginError,
    error_from_output,
    exec_plugin,
    find_plugin,
    plugin_conf,
    plugin_env,
    run_plugin,
)
from crio_py.network.plugin_service import PluginService, ServiceLost, is_our_plugin

# What one plugin's run gave: its stdout, or why it failed.
Outcome = tuple[str, bytes | PluginError]
# Turns a plugin's ADD output into the next plugin's prevResult; raises PluginError when invalid.
PassOn = Callable[[str, bytes], dict[str, Any]]


class ListRunner:
    """Runs plugin lists for the CNI manager; safe to call from many threads."""

    def __init__(self, service: PluginService | None = None) -> None:
        self.service = service
        self._ours: dict[tuple[str, int], bool] = {}
        self._lock = threading.Lock()

    def is_ours(self, path: Path) -> bool:
        """Whether the plugin executable is one of our launchers (remembered per path and mtime)."""
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except OSError:
            return False
        with self._lock:
            known = self._ours.get(key)
        if known is None:
            known = is_our_plugin(path)
            with self._lock:
                self._ours[key] = known
        return known

    def served(self, paths: list[Path | None]) -> bool:
        """Whether a list of these plugin paths goes to the service as one request."""
        return self.service is not None and bool(paths) and all(p is not None and self.is_ours(p) for p in paths)

    def version(self, path: Path, ptype: str, cni_version: str, plugin_dirs: list[str], timeout: float) -> bytes:
        """The plugin's VERSION answer (the spec's input is the version alone, not the config)."""
        conf = {"cniVersion": cni_version}
        env = plugin_env(Invocation("VERSION"), plugin_dirs)
        if self.service is not None and self.is_ours(path):
            try:
                answers = self.service.run_list(env, [(ptype, conf)], False, False, timeout)
            except ServiceLost as exc:
                raise PluginError(ptype, "VERSION", str(exc), code=TRY_AGAIN_LATER, timed_out=exc.timed_out) from exc
            if answers:
                if answers[0].rc != 0:
                    raise error_from_output(ptype, "VERSION", answers[0].rc, answers[0].stdout, answers[0].stderr)
                return answers[0].stdout
        return exec_plugin(path, "VERSION", env, json.dumps(conf).encode(), timeout)

    def run(
        self,
        net: NetworkConfigList,
        plugins: list[dict[str, Any]],
        inv: Invocation,
        plugin_dirs: list[str],
        timeout: float,
        prev_result: dict[str, Any] | None = None,
        capability_args: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        pass_on: PassOn | None = None,
        keep_going: bool = False,
    ) -> list[Outcome]:
        """Run ``plugins`` in order for ``inv``; one outcome per plugin run.

        ``pass_on`` (ADD): each output becomes the next plugin's prevResult through it.
        ``keep_going`` (DEL, GC): go on past failures; otherwise the first failure ends the list.
        """
        if self.service is not None and self.served([find_plugin(p["type"], plugin_dirs) for p in plugins]):
            steps = [(p["type"], plugin_conf(net, p, prev_result, capability_args, extra)) for p in plugins]
            env = plugin_env(inv, plugin_dirs)
            started = time.monotonic()
            try:
                with trace.span("CNI " + "+".join(p["type"] for p in plugins)):
                    answers = self.service.run_list(
                        env, steps, pass_on is not None, keep_going, timeout * max(1, len(plugins))
                    )
                # The service runs the list as one request: its time is the list's, named a+b+c.
                metrics.CNI_PLUGIN_LATENCY.labels("+".join(p["type"] for p in plugins), inv.command).observe(
                    time.monotonic() - started
                )
            except ServiceLost as exc:
                err = PluginError(
                    plugins[0]["type"], inv.command, str(exc), code=TRY_AGAIN_LATER, timed_out=exc.timed_out
                )
                return [(plugins[0]["type"], err)]
            if answers is not None:
                outcomes: list[Outcome] = []
                for plugin, answer in zip(plugins, answers, strict=False):
                    ptype = plugin["type"]
                    if answer.rc != 0:
                        outcomes.append(
                            (ptype, error_from_output(ptype, inv.command, answer.rc, answer.stdout, answer.stderr))
                        )
                        continue
                    if pass_on is not None:
                        try:
                            pass_on(ptype, answer.stdout)
                        except PluginError as exc:
                            outcomes.append((ptype, exc))
                            break
                    outcomes.append((ptype, answer.stdout))
                return outcomes
        return self._exec_each(
            net, plugins, inv, plugin_dirs, timeout, prev_result, capability_args, extra, pass_on, keep_going
        )

    @staticmethod
    def _exec_each(
        net: NetworkConfigList,
        plugins: list[dict[str, Any]],
        inv: Invocation,
        plugin_dirs: list[str],
        timeout: float,
        prev_result: dict[str, Any] | None,
        capability_args: dict[str, Any] | None,
        extra: dict[str, Any] | None,
        pass_on: PassOn | None,
        keep_going: bool,
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        prev = prev_result
        for plugin in plugins:
            ptype = plugin["type"]
            started = time.monotonic()
            try:
                with trace.span(f"CNI {ptype}"):
                    out = run_plugin(net, plugin, inv, plugin_dirs, timeout, prev, capability_args, extra)
                metrics.CNI_PLUGIN_LATENCY.labels(ptype, inv.command).observe(time.monotonic() - started)
                if pass_on is not None:
                    prev = pass_on(ptype, out)
            except PluginError as exc:
                outcomes.append((ptype, exc))
                if keep_going:
                    continue
                break
            outcomes.append((ptype, out))
        return outcomes


def failures(outcomes: list[Outcome]) -> list[PluginError]:
    """The errors among outcomes."""
    return [out for _, out in outcomes if isinstance(out, PluginError)]
