"""OCIRuntime against a scripted stand-in for runc: command lines, error mapping, exec_sync."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from crio_py.config import RuntimeHandler
from crio_py.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, NotFound
from crio_py.oci import OCIRuntime

FAKE_RUNC = f"""#!{sys.executable}
import json, os, sys, time
args = sys.argv[1:]
state = os.environ["FAKE_RUNC_DIR"]
log = None
i = 0
while args[i].startswith("--"):
    if args[i] in ("--root", "--log", "--log-format"):
        if args[i] == "--log":
            log = args[i + 1]
        i += 2
    else:
        i += 1
cmd, rest = args[i], args[i + 1:]
stdin = sys.stdin.read() if cmd == "update" else None
with open(os.path.join(state, "calls"), "a") as f:
    f.write(json.dumps({{"argv": args, "cmd": cmd, "stdin": stdin}}) + "\\n")
b = json.load(open(os.path.join(state, "behaviour.json"))).get(cmd, {{}})
if cmd == "exec":
    process = json.load(open(rest[rest.index("--process") + 1]))
    json.dump(process, open(os.path.join(state, "process.json"), "w"))
    if "fail" in b:
        open(log, "a").write(json.dumps({{"level": "error", "msg": b["fail"]}}) + "\\n")
        sys.exit(255)
    pid = os.fork()
    if pid == 0:
        os.execvp(process["args"][0], process["args"])
    tmp = rest[rest.index("--pid-file") + 1] + ".tmp"
    open(tmp, "w").write(str(pid))
    os.rename(tmp, rest[rest.index("--pid-file") + 1])
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)
time.sleep(b.get("sleep", 0))
sys.stdout.write(b.get("stdout", ""))
sys.stderr.write(b.get("stderr", ""))
sys.exit(b.get("rc", 0))
"""


class Fake:
    def __init__(self, tmp: Path):
        self.dir = tmp
        self.path = tmp / "runc"
        self.path.write_text(FAKE_RUNC)
        self.path.chmod(0o755)
        self.behave({})

    def behave(self, behaviour: dict[str, Any]) -> None:
        (self.dir / "behaviour.json").write_text(json.dumps(behaviour))

    def calls(self) -> list[dict[str, Any]]:
        path = self.dir / "calls"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    monkeypatch.setenv("FAKE_RUNC_DIR", str(tmp_path))
    return Fake(tmp_path)


@pytest.fixture
def runtime(fake: Fake) -> OCIRuntime:
    return OCIRuntime(RuntimeHandler(path=str(fake.path), root="/run/test-root"), timeout=5)


def logrus(msg: str) -> str:
    return f'time="2024-01-01T00:00:00Z" level=error msg="{msg}"\n{msg}\n'


def test_base_argv(fake: Fake) -> None:
    assert OCIRuntime(RuntimeHandler(path=str(fake.path), root="/r")).base_argv() == [str(fake.path), "--root", "/r"]
    systemd = OCIRuntime(RuntimeHandler(path=str(fake.path), root="/r"), cgroup_manager="systemd")
    assert systemd.base_argv()[-1] == "--systemd-cgroup"


def test_missing_binary() -> None:
    with pytest.raises(FailedPrecondition, match="no-such-runc"):
        OCIRuntime(RuntimeHandler(path="no-such-runc")).start("c1")


def test_start(fake: Fake, runtime: OCIRuntime) -> None:
    runtime.start("c1")
    assert fake.calls()[-1]["argv"] == ["--root", "/run/test-root", "start", "c1"]


@pytest.mark.parametrize(
    ("stderr", "error", "match"),
    [
        (logrus("container does not exist"), NotFound, "start of container c1: container does not exist$"),
        (logrus("cannot start a container that has stopped"), FailedPrecondition, "has stopped"),
        ("plain failure text\n", Internal, "plain failure text"),
        ("", Internal, "failed without a message"),
    ],
)
def test_start_errors(fake: Fake, runtime: OCIRuntime, stderr: str, error: type[Exception], match: str) -> None:
    fake.behave({"start": {"rc": 1, "stderr": stderr}})
    with pytest.raises(error, match=match):
        runtime.start("c1")


def test_timeout(fake: Fake, runtime: OCIRuntime) -> None:
    fake.behave({"start": {"sleep": 5}})
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"start of container c1 did not finish within 0\.3s"):
        runtime.start("c1", timeout=0.3)
    assert time.monotonic() - started < 3


def test_kill(fake: Fake, runtime: OCIRuntime) -> None:
    assert runtime.kill("c1", 9, all=True) is True
    assert fake.calls()[-1]["argv"][2:] == ["kill", "--all", "c1", "9"]
    assert runtime.kill("c1") is True
    assert fake.calls()[-1]["argv"][2:] == ["kill", "c1", "15"]
    fake.behave({"kill": {"rc": 1, "stderr": logrus("container not running")}})
    assert runtime.kill("c1", "SIGKILL") is False
    fake.behave({"kill": {"rc": 1, "stderr": logrus("container does not exist")}})
    assert runtime.kill("c1") is False
    fake.behave({"kill": {"rc": 1, "stderr": logrus("invalid signal")}})
    with pytest.raises(Internal, match="invalid signal"):
        runtime.kill("c1", "SIGNOPE")


def test_delete(fake: Fake, runtime: OCIRuntime) -> None:
    runtime.delete("c1", force=True)
    assert fake.calls()[-1]["argv"][2:] == ["delete", "--force", "c1"]
    fake.behave({"delete": {"rc": 1, "stderr": logrus("container does not exist")}})
    runtime.delete("c1")
    fake.behave({"delete": {"rc": 1, "stderr": logrus("cannot delete container c1 that is not stopped: running")}})
    with pytest.raises(FailedPrecondition, match="not stopped"):
        runtime.delete("c1")


def test_state_and_list(fake: Fake, runtime: OCIRuntime) -> None:
    fake.behave({"state": {"stdout": json.dumps({"id": "c1", "status": "running", "pid": 4})}})
    assert runtime.state("c1") == {"id": "c1", "status": "running", "pid": 4}
    fake.behave({"state": {"rc": 1, "stderr": logrus("container does not exist")}})
    assert runtime.state("c1") is None
    fake.behave({"state": {"stdout": "garbage"}})
    with pytest.raises(Internal, match="unreadable"):
        runtime.state("c1")
    fake.behave({"list": {"stdout": "null"}})
    assert runtime.list() == []


def test_update_pause_resume(fake: Fake, runtime: OCIRuntime) -> None:
    runtime.update("c1", {"memory": {"limit": 100}})
    call = fake.calls()[-1]
    assert call["argv"][2:] == ["update", "--resources", "-", "c1"]
    assert json.loads(call["stdin"]) == {"memory": {"limit": 100}}
    runtime.pause("c1")
    runtime.resume("c1")
    assert [c["cmd"] for c in fake.calls()[-2:]] == ["pause", "resume"]


def test_features(fake: Fake, runtime: OCIRuntime) -> None:
    fake.behave({"features": {"stdout": json.dumps({"mountOptions": ["rbind", "rro"]})}})
    assert runtime.supports_recursive_read_only() is True
    old = OCIRuntime(RuntimeHandler(path=str(fake.path)))
    fake.behave({"features": {"rc": 1, "stderr": "No help topic for 'features'"}})
    assert old.features() == {}
    assert old.supports_recursive_read_only() is False


@pytest.fixture
def running(fake: Fake, tmp_path: Path) -> Path:
    """A 'running' container whose bundle process runs as uid 1000 with some env."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    process = {"user": {"uid": 1000, "gid": 1000}, "env": ["A=1"], "cwd": "/app", "args": ["x"], "terminal": True}
    (bundle / "config.json").write_text(json.dumps({"process": process}))
    fake.behave({"state": {"stdout": json.dumps({"status": "running", "bundle": str(bundle)})}})
    return bundle


