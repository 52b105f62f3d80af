"""The validation layer at the server edge: each hostile request of the audit (issue 15) is a
clean INVALID_ARGUMENT naming the field, and the handler behind it never runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from crio_py import cgroups
from crio_py.cri import api_pb2 as pb
from crio_py.cri import api_pb2_grpc
from crio_py.errors import InvalidArgument
from crio_py.server.grpc_server import CRIServer
from crio_py.server.validation import RequestValidator, check_privilege, limits
from crio_py.server.validation.wire import undecodable_field

MiB = 1024 * 1024


class Recorder:
    """Handlers that only record what reached them."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        if not name[0].isupper():
            raise AttributeError(name)

        def handler(request: Any, context: Any) -> Any:
            self.seen.append(request)
            return getattr(pb, f"{name}Response")()

        return handler


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[grpc.Channel, Recorder]]:
    handlers = Recorder()
    server = CRIServer(tmp_path / "s.sock", handlers, handlers)
    server.start()
    channel = grpc.insecure_channel(f"unix://{tmp_path / 's.sock'}")
    try:
        yield channel, handlers
    finally:
        channel.close()
        server.stop(1)


def _set(message: Any, fields: dict[str, Any]) -> Any:
    """Set ``a__b__c=value`` fields of ``message`` (lists extend, messages are copied in)."""
    for key, value in fields.items():
        target = message
        *parents, last = key.split("__")
        for p in parents:
            target = getattr(target, p)
        if isinstance(value, list):
            getattr(target, last).extend(value)
        elif isinstance(value, Message):
            getattr(target, last).CopyFrom(value)
        else:
            setattr(target, last, value)
    return message


def pod_config(**kw: Any) -> pb.PodSandboxConfig:
    return _set(pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="web", namespace="default", uid="u-1")), kw)


def container_config(**kw: Any) -> pb.ContainerConfig:
    return _set(pb.ContainerConfig(metadata=pb.ContainerMetadata(name="app"), image=pb.ImageSpec(image="busybox")), kw)


def refused(rpc: str, request: Any, match: str, driver: str = cgroups.CGROUPFS) -> None:
    with pytest.raises(InvalidArgument, match=match):
        RequestValidator(lambda: driver).check(rpc, request)


def accepted(rpc: str, request: Any, driver: str = cgroups.CGROUPFS) -> None:
    RequestValidator(lambda: driver).check(rpc, request)


def run_pod(config: pb.PodSandboxConfig) -> pb.RunPodSandboxRequest:
    return pb.RunPodSandboxRequest(config=config)


def create(config: pb.ContainerConfig) -> pb.CreateContainerRequest:
    return pb.CreateContainerRequest(pod_sandbox_id="p", config=config)


def test_a_valid_pod_and_container_pass() -> None:
    accepted("RunPodSandbox", run_pod(pod_config(hostname="web-0", log_directory="/var/log/pods/x")))
    accepted("CreateContainer", create(container_config(command=["sh", "-c", "true"], working_dir="/srv")))


@pytest.mark.parametrize("field", ["metadata__name", "metadata__namespace", "metadata__uid", "log_directory"])
def test_nul_bytes_are_refused_naming_the_field(field: str) -> None:  # finding 3 (and 0's cause)
    value = "/var/log/x\0y" if field == "log_directory" else "de\0fault"
    refused("RunPodSandbox", run_pod(pod_config(**{field: value})), field.replace("__", ".") + ".*NUL")


def test_nul_in_a_container_log_path_and_env_value() -> None:
    refused("CreateContainer", create(container_config(log_path="a\0.log")), r"config\.log_path must not contain a NUL")
    refused(
        "CreateContainer", create(container_config(envs=[pb.KeyValue(key="A", value=b"x\0y")])), r"envs\[0\]\.value"
    )


@pytest.mark.parametrize("kind", [7, 9])
def test_seccomp_profile_type_outside_the_enum(kind: int) -> None:  # finding 3
    sc = pb.LinuxSandboxSecurityContext(seccomp=pb.SecurityProfile(profile_type=kind))
    refused(
        "RunPodSandbox",
        run_pod(pod_config(linux__security_context=sc)),
        rf"seccomp\.profile_type has unknown value {kind}",
    )
    ctr = pb.LinuxContainerSecurityContext(seccomp=pb.SecurityProfile(profile_type=kind))
    refused("CreateContainer", create(container_config(linux__security_context=ctr)), "profile_type has unknown value")


@pytest.mark.parametrize("mode", [7, 12345])
def test_namespace_modes_outside_the_enum(mode: int) -> None:  # finding 7
    config = pod_config()
    config.linux.security_context.namespace_options.pid = mode
    refused("RunPodSandbox", run_pod(config), rf"namespace_options\.pid has unknown value {mode}")


