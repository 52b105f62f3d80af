"""container_spec and sandbox_spec: CRI messages in, the config.json dict out."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from crio_py import config as config_mod
from crio_py.config import Config
from crio_py.cri import api_pb2 as pb
from crio_py.errors import FailedPrecondition, InvalidArgument
from crio_py.spec import (
    ContainerSpecContext,
    SandboxSpecContext,
    capabilities,
    common,
    container_spec,
    limits,
    sandbox_spec,
)

DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
]  # fmt: skip


@pytest.fixture(autouse=True)
def host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host where the daemon holds every capability and runs cgroup v1."""
    monkeypatch.setattr(capabilities, "available", lambda: tuple(capabilities.ALL_CAPABILITIES))
    monkeypatch.setattr(limits, "_has_sys_resource", lambda: True)
    monkeypatch.setattr(common, "cgroup_version", lambda: 1)
    monkeypatch.setattr(limits, "cgroup_version", lambda: 1)
    monkeypatch.setattr(limits, "available_controllers", lambda _path: HOST_CONTROLLERS)
    monkeypatch.setattr(limits, "hugepage_sizes", lambda: frozenset({"2MB", "1GB"}))


HOST_CONTROLLERS = frozenset({"cpu", "cpuacct", "cpuset", "memory", "pids", "hugetlb", "blkio"})


@pytest.fixture
def settings() -> Config:
    return config_mod.load(None, None)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\napp:x:1000:\nextra:x:20:app\n")
    return tmp_path


POD = pb.PodSandboxConfig(
    metadata=pb.PodSandboxMetadata(name="web", namespace="prod", uid="uid-1"),
    hostname="web-0",
    log_directory="/var/log/pods/x",
)
PATHS = {"net": "/run/netns/p", "ipc": "/proc/1/ns/ipc", "uts": "/proc/1/ns/uts", "pid": "/proc/1/ns/pid"}


def make_config(**security: Any) -> pb.ContainerConfig:
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="app"), image=pb.ImageSpec(image="busybox"))
    cfg.linux.security_context.CopyFrom(pb.LinuxContainerSecurityContext(**security))
    return cfg


def build(
    settings: Config,
    rootfs: Path,
    cfg: pb.ContainerConfig | None = None,
    image: dict[str, Any] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    ctx = ContainerSpecContext(
        container_id="cid",
        sandbox_id="sid",
        config=cfg or make_config(),
        sandbox_config=kw.pop("pod", POD),
        image_config={"config": image if image is not None else {"Cmd": ["sh"]}},
        rootfs=rootfs,
        cgroup_parent=kw.pop("cgroup_parent", "/kubepods/pod1"),
        settings=settings,
        namespace_paths=kw.pop("namespace_paths", PATHS),
        **kw,
    )
    return container_spec(ctx)


def mount_at(spec: dict[str, Any], dest: str) -> dict[str, Any]:
    (found,) = [m for m in spec["mounts"] if m["destination"] == dest]
    return found


# --- process ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ([], [], ["/entry", "--flag", "cmd1"]),
        (["/bin/sh"], [], ["/bin/sh"]),
        (["/bin/sh"], ["-c", "x"], ["/bin/sh", "-c", "x"]),
        ([], ["other"], ["/entry", "--flag", "other"]),
    ],
)
def test_command_and_args_follow_kubelet(
    settings: Config, rootfs: Path, command: list[str], args: list[str], expected: list[str]
) -> None:
    cfg = make_config()
    cfg.command.extend(command)
    cfg.args.extend(args)
    spec = build(settings, rootfs, cfg, {"Entrypoint": ["/entry", "--flag"], "Cmd": ["cmd1"]})
    assert spec["process"]["args"] == expected


def test_no_command_at_all(settings: Config, rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="container app: no command"):
        build(settings, rootfs, image={})


def test_env_merge_request_wins(settings: Config, rootfs: Path) -> None:
    cfg = make_config()
    cfg.envs.add(key="B", value=b"request")
    cfg.envs.add(key="C", value=b"new=with=equals")
    cfg.tty = True
    spec = build(settings, rootfs, cfg, {"Cmd": ["sh"], "Env": ["PATH=/image/bin", "A=1", "B=image"]})
    assert spec["process"]["env"] == [
        "PATH=/image/bin", "HOSTNAME=web-0", "TERM=xterm", "A=1", "B=request", "C=new=with=equals"
    ]  # fmt: skip
    assert spec["process"]["terminal"] is True


