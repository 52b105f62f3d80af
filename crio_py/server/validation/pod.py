"""RunPodSandbox: the pod config, checked before anything is created."""

from __future__ import annotations

import ipaddress
import re

from crio_py import cgroups, seccomp
from crio_py.cri import api_pb2 as pb
from crio_py.errors import InvalidArgument
from crio_py.server.validation import limits
from crio_py.server.validation.common import (
    check_absolute_path,
    check_dns_name,
    check_id_value,
    check_name,
)
from crio_py.server.validation.resources import check_resources

_SYSCTL = re.compile(r"[a-z0-9_]+([./][a-zA-Z0-9_-]+)+")
# cgroupfs path components kubelet and systemd write (kubepods, burstable, pod<uid>, foo.slice).
_CGROUP_COMPONENT = re.compile(r"[A-Za-z0-9_.:@+=-]+")
# systemd unit names: dashes mean nesting, so none at either end and never two in a row.
_SLICE = re.compile(r"[A-Za-z0-9_.:@]+(-[A-Za-z0-9_.:@]+)*\.slice")


def check_pod_config(config: pb.PodSandboxConfig, cgroup_driver: str, where: str = "config") -> None:
    """Raise InvalidArgument for a malformed pod config; a valid one passes silently."""
    if not config.HasField("metadata"):
        raise InvalidArgument(f"{where}.metadata must be set")
    meta = config.metadata
    for field in ("name", "namespace", "uid"):
        check_name(getattr(meta, field), f"{where}.metadata.{field}")
    if config.hostname:
        check_dns_name(config.hostname, f"{where}.hostname")
    if config.log_directory:
        check_absolute_path(config.log_directory, f"{where}.log_directory")
    _check_dns_config(config.dns_config, f"{where}.dns_config")
    for i, pm in enumerate(config.port_mappings):
        _check_port_mapping(pm, f"{where}.port_mappings[{i}]")
    linux = config.linux
    check_cgroup_parent(linux.cgroup_parent, cgroup_driver, f"{where}.linux.cgroup_parent")
    for name, value in linux.sysctls.items():
        if not _SYSCTL.fullmatch(name):
            raise InvalidArgument(
                f"{where}.linux.sysctls name {name[:80]!r} is not a sysctl name like 'net.ipv4.ip_forward'"
            )
        if "\n" in value:
            raise InvalidArgument(f"{where}.linux.sysctls[{name!r}] must be a single line")
    for field in ("overhead", "resources"):
        if linux.HasField(field):
            check_resources(getattr(linux, field), f"{where}.linux.{field}")
    sc = linux.security_context
    ns = sc.namespace_options
    for field in ("network", "ipc", "pid"):
        if getattr(ns, field) == pb.TARGET:
            raise InvalidArgument(
                f"{where}.linux.security_context.namespace_options.{field}: TARGET is only for containers"
            )
    check_security_basics(sc, f"{where}.linux.security_context")


def check_security_basics(sc: pb.LinuxSandboxSecurityContext | pb.LinuxContainerSecurityContext, where: str) -> None:
    """What pod and container security contexts share: ids and seccomp/apparmor profile references."""
    for field in ("run_as_user", "run_as_group"):
        if sc.HasField(field):
            check_id_value(getattr(sc, field).value, f"{where}.{field}")
    for i, gid in enumerate(sc.supplemental_groups):
        check_id_value(gid, f"{where}.supplemental_groups[{i}]")
    if sc.HasField("seccomp"):
        _check_profile(sc.seccomp, f"{where}.seccomp")
    elif sc.seccomp_profile_path:
        try:
            seccomp.parse_profile_path(sc.seccomp_profile_path)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}.seccomp_profile_path: {exc.message}") from None
    if sc.HasField("apparmor"):
        _check_profile(sc.apparmor, f"{where}.apparmor")


def _check_profile(profile: pb.SecurityProfile, where: str) -> None:
    if profile.profile_type == pb.SecurityProfile.Localhost:
        if not profile.localhost_ref:
            raise InvalidArgument(f"{where}: a Localhost profile needs localhost_ref")
    elif profile.localhost_ref:
        raise InvalidArgument(f"{where}.localhost_ref is only for a Localhost profile")


def check_cgroup_parent(parent: str, driver: str, where: str) -> None:
    """A cgroupfs path below the hierarchies' root, or a systemd slice name, as the driver wants.

    A host path (``/sys/fs/cgroup/x``) is refused: it would make ``<ctrl>/sys/fs/cgroup/x`` in every
    hierarchy.
    """
    if not parent:
        return
    if driver == cgroups.SYSTEMD:
        if len(parent) > limits.MAX_PATH_COMPONENT or not _SLICE.fullmatch(parent):
            raise InvalidArgument(
                f"{where} {parent[:80]!r} must be a systemd slice name like 'kubepods-besteffort.slice' with the "
                "systemd cgroup driver (is kubelet configured for cgroupfs?)"
            )
        return
    if not parent.startswith("/"):
        raise InvalidArgument(
            f"{where} {parent[:80]!r} must be an absolute cgroup path like '/kubepods/pod<uid>' with the cgroupfs "
            "driver (is kubelet configured for systemd?)"
        )
    parts = [p for p in parent.split("/") if p]
    if len(parent) > limits.MAX_PATH or any(
        p in (".", "..") or len(p) > limits.MAX_PATH_COMPONENT or not _CGROUP_COMPONENT.fullmatch(p) for p in parts
    ):
        raise InvalidArgument(
            f"{where} {parent[:80]!r} is not a cgroup path: components of letters, digits and '_.:@+=-', no '.' or '..'"
        )
    if parts[:3] == ["sys", "fs", "cgroup"]:
        raise InvalidArgument(
            f"{where} {parent[:80]!r} is a host path; a cgroup parent is relative to the cgroup root "
            "(like '/kubepods/pod<uid>')"
        )


def _check_dns_config(dns: pb.DNSConfig, where: str) -> None:
    for i, server in enumerate(dns.servers):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidArgument(f"{where}.servers[{i}] {server[:80]!r} is not an IP address") from None
    for field in ("searches", "options"):
        for i, word in enumerate(getattr(dns, field)):
            if not word or any(c.isspace() for c in word):
                raise InvalidArgument(f"{where}.{field}[{i}] {word[:80]!r} must be a single non-empty word")


def _check_port_mapping(pm: pb.PortMapping, where: str) -> None:
    if not 1 <= pm.container_port <= limits.MAX_PORT:
        raise InvalidArgument(f"{where}.container_port {pm.container_port} is not in 1..{limits.MAX_PORT}")
    if not 0 <= pm.host_port <= limits.MAX_PORT:
        raise InvalidArgument(f"{where}.host_port {pm.host_port} is not in 0..{limits.MAX_PORT}")
    if pm.host_ip:
        try:
            ipaddress.ip_address(pm.host_ip)
        except ValueError:
            raise InvalidArgument(f"{where}.host_ip {pm.host_ip[:80]!r} is not an IP address") from None
