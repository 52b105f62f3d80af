"""CNIManager: the pod network as the CRI sees it (status, setup, teardown, check, GC).

Follows libcni's list semantics: ADD runs the plugins in order, each getting the previous result as
``prevResult``; DEL runs them in reverse with the cached result; CHECK (>= 0.4.0) and GC/STATUS
(>= 1.1.0) only when the config's version has them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crio_py.config import CNIConfig
from crio_py.errors import (
    CrioError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    Unavailable,
)
from crio_py.network import cni_result
from crio_py.network.cni_cache import CacheEntry, ResultCache
from crio_py.network.cni_config import ConfigInvalid, ConfigWatcher, NetworkConfigList, parse_bytes, version_at_least
from crio_py.network.cni_exec import (
    CONFIG_ERROR_CODES,
    PLUGIN_NOT_AVAILABLE,
    PLUGIN_NOT_AVAILABLE_LIMITED,
    TRY_AGAIN_LATER,
    Invocation,
    PluginError,
    cni_args,
    find_plugin,
    parse_json,
)
from crio_py.network.cni_list import ListRunner, PassOn, failures
from crio_py.network.model import (
    DEFAULT_IFNAME,
    NOT_READY_REASON,
    AttachmentResult,
    NetworkStatus,
    PodAttachment,
)
from crio_py.network.netns import is_netns
from crio_py.network.plugin_service import PluginService

log = logging.getLogger(__name__)
# libcni's default when no plugin dir is configured.
DEFAULT_PLUGIN_DIRS = ["/opt/cni/bin"]
# CNI spec: container IDs are alphanumeric plus '_', '.', '-'; they also name cache files.
_CONTAINER_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


@dataclass(frozen=True)
class _Target:
    """One attachment to run DEL/CHECK for: the config and arguments it was added with."""

    net: NetworkConfigList
    cni_args: list[tuple[str, str]]
    capability_args: dict[str, Any]
    result: dict[str, Any] | None
    entry: CacheEntry | None


def _pod_args(att: PodAttachment) -> list[tuple[str, str]]:
    """CNI_ARGS pairs; ``IgnoreUnknown=1`` first so plugins that know none of the K8S_ keys accept them."""
    return [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", att.namespace),
        ("K8S_POD_NAME", att.name),
        ("K8S_POD_INFRA_CONTAINER_ID", att.pod_id),
        ("K8S_POD_UID", att.uid),
    ]


def capability_args(att: PodAttachment) -> dict[str, Any]:
    """The runtimeConfig values the pod asks for, keyed by CNI capability name."""
    args: dict[str, Any] = {}
    if att.port_mappings:
        ports = []
        for pm in att.port_mappings:
            port: dict[str, Any] = {
                "hostPort": pm.host_port,
                "containerPort": pm.container_port,
                "protocol": pm.protocol.lower(),
            }
            if pm.host_ip:
                port["hostIP"] = pm.host_ip
            ports.append(port)
        args["portMappings"] = ports
    if att.bandwidth:
        args["bandwidth"] = dict(att.bandwidth)
    if att.dns:
        args["dns"] = dict(att.dns)
    return args


def _pod_label(att: PodAttachment) -> str:
    return f"pod {att.namespace}/{att.name} ({att.pod_id[:12]})"


def _add_result(ptype: str, out: bytes) -> dict[str, Any]:
    """A plugin's ADD output as a normalized result; PluginError when it is not one."""
    try:
        return cni_result.normalize(parse_json(ptype, "ADD", out))
    except cni_result.ResultInvalid as exc:
        raise PluginError(ptype, "ADD", f"invalid result: {exc}") from exc


def to_crio_error(exc: PluginError, context: str) -> CrioError:
    """Map a plugin failure to the error class the server turns into a gRPC code."""
    text = f"{context}: {exc.describe()}"
    if exc.timed_out:
        return DeadlineExceeded(text)
    if exc.code in (TRY_AGAIN_LATER, PLUGIN_NOT_AVAILABLE, PLUGIN_NOT_AVAILABLE_LIMITED):
        return Unavailable(text)
    if exc.code in CONFIG_ERROR_CODES:
        return FailedPrecondition(text)
    return Internal(text)


