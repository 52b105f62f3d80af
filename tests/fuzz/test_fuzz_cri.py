"""Fuzz the CRI server with structured hostile requests (issue 15).

At least FUZZ_REQUESTS (10,000) requests of every unary and list-stream RPC, drawn by hypothesis:
valid requests with hostile fields, requests built at random from the proto, and serialized
requests with corrupted bytes. Every answer must be a clean status (never UNKNOWN, INTERNAL or
UNAVAILABLE, nor a hang); the daemon, the pod's monitor and its container stay up throughout;
nothing appears outside the daemon's roots (path-like values carry a marker looked for
afterwards); then the daemon is SIGKILLed and must come up again and serve.
"""

from __future__ import annotations

import os
import random
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from crio_py.cri import api_pb2 as pb
from crio_py.proc import process_alive
from tests.fuzz.requests import Targets, container_template, corrupted_bytes, mutated, pod_template, random_message
from tests.support.cri import kill_cgroup_processes_and_remove
from tests.support.daemon import DaemonHandle
from tests.support.pods import Pod

pytestmark = pytest.mark.e2e

REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "10000"))
CALL_TIMEOUT = 30.0
# Streams that never end (events) and RPCs whose success would stop the test's own pod are left out
# or get ids that cannot name it.
SKIPPED = {"GetContainerEvents"}
DESTRUCTIVE = {"StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox", "RemoveImage"}
# Rough relative frequencies: the RPCs with the most fields to get wrong get the most requests.
WEIGHTS = {"RunPodSandbox": 12, "CreateContainer": 14, "UpdateContainerResources": 6, "PullImage": 3, "ExecSync": 2}
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE}
# ... but a registry that cannot be reached is UNAVAILABLE by right (the pulls go to 127.0.0.1:1).
UNAVAILABLE_BY_RIGHT = {"PullImage"}
# Objects a fuzzed request may really create are removed at once; past this many, creating
# templates are only sent with hostile fields drawn at random (each real pod costs ~0.5 s).
# Each hypothesis example sends a batch: hypothesis's own bookkeeping costs ~10 ms an example.
BATCH = 10
SHAPES = ("mutated", "mutated", "random", "bytes")
MAX_CREATED = {"RunPodSandbox": 12, "CreateContainer": 80}


class Fuzzer:
    def __init__(self, daemon: DaemonHandle, pod: Pod, targets: Targets, images: list[pb.Image]) -> None:
        self.daemon = daemon
        self.pod = pod
        self.targets = targets
        self.protected = {targets.pod_id, targets.container_id}
        self.protected_images = {i.id for i in images} | {t for i in images for t in i.repo_tags}
        self.sent = 0
        self.codes: Counter[str] = Counter()
        self.bad: list[str] = []
        self.created: Counter[str] = Counter()
        channel = grpc.insecure_channel(
            f"unix://{daemon.socket}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )
        self.channel = channel
        self.methods: list[tuple[str, str, Any, bool]] = []
        for service in ("RuntimeService", "ImageService"):
            for m in pb.DESCRIPTOR.services_by_name[service].methods:
                if m.name not in SKIPPED:
                    weight = WEIGHTS.get(m.name, 1)
                    self.methods += [(service, m.name, getattr(pb, m.input_type.name), m.server_streaming)] * weight
        self.templates = {
            "RunPodSandbox": pod_template(targets, str(Path(targets.scratch) / "logs")),
            "CreateContainer": container_template(targets, pod.config),
            "UpdateContainerResources": pb.UpdateContainerResourcesRequest(
                container_id=targets.container_id, linux=pb.LinuxContainerResources(cpu_shares=256)
            ),
            "ExecSync": pb.ExecSyncRequest(container_id=targets.container_id, cmd=["true"], timeout=5),
            "PullImage": pb.PullImageRequest(image=pb.ImageSpec(image="127.0.0.1:1/fuzz:latest")),
            "ListContainers": pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=targets.pod_id)),
        }

    def batch(self, data: st.DataObject) -> None:
        """BATCH requests: hypothesis draws each one's RPC, shape and seed; the seed builds it."""
        plan = st.tuples(st.sampled_from(self.methods), st.sampled_from(SHAPES), st.integers(0, 2**64 - 1))
        for (service, name, cls, streaming), shape, seed in data.draw(st.lists(plan, min_size=BATCH, max_size=BATCH)):
            self.request(service, name, cls, streaming, shape, random.Random(seed))

    def request(self, service: str, name: str, cls: Any, streaming: bool, shape: str, rnd: random.Random) -> None:
        template = self.templates.get(name)
        spent = self.created[name] >= MAX_CREATED.get(name, len(self.methods) * REQUESTS)
        if shape != "random" and template is not None and not spent:
            request = mutated(rnd, self.targets, template)
        else:
            request = random_message(rnd, self.targets, cls)
        self._keep_off_the_network_and_our_objects(name, request)
        path = f"/runtime.v1.{service}/{name}"
        if shape == "bytes":
            self._call(name, path, corrupted_bytes(rnd, request.SerializeToString()), streaming, raw=True)
        else:
            self._call(name, path, request, streaming, raw=False)

    def _keep_off_the_network_and_our_objects(self, name: str, request: Any) -> None:
        if name == "PullImage":
            # Only loopback registries: a reference naming another host would go to the network.
            request.image.image = "127.0.0.1:1/" + request.image.image
        if name in DESTRUCTIVE:
            for field in ("pod_sandbox_id", "container_id"):
                value = getattr(request, field, None)
                if value is not None and any(p.startswith(value) for p in self.protected):
                    setattr(request, field, "z" + value)
            if name == "RemoveImage" and any(i.startswith(request.image.image) for i in self.protected_images):
                request.image.image = "z" + request.image.image

    def _call(self, name: str, path: str, request: Any, streaming: bool, raw: bool) -> None:
        serializer = None if raw else type(request).SerializeToString
        self.sent += 1
        try:
            if streaming:
                call = self.channel.unary_stream(path, request_serializer=serializer, response_deserializer=None)
                list(call(request, timeout=CALL_TIMEOUT))
            else:
                call = self.channel.unary_unary(path, request_serializer=serializer, response_deserializer=None)
                answer = call(request, timeout=CALL_TIMEOUT)
                self._undo_creation(name, answer)
            self.codes["OK"] += 1
        except grpc.RpcError as err:
            code = err.code()
            self.codes[code.name] += 1
            client_deadline = code == grpc.StatusCode.DEADLINE_EXCEEDED and err.details() == "Deadline Exceeded"
            by_right = code == grpc.StatusCode.UNAVAILABLE and name in UNAVAILABLE_BY_RIGHT
            if (code in BAD_CODES and not by_right) or client_deadline:
                summary = repr(request)[:600]
                self.bad.append(f"{name} -> {code.name}: {err.details()[:400]}\n  request: {summary}")

    def _undo_creation(self, name: str, answer: bytes) -> None:
        runtime = self.daemon.runtime
        if name == "RunPodSandbox":
            self.created[name] += 1
            pod_id = pb.RunPodSandboxResponse.FromString(answer).pod_sandbox_id
            runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
            runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        elif name == "CreateContainer":
            self.created[name] += 1
            cid = pb.CreateContainerResponse.FromString(answer).container_id
            runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)

    def check_alive(self) -> None:
        """The daemon, the pod's monitor and the pod's container are all still up."""
        assert self.daemon.proc is not None and self.daemon.proc.poll() is None, "the daemon died"
        monitor_pid = Path(self.daemon.config["run_root"], "monitors", self.targets.pod_id, "monitor.pid")
        assert process_alive(int(monitor_pid.read_text())), "the pod's monitor died"
        state = self.pod.status(self.targets.container_id).state
        assert state == pb.CONTAINER_RUNNING, f"the pod's container is {pb.ContainerState.Name(state)}"