def test_env_invalid(settings: Config, rootfs: Path) -> None:
    cfg = make_config()
    cfg.envs.add(key="X", value=b"\xff")
    with pytest.raises(InvalidArgument, match="'X' is not UTF-8"):
        build(settings, rootfs, cfg)
    cfg = make_config()
    cfg.envs.add(key="A=B", value=b"")
    with pytest.raises(InvalidArgument, match="environment variable name"):
        build(settings, rootfs, cfg)


@pytest.mark.parametrize(
    ("request_dir", "image_dir", "expected"), [("/req", "/img", "/req"), ("", "/img", "/img"), ("", "", "/")]
)
def test_working_dir(settings: Config, rootfs: Path, request_dir: str, image_dir: str, expected: str) -> None:
    cfg = make_config()
    cfg.working_dir = request_dir
    assert build(settings, rootfs, cfg, {"Cmd": ["sh"], "WorkingDir": image_dir})["process"]["cwd"] == expected


def test_user_from_image_and_groups(settings: Config, rootfs: Path) -> None:
    spec = build(settings, rootfs, make_config(supplemental_groups=[99]), {"Cmd": ["sh"], "User": "app"})
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 20, 99]}


def test_defaults(settings: Config, rootfs: Path) -> None:
    spec = build(settings, rootfs)
    assert spec["ociVersion"] == "1.0.2"
    assert spec["root"] == {"path": str(rootfs), "readonly": False}
    assert spec["hostname"] == "web-0"
    assert spec["process"]["capabilities"] == {
        "bounding": DEFAULT_CAPS,
        "effective": DEFAULT_CAPS,
        "permitted": DEFAULT_CAPS,
    }
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]
    assert spec["process"]["noNewPrivileges"] is False
    assert "oomScoreAdj" not in spec["process"]
    assert "seccomp" not in spec["linux"]
    assert "/proc/kcore" in spec["linux"]["maskedPaths"] and "/sys/firmware" in spec["linux"]["maskedPaths"]
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]
    assert spec["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    assert spec["linux"]["devices"] == []
    assert spec["linux"]["cgroupsPath"] == "/kubepods/pod1/crio-py-cid"
    assert "rootfsPropagation" not in spec["linux"]


def test_readonly_rootfs_and_no_new_privs(settings: Config, rootfs: Path) -> None:
    spec = build(settings, rootfs, make_config(readonly_rootfs=True, no_new_privs=True))
    assert spec["root"]["readonly"] is True
    assert spec["process"]["noNewPrivileges"] is True


def test_annotations(settings: Config, rootfs: Path) -> None:
    cfg = make_config()
    cfg.annotations["user/note"] = "hi"
    cfg.annotations["io.kubernetes.cri.container-type"] = "sandbox"
    spec = build(settings, rootfs, cfg, annotations={"extra": "1"})
    assert spec["annotations"] == {
        "user/note": "hi",
        "extra": "1",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.sandbox-id": "sid",
        "io.kubernetes.cri.sandbox-name": "web",
        "io.kubernetes.cri.sandbox-namespace": "prod",
        "io.kubernetes.cri.sandbox-uid": "uid-1",
        "io.kubernetes.cri.image-name": "busybox",
        "io.kubernetes.container.name": "app",
        "io.kubernetes.pod.name": "web",
        "io.kubernetes.pod.namespace": "prod",
        "io.kubernetes.pod.uid": "uid-1",
    }


def test_systemd_cgroups_path(settings: Config, rootfs: Path) -> None:
    settings = dataclasses.replace(settings, cgroup_manager="systemd")
    spec = build(settings, rootfs, cgroup_parent="kubepods-pod1.slice")
    assert spec["linux"]["cgroupsPath"] == "kubepods-pod1.slice:crio-py:cid"


# --- capabilities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("add", "drop", "expected"),
    [
        (["NET_ADMIN"], ["CHOWN", "cap_kill"], sorted({*DEFAULT_CAPS, "CAP_NET_ADMIN"} - {"CAP_CHOWN", "CAP_KILL"})),
        (["CAP_NET_RAW"], ["ALL"], ["CAP_NET_RAW"]),
        (["ALL"], ["SYS_ADMIN"], sorted(set(capabilities.ALL_CAPABILITIES) - {"CAP_SYS_ADMIN"})),
        ([], ["ALL"], []),
        (["all"], [], sorted(capabilities.ALL_CAPABILITIES)),
    ],
)
def test_capabilities_add_drop(
    settings: Config, rootfs: Path, add: list[str], drop: list[str], expected: list[str]
) -> None:
    cfg = make_config(capabilities=pb.Capability(add_capabilities=add, drop_capabilities=drop))
    caps = build(settings, rootfs, cfg)["process"]["capabilities"]
    assert sorted(caps["effective"]) == expected == sorted(caps["bounding"]) == sorted(caps["permitted"])
    assert "inheritable" not in caps


