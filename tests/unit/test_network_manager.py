"""CNIManager against scripted fake plugins: chaining, DEL from the cache, rollback, CHECK, GC, status."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crio_py.config import CNIConfig
from crio_py.errors import DeadlineExceeded, FailedPrecondition, Internal
from crio_py.network import CNIManager, PodAttachment, PortMapping
from crio_py.network import manager as manager_mod

# One script serves every plugin type: it logs each call and does what behave.json says for its
# type and command (exit code, stdout, sleep); by default ADD adds the "ip" of its config.
FAKE_PLUGIN = f"""#!{sys.executable}
import json, os, sys, time
here = os.path.dirname(os.path.abspath(sys.argv[0]))
ptype = os.path.basename(sys.argv[0])
cmd = os.environ["CNI_COMMAND"]
conf = json.loads(sys.stdin.read() or "{{}}")
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open(os.path.join(here, "calls.jsonl"), "a") as f:
    f.write(json.dumps({{"type": ptype, "cmd": cmd, "env": env, "conf": conf}}) + "\\n")
try:
    behave = json.load(open(os.path.join(here, "behave.json")))
except FileNotFoundError:
    behave = {{}}
spec = behave.get(ptype, {{}}).get(cmd, {{}})
time.sleep(spec.get("sleep", 0))
if "stdout" in spec:
    print(json.dumps(spec["stdout"]))
elif cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.1.0", "supportedVersions": behave.get(ptype, {{}}).get(
        "versions", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])}}))
elif cmd == "ADD":
    res = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"], "interfaces": [
        {{"name": env["CNI_IFNAME"], "sandbox": env["CNI_NETNS"]}}], "ips": []}}
    if "ip" in conf:
        ip = {{"address": conf["ip"], "interface": 0}}
        if conf["cniVersion"] < "1.0.0":
            ip["version"] = "6" if ":" in conf["ip"] else "4"
        res["ips"].append(ip)
    print(json.dumps(res))
