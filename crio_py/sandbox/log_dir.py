"""Where a pod's container logs go when its config does not say.

kubelet always sets the pod's ``log_directory`` and each container's ``log_path``; files written
for crictl often set neither, and a container without a log cannot be read by ``crictl logs``.
Such pods get ``<container_log_dir>/<pod id>`` (as CRI-O's ``log_dir``), owned and removed by us;
such containers get ``<container name>/<attempt>.log`` in it, kubelet's own layout.
"""

from __future__ import annotations

from pathlib import Path

from crio_py.cri import api_pb2 as pb


def pod_log_directory(pod_config: pb.PodSandboxConfig, pod_id: str, container_log_dir: str) -> Path:
    """The pod's log directory: the one it asked for, else ours under ``container_log_dir``."""
    return Path(pod_config.log_directory or Path(container_log_dir) / pod_id)


def owns_log_directory(pod_config: pb.PodSandboxConfig) -> bool:
    """Whether the runtime chose (and so removes with the pod) the pod's log directory."""
    return not pod_config.log_directory


def container_log_path(log_directory: Path, config: pb.ContainerConfig) -> Path:
    """The container's log file: its ``log_path`` under the pod's directory, else name/attempt.log."""
    return log_directory / (config.log_path or f"{config.metadata.name}/{config.metadata.attempt}.log")
