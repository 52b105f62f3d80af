"""The fuzz suite runs against a real daemon: the e2e fixtures (daemon, registry, busybox, pod)."""

from tests.e2e.conftest import busybox, cgroup_parent, daemon, daemon_handle, pod, registry, workdir

__all__ = ["busybox", "cgroup_parent", "daemon", "daemon_handle", "pod", "registry", "workdir"]