def test_unknown_capability(settings: Config, rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="unknown capability 'FLY'"):
        build(settings, rootfs, make_config(capabilities=pb.Capability(add_capabilities=["FLY"])))


def test_ambient_capabilities(settings: Config, rootfs: Path) -> None:
    cfg = make_config(capabilities=pb.Capability(add_ambient_capabilities=["NET_RAW"], drop_capabilities=["ALL"]))
    caps = build(settings, rootfs, cfg)["process"]["capabilities"]
    assert caps["effective"] == caps["ambient"] == caps["inheritable"] == ["CAP_NET_RAW"]


def test_capabilities_the_daemon_lacks_are_left_out(
    settings: Config, rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capabilities, "available", lambda: ("CAP_CHOWN", "CAP_KILL"))
    cfg = make_config(capabilities=pb.Capability(add_capabilities=["SYS_RESOURCE"]))
    assert build(settings, rootfs, cfg)["process"]["capabilities"]["effective"] == ["CAP_CHOWN", "CAP_KILL"]


def test_privileged(settings: Config, rootfs: Path) -> None:
    spec = build(
        settings,
        rootfs,
        make_config(privileged=True, seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)),
    )
    assert spec["process"]["capabilities"]["effective"] == list(capabilities.ALL_CAPABILITIES)
    assert "seccomp" not in spec["linux"]
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in spec["linux"]["devices"])
    assert "rw" in mount_at(spec, "/sys")["options"]
    assert "rw" in mount_at(spec, "/sys/fs/cgroup")["options"]


# --- seccomp, masked paths ------------------------------------------------------------------------


