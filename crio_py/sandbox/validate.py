"""Checks of a RunPodSandbox request, before anything is created."""

from __future__ import annotations

import ipaddress
import re

from crio_py.cri import api_pb2 as pb
from crio_py.errors import InvalidArgument

# RFC 1123 labels joined by dots (node names of hostNetwork pods may be FQDNs).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_dns_name(hostname: str) -> None:
    if len(hostname) > 253 or not all(_DNS_LABEL.match(label) for label in hostname.split(".")):
        raise InvalidArgument(
            f"hostname {hostname!r} is not a valid DNS name (lowercase RFC 1123 labels of 1-63 characters)"
        )


def check_path(what: str, path: str) -> None:
    """An absolute path with no '..' component."""
    if not path.startswith("/"):
        raise InvalidArgument(f"{what} {path!r} must be an absolute path")
    if ".." in path.split("/"):
        raise InvalidArgument(f"{what} {path!r} must not contain '..'")


def check_pod_config(config: pb.PodSandboxConfig) -> None:
    """Raise InvalidArgument for a malformed pod config; a valid one passes silently."""
    if not config.HasField("metadata"):
        raise InvalidArgument("pod sandbox config has no metadata")
    meta = config.metadata
    for field in ("name", "namespace", "uid"):
        if not getattr(meta, field):
            raise InvalidArgument(f"pod sandbox metadata.{field} must not be empty")
    if config.hostname:
        check_dns_name(config.hostname)
    if config.log_directory:
        check_path("log_directory", config.log_directory)
    for server in config.dns_config.servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidArgument(f"dns_config server {server!r} is not an IP address") from None
    for word in (*config.dns_config.searches, *config.dns_config.options):
        if not word or any(c.isspace() for c in word):
            raise InvalidArgument(f"dns_config entry {word!r} must be a single non-empty word")
    for pm in config.port_mappings:
        if pm.protocol not in pb.Protocol.values():
            raise InvalidArgument(f"port mapping protocol {pm.protocol} is not TCP, UDP or SCTP")
        if not 1 <= pm.container_port <= 65535:
            raise InvalidArgument(f"port mapping container_port {pm.container_port} is not in 1..65535")
        if not 0 <= pm.host_port <= 65535:
            raise InvalidArgument(f"port mapping host_port {pm.host_port} is not in 0..65535")
        if pm.host_ip:
            try:
                ipaddress.ip_address(pm.host_ip)
            except ValueError:
                raise InvalidArgument(f"port mapping host_ip {pm.host_ip!r} is not an IP address") from None
    ns = config.linux.security_context.namespace_options
    for field in ("network", "pid", "ipc"):
        value = getattr(ns, field)
        if value not in pb.NamespaceMode.values():
            raise InvalidArgument(f"namespace_options.{field} has unknown mode {value}")
    if ns.network == pb.TARGET or ns.ipc == pb.TARGET:
        raise InvalidArgument("namespace mode TARGET is only valid for the pid namespace of a container")
