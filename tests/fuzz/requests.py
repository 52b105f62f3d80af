"""Structured hostile CRI requests for the fuzz suite, drawn field by field from the proto descriptors.

Two shapes: a valid request with a few fields replaced by hostile values (reaches the domain),
and a request built at random from the descriptor (missing nested messages, unknown enum values,
absurd numbers, huge and repeated fields). Path-like values carry ``marker`` so that anything a
request manages to create outside the daemon's roots can be found afterwards.
"""

from __future__ import annotations

import copy
import functools
import random
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from crio_py.cri import api_pb2 as pb

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_EDGE_INTS = [0, 1, -1, 2, 7, 1000, 4096, 65535, 65536, 262144, 262145, 2**31 - 1, -(2**31), 2**32 - 1, 2**63 - 1]
_EDGE_INTS += [-(2**63), 2**64 - 1, 12345]
_MAX_DEPTH = 6
_MAX_REPEATED_BYTES = 4 * 1024 * 1024


@dataclass
class Targets:
    """What the requests aim at: the live pod and container (ids some RPCs may use), the image,
    a scratch directory for host paths, and the marker of path-like values."""

    marker: str
    scratch: str
    pod_id: str = ""
    container_id: str = ""
    image: str = ""

    def hostile_strings(self) -> list[str]:
        m, s = self.marker, self.scratch
        return [
            "", "a", "web", "0", "-1", ".", "..", "/", "//", "*", "\n", " ", "\t", "é" * 40, "\u202e" + m,
            f"../../{m}", f"/{m}", f"/etc/{m}", f"/tmp/../etc/{m}", f"{m}/../../..", f"./{m}", f"//{m}",
            f"/sys/fs/cgroup/{m}", f"/proc/self/root/{m}", f"{s}/{m}", f"{s}/link/{m}", f"{s}/../{m}",
            f"{m}.slice", f"-{m}-.slice", f"{m}--x.slice", f"/{m}/pod/{m}", f"{m}.log", f"../{m}.log",
            "x\0y", "\0", f"/{m}\0x", "A" * 300, "B" * 5000, "C" * 140_000, "%s%n%x", "${PATH}", "$(reboot)",
            "net.ipv4.ip_forward", "kernel.shm_rmid_forced", "CAP_SYS_ADMIN", "ALL", "NET_RAW", "rwm", "mrw", "rwx",
            "0-1", "0-4095", "abc", "3-1", "2MB", "1GB", "3XB", "memory.high", "../memory.max",
            "localhost/" + m, "runtime/default", "unconfined", "10.0.0.1", "::1", "300.1.1.1",
            "10.244.0.0/16", "x/33", self.pod_id, self.container_id, self.image, self.pod_id[:5],
        ]


_TEXT_ALPHABETS = ("abcdefghijklmnopqrstuvwxyz0123456789-./_:", "".join(map(chr, range(1, 0x250))) + "\u202e\ufeff")


