"""Running one CNI plugin: environment, stdin, timeouts, and the plugin's error JSON."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from crio_py.errors import DeadlineExceeded, FailedPrecondition, Internal, Unavailable
from crio_py.network.cni_config import parse_config
from crio_py.network.cni_exec import (
    Invocation,
    PluginError,
    cni_args,
    exec_plugin,
    find_plugin,
    plugin_env,
    plugin_stdin,
    run_plugin,
)
from crio_py.network.manager import capability_args, to_crio_error
from crio_py.network.model import PodAttachment, PortMapping

NET = parse_config(
    {
        "cniVersion": "1.0.0",
        "name": "podnet",
        "plugins": [
            {"type": "bridge", "cniVersion": "0.1.0", "name": "stale"},
            {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False}},
        ],
    }
)


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_cni_args_and_env() -> None:
    args = cni_args([("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", "ns"), ("K8S_POD_NAME", "web")])
    assert args == "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web"
    inv = Invocation("ADD", "cid", "/run/netns/x", "eth0", args)
    env = plugin_env(inv, ["/a", "/b"], {"PATH": "/usr/bin", "CNI_NETNS": "/stale", "CNI_IFNAME": "old"})
    assert env == {
        "PATH": "/usr/bin",
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "cid",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": args,
        "CNI_PATH": "/a:/b",
    }
    # DEL with the namespace gone: CNI_NETNS is left out rather than pointing nowhere.
    env = plugin_env(Invocation("DEL", "cid", "", "eth0", args), ["/a"], {"CNI_NETNS": "/stale"})
    assert "CNI_NETNS" not in env
    assert plugin_env(Invocation("VERSION"), ["/a"], {}) == {"CNI_COMMAND": "VERSION", "CNI_PATH": "/a"}


def test_pod_attachment_gives_k8s_args_and_capabilities() -> None:
    att = PodAttachment(
        pod_id="p1",
        name="web",
        namespace="ns",
        uid="u1",
        netns_path="/x",
        port_mappings=(PortMapping("TCP", 80, 8080), PortMapping("udp", 53, 5353, "127.0.0.1")),
        bandwidth={"ingressRate": 1000},
    )
    assert capability_args(att) == {
        "portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
        ],
        "bandwidth": {"ingressRate": 1000},
    }


def test_stdin_carries_list_name_version_prev_result_and_declared_capabilities_only() -> None:
    caps = {"portMappings": [{"hostPort": 1}], "bandwidth": {"ingressRate": 1}, "dns": {}}
    first = json.loads(plugin_stdin(NET, NET.plugins[0], None, caps))
    assert first == {"type": "bridge", "cniVersion": "1.0.0", "name": "podnet"}
    prev = {"cniVersion": "1.0.0", "ips": []}
    second = json.loads(plugin_stdin(NET, NET.plugins[1], prev, caps))
    assert second["prevResult"] == prev
    assert second["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}
    gc = json.loads(plugin_stdin(NET, NET.plugins[0], extra={"cni.dev/valid-attachments": []}))
    assert gc["cni.dev/valid-attachments"] == []


def test_find_plugin_searches_dirs_in_order(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "bridge").write_text("not executable")
    exe = script(tmp_path / "b", "bridge", "exit 0\n")
    assert find_plugin("bridge", [str(tmp_path / "a"), str(tmp_path / "b")]) == exe
    assert find_plugin("nope", [str(tmp_path / "a")]) is None


def test_plugin_gets_env_and_stdin(tmp_path: Path) -> None:
    plugin = script(tmp_path, "bridge", 'cat > "$0.stdin"; env | grep ^CNI_ | sort > "$0.env"; echo "{}"\n')
    inv = Invocation("ADD", "cid", "/run/netns/x", "eth0", "IgnoreUnknown=1")
    out = run_plugin(NET, NET.plugins[0], inv, [str(tmp_path)], 5)
    assert out.strip() == b"{}"
    assert json.loads(Path(f"{plugin}.stdin").read_text())["name"] == "podnet"
    env = Path(f"{plugin}.env").read_text().splitlines()
    assert "CNI_COMMAND=ADD" in env and f"CNI_PATH={tmp_path}" in env and "CNI_IFNAME=eth0" in env


def test_timeout_kills_the_plugin_and_its_children(tmp_path: Path) -> None:
    plugin = script(tmp_path, "slow", 'sleep 30 & echo $! > "$0.child"; echo started >&2; wait\n')
    started = time.monotonic()
    with pytest.raises(PluginError) as info:
        exec_plugin(plugin, "ADD", {"PATH": os.environ["PATH"]}, b"{}", 0.5)
    assert time.monotonic() - started < 5
    assert info.value.timed_out and "timed out after 0.5s" in str(info.value)
    assert "started" in info.value.stderr
    child = int(Path(f"{plugin}.child").read_text())
    time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    assert isinstance(to_crio_error(info.value, "CNI ADD"), DeadlineExceeded)


def test_error_json_msg_details_code_and_stderr_reach_the_message(tmp_path: Path) -> None:
    body = (
        'echo \'{"cniVersion": "1.0.0", "code": 7, "msg": "bad subnet", "details": "10.0.0.0/33"}\'\n'
        "echo 'parsing config' >&2\nexit 1\n"
    )
    plugin = script(tmp_path, "ipam", body)
    with pytest.raises(PluginError) as info:
        exec_plugin(plugin, "ADD", {}, b"{}", 5)
    exc = info.value
    assert (exc.code, exc.msg, exc.details, exc.stderr) == (7, "bad subnet", "10.0.0.0/33", "parsing config")
    err = to_crio_error(exc, "CNI ADD of pod ns/web")
    assert isinstance(err, FailedPrecondition)
    assert err.message == (
        "CNI ADD of pod ns/web: plugin 'ipam' ADD failed: bad subnet (10.0.0.0/33) [CNI error code 7]; "
        "stderr: parsing config"
    )


def test_error_codes_map_to_crio_errors() -> None:
    assert isinstance(to_crio_error(PluginError("p", "ADD", "busy", code=11), "x"), Unavailable)
    assert isinstance(to_crio_error(PluginError("p", "ADD", "oops", code=999), "x"), Internal)


def test_non_json_failure_output_is_kept(tmp_path: Path) -> None:
    plugin = script(tmp_path, "crashy", "echo 'panic: boom'; exit 2\n")
    with pytest.raises(PluginError, match="panic: boom"):
        exec_plugin(plugin, "DEL", {}, b"{}", 5)
    silent = script(tmp_path, "silent", "exit 3\n")
    with pytest.raises(PluginError, match="exit status 3"):
        exec_plugin(silent, "DEL", {}, b"{}", 5)


def test_missing_plugin(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=f"not found in {tmp_path}"):
        run_plugin(NET, NET.plugins[0], Invocation("ADD"), [str(tmp_path)], 5)
