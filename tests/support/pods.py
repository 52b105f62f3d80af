"""A running pod of a test daemon, and helpers to run containers in it and read their output."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from crio_py.cri import api_pb2 as pb
from tests.support.daemon import DaemonHandle

CRI_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) (stdout|stderr) (P|F) (.*)$")


class Pod:
    """A running pod of the test daemon and helpers to run containers in it."""

    def __init__(self, daemon: DaemonHandle, image: str, config: pb.PodSandboxConfig):
        self.daemon = daemon
        self.image = image
        self.config = config
        self.id = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
        info = daemon.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=self.id, verbose=True))
        self.pause_pid = json.loads(info.info["info"])["pid"]

    def create(self, name: str, *argv: str, **kw: object) -> str:
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=str(kw.pop("image", self.image))),
            command=list(argv),
            log_path=f"{name}.log",
            labels={"name": name},
        )
        security = kw.pop("security", None)
        if security is not None:
            config.linux.security_context.CopyFrom(security)
        # kubelet copies the pod's namespace choices into every container.
        config.linux.security_context.namespace_options.CopyFrom(
            self.config.linux.security_context.namespace_options
        )
        config.stdin = bool(kw.pop("stdin", False))
        config.stdin_once = bool(kw.pop("stdin_once", False))
        config.tty = bool(kw.pop("tty", False))
        resources = kw.pop("resources", None)
        if resources is not None:
            config.linux.resources.CopyFrom(resources)
        for mount in kw.pop("mounts", []):  # type: ignore[attr-defined]
            config.mounts.append(mount)
        assert not kw, kw
        return self.daemon.runtime.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=self.id, config=config, sandbox_config=self.config), timeout=60
        ).container_id

    def run(self, name: str, *argv: str, **kw: object) -> str:
        cid = self.create(name, *argv, **kw)
        self.daemon.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
        return cid

    def status(self, cid: str) -> pb.ContainerStatus:
        return self.daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status

    def wait_exit(self, cid: str, timeout: float = 30) -> pb.ContainerStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(cid)
            if status.state == pb.CONTAINER_EXITED:
                return status
            time.sleep(0.05)
        raise AssertionError(f"container {cid} did not exit: {self.status(cid)}")

    def log_lines(self, cid: str) -> list[tuple[str, str, str]]:
        """(stream, tag, content) of each CRI log line, format-checked."""
        out = []
        for line in Path(self.status(cid).log_path).read_text().splitlines():
            m = CRI_LOG_LINE.match(line)
            assert m, f"not a CRI log line: {line!r}"
            out.append((m.group(2), m.group(3), m.group(4)))
        return out

    def output(self, cid: str) -> str:
        """The container's stdout, reassembled from the CRI log."""
        self.wait_exit(cid)
        text = ""
        for stream, tag, content in self.log_lines(cid):
            if stream == "stdout":
                text += content + ("\n" if tag == "F" else "")
        return text

    def pid(self, cid: str) -> int:
        info = self.daemon.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True)).info
        return int(json.loads(info["info"])["pid"])

    def exec(self, cid: str, *argv: str, timeout: int = 10) -> pb.ExecSyncResponse:
        return self.daemon.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=list(argv), timeout=timeout))
