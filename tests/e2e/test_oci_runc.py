"""Specs from crio_py.spec run by the real runc: users, capabilities, seccomp, mounts, cgroups, exec."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crio_py import config as config_mod
from crio_py.cgroups import cgroup_version, cpu_stats, find_cgroup_dirs, memory_stats, remove_cgroup
from crio_py.config import Config, RuntimeHandler
from crio_py.cri import api_pb2 as pb
from crio_py.oci import OCIRuntime
from crio_py.spec import ContainerSpecContext, SandboxSpecContext, container_spec, sandbox_spec
from tests.support.busybox_rootfs import busybox_rootfs

pytestmark = pytest.mark.e2e

RUNC = shutil.which("runc") or "/usr/sbin/runc"
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nextra:x:2000:app\nother:x:2001:\n"


@pytest.fixture(scope="module")
def rootfs_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rootfs = busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    (rootfs / "etc/passwd").write_text(PASSWD)
    (rootfs / "etc/group").write_text(GROUP)
    return rootfs


@dataclasses.dataclass
class Harness:
    """Containers of one test: a private runc root and cgroup parent, all removed afterwards."""

    workdir: Path
    rootfs_template: Path
    runtime: OCIRuntime
    settings: Config
    cgroup_parent: str
    ids: list[str] = dataclasses.field(default_factory=list)

    def rootfs(self) -> Path:
        path = self.workdir / f"rootfs-{len(self.ids)}-{uuid.uuid4().hex[:6]}"
        shutil.copytree(self.rootfs_template, path, symlinks=True)
        return path

    def container(
        self,
        cfg: pb.ContainerConfig,
        *,
        rootfs: Path | None = None,
        pod: pb.PodSandboxConfig | None = None,
        namespace_paths: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        cid = uuid.uuid4().hex
        pod = pod or pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", namespace="n", uid="u"))
        if namespace_paths is None:
            # No pause container to join: a host-network pod, the container with its own pid namespace.
            for opts in (cfg.linux.security_context.namespace_options, pod.linux.security_context.namespace_options):
                opts.network = opts.ipc = pb.NamespaceMode.NODE
                opts.pid = pb.NamespaceMode.CONTAINER
        ctx = ContainerSpecContext(
            container_id=cid,
            sandbox_id="sandbox-" + cid[:8],
            config=cfg,
            sandbox_config=pod,
            image_config={"config": {"Env": ["IMAGE=1"]}},
            rootfs=rootfs or self.rootfs(),
            cgroup_parent=self.cgroup_parent,
            settings=self.settings,
            namespace_paths=namespace_paths or {},
            recursive_read_only_supported=self.runtime.supports_recursive_read_only(),
        )
        return {"id": cid, "spec": container_spec(ctx)}

    def create(self, cid: str, spec: dict[str, Any]) -> None:
        bundle = self.workdir / f"bundle-{cid}"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(spec))
        self.ids.append(cid)
        with open(bundle / "stdout", "wb") as out, open(bundle / "stderr", "wb") as err:
            done = subprocess.run(
                [*self.runtime.base_argv(), "create", "--bundle", str(bundle), cid],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=30, check=False,
            )  # fmt: skip
        assert done.returncode == 0, (bundle / "stderr").read_text()

    def output(self, cid: str) -> tuple[str, str]:
        bundle = self.workdir / f"bundle-{cid}"
        return (bundle / "stdout").read_text(), (bundle / "stderr").read_text()

    def wait(self, cid: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.runtime.state(cid)
            if state is None or state["status"] == "stopped":
                return
            time.sleep(0.05)
        raise AssertionError(f"container {cid} still running after {timeout}s")

    def run(self, cfg: pb.ContainerConfig, **kw: Any) -> tuple[str, str]:
        """Create, start and wait for a container; its stdout and stderr."""
        made = self.container(cfg, **kw)
        self.create(made["id"], made["spec"])
        self.runtime.start(made["id"])
        self.wait(made["id"])
        return self.output(made["id"])

    def cleanup(self) -> None:
        for cid in reversed(self.ids):
            with contextlib.suppress(Exception):
                self.runtime.delete(cid, force=True)
        remove_cgroup(self.cgroup_parent)


@pytest.fixture
def harness(rootfs_template: Path) -> Iterator[Harness]:
    workdir = Path(tempfile.mkdtemp(prefix="crio-py-oci-e2e-"))
    handler = RuntimeHandler(path=RUNC, root=str(workdir / "runc-root"))
    settings = dataclasses.replace(config_mod.load(None, None), runtimes={"runc": handler})
    h = Harness(workdir, rootfs_template, OCIRuntime(handler), settings, f"/crio-py-e2e-{uuid.uuid4().hex[:8]}")
    try:
        yield h
    finally:
        try:
            h.cleanup()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def sh(script: str, **security: Any) -> pb.ContainerConfig:
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"), command=["/bin/sh", "-c", script])
    cfg.linux.security_context.CopyFrom(pb.LinuxContainerSecurityContext(**security))
    return cfg


def test_id_reports_resolved_user_and_groups(harness: Harness) -> None:
    out, err = harness.run(sh("id", run_as_username="app", supplemental_groups=[3000]))
    assert out.strip() == "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra),3000", err


def test_run_as_user_and_group_with_strict_policy(harness: Harness) -> None:
    cfg = sh(
        "id",
        run_as_user=pb.Int64Value(value=1000),
        run_as_group=pb.Int64Value(value=2001),
        supplemental_groups_policy=pb.SupplementalGroupsPolicy.Strict,
    )
    out, err = harness.run(cfg)
    assert out.strip() == "uid=1000(app) gid=2001(other) groups=2001(other)", err


def test_capabilities_follow_add_and_drop(harness: Harness) -> None:
    cfg = sh(
        "grep CapEff /proc/self/status",
        capabilities=pb.Capability(add_capabilities=["NET_ADMIN", "CAP_CHOWN"], drop_capabilities=["ALL"]),
    )
    out, err = harness.run(cfg)
    assert out.split() == ["CapEff:", f"{(1 << 12) | 1:016x}"], err


def test_default_capabilities(harness: Harness) -> None:
    out, _ = harness.run(sh("grep CapEff /proc/self/status"))
    expected = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
                "SETPCAP": 8, "NET_BIND_SERVICE": 10}  # fmt: skip
    assert int(out.split()[1], 16) == sum(1 << bit for bit in expected.values())


def test_runtime_default_seccomp_blocks_unshare_unconfined_allows(harness: Harness) -> None:
    script = "unshare -U true && echo allowed"
    default = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    out, err = harness.run(sh(script, seccomp=default))
    assert "allowed" not in out
    assert "Operation not permitted" in err
    unconfined = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    out, err = harness.run(sh(script, seccomp=unconfined))
    assert out.strip() == "allowed", err


def test_runtime_default_allows_mount_with_sys_admin(harness: Harness) -> None:
    script = "mount -t tmpfs none /mnt && echo mounted"
    default = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    out, err = harness.run(sh(script, seccomp=default))
    assert "mounted" not in out
    out, err = harness.run(sh(script, seccomp=default, capabilities=pb.Capability(add_capabilities=["SYS_ADMIN"])))
    assert out.strip() == "mounted", err


def test_readonly_rootfs_refuses_writes(harness: Harness) -> None:
    out, err = harness.run(sh("touch /x || echo refused; touch /dev/shm/y && echo shm-ok", readonly_rootfs=True))
    assert out.split() == ["refused", "shm-ok"]
    assert "Read-only file system" in err


def test_env_workdir_hostname_and_masked_paths(harness: Harness) -> None:
    cfg = sh("echo $IMAGE $FOO; pwd; cat /proc/kcore | wc -c")
    cfg.envs.add(key="FOO", value=b"bar")
    cfg.working_dir = "/tmp"
    out, _ = harness.run(cfg)
    assert out.split() == ["1", "bar", "/tmp", "0"]


def test_bind_mount_readonly_and_recursive_readonly(harness: Harness) -> None:
    host = harness.workdir / "data"
    (host / "sub").mkdir(parents=True)
    (host / "sub" / "file").write_text("hello")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(host / "sub")], check=True)
    try:
        cfg = sh("cat /data/sub/file 2>/dev/null; touch /data/a || echo ro; touch /data/sub/b && echo sub-rw")
        cfg.mounts.add(container_path="/data", host_path=str(host), readonly=True)
        out, _ = harness.run(cfg)
        assert out.split() == ["ro", "sub-rw"]
        if not harness.runtime.supports_recursive_read_only():
            pytest.skip("runc cannot do recursive read-only mounts")
        cfg = sh("touch /data/sub/c && echo sub-rw || echo sub-ro")
        cfg.mounts.add(container_path="/data", host_path=str(host), readonly=True, recursive_read_only=True)
        out, _ = harness.run(cfg)
        assert out.split() == ["sub-ro"]
    finally:
        subprocess.run(["umount", "-l", str(host / "sub")], check=False)


def test_memory_limit_stats_and_exec_sync(harness: Harness) -> None:
    cfg = sh("sleep 60")
    cfg.linux.resources.memory_limit_in_bytes = 64 * 1024 * 1024
    cfg.linux.resources.cpu_shares = 512
    made = harness.container(cfg)
    cid = made["id"]
    harness.create(cid, made["spec"])
    harness.runtime.start(cid)
    cgroups_path = made["spec"]["linux"]["cgroupsPath"]
    dirs = find_cgroup_dirs(cgroups_path)
    if cgroup_version() == 1:
        assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 * 1024 * 1024)
        assert (dirs["cpu"] / "cpu.shares").read_text().strip() == "512"
    else:
        assert (dirs["unified"] / "memory.max").read_text().strip() == str(64 * 1024 * 1024)
    mem = memory_stats(cgroups_path)
    assert mem is not None and mem.limit_bytes == 64 * 1024 * 1024 and mem.usage_bytes > 0
    assert cpu_stats(cgroups_path) is not None

    result = harness.runtime.exec_sync(cid, ["/bin/sh", "-c", "echo out; echo err >&2; id -u; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n0\n", b"err\n")
    assert not result.timed_out and not result.truncated

    result = harness.runtime.exec_sync(cid, ["head", "-c", "100000", "/dev/zero"], max_output=1000)
    assert result.truncated and len(result.stdout) == 1000 and result.exit_code == 0

    started = time.monotonic()
    result = harness.runtime.exec_sync(cid, ["sleep", "30"], timeout=1)
    assert result.timed_out and time.monotonic() - started < 10
    left = harness.runtime.exec_sync(cid, ["ps", "-o", "args"])
    assert "sleep 30" not in left.stdout.decode()

    harness.runtime.update(cid, {"memory": {"limit": 128 * 1024 * 1024}})
    assert memory_stats(cgroups_path).limit_bytes == 128 * 1024 * 1024  # type: ignore[union-attr]


def test_exec_of_missing_binary_is_an_error(harness: Harness) -> None:
    from crio_py.errors import InvalidArgument

    made = harness.container(sh("sleep 60"))
    harness.create(made["id"], made["spec"])
    harness.runtime.start(made["id"])
    with pytest.raises(InvalidArgument, match="no-such-binary"):
        harness.runtime.exec_sync(made["id"], ["no-such-binary"])


def test_kill_and_delete_are_idempotent(harness: Harness) -> None:
    made = harness.container(sh("sleep 60"))
    cid = made["id"]
    harness.create(cid, made["spec"])
    harness.runtime.start(cid)
    assert harness.runtime.state(cid)["status"] == "running"  # type: ignore[index]
    assert harness.runtime.kill(cid, 9) is True
    harness.wait(cid)
    assert harness.runtime.kill(cid, "SIGTERM") is False
    harness.runtime.delete(cid)
    harness.runtime.delete(cid)
    assert harness.runtime.state(cid) is None
    assert harness.runtime.kill(cid, 15) is False
    assert not find_cgroup_dirs(made["spec"]["linux"]["cgroupsPath"])


def test_container_joins_sandbox_namespaces(harness: Harness) -> None:
    pod = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="web", namespace="default", uid="uid-1"), hostname="web-pod"
    )
    pod.linux.sysctls["kernel.shm_rmid_forced"] = "1"
    pod.linux.security_context.namespace_options.pid = pb.NamespaceMode.POD
    sid = uuid.uuid4().hex
    settings = dataclasses.replace(harness.settings, pause_command="/bin/sleep 3600")
    spec = sandbox_spec(
        SandboxSpecContext(sandbox_id=sid, config=pod, rootfs=harness.rootfs(), cgroup_parent=harness.cgroup_parent,
                           settings=settings)
    )  # fmt: skip
    harness.create(sid, spec)
    harness.runtime.start(sid)
    pid = harness.runtime.state(sid)["pid"]  # type: ignore[index]
    paths = {ns: f"/proc/{pid}/ns/{ns}" for ns in ("net", "ipc", "uts", "pid")}
    cfg = sh("hostname; cat /proc/sys/kernel/shm_rmid_forced; ps -o args | grep -c 'sleep 360[0]'")
    cfg.linux.security_context.namespace_options.pid = pb.NamespaceMode.POD
    out, err = harness.run(cfg, pod=pod, namespace_paths=paths)
    assert out.split() == ["web-pod", "1", "1"], err


def test_privileged_gets_every_capability_and_host_devices(harness: Harness) -> None:
    out, err = harness.run(
        sh("grep CapEff /proc/self/status; grep ' /sys ' /proc/mounts; ls /dev | wc -l", privileged=True)
    )
    cap_eff, sysfs, devices = out.strip().splitlines()
    bounding = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapBnd"))
    assert cap_eff.split()[1] == bounding.split()[1], err
    assert sysfs.split()[3].startswith("rw")
    assert int(devices) > 10


def test_localhost_seccomp_profile(harness: Harness) -> None:
    profile = harness.workdir / "no-chmod.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
            }
        )
    )
    local = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(profile))
    out, err = harness.run(sh("chmod 600 /tmp || echo refused; echo done", seccomp=local))
    assert out.split() == ["refused", "done"]
    assert "Permission denied" in err