def test_seccomp_runtime_default_and_conditional_on_caps(settings: Config, rootfs: Path) -> None:
    default = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    spec = build(settings, rootfs, make_config(seccomp=default))
    names = {n for r in spec["linux"]["seccomp"]["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert "mount" not in names
    spec = build(
        settings, rootfs, make_config(seccomp=default, capabilities=pb.Capability(add_capabilities=["SYS_ADMIN"]))
    )
    names = {n for r in spec["linux"]["seccomp"]["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert "mount" in names


def test_seccomp_field_wins_over_deprecated_path(settings: Config, rootfs: Path) -> None:
    unconfined = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    spec = build(settings, rootfs, make_config(seccomp=unconfined, seccomp_profile_path="runtime/default"))
    assert "seccomp" not in spec["linux"]
    spec = build(settings, rootfs, make_config(seccomp_profile_path="docker/default"))
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"


def test_no_profile_is_unconfined_unless_the_default_applies_when_empty(settings: Config, rootfs: Path) -> None:
    assert "seccomp" not in build(settings, rootfs, make_config())["linux"]
    strict = dataclasses.replace(settings, seccomp_use_default_when_empty=True)
    assert build(strict, rootfs, make_config())["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    # Asking for Unconfined still gets it: the switch only fills in a profile nobody named.
    unconfined = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    assert "seccomp" not in build(strict, rootfs, make_config(seccomp=unconfined))["linux"]
    assert "seccomp" not in build(strict, rootfs, make_config(seccomp_profile_path="unconfined"))["linux"]


def test_seccomp_localhost(settings: Config, rootfs: Path, tmp_path: Path) -> None:
    profile = tmp_path / "p.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_LOG"}')
    local = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(profile))
    assert build(settings, rootfs, make_config(seccomp=local))["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_LOG"
    spec = build(settings, rootfs, make_config(seccomp_profile_path=f"localhost/{profile}"))
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_LOG"
    for ref in ("relative.json", str(tmp_path / "missing.json")):
        bad = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=ref)
        with pytest.raises(InvalidArgument):
            build(settings, rootfs, make_config(seccomp=bad))


def test_masked_and_readonly_paths_from_request(settings: Config, rootfs: Path) -> None:
    spec = build(settings, rootfs, make_config(masked_paths=["/proc/x"], readonly_paths=["/proc/y"]))
    assert (spec["linux"]["maskedPaths"], spec["linux"]["readonlyPaths"]) == (["/proc/x"], ["/proc/y"])


# --- namespaces ----------------------------------------------------------------------------------


def ns(spec: dict[str, Any]) -> dict[str, str | None]:
    return {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}


def namespace_config(network: int, pid: int, ipc: int) -> pb.ContainerConfig:
    return make_config(namespace_options=pb.NamespaceOption(network=network, pid=pid, ipc=ipc))  # type: ignore[arg-type]


def test_namespaces_joined_from_the_pod(settings: Config, rootfs: Path) -> None:
    spec = build(
        settings, rootfs, namespace_config(pb.NamespaceMode.POD, pb.NamespaceMode.CONTAINER, pb.NamespaceMode.POD)
    )
    assert ns(spec) == {
        "mount": None,
        "network": "/run/netns/p",
        "uts": "/proc/1/ns/uts",
        "ipc": "/proc/1/ns/ipc",
        "pid": None,
    }


def test_shared_and_target_pid(settings: Config, rootfs: Path) -> None:
    for mode in (pb.NamespaceMode.POD, pb.NamespaceMode.TARGET):
        spec = build(settings, rootfs, namespace_config(pb.NamespaceMode.POD, mode, pb.NamespaceMode.POD))
        assert ns(spec)["pid"] == "/proc/1/ns/pid"


def host_pod() -> pb.PodSandboxConfig:
    pod = pb.PodSandboxConfig()
    pod.CopyFrom(POD)
    pod.linux.security_context.namespace_options.CopyFrom(
        pb.NamespaceOption(network=pb.NamespaceMode.NODE, pid=pb.NamespaceMode.NODE, ipc=pb.NamespaceMode.NODE)
    )
    return pod


def test_host_namespaces(settings: Config, rootfs: Path) -> None:
    spec = build(
        settings,
        rootfs,
        namespace_config(pb.NamespaceMode.NODE, pb.NamespaceMode.NODE, pb.NamespaceMode.NODE),
        pod=host_pod(),
    )
    assert ns(spec) == {"mount": None}
    assert "hostname" not in spec
    assert f"HOSTNAME={os.uname().nodename}" in spec["process"]["env"]


def test_the_pods_host_namespaces_win_over_the_containers_options(settings: Config, rootfs: Path) -> None:
    # crictl users often leave the container's options at their zero value (POD).
    assert ns(build(settings, rootfs, pod=host_pod(), namespace_paths={})) == {"mount": None}


def test_run_as_group_needs_a_user(settings: Config, rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="run_as_group is set without run_as_user"):
        build(settings, rootfs, make_config(run_as_group=pb.Int64Value(value=5)))


def test_cgroup_namespace_on_v2(settings: Config, rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "cgroup_version", lambda: 2)
    assert "cgroup" in ns(build(settings, rootfs))


def test_namespace_path_missing(settings: Config, rootfs: Path) -> None:
    with pytest.raises(FailedPrecondition, match="the net namespace to join is not known"):
        build(settings, rootfs, namespace_paths={})


def test_user_namespaces_unsupported(settings: Config, rootfs: Path) -> None:
    cfg = make_config(namespace_options=pb.NamespaceOption(userns_options=pb.UserNamespace(mode=pb.NamespaceMode.POD)))
    with pytest.raises(InvalidArgument, match="user namespaces"):
        build(settings, rootfs, cfg)
    cfg = make_config(namespace_options=pb.NamespaceOption(userns_options=pb.UserNamespace(mode=pb.NamespaceMode.NODE)))
    build(settings, rootfs, cfg)


# --- mounts and devices --------------------------------------------------------------------------


def test_default_and_pod_file_mounts(settings: Config, rootfs: Path) -> None:
    files = {"/etc/hosts": "/run/p/hosts", "/dev/shm": "/run/p/shm"}
    spec = build(settings, rootfs, make_config(readonly_rootfs=True), pod_files=files)
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/dev") < dests.index("/dev/pts")
    assert {"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/etc/hosts", "/dev/shm"} == set(
        dests
    )
    assert mount_at(spec, "/etc/hosts") == {
        "destination": "/etc/hosts", "type": "bind", "source": "/run/p/hosts", "options": ["rbind", "rprivate", "ro"]
    }  # fmt: skip
    assert mount_at(spec, "/dev/shm")["source"] == "/run/p/shm"
    assert "ro" in mount_at(spec, "/sys")["options"]


def test_default_shm_uses_configured_size(settings: Config, rootfs: Path) -> None:
    assert f"size={settings.shm_size}" in mount_at(build(settings, rootfs), "/dev/shm")["options"]


def test_request_mounts(settings: Config, rootfs: Path) -> None:
    cfg = make_config()
    cfg.mounts.add(container_path="/data", host_path="/srv/data", readonly=True)
    cfg.mounts.add(container_path="/etc/hosts", host_path="/custom/hosts")
    cfg.mounts.add(
        container_path="/shared", host_path="/srv/shared", propagation=pb.MountPropagation.PROPAGATION_BIDIRECTIONAL
    )
    cfg.mounts.add(
        container_path="/slave/", host_path="/srv/s", propagation=pb.MountPropagation.PROPAGATION_HOST_TO_CONTAINER
    )
    cfg.mounts.add(container_path="/data/sub", host_path="/srv/sub", selinux_relabel=True)
    spec = build(settings, rootfs, cfg, pod_files={"/etc/hosts": "/run/p/hosts"})
    assert mount_at(spec, "/data")["options"] == ["rbind", "rprivate", "ro"]
    assert mount_at(spec, "/etc/hosts")["source"] == "/custom/hosts"
    assert mount_at(spec, "/shared")["options"] == ["rbind", "rshared", "rw"]
    assert mount_at(spec, "/slave")["options"] == ["rbind", "rslave", "rw"]
    assert spec["linux"]["rootfsPropagation"] == "rshared"
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/data") < dests.index("/data/sub")


def test_host_to_container_makes_rootfs_slave(settings: Config, rootfs: Path) -> None:
    cfg = make_config()
    cfg.mounts.add(
        container_path="/s", host_path="/srv/s", propagation=pb.MountPropagation.PROPAGATION_HOST_TO_CONTAINER
    )
    assert build(settings, rootfs, cfg)["linux"]["rootfsPropagation"] == "rslave"


def test_recursive_read_only(settings: Config, rootfs: Path) -> None:
    cfg = make_config()
    cfg.mounts.add(container_path="/data", host_path="/srv/data", readonly=True, recursive_read_only=True)
    spec = build(settings, rootfs, cfg, recursive_read_only_supported=True)
    assert mount_at(spec, "/data")["options"] == ["rbind", "rprivate", "ro", "rro"]
    with pytest.raises(InvalidArgument, match="not supported by this runtime handler"):
        build(settings, rootfs, cfg, recursive_read_only_supported=False)


@pytest.mark.parametrize(
    ("mount", "match"),
    [
        (pb.Mount(container_path="/d", host_path="/s", recursive_read_only=True), "needs readonly"),
        (
            pb.Mount(
                container_path="/d", host_path="/s", readonly=True, recursive_read_only=True,
                propagation=pb.MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
            ),
            "needs private propagation",
        ),
        (pb.Mount(container_path="data", host_path="/s"), "container_path 'data' must be an absolute path"),
        (pb.Mount(container_path="/d/../../etc", host_path="/s"), "must not contain '..'"),
        (pb.Mount(container_path="/d", host_path="srv"), "host_path 'srv' must be an absolute path"),
        (pb.Mount(container_path="/d", host_path="/srv/../etc"), "host_path '/srv/../etc' must not contain"),
        (pb.Mount(container_path="/d", image=pb.ImageSpec(image="img"), host_path="/s"), "image volume"),
    ],
)  # fmt: skip
def test_invalid_mounts(settings: Config, rootfs: Path, mount: pb.Mount, match: str) -> None:
    cfg = make_config()
    cfg.mounts.append(mount)
    with pytest.raises(InvalidArgument, match=match):
        build(settings, rootfs, cfg, recursive_read_only_supported=True)


def test_devices(settings: Config, rootfs: Path) -> None:
    cfg = make_config()
    cfg.devices.add(container_path="/dev/mynull", host_path="/dev/null", permissions="rw")
    cfg.devices.add(container_path="/dev/z", host_path="/dev/zero")
    spec = build(settings, rootfs, cfg)
    null, zero = spec["linux"]["devices"]
    st = os.stat("/dev/null")
    assert null == {
        "path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
        "fileMode": st.st_mode & 0o777, "uid": st.st_uid, "gid": st.st_gid,
    }  # fmt: skip
    assert zero["minor"] == 5
    assert spec["linux"]["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
    ]


def test_device_directory(settings: Config, rootfs: Path, tmp_path: Path) -> None:
    if not os.path.isdir("/dev/pts"):
        pytest.skip("no /dev/pts")
    cfg = make_config()
    cfg.devices.add(container_path="/dev/host-pts", host_path="/dev/pts")
    paths = [d["path"] for d in build(settings, rootfs, cfg)["linux"]["devices"]]
    assert paths and all(p.startswith("/dev/host-pts/") for p in paths)


@pytest.mark.parametrize(
    ("host_path", "permissions", "match"),
    [
        ("/dev/null", "rwx", "subset of 'rwm'"),
        ("/dev/null", "rr", "subset of 'rwm'"),
        ("/dev/no-such-device", "", "does not exist on the host"),
        ("/etc/hostname", "", "is not a device"),
        ("dev/null", "", "must be an absolute path"),
    ],
)
def test_invalid_devices(settings: Config, rootfs: Path, host_path: str, permissions: str, match: str) -> None:
    cfg = make_config()
    cfg.devices.add(container_path="/dev/x", host_path=host_path, permissions=permissions)
    with pytest.raises(InvalidArgument, match=match):
        build(settings, rootfs, cfg)


# --- resources -----------------------------------------------------------------------------------


def test_resources(settings: Config, rootfs: Path) -> None:
    cfg = make_config()
    res = cfg.linux.resources
    res.cpu_shares, res.cpu_quota, res.cpu_period = 512, 50000, 100000
    res.cpuset_cpus, res.cpuset_mems = "0-1", "0"
    res.memory_limit_in_bytes, res.memory_swap_limit_in_bytes = 1 << 26, 1 << 27
    res.oom_score_adj = 900
    res.hugepage_limits.add(page_size="2MB", limit=1 << 21)
    spec = build(settings, rootfs, cfg)
    assert spec["linux"]["resources"] == {
        "devices": [{"allow": False, "access": "rwm"}],
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "memory": {"limit": 1 << 26, "swap": 1 << 27},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}],
    }
    assert spec["process"]["oomScoreAdj"] == 900


def test_swap_below_memory_is_invalid(settings: Config, rootfs: Path) -> None:
    cfg = make_config()
    cfg.linux.resources.memory_limit_in_bytes, cfg.linux.resources.memory_swap_limit_in_bytes = 2000, 1000
    with pytest.raises(InvalidArgument, match="memory plus swap"):
        build(settings, rootfs, cfg)


def test_unified_needs_cgroup_v2(settings: Config, rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config()
    cfg.linux.resources.unified["memory.high"] = "1000000"
    with pytest.raises(InvalidArgument, match="need cgroup v2"):
        build(settings, rootfs, cfg)
    monkeypatch.setattr(limits, "cgroup_version", lambda: 2)
    assert build(settings, rootfs, cfg)["linux"]["resources"]["unified"] == {"memory.high": "1000000"}


def kubelet_hugepages() -> pb.ContainerConfig:
    """kubelet sends a limit for every page size it knows, 0 when the pod asks for none."""
    cfg = make_config()
    cfg.linux.resources.memory_limit_in_bytes = 1 << 26
    cfg.linux.resources.hugepage_limits.add(page_size="2MB", limit=0)
    cfg.linux.resources.hugepage_limits.add(page_size="1GB", limit=0)
    return cfg


def test_hugepage_limits_dropped_without_hugetlb(
    settings: Config, rootfs: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(limits, "available_controllers", lambda _path: HOST_CONTROLLERS - {"hugetlb"})
    with caplog.at_level("DEBUG", logger=limits.__name__):
        resources = build(settings, rootfs, kubelet_hugepages())["linux"]["resources"]
    assert "hugepageLimits" not in resources
    assert resources["memory"] == {"limit": 1 << 26}
    assert "hugetlb controller not mounted" in caplog.text


def test_hugepage_limits_of_sizes_the_host_lacks_are_dropped(
    settings: Config, rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "hugepage_sizes", lambda: frozenset({"2MB"}))
    resources = build(settings, rootfs, kubelet_hugepages())["linux"]["resources"]
    assert resources["hugepageLimits"] == [{"pageSize": "2MB", "limit": 0}]


def test_hugepage_limits_the_host_has_are_kept(settings: Config, rootfs: Path) -> None:
    resources = build(settings, rootfs, kubelet_hugepages())["linux"]["resources"]
    assert resources["hugepageLimits"] == [{"pageSize": "2MB", "limit": 0}, {"pageSize": "1GB", "limit": 0}]


def test_unified_keys_of_missing_v2_controllers_are_dropped(
    settings: Config, rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "cgroup_version", lambda: 2)
    monkeypatch.setattr(limits, "available_controllers", lambda _path: frozenset({"cpu", "memory", "pids"}))
    cfg = make_config()
    cfg.linux.resources.unified.update(
        {"memory.high": "1000000", "pids.max": "100", "rdma.max": "mlx4_0 hca_handle=2", "misc.max": "res_a 1"}
    )
    cfg.linux.resources.unified["cgroup.max.depth"] = "3"
    resources = build(settings, rootfs, cfg)["linux"]["resources"]
    assert resources["unified"] == {"memory.high": "1000000", "pids.max": "100", "cgroup.max.depth": "3"}


def test_limits_clamped_without_sys_resource(settings: Config, rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "_has_sys_resource", lambda: False)
    monkeypatch.setattr(limits, "_own_oom_score_adj", lambda: -500)
    monkeypatch.setattr(limits.resource, "getrlimit", lambda _: (1024, 20000))
    cfg = make_config()
    cfg.linux.resources.oom_score_adj = -999
    spec = build(settings, rootfs, cfg)
    assert spec["process"]["oomScoreAdj"] == -500
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}]
    assert limits.clamp_oom_score_adj(100) == 100
    assert limits.clamp_oom_score_adj(5000) == 1000


# --- sandbox -------------------------------------------------------------------------------------


def sandbox(settings: Config, rootfs: Path, pod: pb.PodSandboxConfig | None = None, **kw: Any) -> dict[str, Any]:
    kw.setdefault("image_config", {"config": {"Entrypoint": ["/pause"]}})  # as the pause images have
    ctx = SandboxSpecContext(
        sandbox_id="sid", config=pod or POD, rootfs=rootfs, cgroup_parent="/kubepods/pod1", settings=settings, **kw
    )
    return sandbox_spec(ctx)


def test_sandbox_defaults(settings: Config, rootfs: Path) -> None:
    spec = sandbox(settings, rootfs, netns_path="/run/netns/p", pod_files={"/dev/shm": "/run/p/shm"})
    assert spec["process"]["args"] == ["/pause"]
    assert spec["process"]["oomScoreAdj"] == -998
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert spec["root"] == {"path": str(rootfs), "readonly": True}
    assert spec["hostname"] == "web-0"
    assert ns(spec) == {"mount": None, "network": "/run/netns/p", "uts": None, "ipc": None, "pid": None}
    assert spec["linux"]["cgroupsPath"] == "/kubepods/pod1/crio-py-sid"
    assert spec["linux"]["sysctl"] == {}
    assert mount_at(spec, "/dev/shm")["source"] == "/run/p/shm"
    assert spec["annotations"]["io.kubernetes.cri.container-type"] == "sandbox"
    assert spec["annotations"]["io.kubernetes.cri.sandbox-log-directory"] == "/var/log/pods/x"
    assert spec["annotations"]["io.kubernetes.pod.uid"] == "uid-1"
    assert "seccomp" not in spec["linux"]
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]


