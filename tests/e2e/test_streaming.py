"""Exec, Attach and PortForward through the streaming server, over SPDY/3.1 and WebSocket, on real containers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest

from crio_py.cri import api_pb2 as pb
from crio_py.streaming import spdy
from tests.e2e.conftest import BUSYBOX_REPO
from tests.support.cri import pod_config
from tests.support.daemon import DaemonHandle, free_port
from tests.support.pods import Pod
from tests.support.registry import Registry
from tests.support.streaming import SpdyClient, WsClient, http_status, spdy_exec, wait_until, ws_exec

pytestmark = pytest.mark.e2e


def exec_url(daemon: DaemonHandle, cid: str, *cmd: str, **kw: bool) -> str:
    opts = {"stdout": True, "stderr": not kw.get("tty", False), **kw}
    return daemon.runtime.Exec(pb.ExecRequest(container_id=cid, cmd=list(cmd), **opts)).url


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture
def sleeper(pod: Pod) -> str:
    """A running container to exec into."""
    return pod.run("sleeper", "sleep", "100000")


# ---- exec ------------------------------------------------------------------------------------


def test_exec_spdy_output_and_exit_codes(daemon: DaemonHandle, sleeper: str) -> None:
    out, err, status = spdy_exec(exec_url(daemon, sleeper, "sh", "-c", "echo out; echo err >&2"))
    assert (out, err, status) == (b"out\n", b"err\n", {"metadata": {}, "status": "Success"})
    out, err, status = spdy_exec(exec_url(daemon, sleeper, "sh", "-c", "echo three; exit 3"))
    assert out == b"three\n"
    assert isinstance(status, dict)
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}


def test_exec_spdy_older_protocol_reports_failure_as_text(daemon: DaemonHandle, sleeper: str) -> None:
    _, _, status = spdy_exec(exec_url(daemon, sleeper, "sh", "-c", "exit 3"), protocol="v2.channel.k8s.io")
    assert isinstance(status, bytes) and b"exit code 3" in status
    _, _, status = spdy_exec(exec_url(daemon, sleeper, "true"), protocol="v3.channel.k8s.io")
    assert status == b""


@pytest.mark.parametrize("protocol", ["v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"])
def test_exec_websocket_output_and_exit_codes(daemon: DaemonHandle, sleeper: str, protocol: str) -> None:
    out, err, status = ws_exec(exec_url(daemon, sleeper, "sh", "-c", "echo out; echo err >&2"), protocols=(protocol,))
    assert (out, err, status) == (b"out\n", b"err\n", {"metadata": {}, "status": "Success"})
    out, _, status = ws_exec(exec_url(daemon, sleeper, "sh", "-c", "echo three; exit 3"), protocols=(protocol,))
    assert out == b"three\n"
    assert isinstance(status, dict)
    assert status["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}


def test_exec_stdin_round_trips(daemon: DaemonHandle, sleeper: str) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest().encode()
    out, _, status = spdy_exec(exec_url(daemon, sleeper, "sha256sum", stdin=True), stdin=payload)
    assert out.split()[0] == digest and status == {"metadata": {}, "status": "Success"}
    out, _, status = ws_exec(exec_url(daemon, sleeper, "sha256sum", stdin=True), stdin=payload)
    assert out.split()[0] == digest and status == {"metadata": {}, "status": "Success"}
    out, _, _ = spdy_exec(exec_url(daemon, sleeper, "cat", stdin=True), stdin=b"hello\nworld\n")
    assert out == b"hello\nworld\n"


def test_exec_tty_and_resize_spdy(daemon: DaemonHandle, sleeper: str) -> None:
    url = exec_url(daemon, sleeper, "sh", tty=True, stdin=True)
    client = SpdyClient(url, ["v4.channel.k8s.io"])
    try:
        error = client.open({"streamType": "error"})
        stdin = client.open({"streamType": "stdin"})
        stdout = client.open({"streamType": "stdout"})
        resize = client.open({"streamType": "resize"})
        resize.write(json.dumps({"Width": 123, "Height": 45}).encode())
        stdin.write(b"tty; stty size\n")
        stdout.wait_for_data(lambda d: b"45 123" in d)
        resize.write(json.dumps({"Width": 80, "Height": 20}).encode())
        # A later resize races the next command line (runc passes it on at its SIGWINCH): ask again.
        for _ in range(20):
            stdin.write(b"stty size\n")
            with contextlib.suppress(TimeoutError):
                stdout.wait_for_data(lambda d: b"20 80" in d, timeout=1)
                break
        stdin.write(b"exit 3\n")
        out = stdout.read_all()
        assert b"/dev/pts/" in out and b"20 80" in out
        status = json.loads(error.read_all())
        assert status["details"]["causes"][0]["message"] == "3"
    finally:
        client.close()


def test_exec_tty_and_resize_websocket(daemon: DaemonHandle, sleeper: str) -> None:
    client = WsClient(exec_url(daemon, sleeper, "sh", tty=True, stdin=True), ["v5.channel.k8s.io"])
    try:
        client.send(4, json.dumps({"Width": 101, "Height": 41}).encode())
        # Usually the first line already sees the size the command started with; on a machine too
        # busy for the server to read it within FIRST_SIZE_WAIT, the resize comes a moment later.
        for _ in range(20):
            client.send(0, b"stty size\n")
            with contextlib.suppress(TimeoutError):
                client.wait_channel(1, lambda d: b"41 101" in d, timeout=1)
                break
        client.send(0, b"exit 0\n")
        client.wait_closed()
        assert b"41 101" in client.channel(1)
        assert json.loads(client.channel(3)) == {"metadata": {}, "status": "Success"}
    finally:
        client.close()


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_client_that_disappears_leaves_no_process(daemon: DaemonHandle, sleeper: str, transport: str) -> None:
    marker = str(secrets.randbelow(10**6) + 10**6)
    url = exec_url(daemon, sleeper, "sleep", marker, stdin=True)
    if transport == "spdy":
        client: SpdyClient | WsClient = SpdyClient(url, ["v4.channel.k8s.io"])
        for kind in ("error", "stdin", "stdout", "stderr"):
            client.open({"streamType": kind})
    else:
        client = WsClient(url, ["v5.channel.k8s.io"])
    wait_until(lambda: processes_with(f"sleep\0{marker}"), 10, "the exec'd process")
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # an abortive close (RST), as a client that was killed
    wait_until(lambda: not processes_with(f"sleep\0{marker}"), 10, "the exec'd process to be killed")


def test_exec_of_a_missing_binary_reports_its_error(daemon: DaemonHandle, sleeper: str) -> None:
    _out, err, status = spdy_exec(exec_url(daemon, sleeper, "/no/such/binary"))
    assert isinstance(status, dict) and status["status"] == "Failure"
    assert b"no such file" in err.lower() or b"not found" in err.lower()


# ---- the RPCs and the server's refusals --------------------------------------------------------


def test_streaming_rpcs_validate(daemon: DaemonHandle, pod: Pod, sleeper: str) -> None:
    def code(call: object, request: object) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as info:
            call(request)  # type: ignore[operator]
        return info.value.code()

    rt = daemon.runtime
    assert code(rt.Exec, pb.ExecRequest(container_id=sleeper, cmd=["true"])) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(rt.Exec, pb.ExecRequest(container_id=sleeper, stdout=True)) == grpc.StatusCode.INVALID_ARGUMENT
    tty_stderr = pb.ExecRequest(container_id=sleeper, cmd=["true"], tty=True, stdout=True, stderr=True)
    assert code(rt.Exec, tty_stderr) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(rt.Exec, pb.ExecRequest(container_id="nope", cmd=["true"], stdout=True)) == grpc.StatusCode.NOT_FOUND
    assert code(rt.Attach, pb.AttachRequest(container_id=sleeper)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(rt.PortForward, pb.PortForwardRequest(pod_sandbox_id="nope")) == grpc.StatusCode.NOT_FOUND
    bad_port = pb.PortForwardRequest(pod_sandbox_id=pod.id, port=[70000])
    assert code(rt.PortForward, bad_port) == grpc.StatusCode.INVALID_ARGUMENT
    stopped = pod.run("stopped", "true")
    pod.wait_exit(stopped)
    stopped_exec = pb.ExecRequest(container_id=stopped, cmd=["true"], stdout=True)
    assert code(rt.Exec, stopped_exec) == grpc.StatusCode.FAILED_PRECONDITION
    assert code(rt.Attach, pb.AttachRequest(container_id=stopped, stdout=True)) == grpc.StatusCode.FAILED_PRECONDITION


def test_bad_and_reused_tokens_are_404(daemon: DaemonHandle, sleeper: str) -> None:
    url = exec_url(daemon, sleeper, "true")
    base = url.rsplit("/", 2)[0]
    upgrade = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "v4.channel.k8s.io"}
    assert http_status(f"{base}/exec/{secrets.token_urlsafe(32)}", upgrade)[0] == 404
    other = exec_url(daemon, sleeper, "true")
    assert http_status(other.replace("/exec/", "/attach/"), upgrade)[0] == 404  # a token is for its kind only
    assert http_status(other, upgrade)[0] == 404  # and that attempt used it up
    assert spdy_exec(url)[2] == {"metadata": {}, "status": "Success"}
    assert http_status(url, upgrade)[0] == 404  # used once already
    assert http_status(f"{base}/nothing-here", upgrade)[0] == 404
    assert http_status(exec_url(daemon, sleeper, "true"))[0] == 400  # no upgrade
    host, port = urlsplit(base).hostname, urlsplit(base).port
    with socket.create_connection((host, port), timeout=10) as garbage:
        garbage.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert garbage.recv(100).startswith(b"HTTP/1.1 400 ")
    assert spdy_exec(exec_url(daemon, sleeper, "echo", "up"))[0] == b"up\n"


def test_malformed_spdy_closes_that_connection_only(daemon: DaemonHandle, sleeper: str) -> None:
    client = SpdyClient(exec_url(daemon, sleeper, "true"), ["v4.channel.k8s.io"])
    try:
        client.sock.sendall(b"\x80\x07\x00\x01\x00\x00\x00\x00")  # a control frame of SPDY version 7
        client.wait_for(lambda: client.closed, 10, "the server to close the connection")
        assert client.goaway is not None and client.goaway.status == spdy.GOAWAY_PROTOCOL_ERROR
    finally:
        client.close()
    assert spdy_exec(exec_url(daemon, sleeper, "echo", "still up"))[0] == b"still up\n"


def test_unsupported_protocols_are_refused(daemon: DaemonHandle, sleeper: str) -> None:
    with pytest.raises(ConnectionError, match="403"):
        SpdyClient(exec_url(daemon, sleeper, "true"), ["v9.channel.k8s.io"])
    client = WsClient(exec_url(daemon, sleeper, "true"), ["v9.channel.k8s.io"])
    assert client.rejected == 400
    client.close()


def test_spdy_peer_flow_control_is_honoured(daemon: DaemonHandle, sleeper: str) -> None:
    """A client that announces flow control gets at most its window until it sends WINDOW_UPDATE."""
    client = SpdyClient(
        exec_url(daemon, sleeper, "head", "-c", "1000000", "/dev/zero"), ["v4.channel.k8s.io"], flow_control=True
    )
    try:
        error = client.open({"streamType": "error"})
        stdout = client.open({"streamType": "stdout"})
        client.open({"streamType": "stderr"})
        assert len(stdout.read_all()) == 1000000
        assert json.loads(error.read_all())["status"] == "Success"
    finally:
        client.close()


# ---- attach ----------------------------------------------------------------------------------


def attach_url(daemon: DaemonHandle, cid: str, **kw: bool) -> str:
    opts = {"stdout": True, "stderr": not kw.get("tty", False), **kw}
    return daemon.runtime.Attach(pb.AttachRequest(container_id=cid, **opts)).url


def test_attach_survives_a_daemon_restart_between_two_attaches(daemon: DaemonHandle, pod: Pod) -> None:
    loop = 'while read line; do [ "$line" = quit ] && exit 0; echo "got:$line"; done'
    cid = pod.run("echoer", "sh", "-c", loop, stdin=True)
    client = SpdyClient(attach_url(daemon, cid, stdin=True), ["v4.channel.k8s.io"])
    try:
        client.open({"streamType": "error"})
        stdin = client.open({"streamType": "stdin"})
        stdout = client.open({"streamType": "stdout"})
        client.open({"streamType": "stderr"})
        stdin.write(b"first\n")
        assert b"got:first" in stdout.wait_for_data(lambda d: b"got:first" in d)
    finally:
        client.close()
    daemon.restart()
    ws = WsClient(attach_url(daemon, cid, stdin=True), ["v5.channel.k8s.io"])
    try:
        ws.send(0, b"second\n")
        assert b"got:second" in ws.wait_channel(1, lambda d: b"got:second" in d)
        ws.send(0, b"quit\n")  # the container exits: the monitor ends the attach, and the session with it
        ws.wait_closed()
        assert json.loads(ws.channel(3)) == {"metadata": {}, "status": "Success"}
    finally:
        ws.close()
    assert pod.wait_exit(cid).exit_code == 0


def test_attach_to_a_terminal_with_resize(daemon: DaemonHandle, pod: Pod) -> None:
    cid = pod.run("shell", "sh", stdin=True, tty=True)
    client = SpdyClient(attach_url(daemon, cid, stdin=True, tty=True), ["v4.channel.k8s.io"])
    try:
        error = client.open({"streamType": "error"})
        stdin = client.open({"streamType": "stdin"})
        stdout = client.open({"streamType": "stdout"})
        resize = client.open({"streamType": "resize"})
        resize.write(json.dumps({"Width": 111, "Height": 33}).encode())
        stdin.write(b"stty size\n")
        stdout.wait_for_data(lambda d: b"33 111" in d)
        stdin.write(b"exit 0\n")
        assert json.loads(error.read_all()) == {"metadata": {}, "status": "Success"}
    finally:
        client.close()


# ---- port-forward ------------------------------------------------------------------------------

ECHO_PORT = 5000


def port_forward_url(daemon: DaemonHandle, pod_id: str, ports: list[int] | None = None) -> str:
    return daemon.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=pod_id, port=ports or [])).url


def echo_server(pod: Pod, port: int = ECHO_PORT) -> str:
    """A container echoing every connection to ``port``; returns once it accepts connections."""
    cid = pod.run(f"echo-{port}", "nc", "-ll", "-p", str(port), "-e", "cat")
    wait_until(
        lambda: f":{port:04X}" in pod.exec(cid, "cat", "/proc/net/tcp", "/proc/net/tcp6").stdout.decode(),
        10,
        "the listener",
    )
    return cid


def forward(client: SpdyClient, port: int, request_id: int) -> tuple[object, object]:
    headers = {"port": str(port), "requestID": str(request_id)}
    error = client.open({"streamType": "error", **headers})
    error.close()  # as client-go: nothing to say on it
    data = client.open({"streamType": "data", **headers})
    return error, data


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_port_forward_carries_10_mib_both_ways_on_several_streams(
    daemon: DaemonHandle, pod: Pod, transport: str
) -> None:
    echo_server(pod)
    client = SpdyClient(port_forward_url(daemon, pod.id), ["portforward.k8s.io"], websocket=transport == "websocket")
    try:
        payloads = [os.urandom(10 * 1024 * 1024) for _ in range(3)]
        pairs = [forward(client, ECHO_PORT, i) for i in range(3)]
        writers = []
        for (_, data), payload in zip(pairs, payloads, strict=True):

            def send(stream: object = data, body: bytes = payload) -> None:
                stream.write(body)  # type: ignore[attr-defined]
                stream.close()  # type: ignore[attr-defined]

            writers.append(threading.Thread(target=send))
        for writer in writers:
            writer.start()
        for (error, data), payload in zip(pairs, payloads, strict=True):
            echoed = data.read_all(timeout=120)  # type: ignore[attr-defined]
            assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
            assert error.read_all() == b""  # type: ignore[attr-defined]
        for writer in writers:
            writer.join()
    finally:
        client.close()


def test_port_forward_to_a_closed_port_reports_it_and_the_connection_stays_usable(
    daemon: DaemonHandle, pod: Pod
) -> None:
    echo_server(pod)
    client = SpdyClient(port_forward_url(daemon, pod.id), ["portforward.k8s.io"])
    try:
        error, data = forward(client, 9, 1)
        message = error.read_all().decode()  # type: ignore[attr-defined]
        assert "error forwarding port 9" in message and "refused" in message
        assert data.read_all() == b""  # type: ignore[attr-defined]
        _, data = forward(client, ECHO_PORT, 2)
        data.write(b"still here")  # type: ignore[attr-defined]
        data.close()  # type: ignore[attr-defined]
        assert data.read_all() == b"still here"  # type: ignore[attr-defined]
    finally:
        client.close()


def test_port_forward_over_websocket_channels(daemon: DaemonHandle, pod: Pod) -> None:
    echo_server(pod)
    client = WsClient(port_forward_url(daemon, pod.id) + f"?port={ECHO_PORT}", ["v4.channel.k8s.io"])
    try:
        port = ECHO_PORT.to_bytes(2, "little")
        client.wait_channel(1, lambda d: d == port)
        body = os.urandom(1024 * 1024)
        client.send(0, body)
        echoed = client.wait_channel(0, lambda d: len(d) >= len(port) + len(body))
        assert echoed == port + body
    finally:
        client.close()


def test_port_forward_into_a_host_network_pod(
    daemon: DaemonHandle, busybox: str, cgroup_parent: str, tmp_path: Path
) -> None:
    host_pod = Pod(
        daemon, busybox, pod_config(cgroup_parent=cgroup_parent, log_directory=str(tmp_path), network=pb.NODE)
    )
    port = free_port()
    echo_server(host_pod, port)
    client = SpdyClient(port_forward_url(daemon, host_pod.id), ["portforward.k8s.io"])
    try:
        _, data = forward(client, port, 1)
        data.write(b"host")  # type: ignore[attr-defined]
        data.close()  # type: ignore[attr-defined]
        assert data.read_all() == b"host"  # type: ignore[attr-defined]
    finally:
        client.close()


# ---- limits and shutdown -----------------------------------------------------------------------


def test_daemon_shutdown_ends_sessions_and_their_processes(daemon: DaemonHandle, sleeper: str) -> None:
    marker = str(secrets.randbelow(10**6) + 2 * 10**6)
    client = WsClient(exec_url(daemon, sleeper, "sleep", marker), ["v5.channel.k8s.io"])
    try:
        wait_until(lambda: processes_with(f"sleep\0{marker}"), 10, "the exec'd process")
        assert daemon.stop() == 0
        client.wait_closed()
        assert not processes_with(f"sleep\0{marker}")
    finally:
        client.close()
        daemon.start()


def test_idle_sessions_and_too_many_sessions(
    daemon_handle: DaemonHandle, registry: Registry, cgroup_parent: str, tmp_path: Path
) -> None:
    daemon_handle.config["streaming"] = {"idle_timeout": 2, "max_sessions": 1}
    daemon_handle.start()
    ref = f"{registry.host}/{BUSYBOX_REPO}:latest"
    daemon_handle.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)
    pod = Pod(daemon_handle, ref, pod_config(cgroup_parent=cgroup_parent, log_directory=str(tmp_path)))
    cid = pod.run("sleeper", "sleep", "100000")
    marker = str(secrets.randbelow(10**6) + 3 * 10**6)
    client = WsClient(exec_url(daemon_handle, cid, "sleep", marker), ["v5.channel.k8s.io"])
    try:
        wait_until(lambda: processes_with(f"sleep\0{marker}"), 10, "the exec'd process")
        busy = WsClient(exec_url(daemon_handle, cid, "true"), ["v5.channel.k8s.io"])
        assert busy.rejected == 503
        busy.close()
        client.wait_closed(timeout=15)  # nothing moved for 2 s: the session ends, its process with it
        wait_until(lambda: not processes_with(f"sleep\0{marker}"), 10, "the idle session's process to go")
    finally:
        client.close()
    assert ws_exec(exec_url(daemon_handle, cid, "echo", "free again"))[0] == b"free again\n"


def test_tls(daemon_handle: DaemonHandle, registry: Registry, cgroup_parent: str, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    daemon_handle.config["streaming"] = {"tls_cert": str(cert), "tls_key": str(key)}
    daemon_handle.start()
    ref = f"{registry.host}/{BUSYBOX_REPO}:latest"
    daemon_handle.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)
    pod = Pod(daemon_handle, ref, pod_config(cgroup_parent=cgroup_parent, log_directory=str(tmp_path / "logs")))
    cid = pod.run("sleeper", "sleep", "100000")
    url = exec_url(daemon_handle, cid, "echo", "over tls")
    assert url.startswith("https://127.0.0.1:")
    out, _, status = spdy_exec(url, tls=ssl.create_default_context(cafile=str(cert)))
    assert out == b"over tls\n" and status == {"metadata": {}, "status": "Success"}
    with pytest.raises(ConnectionError):  # plain HTTP gets no answer from a TLS server
        SpdyClient(exec_url(daemon_handle, cid, "true"), ["v4.channel.k8s.io"])