def _marked(marker: str, roots: list[Path], depth: int) -> list[str]:
    """Paths under ``roots`` (to ``depth`` levels) whose name holds ``marker``."""
    found = []
    for root in roots:
        stack = [(root, 0)]
        while stack:
            directory, level = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if marker in entry.name:
                    found.append(entry.path)
                if level + 1 < depth and entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), level + 1))
    return found


def test_fuzzed_requests_get_clean_answers_and_the_daemon_survives_a_kill(
    daemon: DaemonHandle, pod: Pod, tmp_path: Path
) -> None:
    marker = "fuzzmark" + secrets.token_hex(4)
    scratch = tmp_path / "scratch"
    (scratch / "elsewhere").mkdir(parents=True)
    (scratch / "link").symlink_to(scratch / "elsewhere")
    base = pod.run("base", "sleep", "3600")
    targets = Targets(marker=marker, scratch=str(scratch), pod_id=pod.id, container_id=base, image=pod.image)
    images = list(daemon.images.ListImages(pb.ListImagesRequest()).images)
    fuzzer = Fuzzer(daemon, pod, targets, images)

    @settings(
        max_examples=REQUESTS // BATCH,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def one_request(data: st.DataObject) -> None:
        fuzzer.batch(data)
        if fuzzer.sent % 500 < BATCH:
            fuzzer.check_alive()

    started = time.monotonic()
    try:
        while fuzzer.sent < REQUESTS:  # hypothesis may stop early when it runs out of new inputs
            one_request()
    finally:
        elapsed = time.monotonic() - started
        print(f"\nfuzz: {fuzzer.sent} requests in {elapsed:.1f} s ({fuzzer.sent / elapsed:.0f}/s), "
              f"created and removed: {dict(fuzzer.created)}; answers: {dict(fuzzer.codes)}")
        fuzzer.channel.close()
        kill_cgroup_processes_and_remove(f"/{marker}")

    if fuzzer.bad:
        (tmp_path.parent / "fuzz-unclean.txt").write_text("\n".join(fuzzer.bad))
    assert not fuzzer.bad, f"{len(fuzzer.bad)} unclean answers, the first ones:\n" + "\n".join(fuzzer.bad[:10])
    fuzzer.check_alive()
    monitors = Path(daemon.config["run_root"], "monitors")
    for pid_file in monitors.glob("*/monitor.pid"):
        assert process_alive(int(pid_file.read_text())), f"monitor {pid_file.parent.name} died"
    host_roots = [Path(p) for p in ("/", "/etc", "/tmp", "/run", "/var/lib", "/var/log", "/root", "/sys/fs/cgroup")]
    outside = [p for p in _marked(marker, host_roots, 3) if not p.startswith((str(daemon.workdir), str(tmp_path)))]
    assert outside == [], "fuzzed requests left things outside the daemon's roots"

    # Whatever the hostile requests left behind must not stop a restart.
    daemon.kill()
    daemon.start()
    listed = {p.id: p.state for p in daemon.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items}
    assert listed.get(pod.id) == pb.SANDBOX_READY
    assert pod.status(base).state == pb.CONTAINER_RUNNING
    assert pod.output(pod.run("after", "echo", "served")) == "served\n"
