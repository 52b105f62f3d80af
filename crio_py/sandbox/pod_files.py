"""The files every container of a pod shares: hostname, hosts and resolv.conf.

They live on the host under ``<run_root>/pods/<pod-id>/`` and are bind-mounted into each
container, so that a change (e.g. kubelet-managed /etc/hosts entries) is seen by all of them.
The pod's /dev/shm is a tmpfs mounted beside them (crio_py.storage.mounts).
"""

from __future__ import annotations

from pathlib import Path

from crio_py.cri import api_pb2 as pb
from crio_py.state import write_atomic

HOST_RESOLV_CONF = Path("/etc/resolv.conf")


def render_hosts(hostname: str, ips: list[str]) -> str:
    """/etc/hosts as kubelet writes it for a pod: localhost entries, then the pod's own name."""
    lines = [
        "# Kubernetes-managed hosts file (crio-py).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    lines += [f"{ip}\t{hostname}" for ip in ips]
    return "\n".join(lines) + "\n"


def render_resolv_conf(dns: pb.DNSConfig) -> str:
    """resolv.conf from the pod's DNSConfig (servers, search domains, options)."""
    lines = [f"nameserver {server}" for server in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def has_dns(dns: pb.DNSConfig) -> bool:
    return bool(dns.servers or dns.searches or dns.options)


def write_pod_files(pod_dir: Path, hostname: str, dns: pb.DNSConfig, ips: list[str]) -> None:
    """Write hostname, hosts and resolv.conf (the host's when the pod gives no DNS config).

    They live under the run root, gone at reboot with the pod's processes: never fsynced."""
    pod_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    write_atomic(pod_dir / "hostname", (hostname + "\n").encode(), mode=0o644, durable=False)
    write_hosts(pod_dir, hostname, ips)
    if has_dns(dns):
        resolv = render_resolv_conf(dns).encode()
    else:
        try:
            resolv = HOST_RESOLV_CONF.read_bytes()
        except FileNotFoundError:
            resolv = b""
    write_atomic(pod_dir / "resolv.conf", resolv, mode=0o644, durable=False)


def write_hosts(pod_dir: Path, hostname: str, ips: list[str]) -> None:
    """(Re)write the pod's /etc/hosts, e.g. once CNI has given the pod its IPs."""
    write_atomic(pod_dir / "hosts", render_hosts(hostname, ips).encode(), mode=0o644, durable=False)
