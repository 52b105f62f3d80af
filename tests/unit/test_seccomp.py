"""Seccomp: the built-in profile's content, loading profiles, and the OCI section per capabilities."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import pytest

from crio_py import seccomp
from crio_py.errors import InvalidArgument
from crio_py.seccomp.default import NAMESPACE_FLAGS, default_profile

DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"]


def allowed(section: dict[str, Any]) -> set[str]:
    """Syscalls allowed without argument conditions."""
    return {
        n for r in section["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]
    }


def rules_for(section: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in section["syscalls"] if name in r["names"]]


@pytest.fixture
def default_section() -> dict[str, Any]:
    section = seccomp.spec_seccomp(seccomp.RUNTIME_DEFAULT, "", DEFAULT_CAPS)
    assert section is not None
    return section


def test_default_is_an_eperm_allow_list(default_section: dict[str, Any]) -> None:
    assert default_section["defaultAction"] == "SCMP_ACT_ERRNO"
    assert default_section["defaultErrnoRet"] == 1
    assert {"read", "write", "openat", "execve", "futex", "epoll_wait", "socket", "exit_group"} <= allowed(
        default_section
    )


@pytest.mark.parametrize(
    "name",
    [
        "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "mount", "umount2", "reboot", "swapon",
        "init_module", "finit_module", "ptrace", "bpf", "perf_event_open", "userfaultfd", "setns", "pivot_root",
        "process_vm_readv", "open_by_handle_at", "settimeofday", "acct", "io_uring_setup",
    ],
)  # fmt: skip
def test_dangerous_syscalls_blocked_without_capabilities(default_section: dict[str, Any], name: str) -> None:
    assert not any(r["action"] == "SCMP_ACT_ALLOW" for r in rules_for(default_section, name))


def test_clone_and_unshare_only_without_namespace_flags(default_section: dict[str, Any]) -> None:
    for name in ("clone", "unshare"):
        (rule,) = rules_for(default_section, name)
        assert rule["args"] == [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    # glibc falls back from clone3 to clone only on ENOSYS.
    (clone3,) = rules_for(default_section, "clone3")
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)


def test_capabilities_open_their_syscalls() -> None:
    section = seccomp.spec_seccomp(seccomp.RUNTIME_DEFAULT, "", [*DEFAULT_CAPS, "SYS_ADMIN", "CAP_SYS_PTRACE"])
    assert section is not None
    assert {"mount", "umount2", "setns", "unshare", "clone", "clone3", "ptrace", "process_vm_readv"} <= allowed(section)
    assert not [r for r in section["syscalls"] if r["action"] == "SCMP_ACT_ERRNO"]
    assert "reboot" not in allowed(section)


def test_personality_only_harmless_values(default_section: dict[str, Any]) -> None:
    values = {r["args"][0]["value"] for r in rules_for(default_section, "personality")}
    assert values == {0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF}


def test_architectures_follow_the_host(default_section: dict[str, Any]) -> None:
    if platform.machine() == "x86_64":
        assert default_section["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        assert "arch_prctl" in allowed(default_section)
    assert not any("includes" in r or "excludes" in r for r in default_section["syscalls"])


def test_profile_written_from_scratch_has_no_duplicated_names() -> None:
    unconditional = default_profile()["syscalls"][0]["names"]
    assert len(unconditional) == len(set(unconditional))


def test_unconfined_is_no_section() -> None:
    assert seccomp.spec_seccomp(seccomp.UNCONFINED, "", DEFAULT_CAPS) is None


def test_localhost_profile_oci_form(tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    section = seccomp.spec_seccomp(seccomp.LOCALHOST, str(path), [])
    assert section == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    }


def test_localhost_profile_with_includes_and_single_name(tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"name": "read", "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["sparc"]}},
        ],
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    with_admin = seccomp.spec_seccomp(seccomp.LOCALHOST, str(path), ["SYS_ADMIN"])
    without = seccomp.spec_seccomp(seccomp.LOCALHOST, str(path), [])
    assert with_admin is not None and without is not None
    assert allowed(with_admin) == {"read", "mount"}
    assert allowed(without) == {"read", "ptrace"}


def test_runtime_default_can_be_replaced_by_config(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_LOG"}))
    section = seccomp.spec_seccomp(seccomp.RUNTIME_DEFAULT, "", [], runtime_default_path=str(path))
    assert section is not None and section["defaultAction"] == "SCMP_ACT_LOG"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"defaultAction": "SCMP_ACT_NOPE"}', "defaultAction 'SCMP_ACT_NOPE'"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}', "syscalls must be a list"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}', r"syscalls\[0\]: names"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "go"}]}', "action 'go'"),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW",'
            ' "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
            "index must be 0..5",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW",'
            ' "args": [{"index": 0, "value": 1, "op": "EQ"}]}]}',
            "op 'EQ'",
        ),
    ],
)
def test_load_profile_reports_problems(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InvalidArgument, match=match):
        seccomp.load_profile(path)


def test_localhost_path_must_be_absolute_and_exist(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="must be absolute"):
        seccomp.spec_seccomp(seccomp.LOCALHOST, "relative.json", [])
    with pytest.raises(InvalidArgument, match="does not exist"):
        seccomp.spec_seccomp(seccomp.LOCALHOST, str(tmp_path / "missing.json"), [])
    with pytest.raises(InvalidArgument, match="needs a path"):
        seccomp.spec_seccomp(seccomp.LOCALHOST, "", [])
    with pytest.raises(InvalidArgument, match="unknown seccomp profile type"):
        seccomp.spec_seccomp("Bogus", "", [])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", (seccomp.UNCONFINED, "")),
        ("unconfined", (seccomp.UNCONFINED, "")),
        ("runtime/default", (seccomp.RUNTIME_DEFAULT, "")),
        ("docker/default", (seccomp.RUNTIME_DEFAULT, "")),
        ("localhost//etc/p.json", (seccomp.LOCALHOST, "/etc/p.json")),
        ("localhost/etc/p.json", (seccomp.LOCALHOST, "/etc/p.json")),
    ],
)
def test_deprecated_profile_paths(value: str, expected: tuple[str, str]) -> None:
    assert seccomp.parse_profile_path(value) == expected


def test_unknown_deprecated_profile_path() -> None:
    with pytest.raises(InvalidArgument, match="seccomp profile 'weird'"):
        seccomp.parse_profile_path("weird")