sys.exit(spec.get("exit", 0))
"""

NETNS = "/run/netns/fake-pod"


class Env:
    """A conf dir, plugin dir and cache dir with fake plugins, and helpers to read their calls."""

    def __init__(self, root: Path):
        self.conf = root / "conf"
        self.bin = root / "bin"
        self.cache = root / "cache"
        self.conf.mkdir()
        self.bin.mkdir()
        self.present = {NETNS}
        for ptype in ("fake-a", "fake-b", "fake-c"):
            path = self.bin / ptype
            path.write_text(FAKE_PLUGIN)
            path.chmod(0o755)

    def network(self, version: str = "1.0.0", plugins: list[dict[str, Any]] | None = None, name: str = "net") -> None:
        plugins = plugins or [
            {"type": "fake-a", "ip": "10.235.9.2/24"},
            {"type": "fake-b", "ip": "fd00::2/64", "capabilities": {"portMappings": True}},
        ]
        data = {"cniVersion": version, "name": name, "plugins": plugins}
        # Replaced, not rewritten in place: a same-size edit within one clock tick would look unchanged.
        tmp = self.conf / ".new"
        tmp.write_text(json.dumps(data))
        tmp.rename(self.conf / "10-net.conflist")

    def upgrade(self, ptype: str) -> None:
        """Look like a new binary (VERSION answers are remembered per path and mtime)."""
        path = self.bin / ptype
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    def behave(self, data: dict[str, Any]) -> None:
        (self.bin / "behave.json").write_text(json.dumps(data))

    def manager(self, timeout: int = 10) -> CNIManager:
        return CNIManager(
            CNIConfig(
                conf_dir=str(self.conf), plugin_dirs=[str(self.bin)], cache_dir=str(self.cache), plugin_timeout=timeout
            )
        )

    def calls(self, cmd: str | None = None) -> list[dict[str, Any]]:
        path = self.bin / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        out = [json.loads(line) for line in lines]
        return [c for c in out if cmd is None or c["cmd"] == cmd]

    def forget_calls(self) -> None:
        (self.bin / "calls.jsonl").unlink(missing_ok=True)

    def cache_files(self) -> list[str]:
        results = self.cache / "results"
        return sorted(p.name for p in results.iterdir()) if results.exists() else []


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    e = Env(tmp_path)
    is_netns: Callable[[Path], bool] = lambda p: str(p) in e.present  # noqa: E731
    monkeypatch.setattr(manager_mod, "is_netns", is_netns)
    return e


def attachment(pod_id: str = "pod1", netns: str = NETNS) -> PodAttachment:
    return PodAttachment(
        pod_id=pod_id,
        name="web",
        namespace="default",
        uid="uid-1",
        netns_path=netns,
        port_mappings=(PortMapping("tcp", 80, 8080),),
        bandwidth={"ingressRate": 1},
    )


def test_add_chains_prev_result_args_and_capabilities(env: Env) -> None:
    env.network()
    result = env.manager().setup(attachment())
    assert result.network == "net" and result.interface == "eth0"
    assert result.ips == ["10.235.9.2", "fd00::2"]
    a, b = env.calls("ADD")
    assert [a["type"], b["type"]] == ["fake-a", "fake-b"]
    assert "prevResult" not in a["conf"] and "runtimeConfig" not in a["conf"]
    assert b["conf"]["prevResult"]["ips"] == [{"address": "10.235.9.2/24", "interface": 0}]
    assert b["conf"]["runtimeConfig"] == {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    assert a["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "pod1",
        "CNI_NETNS": NETNS,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
        "K8S_POD_INFRA_CONTAINER_ID=pod1;K8S_POD_UID=uid-1",
        "CNI_PATH": str(env.bin),
    }
    assert env.cache_files() == ["net-pod1-eth0"]


def test_old_version_results_are_converted(env: Env) -> None:
    env.network(version="0.3.1")
    result = env.manager().setup(attachment())
    assert result.ips == ["10.235.9.2", "fd00::2"]
    assert all("version" not in ip for ip in result.result["ips"])
    # prevResult handed to the next plugin is in the config's own (old) shape.
    assert env.calls("ADD")[1]["conf"]["prevResult"]["ips"][0]["version"] == "4"
    cached = json.loads((env.cache / "results" / "net-pod1-eth0").read_text())
    assert cached["result"]["cniVersion"] == "0.3.1" and cached["result"]["ips"][1]["version"] == "6"


def test_del_after_restart_uses_cached_config_and_result(env: Env) -> None:
    env.network()
    env.manager().setup(attachment())
    # The conf dir changes meanwhile: DEL must still run the list the pod was added with.
    env.network(plugins=[{"type": "fake-c"}], name="other")
    env.forget_calls()
    env.manager().teardown(attachment())
    dels = env.calls("DEL")
    assert [c["type"] for c in dels] == ["fake-b", "fake-a"]
    assert all(c["conf"]["name"] == "net" for c in dels)
    assert dels[0]["conf"]["prevResult"]["ips"][1]["address"] == "fd00::2/64"
    assert dels[0]["conf"]["runtimeConfig"]["portMappings"][0]["hostPort"] == 8080
    assert env.cache_files() == []
    env.forget_calls()
    # Already detached: DEL again through the current network, without prevResult, and success.
    env.manager().teardown(attachment())
    (again,) = env.calls("DEL")
    assert again["type"] == "fake-c" and "prevResult" not in again["conf"]


def test_cached_result_survives_restart(env: Env) -> None:
    env.network()
    assert env.manager().cached_result("pod1") is None
    env.manager().setup(attachment())
    cached = env.manager().cached_result("pod1")
    assert cached is not None and cached.ips == ["10.235.9.2", "fd00::2"] and cached.network == "net"


def test_failed_add_rolls_back_the_whole_list(env: Env) -> None:
    env.network(plugins=[{"type": "fake-a", "ip": "10.235.9.2/24"}, {"type": "fake-b"}, {"type": "fake-c"}])
    env.behave({"fake-b": {"ADD": {"exit": 1, "stdout": {"code": 999, "msg": "no more ports", "details": "x"}}}})
    with pytest.raises(Internal, match="plugin 'fake-b' ADD failed: no more ports"):
        env.manager().setup(attachment())
    assert [c["type"] for c in env.calls("ADD")] == ["fake-a", "fake-b"]
    dels = env.calls("DEL")
    assert [c["type"] for c in dels] == ["fake-c", "fake-b", "fake-a"]
    assert dels[0]["conf"]["prevResult"]["ips"][0]["address"] == "10.235.9.2/24"
    assert env.cache_files() == []


def test_invalid_result_rolls_back(env: Env) -> None:
    env.network()
    env.behave({"fake-b": {"ADD": {"stdout": {"cniVersion": "1.0.0", "ips": [{"address": "garbage"}]}}}})
    with pytest.raises(Internal, match="invalid result"):
        env.manager().setup(attachment())
    assert len(env.calls("DEL")) == 2 and env.cache_files() == []


def test_add_timeout_is_deadline_exceeded(env: Env) -> None:
    env.network()
    env.behave({"fake-b": {"ADD": {"sleep": 30}}})
    with pytest.raises(DeadlineExceeded, match="timed out after 1s"):
        env.manager(timeout=1).setup(attachment())
    assert len(env.calls("DEL")) == 2


def test_setup_preconditions(env: Env) -> None:
    with pytest.raises(FailedPrecondition, match="network not ready"):
        env.manager().setup(attachment())
    env.network()
    with pytest.raises(FailedPrecondition, match="does not exist"):
        env.manager().setup(attachment(netns="/run/netns/gone"))
    assert env.calls("ADD") == []


def test_teardown_failure_raises_only_while_the_netns_exists(env: Env) -> None:
    env.network()
    env.manager().setup(attachment())
    env.behave({"fake-a": {"DEL": {"exit": 1, "stdout": {"code": 5, "msg": "cannot release"}}}})
    with pytest.raises(Internal, match="cannot release"):
        env.manager().teardown(attachment())
    # Both plugins were tried, and the entry stays for a retry.
    assert [c["type"] for c in env.calls("DEL")] == ["fake-b", "fake-a"]
    assert env.cache_files() == ["net-pod1-eth0"]
    env.present.clear()
    env.forget_calls()
    env.manager().teardown(attachment())
    assert all("CNI_NETNS" not in c["env"] for c in env.calls("DEL"))
    assert env.cache_files() == []


def test_check_runs_with_cached_result_from_040(env: Env) -> None:
    env.network()
    mgr = env.manager()
    mgr.setup(attachment())
    mgr.check(attachment())
    checks = env.calls("CHECK")
    assert [c["type"] for c in checks] == ["fake-a", "fake-b"]
    assert all(c["conf"]["prevResult"]["ips"][0]["address"] == "10.235.9.2/24" for c in checks)
    env.behave({"fake-a": {"CHECK": {"exit": 1, "stdout": {"code": 999, "msg": "veth missing"}}}})
    with pytest.raises(Internal, match="veth missing"):
        mgr.check(attachment())
    with pytest.raises(FailedPrecondition, match="no recorded CNI attachment"):
        mgr.check(attachment("other"))


def test_check_is_skipped_before_040(env: Env) -> None:
    env.network(version="0.3.1")
    mgr = env.manager()
    mgr.setup(attachment())
    mgr.check(attachment())
    assert env.calls("CHECK") == []


@pytest.mark.parametrize(("version", "gc_calls"), [("1.0.0", 0), ("1.1.0", 2)])
def test_gc_dels_stale_attachments_and_calls_cni_gc(env: Env, version: str, gc_calls: int) -> None:
    env.network(version=version)
    mgr = env.manager()
    mgr.setup(attachment("keep"))
    mgr.setup(attachment("stale"))
    env.forget_calls()
    env.manager().gc([attachment("keep")])
    dels = env.calls("DEL")
    assert {c["env"]["CNI_CONTAINERID"] for c in dels} == {"stale"}
    assert env.cache_files() == ["net-keep-eth0"]
    gcs = env.calls("GC")
    assert len(gcs) == gc_calls
    for call in gcs:
        assert call["conf"]["cni.dev/valid-attachments"] == [{"containerID": "keep", "ifname": "eth0"}]
        assert set(call["env"]) == {"CNI_COMMAND", "CNI_PATH"}


def test_gc_undoes_an_add_that_was_not_rolled_back(env: Env) -> None:
    env.network()
    # The rollback's DEL fails too, as it would if the daemon died mid-ADD: the pending entry stays.
    env.behave({"fake-a": {"DEL": {"exit": 1}}, "fake-b": {"ADD": {"exit": 1}}})
    with pytest.raises(Internal):
        env.manager().setup(attachment())
    assert env.cache_files() == ["net-pod1-eth0"]
    env.behave({})
    env.forget_calls()
    env.manager().gc([])
    assert [c["type"] for c in env.calls("DEL")] == ["fake-b", "fake-a"]
    assert env.cache_files() == []


def test_status_follows_plugins_and_versions(env: Env) -> None:
    env.network()
    mgr = env.manager()
    assert mgr.status().ready
    env.behave({"fake-b": {"versions": ["0.3.1", "0.4.0"]}})
    env.upgrade("fake-b")
    status = mgr.status()
    assert not status.ready and "does not support cniVersion 1.0.0" in status.message
    env.behave({})
    env.upgrade("fake-b")
    env.network(version="1.1.0")
    env.behave({"fake-a": {"STATUS": {"exit": 1, "stdout": {"code": 50, "msg": "no IPs left"}}}})
    status = mgr.status()
    assert not status.ready and status.reason == "NetworkPluginNotReady" and "no IPs left" in status.message
    env.behave({})
    assert mgr.status().ready


def test_reload_switches_conf_dir(env: Env, tmp_path: Path) -> None:
    env.network()
    mgr = env.manager()
    assert mgr.status().ready
    mgr.reload(CNIConfig(conf_dir=str(tmp_path / "empty"), plugin_dirs=[str(env.bin)], cache_dir=str(env.cache)))
    assert not mgr.status().ready


def test_bad_pod_ids_are_rejected(env: Env) -> None:
    env.network()
    with pytest.raises(Exception, match="cannot be a CNI container ID"):
        env.manager().setup(attachment("../x"))


def test_gc_quarantines_entries_it_cannot_act_on_and_goes_on(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    # Issue 15, finding 0: a pod namespace with a NUL byte left a cache entry whose DEL raised
    # "ValueError: embedded null byte" at every start, and the daemon never came up again.
    env.network()
    mgr = env.manager()
    mgr.setup(attachment("stale"))
    mgr.setup(attachment("hostile"))
    path = env.cache / "results" / "net-hostile-eth0"
    entry = json.loads(path.read_text())
    entry["cniArgs"] = [["K8S_POD_NAMESPACE", "de\u0000fault"], *entry["cniArgs"]]
    path.write_text(json.dumps(entry))
    (env.cache / "results" / "net-junk-eth0").write_text("{not json")
    renamed = dict(entry, containerId="other")
    (env.cache / "results" / "net-lies-eth0").write_text(json.dumps(renamed))
    env.forget_calls()
    env.manager().gc([])
    assert {c["env"]["CNI_CONTAINERID"] for c in env.calls("DEL")} == {"stale"}
    assert env.cache_files() == []
    assert sorted(p.name for p in (env.cache / "quarantine").iterdir()) == [
        "net-hostile-eth0",
        "net-junk-eth0",
        "net-lies-eth0",
    ]
    assert "bad CNI cache entry moved aside" in caplog.text