def test_sandbox_new_netns_when_none_pinned(settings: Config, rootfs: Path) -> None:
    assert ns(sandbox(settings, rootfs))["network"] is None


def test_sandbox_host_namespaces(settings: Config, rootfs: Path) -> None:
    pod = pb.PodSandboxConfig()
    pod.CopyFrom(POD)
    pod.linux.security_context.namespace_options.CopyFrom(
        pb.NamespaceOption(network=pb.NamespaceMode.NODE, pid=pb.NamespaceMode.NODE, ipc=pb.NamespaceMode.NODE)
    )
    spec = sandbox(settings, rootfs, pod, netns_path="/ignored")
    assert ns(spec) == {"mount": None}
    assert "hostname" not in spec


def test_sandbox_pause_command_and_image(settings: Config, rootfs: Path) -> None:
    custom = dataclasses.replace(settings, pause_command="/bin/sleep 'a b'")
    assert sandbox(custom, rootfs)["process"]["args"] == ["/bin/sleep", "a b"]
    empty = dataclasses.replace(settings, pause_command="")
    assert sandbox(empty, rootfs, image_config={"config": {"Entrypoint": ["/catatonit", "-P"]}})["process"]["args"] == [
        "/catatonit", "-P"
    ]  # fmt: skip
    with pytest.raises(InvalidArgument, match="no pause command"):
        sandbox(empty, rootfs, image_config={})


