"""The ``crio-py`` client commands against the real daemon, with crictl's files and output."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.daemon import DaemonHandle

pytestmark = pytest.mark.e2e

POD_YAML = """\
metadata:
  name: cli-pod
  namespace: cli-ns
  uid: cli-pod-uid
  attempt: 0
hostname: cli-pod
linux:
  cgroup_parent: {cgroup_parent}
"""
# crictl's own example form: snake_case names, no log_path (the daemon gives it a default log).
CTR_JSON = {
    "metadata": {"name": "talker"},
    "image": {"image": "{image}"},
    "command": ["sh", "-c", "echo hello from the cli; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done"],
    "linux": {},
}


def crio_py(
    daemon: DaemonHandle, *args: str, code: int = 0, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(daemon.command(*args), capture_output=True, text=True, timeout=120, input=stdin)
    assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def out(daemon: DaemonHandle, *args: str) -> str:
    return crio_py(daemon, *args).stdout


def rows(table: str) -> list[list[str]]:
    """A crictl table split into cells (columns are separated by three or more spaces)."""
    return [re.split(r"\s{3,}", line.strip()) for line in table.splitlines()]


def test_pod_and_container_lifecycle_through_the_client(
    daemon: DaemonHandle, busybox: str, cgroup_parent: str, tmp_path: Path
) -> None:
    pod_file = tmp_path / "sandbox.yml"
    pod_file.write_text(POD_YAML.format(cgroup_parent=cgroup_parent))
    ctr_file = tmp_path / "container.json"
    ctr_file.write_text(json.dumps(CTR_JSON).replace("{image}", busybox))

    assert out(daemon, "pull", busybox).startswith("Image is up to date for sha256:")
    images = rows(out(daemon, "images"))
    assert images[0] == ["IMAGE", "TAG", "IMAGE ID", "SIZE"]
    assert [busybox.rpartition(":")[0], "latest"] in [r[:2] for r in images]

    pod_id = out(daemon, "runp", str(pod_file)).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", pod_id)
    pods = rows(out(daemon, "pods"))
    assert pods[0] == ["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"]
    assert pods[1][0] == pod_id[:13] and pods[1][2:] == ["Ready", "cli-pod", "cli-ns", "0", "runc"]
    assert pods[1][1].endswith("ago")
    assert json.loads(out(daemon, "pods", "-o", "json"))["items"][0]["id"] == pod_id
    assert out(daemon, "pods", "-q") == pod_id + "\n"

    # A prefix of the pod id, as the table shows it, is enough.
    cid = out(daemon, "create", pod_id[:13], str(ctr_file), str(pod_file)).strip()
    assert out(daemon, "ps") == "CONTAINER   IMAGE   CREATED   STATE   NAME   ATTEMPT   POD ID   POD\n"
    assert rows(out(daemon, "ps", "-a"))[1][3] == "Created"
    assert out(daemon, "start", cid[:13]) == cid[:13] + "\n"
    running = rows(out(daemon, "ps"))[1]
    assert running[0] == cid[:13] and running[1] == busybox and running[3:] == [
        "Running", "talker", "0", pod_id[:13], "cli-pod"]

    # Streamed (Exec over WebSocket), and with -s through ExecSync: the same outcome.
    for sync in ([], ["-s"]):
        both = crio_py(daemon, "exec", *sync, cid, "sh", "-c", "echo out; echo err >&2")
        assert (both.stdout, both.stderr) == ("out\n", "err\n")
        assert crio_py(daemon, "exec", *sync, cid, "sh", "-c", "exit 3", code=3).stdout == ""
        assert out(daemon, "exec", *sync, cid, "hostname") == "cli-pod\n"
    assert crio_py(daemon, "exec", "-i", cid, "tr", "a-z", "A-Z", stdin="from stdin\n").stdout == "FROM STDIN\n"
    on_tty = crio_py(daemon, "exec", "-it", cid, "sh", "-c", "tty; read line; echo got $line", stdin="typed\n")
    # A terminal: tty names it, the typed line is echoed by it (whenever it arrives) and read.
    lines = on_tty.stdout.splitlines()
    assert sorted(lines) == ["/dev/pts/0", "got typed", "typed"] and lines[-1] == "got typed"

    inspected = json.loads(out(daemon, "inspect", cid))
    assert inspected["status"]["state"] == "CONTAINER_RUNNING"
    assert inspected["info"]["pid"] > 0
    log_path = inspected["status"]["logPath"]
    assert log_path == f"{daemon.config['container_log_dir']}/{pod_id}/talker/0.log"
    assert yaml.safe_load(out(daemon, "inspect", "-o", "yaml", cid))["status"]["id"] == cid
    pod_status = json.loads(out(daemon, "inspectp", pod_id))
    assert pod_status["status"]["state"] == "SANDBOX_READY" and pod_status["info"]["pid"] > 0

    # logs -f prints what there is, then what comes, and ends when the container does.
    follower = subprocess.Popen(daemon.command("logs", "-f", cid), stdout=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    assert follower.stdout.readline() == "hello from the cli\n"
    assert out(daemon, "stop", "-t", "10", cid) == cid + "\n"
    assert follower.stdout.read() == "bye\n"
    assert follower.wait(timeout=30) == 0
    assert out(daemon, "logs", cid) == "hello from the cli\nbye\n"
    assert out(daemon, "logs", "--tail", "1", cid) == "bye\n"
    assert rows(out(daemon, "ps", "-a"))[1][3] == "Exited"

    assert out(daemon, "rm", cid) == cid + "\n"
    assert out(daemon, "stopp", pod_id) == f"Stopped sandbox {pod_id}\n"
    assert out(daemon, "rmp", pod_id) == f"Removed sandbox {pod_id}\n"
    assert out(daemon, "ps", "-a", "-q") == "" and out(daemon, "pods", "-q") == ""
    assert not Path(log_path).exists()


def test_crictl_json_with_enum_numbers_and_rm_force(
    daemon: DaemonHandle, busybox: str, cgroup_parent: str, tmp_path: Path
) -> None:
    # crictl decodes with Go's encoding/json: enums are numbers there (network 2 = NODE).
    pod = {"metadata": {"name": "hostnet", "namespace": "default", "uid": "hostnet-uid"},
           "linux": {"cgroup_parent": cgroup_parent, "security_context": {"namespace_options": {"network": 2}}}}
    (tmp_path / "pod.json").write_text(json.dumps(pod))
    (tmp_path / "ctr.yaml").write_text(f"metadata: {{name: sleeper}}\nimage: {{image: {busybox}}}\n"
                                       "command: [sleep, '300']\n")
    pod_id = out(daemon, "runp", str(tmp_path / "pod.json")).strip()
    status = json.loads(out(daemon, "inspectp", pod_id))["status"]
    assert status["linux"]["namespaces"]["options"]["network"] == "NODE"
    cid = out(daemon, "create", pod_id, str(tmp_path / "ctr.yaml"), str(tmp_path / "pod.json")).strip()
    out(daemon, "start", cid)
    refused = crio_py(daemon, "rm", cid, code=1)
    assert "is running: stop it first or use rm -f" in refused.stderr
    assert out(daemon, "rm", "-f", cid) == cid + "\n"
    out(daemon, "rmp", pod_id)


def test_client_errors_are_clear(daemon: DaemonHandle, tmp_path: Path) -> None:
    missing = crio_py(daemon, "start", "0123456789ab", code=1)
    assert missing.stderr.startswith("crio-py start: NOT_FOUND: ") and "0123456789ab" in missing.stderr
    unreadable = crio_py(daemon, "runp", str(tmp_path / "nope.yaml"), code=1)
    assert f"{tmp_path / 'nope.yaml'}: cannot read" in unreadable.stderr
    (tmp_path / "typo.yaml").write_text("metadata: {name: a, namespace: b, uid: c}\nlog_dir: /tmp\n")
    typo = crio_py(daemon, "runp", str(tmp_path / "typo.yaml"), code=1)
    assert "not a PodSandboxConfig" in typo.stderr and "log_dir" in typo.stderr
    assert "needs a command" in crio_py(daemon, "exec", "abc", code=1).stderr
    gone = crio_py(daemon, "--listen", str(tmp_path / "none.sock"), "pods", code=1)
    assert "cannot reach the daemon on unix://" in gone.stderr