class _Values:
    """Random field values from a seeded Python random (hypothesis draws the seeds): drawing
    every one of a message's hundreds of decisions through hypothesis cost ~90 ms a request."""

    def __init__(self, rnd: random.Random, targets: Targets) -> None:
        self.rnd = rnd
        self.strings = targets.hostile_strings()
        self.targets = targets

    def string(self) -> str:
        r = self.rnd
        if r.random() < 0.6:
            return r.choice(self.strings)
        return "".join(r.choice(r.choice(_TEXT_ALPHABETS)) for _ in range(r.randint(0, 40)))

    def scalar(self, field: FieldDescriptor) -> Any:
        r = self.rnd
        if field.type == FieldDescriptor.TYPE_STRING:
            return self.string()
        if field.type == FieldDescriptor.TYPE_BYTES:
            return self.string().encode() if r.random() < 0.8 else r.randbytes(r.randint(0, 40))
        if field.type == FieldDescriptor.TYPE_BOOL:
            return r.random() < 0.5
        if field.type == FieldDescriptor.TYPE_ENUM:
            known = [v.number for v in field.enum_type.values]
            return r.choice([*known, *known, 7, 9, 12345, -1, 2**31 - 1])
        if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return r.choice([0.0, -1.0, 1e300, float("inf"), float("nan")])
        low, high = _INT_RANGES[field.type]
        if r.random() < 0.6:
            return r.choice([v for v in _EDGE_INTS if low <= v <= high])
        return r.randint(low, high)

    def fill(self, message: Message, depth: int, density: float) -> None:
        """Set a random selection of ``message``'s fields to random (mostly hostile) values."""
        for field in message.DESCRIPTOR.fields:
            if self.rnd.random() < density:
                self.set(message, field, depth)

    def set(self, message: Message, field: FieldDescriptor, depth: int) -> None:
        r = self.rnd
        target = getattr(message, field.name)
        is_map = field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry
        if is_map:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            count = r.choice([0, 1, 2, 3, 3, 5000])
            for i in range(count):
                key = self.scalar(key_field) if count < 10 else f"k{i}"
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    if depth < _MAX_DEPTH:
                        self.fill(target[key], depth + 1, 0.5)
                else:
                    target[key] = self.scalar(value_field) if count < 10 else "v"
            return
        if field.is_repeated:
            count = r.choice([0, 1, 2, 3, 2000])
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth >= _MAX_DEPTH or count == 0:
                    return
                item = target.add()
                self.fill(item, depth + 1, 0.5)
                # Many copies, but a request well under gRPC's 16 MiB (the limit is tested elsewhere).
                for _ in range(min(count, _MAX_REPEATED_BYTES // max(item.ByteSize(), 1)) - 1):
                    target.add().CopyFrom(item)
            else:
                values = [self.scalar(field) for _ in range(min(count, 3))]
                if count > 3:
                    values = [v[:50] if isinstance(v, str | bytes) else v for v in values]
                target.extend(values * (count // max(len(values), 1)) if values else [])
            return
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth < _MAX_DEPTH:
                target.SetInParent()
                self.fill(target, depth + 1, 0.4)
            return
        setattr(message, field.name, self.scalar(field))


@functools.cache
def _leaf_paths(descriptor: Descriptor, prefix: tuple[str, ...] = (), depth: int = 0) -> tuple[tuple[str, ...], ...]:
    """Every field path of a message type (nested messages included, down to four levels)."""
    out: list[tuple[str, ...]] = []
    for field in descriptor.fields:
        path = (*prefix, field.name)
        out.append(path)
        is_map = field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated and not is_map and depth < 4:
            out.extend(_leaf_paths(field.message_type, path, depth + 1))
    return tuple(out)


def mutated(rnd: random.Random, targets: Targets, template: Message) -> Message:
    """``template`` (a valid request) with one to three fields replaced by random hostile values."""
    request = copy.deepcopy(template)
    values = _Values(rnd, targets)
    paths = _leaf_paths(request.DESCRIPTOR)
    for _ in range(rnd.randint(1, 3)):
        *parents, name = rnd.choice(paths)
        message = request
        for p in parents:
            message = getattr(message, p)
        field = message.DESCRIPTOR.fields_by_name[name]
        if rnd.random() < 0.4 and not field.is_repeated:
            message.ClearField(name)  # a missing field or nested message
        else:
            if field.is_repeated:
                message.ClearField(name)
            values.set(message, field, len(parents))
    return request


def random_message(rnd: random.Random, targets: Targets, message_class: type[Message]) -> Message:
    """A request of ``message_class`` built at random from its descriptor."""
    request = message_class()
    _Values(rnd, targets).fill(request, 0, rnd.choice([0.2, 0.5, 0.9]))
    return request


def corrupted_bytes(rnd: random.Random, data: bytes) -> bytes:
    """Serialized request bytes with bytes overwritten (invalid UTF-8 in strings, broken lengths)."""
    if not data:
        return rnd.randbytes(rnd.randint(1, 20))
    out = bytearray(data)
    for _ in range(rnd.randint(1, 3)):
        out[rnd.randrange(len(out))] = rnd.choice([0xFF, 0xC3, 0x80, 0x00, 0x7F])
    return bytes(out)


def pod_template(targets: Targets, log_directory: str) -> pb.RunPodSandboxRequest:
    """A valid RunPodSandbox request (a pod that would start)."""
    name = "fuzz-" + targets.marker[-8:]
    return pb.RunPodSandboxRequest(
        config=pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="fuzz", uid=f"uid-{name}"),
            hostname=name,
            log_directory=log_directory,
            labels={"suite": "fuzz"},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=f"/{targets.marker}",
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
                ),
            ),
        )
    )


def container_template(targets: Targets, pod: pb.PodSandboxConfig) -> pb.CreateContainerRequest:
    """A valid CreateContainer request in the live pod."""
    return pb.CreateContainerRequest(
        pod_sandbox_id=targets.pod_id,
        sandbox_config=pod,
        config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="fuzzed"),
            image=pb.ImageSpec(image=targets.image),
            command=["true"],
            working_dir="/",
            envs=[pb.KeyValue(key="A", value=b"b")],
            mounts=[pb.Mount(container_path="/data", host_path=f"{targets.scratch}/data")],
            log_path="fuzzed.log",
            linux=pb.LinuxContainerConfig(
                resources=pb.LinuxContainerResources(cpu_shares=512, memory_limit_in_bytes=64 << 20),
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
                ),
            ),
        ),
    )