@pytest.mark.parametrize("name", ["../../etc/x", "/etc/x", "a b", "x_y", "", "-a", "a" * 254, "a..b"])
def test_container_names_are_validated_like_pod_names(name: str) -> None:  # finding 7
    refused("CreateContainer", create(container_config(metadata__name=name)), r"config\.metadata\.name")
    refused("RunPodSandbox", run_pod(pod_config(metadata__name=name)), r"config\.metadata\.name")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("cpu_shares", -1, "cpu_shares -1"),
        ("cpu_shares", -(2**63), "cpu_shares"),
        ("cpu_shares", 262145, "cpu_shares"),
        ("memory_limit_in_bytes", 1, "memory_limit_in_bytes 1 "),
        ("memory_limit_in_bytes", 4096, "memory_limit_in_bytes 4096"),
        ("memory_limit_in_bytes", -(2**63), "memory_limit_in_bytes"),
        ("memory_swap_limit_in_bytes", 5, "memory_swap_limit_in_bytes"),
        ("cpu_quota", -2, "cpu_quota -2"),
        ("cpu_period", 2**63 - 1, "cpu_period"),
        ("oom_score_adj", 1001, "oom_score_adj"),
        ("cpuset_cpus", "abc", "cpuset_cpus 'abc'"),
        ("cpuset_cpus", "0-4096", "does not have"),
        ("cpuset_mems", "3-1", "cpuset_mems"),
    ],
)
def test_resources_out_of_range_are_refused_naming_the_field(field: str, value: Any, match: str) -> None:  # finding 4
    res = pb.LinuxContainerResources(**{field: value})
    refused("CreateContainer", create(container_config(linux__resources=res)), match)
    refused("UpdateContainerResources", pb.UpdateContainerResourcesRequest(container_id="c", linux=res), match)
    refused("RunPodSandbox", run_pod(pod_config(linux__resources=res)), match)


def test_hugepage_limits_and_unified_keys() -> None:  # finding 4
    huge = pb.LinuxContainerResources(hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=2**64 - 1)])
    refused("UpdateContainerResources", pb.UpdateContainerResourcesRequest(container_id="c", linux=huge), "limit")
    odd = pb.LinuxContainerResources(hugepage_limits=[pb.HugepageLimit(page_size="3XB", limit=1)])
    refused("UpdateContainerResources", pb.UpdateContainerResourcesRequest(container_id="c", linux=odd), "page_size")
    unified = pb.LinuxContainerResources(unified={"../memory.max": "1"})
    refused("UpdateContainerResources", pb.UpdateContainerResourcesRequest(container_id="c", linux=unified), "unified")


def test_swap_needs_a_memory_limit_at_least_as_large() -> None:  # found by the fuzz suite
    swap_only = pb.LinuxContainerResources(memory_swap_limit_in_bytes=1136196702073578619)
    update = pb.UpdateContainerResourcesRequest(container_id="c", linux=swap_only)
    refused("UpdateContainerResources", update, "memory_swap_limit_in_bytes needs memory_limit_in_bytes")
    below = pb.LinuxContainerResources(memory_limit_in_bytes=64 * MiB, memory_swap_limit_in_bytes=32 * MiB)
    refused("CreateContainer", create(container_config(linux__resources=below)), "must not be below")
    unlimited = pb.LinuxContainerResources(memory_limit_in_bytes=64 * MiB, memory_swap_limit_in_bytes=-1)
    accepted("CreateContainer", create(container_config(linux__resources=unlimited)))


def test_cpu_shares_one_becomes_two_and_zero_stays_unset() -> None:
    request = pb.UpdateContainerResourcesRequest(container_id="c", linux=pb.LinuxContainerResources(cpu_shares=1))
    accepted("UpdateContainerResources", request)
    assert request.linux.cpu_shares == limits.MIN_CPU_SHARES
    request.linux.cpu_shares = 0
    accepted("UpdateContainerResources", request)
    assert request.linux.cpu_shares == 0


def test_a_relative_working_dir_is_refused() -> None:  # finding 4
    refused(
        "CreateContainer", create(container_config(working_dir="srv")), r"working_dir 'srv' must be an absolute path"
    )


def test_huge_commands_and_env_keys_are_refused_up_front() -> None:  # finding 5
    huge_command = container_config(command=["x" * MiB])
    refused("CreateContainer", create(huge_command), r"config\.command\[0\] is 1048576 characters long")
    huge_key = container_config(envs=[pb.KeyValue(key="K" * MiB, value=b"v")])
    refused("CreateContainer", create(huge_key), r"envs\[0\]\.key")
    split = container_config(envs=[pb.KeyValue(key="K" * 70_000, value=b"v" * 70_000)])
    refused("CreateContainer", create(split), "environment variable 'KKK.* is 140001 bytes long")
    many = ["x" * 100_000] * 11
    refused("CreateContainer", create(container_config(args=many)), "command line and environment take")
    refused("ExecSync", pb.ExecSyncRequest(container_id="c", cmd=["y" * MiB]), r"cmd\[0\]")