def test_sandbox_security_context(settings: Config, rootfs: Path) -> None:
    pod = pb.PodSandboxConfig()
    pod.CopyFrom(POD)
    sc = pod.linux.security_context
    sc.run_as_user.value = 1000
    sc.seccomp.profile_type = pb.SecurityProfile.RuntimeDefault
    spec = sandbox(settings, rootfs, pod)
    assert spec["process"]["user"]["uid"] == 1000
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    sc.privileged = True
    spec = sandbox(settings, rootfs, pod)
    assert "seccomp" not in spec["linux"] and "maskedPaths" not in spec["linux"]
    assert spec["process"]["capabilities"]["bounding"] == list(capabilities.ALL_CAPABILITIES)


def test_sandbox_overhead(settings: Config, rootfs: Path) -> None:
    pod = pb.PodSandboxConfig()
    pod.CopyFrom(POD)
    pod.linux.overhead.cpu_shares = 10
    assert sandbox(settings, rootfs, pod)["linux"]["resources"]["cpu"] == {"shares": 10}


def test_sandbox_oom_score_adj_clamped(settings: Config, rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "_has_sys_resource", lambda: False)
    monkeypatch.setattr(limits, "_own_oom_score_adj", lambda: 0)
    assert sandbox(settings, rootfs)["process"]["oomScoreAdj"] == 0