class CNIManager:
    """Runs the configured CNI network list for pods; safe to call from many threads."""

    def __init__(self, cfg: CNIConfig, service: PluginService | None = None) -> None:
        """``service``: the service behind our own plugins, started once a network list uses them."""
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, int], list[str]] = {}
        self._runner = ListRunner(service)
        self._apply(cfg)

    def _apply(self, cfg: CNIConfig) -> None:
        self._cfg = cfg
        self._watcher = ConfigWatcher(Path(cfg.conf_dir), cfg.default_network)
        self._cache = ResultCache(Path(cfg.cache_dir))

    def reload(self, cfg: CNIConfig) -> None:
        """Use a new configuration from now on (the conf dir is re-read on the next call)."""
        with self._lock:
            self._apply(cfg)

    @property
    def _plugin_dirs(self) -> list[str]:
        return list(self._cfg.plugin_dirs) or DEFAULT_PLUGIN_DIRS

    # ---- readiness ---------------------------------------------------------------------

    def _supported_versions(self, path: Path, net: NetworkConfigList, ptype: str) -> list[str]:
        """The plugin's VERSION answer, remembered per binary (path and mtime) so status() stays cheap."""
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            known = self._versions.get(key)
        if known is not None:
            return known
        out = self._runner.version(path, ptype, net.cni_version, self._plugin_dirs, self._cfg.plugin_timeout)
        data = parse_json(ptype, "VERSION", out)
        versions = data.get("supportedVersions") if isinstance(data, dict) else None
        if not isinstance(versions, list):
            raise PluginError(ptype, "VERSION", f"answered without supportedVersions: {data!r}")
        with self._lock:
            self._versions[key] = [str(v) for v in versions]
        return self._versions[key]

    def _usable_network(self) -> tuple[NetworkConfigList | None, str]:
        """The network to use, or why there is none: no valid config, a missing or incompatible plugin."""
        found = self._watcher.current()
        net = found.network
        if net is None:
            return None, found.problem
        self._start_service_if_used(net)
        for plugin in net.plugins:
            ptype = plugin["type"]
            path = find_plugin(ptype, self._plugin_dirs)
            if path is None:
                return None, (
                    f"CNI plugin {ptype!r} of network {net.name!r} ({net.source}) not found in "
                    f"{', '.join(self._plugin_dirs)}"
                )
            try:
                versions = self._supported_versions(path, net, ptype)
            except (OSError, PluginError) as exc:
                return None, f"CNI plugin {path} cannot tell its versions: {exc}"
            if net.cni_version not in versions:
                return None, (
                    f"CNI plugin {path} does not support cniVersion {net.cni_version} of network {net.name!r} "
                    f"({net.source}); it supports {', '.join(versions)}"
                )
        return net, ""

    def _start_service_if_used(self, net: NetworkConfigList) -> None:
        service = self._runner.service
        if service is None:
            return
        paths = [find_plugin(p["type"], self._plugin_dirs) for p in net.plugins]
        if any(p is not None and self._runner.is_ours(p) for p in paths):
            service.ensure_started()

    def start_service_if_used(self) -> None:
        """Start the plugin service now when the current network uses one of our plugins (the
        first pod then finds it ready); it is not started at all for networks that do not."""
        net = self._watcher.current().network
        if net is not None:
            self._start_service_if_used(net)

    def _run(
        self,
        net: NetworkConfigList,
        plugins: list[dict[str, Any]],
        inv: Invocation,
        prev: dict[str, Any] | None = None,
        caps: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        pass_on: PassOn | None = None,
        keep_going: bool = False,
    ) -> list[tuple[str, bytes | PluginError]]:
        return self._runner.run(
            net, plugins, inv, self._plugin_dirs, self._cfg.plugin_timeout, prev, caps, extra, pass_on, keep_going
        )

    def status(self) -> NetworkStatus:
        """Ready while the conf dir holds a usable network config (and, from CNI 1.1, its plugins say so)."""
        net, problem = self._usable_network()
        if net is None:
            return NetworkStatus(False, NOT_READY_REASON, f"Network plugin returns error: {problem}")
        if net.supports_status:
            for exc in failures(self._run(net, net.plugins, Invocation("STATUS"))):
                return NetworkStatus(
                    False, NOT_READY_REASON, f"Network plugin returns error: network {net.name!r}: {exc}"
                )
        return NetworkStatus(True, "", "")

    # ---- ADD ---------------------------------------------------------------------------

    def _check_attachment(self, att: PodAttachment) -> None:
        if not _CONTAINER_ID_RE.match(att.pod_id):
            raise InvalidArgument(f"pod id {att.pod_id!r} cannot be a CNI container ID")
        for key, value in _pod_args(att):
            if ";" in value or "=" in value:
                raise InvalidArgument(f"{key} {value!r} cannot be passed in CNI_ARGS (contains ';' or '=')")

    def setup(self, att: PodAttachment) -> AttachmentResult:
        """ADD the pod to the network; on any failure, DEL what was done and raise with the plugin's text."""
        self._check_attachment(att)
        net, problem = self._usable_network()
        if net is None:
            raise FailedPrecondition(f"cannot set up the network of {_pod_label(att)}: network not ready: {problem}")
        if not is_netns(Path(att.netns_path)):
            raise FailedPrecondition(f"network namespace {att.netns_path!r} of {_pod_label(att)} does not exist")
        args = _pod_args(att)
        caps = capability_args(att)
        entry = CacheEntry(
            network=net.name,
            container_id=att.pod_id,
            ifname=DEFAULT_IFNAME,
            config=net.to_bytes(),
            netns=att.netns_path,
            cni_args=args,
            capability_args=caps,
        )
        context = f"CNI ADD of {_pod_label(att)} to network {net.name!r}"
        try:
            # Recorded before the first plugin runs: a crash mid-ADD leaves an entry for gc() to undo.
            self._cache.write(entry)
        except OSError as exc:
            raise Internal(f"{context}: cannot write the CNI cache: {exc}") from exc
        inv = Invocation("ADD", att.pod_id, att.netns_path, DEFAULT_IFNAME, cni_args(args))
        common: dict[str, Any] | None = None

        def pass_on(ptype: str, out: bytes) -> dict[str, Any]:
            return cni_result.render(_add_result(ptype, out), net.cni_version)

        try:
            for ptype, out in self._run(net, net.plugins, inv, caps=caps, pass_on=pass_on):
                if isinstance(out, PluginError):
                    raise out
                common = _add_result(ptype, out)
            assert common is not None  # a list has at least one plugin
            stored = cni_result.render(common, net.cni_version)
            self._cache.write(dataclasses.replace(entry, result=stored))
        except (PluginError, OSError) as exc:
            self._rollback(net, entry, common, att)
            if isinstance(exc, OSError):
                raise Internal(f"{context}: cannot write the CNI cache: {exc}") from exc
            raise to_crio_error(exc, context) from exc
        ips = cni_result.pod_ips(common)
        log.info("pod network attached", extra={"pod_id": att.pod_id, "network": net.name, "ips": ips})
        return AttachmentResult(net.name, DEFAULT_IFNAME, ips, common)

    def _rollback(
        self, net: NetworkConfigList, entry: CacheEntry, common: dict[str, Any] | None, att: PodAttachment
    ) -> None:
        """Undo a failed ADD with DEL over the whole list, best-effort."""
        target = _Target(net, entry.cni_args, entry.capability_args, common, entry)
        errors = self._del(target, att.pod_id, att.netns_path)
        if errors:
            log.warning(
                "rollback of a failed CNI ADD was incomplete; gc() retries it",
                extra={"pod_id": att.pod_id, "error": "; ".join(str(e) for e in errors)},
            )
        else:
            self._cache.remove(entry)

    # ---- DEL ---------------------------------------------------------------------------

    def _del(self, target: _Target, container_id: str, netns: str) -> list[PluginError]:
        """DEL through every plugin in reverse, going on past failures; the failures."""
        net = target.net
        prev = None
        if target.result is not None and version_at_least(net.cni_version, "0.4.0"):
            # prevResult on DEL came with 0.4.0; older plugins would reject the unknown key.
            prev = cni_result.render(cni_result.normalize(target.result), net.cni_version)
        inv = Invocation("DEL", container_id, netns, DEFAULT_IFNAME, cni_args(target.cni_args))
        return failures(self._run(net, net.plugins[::-1], inv, prev, target.capability_args, keep_going=True))

    def _cached_target(self, entry: CacheEntry) -> _Target | None:
        """A DEL target from a cache entry; None (and the entry dropped) when it is unusable."""
        try:
            net = parse_bytes(entry.config, f"cache entry of {entry.container_id}")
            result = cni_result.normalize(entry.result) if entry.result is not None else None
        except (ConfigInvalid, cni_result.ResultInvalid) as exc:
            log.warning("unusable CNI cache entry removed", extra={"pod_id": entry.container_id, "error": str(exc)})
            self._cache.remove(entry)
            return None
        return _Target(net, entry.cni_args, entry.capability_args, result, entry)

    def _targets(self, att: PodAttachment) -> list[_Target]:
        """What to DEL for a pod: its cache entries, or (none cached) the current network with its args."""
        targets = []
        for entry in self._cache.find(att.pod_id, DEFAULT_IFNAME):
            target = self._cached_target(entry)
            if target is not None:
                targets.append(target)
        if not targets:
            net = self._watcher.current().network
            if net is not None:
                targets.append(_Target(net, _pod_args(att), capability_args(att), None, None))
        return targets

    def teardown(self, att: PodAttachment) -> None:
        """DEL the pod from its network(s), using the cached config and result. Idempotent and best-effort:
        failures are logged, and raised (Internal) only when a plugin fails while the netns still exists."""
        self._check_attachment(att)
        present = is_netns(Path(att.netns_path)) if att.netns_path else False
        netns = att.netns_path if present else ""
        targets = self._targets(att)
        if not targets:
            log.info("no CNI network to detach from", extra={"pod_id": att.pod_id})
        for target in targets:
            errors = self._del(target, att.pod_id, netns)
            if errors and present:
                text = "; ".join(e.describe() for e in errors)
                raise Internal(f"CNI DEL of {_pod_label(att)} from network {target.net.name!r}: {text}")
            for exc in errors:
                log.warning(
                    "CNI DEL failed with the network namespace gone; ignored",
                    extra={"pod_id": att.pod_id, "network": target.net.name, "error": exc.describe()},
                )
            if target.entry is not None:
                self._cache.remove(target.entry)
        log.info("pod network detached", extra={"pod_id": att.pod_id})

    # ---- CHECK, cache, GC --------------------------------------------------------------

    def check(self, att: PodAttachment) -> None:
        """CHECK the attachment against its cached result (a no-op for configs older than 0.4.0)."""
        self._check_attachment(att)
        targets = [t for t in self._targets(att) if t.entry is not None]
        if not targets:
            raise FailedPrecondition(f"{_pod_label(att)} has no recorded CNI attachment to check")
        if not is_netns(Path(att.netns_path)):
            raise FailedPrecondition(f"network namespace {att.netns_path!r} of {_pod_label(att)} does not exist")
        for target in targets:
            net = target.net
            if not net.supports_check:
                continue
            if target.result is None:
                raise FailedPrecondition(f"CNI ADD of {_pod_label(att)} to network {net.name!r} never completed")
            prev = cni_result.render(target.result, net.cni_version)
            inv = Invocation("CHECK", att.pod_id, att.netns_path, DEFAULT_IFNAME, cni_args(target.cni_args))
            for exc in failures(self._run(net, net.plugins, inv, prev, target.capability_args)):
                raise to_crio_error(exc, f"CNI CHECK of {_pod_label(att)} on network {net.name!r}") from exc

    def cached_result(self, pod_id: str) -> AttachmentResult | None:
        """The pod's last ADD result from the cache (survives restarts); None when there is none."""
        for entry in self._cache.find(pod_id, DEFAULT_IFNAME):
            if entry.result is None:
                continue
            try:
                common = cni_result.normalize(entry.result)
            except cni_result.ResultInvalid as exc:
                log.warning("unusable cached CNI result", extra={"pod_id": pod_id, "error": str(exc)})
                continue
            return AttachmentResult(entry.network, entry.ifname, cni_result.pod_ips(common), common)
        return None

    def _release_stale(self, entry: CacheEntry) -> None:
        target = self._cached_target(entry)
        if target is None:
            return
        present = is_netns(Path(entry.netns)) if entry.netns else False
        errors = self._del(target, entry.container_id, entry.netns if present else "")
        if errors and present:
            log.warning(
                "CNI DEL of a stale attachment failed; kept for the next GC",
                extra={"pod_id": entry.container_id, "error": "; ".join(e.describe() for e in errors)},
            )
            return
        self._cache.remove(entry)
        log.info("stale CNI attachment released", extra={"pod_id": entry.container_id, "network": target.net.name})

    def gc(self, valid: list[PodAttachment]) -> None:
        """Reclaim what crashed or forgotten pods hold: DEL every cached attachment not in ``valid``,
        then CNI GC (1.1.0+) with the valid ones so plugins can free anything else."""
        keep = {(a.pod_id, DEFAULT_IFNAME) for a in valid}
        for entry in self._cache.all():
            if (entry.container_id, entry.ifname) in keep:
                continue
            try:
                self._release_stale(entry)
            except Exception as exc:  # a hostile or damaged entry must not stop the daemon's start
                self._cache.quarantine(entry, exc)
        net = self._watcher.current().network
        if net is None or not net.supports_gc:
            return
        attachments = [{"containerID": cid, "ifname": ifname} for cid, ifname in sorted(keep)]
        extra = {"cni.dev/valid-attachments": attachments}
        for exc in failures(self._run(net, net.plugins, Invocation("GC"), extra=extra, keep_going=True)):
            log.warning("CNI GC failed", extra={"network": net.name, "error": exc.describe()})