def test_sizes_of_lists_maps_and_strings() -> None:
    refused("RunPodSandbox", run_pod(pod_config(hostname="h" * 5000)), "hostname is 5000 characters")
    many_mounts = container_config(mounts=[pb.Mount(container_path="/a", host_path="/b")] * 1025)
    refused("CreateContainer", create(many_mounts), r"config\.mounts has 1025 entries")
    big_labels = pod_config()
    big_labels.labels.update({f"k{i}": "v" * 1000 for i in range(300)})
    refused("RunPodSandbox", run_pod(big_labels), "labels hold")


@pytest.mark.parametrize("parent", ["/sys/fs/cgroup/x", "relative", "/a/../b", "/a b", "/a/./b", "kubepods.slice"])
def test_cgroupfs_parents(parent: str) -> None:  # finding 6
    refused("RunPodSandbox", run_pod(pod_config(linux__cgroup_parent=parent)), "cgroup_parent")


@pytest.mark.parametrize("parent", ["/kubepods/burstable/pod1", "/crio-py/", "/"])
def test_cgroupfs_parents_accepted(parent: str) -> None:
    accepted("RunPodSandbox", run_pod(pod_config(linux__cgroup_parent=parent)))


@pytest.mark.parametrize("parent", ["/kubepods", "kubepods--a.slice", "-a.slice", "a.scope", "kube pods.slice"])
def test_systemd_parents(parent: str) -> None:  # finding 6
    refused("RunPodSandbox", run_pod(pod_config(linux__cgroup_parent=parent)), "slice", driver=cgroups.SYSTEMD)
    accepted(
        "RunPodSandbox", run_pod(pod_config(linux__cgroup_parent="kubepods-besteffort-pod1.slice")), cgroups.SYSTEMD
    )


def test_privileged_container_needs_a_privileged_pod() -> None:  # finding 2
    privileged = container_config(linux__security_context=pb.LinuxContainerSecurityContext(privileged=True))
    with pytest.raises(InvalidArgument, match="asks to be privileged but its pod sandbox p1 is not privileged"):
        check_privilege(privileged, pod_config(), "p1")
    check_privilege(
        privileged, pod_config(linux__security_context=pb.LinuxSandboxSecurityContext(privileged=True)), "p1"
    )
    check_privilege(container_config(), pod_config(), "p1")


def test_timeouts_are_capped_and_negative_ones_refused() -> None:
    request = pb.StopContainerRequest(container_id="c", timeout=2**62)
    accepted("StopContainer", request)
    assert request.timeout == limits.MAX_TIMEOUT_SECONDS
    refused("ExecSync", pb.ExecSyncRequest(container_id="c", cmd=["true"], timeout=-1), "timeout -1")


def test_other_rpcs() -> None:
    refused("StartContainer", pb.StartContainerRequest(), "container_id must not be empty")
    refused("PortForward", pb.PortForwardRequest(pod_sandbox_id="p", port=[0]), r"port\[0\] 0")
    refused("PullImage", pb.PullImageRequest(), r"image\.image must not be empty")
    bad_cidr = pb.UpdateRuntimeConfigRequest(
        runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="x"))
    )
    refused("UpdateRuntimeConfig", bad_cidr, "pod_cidr 'x'")
    refused(
        "ListContainers",
        pb.ListContainersRequest(filter=pb.ContainerFilter(state=pb.ContainerStateValue(state=9))),
        "state",
    )


def test_the_server_answers_invalid_argument_and_the_handler_never_runs(server: tuple[grpc.Channel, Recorder]) -> None:
    channel, handlers = server
    stub = api_pb2_grpc.RuntimeServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.RunPodSandbox(run_pod(pod_config(metadata__namespace="a\0b")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "config.metadata.namespace must not contain a NUL byte"
    assert handlers.seen == []
    stub.RunPodSandbox(run_pod(pod_config()))
    assert len(handlers.seen) == 1


def test_invalid_utf8_is_invalid_argument_naming_the_field(server: tuple[grpc.Channel, Recorder]) -> None:  # finding 8
    channel, handlers = server
    data = bytearray(run_pod(pod_config(metadata__namespace="xyz")).SerializeToString())
    data[data.index(b"xyz")] = 0xFF
    call = channel.unary_unary(
        "/runtime.v1.RuntimeService/RunPodSandbox", request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.RpcError) as err:
        call(bytes(data))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        "the request is not a valid runtime.v1.RunPodSandboxRequest: config.metadata.namespace is not valid UTF-8"
    )
    with pytest.raises(grpc.RpcError) as err:
        call(b"\x0a\xff\xff\xff")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert handlers.seen == []


def test_undecodable_field_names_repeated_entries() -> None:
    data = bytearray(create(container_config(command=["ok", "bad1"])).SerializeToString())
    data[data.index(b"bad1")] = 0xC3
    assert (
        undecodable_field(pb.CreateContainerRequest.DESCRIPTOR, bytes(data)) == "config.command[1] is not valid UTF-8"
    )
