from __future__ import annotations

from pathlib import Path

import pytest

from crio_py.cri import api_pb2 as pb
from crio_py.errors import InvalidArgument
from crio_py.sandbox import pod_files
from crio_py.sandbox.model import Sandbox, reserved_name
from crio_py.server.validation import RequestValidator


def test_resolv_conf_renders_servers_searches_options() -> None:
    dns = pb.DNSConfig(servers=["10.96.0.10", "fd00::a"], searches=["ns.svc.cluster.local", "cluster.local"],
                       options=["ndots:5", "edns0"])
    assert pod_files.render_resolv_conf(dns) == (
        "nameserver 10.96.0.10\nnameserver fd00::a\nsearch ns.svc.cluster.local cluster.local\noptions ndots:5 edns0\n"
    )


def test_hosts_has_localhost_and_the_pod(tmp_path: Path) -> None:
    pod_files.write_pod_files(tmp_path, "web-0", pb.DNSConfig(), ["10.85.0.7", "fd00::7"])
    hosts = (tmp_path / "hosts").read_text()
    assert "127.0.0.1\tlocalhost" in hosts
    assert "10.85.0.7\tweb-0" in hosts and "fd00::7\tweb-0" in hosts
    assert (tmp_path / "hostname").read_text() == "web-0\n"


def test_host_resolv_conf_is_used_without_dns_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = tmp_path / "host-resolv"
    host.write_text("nameserver 192.0.2.53\n")
    monkeypatch.setattr(pod_files, "HOST_RESOLV_CONF", host)
    pod_files.write_pod_files(tmp_path / "pod", "x", pb.DNSConfig(), [])
    assert (tmp_path / "pod" / "resolv.conf").read_text() == "nameserver 192.0.2.53\n"


def _config(**kw: object) -> pb.PodSandboxConfig:
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="web", namespace="default", uid="u1"))
    for key, value in kw.items():
        if key == "dns":
            cfg.dns_config.CopyFrom(value)  # type: ignore[arg-type]
        elif key == "port":
            cfg.port_mappings.append(value)  # type: ignore[arg-type]
        else:
            setattr(cfg, key, value)
    return cfg


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (pb.PodSandboxConfig(), "metadata must be set"),
        (pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="a", namespace="b")), "metadata.uid"),
        (_config(hostname="Bad_Host!"), "not a valid DNS name"),
        (_config(hostname="a" * 64), "not a valid DNS name"),
        (_config(log_directory="relative/logs"), "must be an absolute path"),
        (_config(log_directory="/var/log/../etc"), "must not contain '..'"),
        (_config(dns=pb.DNSConfig(servers=["8.8.8"])), "is not an IP address"),
        (_config(dns=pb.DNSConfig(options=["two words"])), "single non-empty word"),
        (_config(port=pb.PortMapping(protocol=7, container_port=80)), "protocol has unknown value 7"),
        (_config(port=pb.PortMapping(container_port=0)), "container_port 0"),
        (_config(port=pb.PortMapping(container_port=80, host_port=70000)), "host_port 70000"),
        (_config(port=pb.PortMapping(container_port=80, host_ip="localhost")), "host_ip"),
    ],
)
def test_bad_pod_configs_are_invalid_argument(config: pb.PodSandboxConfig, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_pod_config(config)


def check_pod_config(config: pb.PodSandboxConfig) -> None:
    RequestValidator().check("RunPodSandbox", pb.RunPodSandboxRequest(config=config))


def test_a_good_config_passes_and_round_trips_through_the_record() -> None:
    cfg = _config(hostname="web-0.example", log_directory="/var/log/pods/x",
                  dns=pb.DNSConfig(servers=["10.0.0.10"]), port=pb.PortMapping(container_port=80, host_port=8080))
    check_pod_config(cfg)
    pod = Sandbox(id="a" * 64, name=reserved_name(cfg.metadata), config=cfg, runtime_handler="runc",
                  created_at_ns=1, ips=["10.85.0.2"])
    again = Sandbox.from_record(pod.to_record())
    assert again.config == cfg and again.ips == ["10.85.0.2"] and again.name == "k8s_web_default_u1_0"