def sysctl_pod(
    sysctls: dict[str, str], network: int = pb.NamespaceMode.POD, ipc: int = pb.NamespaceMode.POD
) -> pb.PodSandboxConfig:
    pod = pb.PodSandboxConfig()
    pod.CopyFrom(POD)
    pod.linux.sysctls.update(sysctls)
    pod.linux.security_context.namespace_options.network = network  # type: ignore[assignment]
    pod.linux.security_context.namespace_options.ipc = ipc  # type: ignore[assignment]
    return pod


def test_sysctls_namespaced(settings: Config, rootfs: Path) -> None:
    wanted = {
        "kernel.shm_rmid_forced": "1", "kernel.msgmax": "8192", "kernel.sem": "250 32000 32 128",
        "fs.mqueue.msg_max": "20", "net.ipv4.ip_local_port_range": "1024 65000",
        "net/ipv4/conf/eth0.100/rp_filter": "0",
    }  # fmt: skip
    got = sandbox(settings, rootfs, sysctl_pod(wanted))["linux"]["sysctl"]
    assert got == {
        **{k: v for k, v in wanted.items() if "/" not in k},
        "net.ipv4.conf.eth0/100.rp_filter": "0",
    }


@pytest.mark.parametrize(
    ("sysctls", "network", "ipc", "match"),
    [
        ({"kernel.panic": "1"}, pb.NamespaceMode.POD, pb.NamespaceMode.POD, "not namespaced"),
        ({"vm.swappiness": "1"}, pb.NamespaceMode.POD, pb.NamespaceMode.POD, "'vm.swappiness' is not namespaced"),
        ({"net.core.somaxconn": "1"}, pb.NamespaceMode.NODE, pb.NamespaceMode.POD, "own network namespace"),
        ({"kernel.shmmax": "1"}, pb.NamespaceMode.POD, pb.NamespaceMode.NODE, "own ipc namespace"),
    ],
)
def test_sysctls_refused(
    settings: Config, rootfs: Path, sysctls: dict[str, str], network: int, ipc: int, match: str
) -> None:
    with pytest.raises(InvalidArgument, match=match):
        sandbox(settings, rootfs, sysctl_pod(sysctls, network, ipc))


def test_default_sysctls_under_the_pods_and_skipped_when_not_applicable(settings: Config, rootfs: Path) -> None:
    settings = dataclasses.replace(
        settings, default_sysctls={"net.ipv4.ping_group_range": "0 0", "kernel.msgmax": "1", "vm.x": "1"}
    )
    got = sandbox(settings, rootfs, sysctl_pod({"kernel.msgmax": "2"}))["linux"]["sysctl"]
    assert got == {"net.ipv4.ping_group_range": "0 0", "kernel.msgmax": "2"}
    got = sandbox(settings, rootfs, sysctl_pod({}, network=pb.NamespaceMode.NODE))["linux"]["sysctl"]
    assert got == {"kernel.msgmax": "1"}