def exec_process(fake: Fake) -> dict[str, Any]:
    return json.loads((fake.dir / "process.json").read_text())


def test_exec_sync_output_and_inherited_process(fake: Fake, runtime: OCIRuntime, running: Path) -> None:
    result = runtime.exec_sync("c1", ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr, result.timed_out, result.truncated) == (
        3, b"out\n", b"err\n", False, False
    )  # fmt: skip
    process = exec_process(fake)
    assert process["user"] == {"uid": 1000, "gid": 1000}
    assert (process["env"], process["cwd"], process["terminal"]) == (["A=1"], "/app", False)
    assert process["args"] == ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]
    argv = fake.calls()[-1]["argv"]
    assert argv[argv.index("--log-format") + 1] == "json"


def test_exec_sync_overrides(fake: Fake, runtime: OCIRuntime, running: Path) -> None:
    runtime.exec_sync("c1", ["true"], env=["B=2"], cwd="/", user={"uid": 0, "gid": 0})
    process = exec_process(fake)
    assert (process["env"], process["cwd"], process["user"]) == (["B=2"], "/", {"uid": 0, "gid": 0})


def test_exec_sync_truncates(fake: Fake, runtime: OCIRuntime, running: Path) -> None:
    result = runtime.exec_sync("c1", ["head", "-c", "300000", "/dev/zero"], max_output=1000)
    assert result.truncated and result.stdout == b"\0" * 1000 and result.exit_code == 0


def test_exec_sync_timeout_kills_the_process(fake: Fake, runtime: OCIRuntime, running: Path) -> None:
    started = time.monotonic()
    result = runtime.exec_sync("c1", ["sleep", "30"], timeout=0.5)
    assert result.timed_out and result.exit_code == 128 + 9
    assert time.monotonic() - started < 5


def test_exec_sync_background_child_does_not_hang(fake: Fake, runtime: OCIRuntime, running: Path) -> None:
    started = time.monotonic()
    # The background sleep keeps the output pipes open after the command exits; short, so it ends by itself.
    result = runtime.exec_sync("c1", ["/bin/sh", "-c", "sleep 3 & echo started"])
    assert result.stdout == b"started\n" and not result.timed_out
    assert time.monotonic() - started < 2.5


def test_exec_sync_runtime_failures(fake: Fake, runtime: OCIRuntime, running: Path) -> None:
    behaviour = json.loads((fake.dir / "behaviour.json").read_text())
    behaviour["exec"] = {
        "fail": 'exec failed: unable to start container process: exec: "nope": executable file not found'
    }
    fake.behave(behaviour)
    with pytest.raises(InvalidArgument, match=r"exec in container c1: exec failed.*nope"):
        runtime.exec_sync("c1", ["nope"])
    # A command that itself exits 255 is a result, not a runtime failure.
    behaviour.pop("exec")
    fake.behave(behaviour)
    assert runtime.exec_sync("c1", ["/bin/sh", "-c", "exit 255"]).exit_code == 255


def test_exec_sync_needs_a_running_container(fake: Fake, runtime: OCIRuntime) -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        runtime.exec_sync("c1", [])
    fake.behave({"state": {"rc": 1, "stderr": logrus("container does not exist")}})
    with pytest.raises(NotFound, match="c1"):
        runtime.exec_sync("c1", ["true"])
    fake.behave({"state": {"stdout": json.dumps({"status": "stopped", "bundle": "/nowhere"})}})
    with pytest.raises(FailedPrecondition, match="the container is stopped"):
        runtime.exec_sync("c1", ["true"])
