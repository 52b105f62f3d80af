"""The set-up every bench repeats: a quiet daemon with busybox pulled from a loopback registry."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from crio_py.cri import api_pb2 as pb
from tests.support.cri import kill_cgroup_processes_and_remove, remove_everything, unique
from tests.support.daemon import DaemonHandle, cleanup_workdir, new_daemon
from tests.support.oci_images import busybox_layer, push_image
from tests.support.registry import Registry


@dataclass
class BenchDaemon:
    """A started daemon, the busybox reference it has pulled, a work dir and a cgroup parent of its own."""

    daemon: DaemonHandle
    image: str
    work: Path
    cgroup_parent: str


@contextmanager
def busybox_daemon(prefix: str) -> Iterator[BenchDaemon]:
    """A daemon logging warnings only, with busybox pulled; afterwards nothing of it is left.

    Pods, containers, the daemon, processes under the cgroup parent, the registry and the work dir
    are all removed, whether the bench finished or failed.
    """
    work = Path(tempfile.mkdtemp(prefix=f"crio-py-bench-{prefix}-"))
    parent = "/" + unique("crio-py-bench")
    registry = Registry(workdir=work / "registry")
    daemon = new_daemon(work / "daemon")
    daemon.config["log_level"] = "warning"
    try:
        registry.workdir.mkdir()
        registry.start()
        push_image(registry, "library/busybox", "latest", [busybox_layer()])
        daemon.config["registries"]["insecure"].append(registry.host)
        daemon.start()
        image = f"{registry.host}/library/busybox:latest"
        daemon.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=300)
        yield BenchDaemon(daemon, image, work, parent)
    finally:
        remove_everything(daemon)
        daemon.stop()
        kill_cgroup_processes_and_remove(parent)
        registry.stop()
        cleanup_workdir(work)
