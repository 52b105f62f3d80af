"""Seccomp: the built-in default profile, loading profiles from disk, and the OCI section.

Profiles may be written in the OCI form (``architectures``, plain ``syscalls``) or in the richer
form many published profiles use (``archMap``; syscall entries with ``includes``/``excludes`` on
``caps`` and ``arches``). :func:`spec_seccomp` resolves the latter for one container: entries whose
capability the container lacks are dropped, so granting CAP_SYS_ADMIN also lets ``mount`` through.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from crio_py.errors import InvalidArgument
from crio_py.seccomp.default import default_profile

RUNTIME_DEFAULT = "RuntimeDefault"
UNCONFINED = "Unconfined"
LOCALHOST = "Localhost"
KINDS = (RUNTIME_DEFAULT, UNCONFINED, LOCALHOST)

ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
OPERATORS = frozenset(
    {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }
)
# Machine name -> (libseccomp architecture, the arch label profiles use in includes/excludes).
_ARCHES = {
    "x86_64": ("SCMP_ARCH_X86_64", "amd64"),
    "aarch64": ("SCMP_ARCH_AARCH64", "arm64"),
    "ppc64le": ("SCMP_ARCH_PPC64LE", "ppc64le"),
    "s390x": ("SCMP_ARCH_S390X", "s390x"),
    "riscv64": ("SCMP_ARCH_RISCV64", "riscv64"),
}


def parse_profile_path(value: str) -> tuple[str, str]:
    """Split a deprecated ``seccomp_profile_path`` into (kind, localhost path).

    Accepted: ``""`` and ``unconfined`` (Unconfined), ``runtime/default`` and ``docker/default``
    (RuntimeDefault), ``localhost/<absolute path>`` (Localhost).
    """
    if value in ("", "unconfined"):
        return UNCONFINED, ""
    if value in ("runtime/default", "docker/default"):
        return RUNTIME_DEFAULT, ""
    if value.startswith("localhost/"):
        # kubelet writes "localhost/" + an absolute path: one slash or two, the path is absolute.
        return LOCALHOST, "/" + value.removeprefix("localhost/").lstrip("/")
    raise InvalidArgument(
        f"seccomp profile {value!r} is not one of unconfined, runtime/default, docker/default, localhost/<path>"
    )


def _problems(profile: Any) -> list[str]:
    if not isinstance(profile, dict):
        return ["the profile must be a JSON object"]
    out: list[str] = []
    if profile.get("defaultAction") not in ACTIONS:
        out.append(f"defaultAction {profile.get('defaultAction')!r} is not a seccomp action")
    if not isinstance(profile.get("defaultErrnoRet", 0), int):
        out.append("defaultErrnoRet must be an integer")
    syscalls = profile.get("syscalls", [])
    if not isinstance(syscalls, list):
        return [*out, "syscalls must be a list"]
    for i, entry in enumerate(syscalls):
        where = f"syscalls[{i}]"
        if not isinstance(entry, dict):
            out.append(f"{where} must be an object")
            continue
        names = entry.get("names", [entry["name"]] if "name" in entry else None)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            out.append(f"{where}: names must be a non-empty list of syscall names")
        if entry.get("action") not in ACTIONS:
            out.append(f"{where}: action {entry.get('action')!r} is not a seccomp action")
        args = entry.get("args") or []
        if not isinstance(args, list):
            out.append(f"{where}: args must be a list")
            continue
        for j, arg in enumerate(args):
            if not isinstance(arg, dict):
                out.append(f"{where}.args[{j}] must be an object")
                continue
            if not isinstance(arg.get("index"), int) or not 0 <= arg["index"] <= 5:
                out.append(f"{where}.args[{j}]: index must be 0..5")
            if not isinstance(arg.get("value"), int) or not isinstance(arg.get("valueTwo", 0), int):
                out.append(f"{where}.args[{j}]: value and valueTwo must be integers")
            if arg.get("op") not in OPERATORS:
                out.append(f"{where}.args[{j}]: op {arg.get('op')!r} is not a comparison")
    return out


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read and validate a profile file; InvalidArgument says what is wrong and where."""
    path = Path(path)
    if not path.is_absolute():
        raise InvalidArgument(f"seccomp profile path {str(path)!r} must be absolute")
    try:
        profile = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidArgument(f"seccomp profile {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"seccomp profile {path} cannot be read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"seccomp profile {path} is not valid JSON: {exc}") from exc
    problems = _problems(profile)
    if problems:
        raise InvalidArgument(f"seccomp profile {path}: {'; '.join(problems)}")
    return profile


def _caps(capabilities: list[str] | set[str] | frozenset[str]) -> set[str]:
    return {c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper() for c in capabilities}


def to_oci(profile: dict[str, Any], capabilities: list[str] | set[str] | frozenset[str]) -> dict[str, Any]:
    """Resolve a profile into the OCI ``linux.seccomp`` section for a container with ``capabilities``."""
    machine = platform.machine()
    scmp_arch, label = _ARCHES.get(machine, ("", machine))
    caps = _caps(capabilities)
    if "architectures" in profile:
        arches = list(profile["architectures"])
    else:
        arches = []
        for entry in profile.get("archMap") or []:
            if entry.get("architecture") == scmp_arch:
                arches = [scmp_arch, *entry.get("subArchitectures", [])]
    syscalls: list[dict[str, Any]] = []
    for entry in profile.get("syscalls") or []:
        inc, exc = entry.get("includes") or {}, entry.get("excludes") or {}
        if not _caps(inc.get("caps", [])) <= caps or (inc.get("arches") and label not in inc["arches"]):
            continue
        if _caps(exc.get("caps", [])) & caps or label in exc.get("arches", []):
            continue
        rule: dict[str, Any] = {"names": entry.get("names") or [entry["name"]], "action": entry["action"]}
        for key in ("args", "errnoRet"):
            if entry.get(key) is not None and entry[key] != []:
                rule[key] = entry[key]
        syscalls.append(rule)
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"], "architectures": arches, "syscalls": syscalls}
    for key in ("defaultErrnoRet", "flags", "listenerPath", "listenerMetadata"):
        if profile.get(key):
            out[key] = profile[key]
    return out


def spec_seccomp(
    profile_kind: str,
    localhost_path: str,
    capabilities: list[str] | set[str] | frozenset[str],
    runtime_default_path: str = "",
) -> dict[str, Any] | None:
    """The OCI ``linux.seccomp`` section, or None for Unconfined.

    ``runtime_default_path`` replaces the built-in profile for RuntimeDefault (the daemon's
    ``seccomp_profile`` setting). Conditional entries are kept only when the container holds
    their capabilities.
    """
    if profile_kind == UNCONFINED:
        return None
    if profile_kind == RUNTIME_DEFAULT:
        profile = load_profile(runtime_default_path) if runtime_default_path else default_profile()
    elif profile_kind == LOCALHOST:
        if not localhost_path:
            raise InvalidArgument("a Localhost seccomp profile needs a path (localhost_ref)")
        profile = load_profile(localhost_path)
    else:
        raise InvalidArgument(f"unknown seccomp profile type {profile_kind!r} (known: {', '.join(KINDS)})")
    return to_oci(profile, capabilities)
