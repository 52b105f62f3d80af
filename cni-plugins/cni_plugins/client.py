"""The thin executables' side: hand the invocation to the plugin service, or run it here.

Only ``os``, ``sys``, ``socket`` and ``json`` are imported on the fast path, so an exec costs
little more than the interpreter's start-up. The service gets our environment and our stdin,
stdout and stderr file descriptors (SCM_RIGHTS): the worker reads the config from our stdin and
writes the result straight to our stdout, then tells us the exit code.
"""

from __future__ import annotations

import json
import os
import socket
import sys

SOCKET_ENV = "CRIO_PY_CNI_SOCKET"
DEFAULT_SOCKET = "/run/crio-py/cni-plugins.sock"
PROTOCOL = 1
FALLBACK = b"fallback"


def request_bytes(plugin: str, env: dict[str, str]) -> bytes:
    """The request message: protocol version, plugin name, environment."""
    return json.dumps({"v": PROTOCOL, "plugin": plugin, "env": env}).encode()


def via_service(plugin: str, path: str) -> int | None:
    """Run through the service; None when there is no (compatible) service to ask."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(path)
            socket.send_fds(sock, [request_bytes(plugin, dict(os.environ))], [0, 1, 2])
        except OSError:
            return None
        try:
            reply = sock.recv(64)
        except OSError:
            reply = b""
    finally:
        sock.close()
    if reply == FALLBACK:
        return None
    if reply.startswith(b"rc:"):
        return int(reply[3:])
    # The worker took the request and vanished: ADD may be half done, so say so, do not redo it.
    err = {"cniVersion": "1.1.0", "code": 11, "msg": "crio-py CNI plugin service failed during the request"}
    os.write(1, json.dumps(err, indent=4).encode())
    return 1


def in_process(plugin: str) -> int:
    """Run the plugin in this process (no service): the 'thick plugin' path."""
    if sys.flags.no_site:
        import site

        site.main()
    try:
        from cni_plugins import plugins, skel
    except ImportError as e:
        err = {"cniVersion": "1.1.0", "code": 999, "msg": f"cannot load the plugin with {sys.executable}: {e}"}
        os.write(1, json.dumps(err, indent=4).encode())
        return 1
    outcome = skel.run(plugins.get(plugin), os.environ, sys.stdin.buffer.read())
    _write_all(1, outcome.stdout)
    _write_all(2, outcome.stderr)
    return outcome.rc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(plugin: str) -> None:
    """Entry point of the executables in bin/."""
    rc = via_service(plugin, os.environ.get(SOCKET_ENV, DEFAULT_SOCKET))
    if rc is None:
        rc = in_process(plugin)
    sys.exit(rc)
