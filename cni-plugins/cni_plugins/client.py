"""The thin executables' side: hand the invocation to the plugin service, or run it here.

This module is on every plugin exec's path, so it imports nothing but ``os``, ``sys`` and the C
module ``_socket`` (``socket`` and ``json`` alone would add ~20 ms of imports). The service gets
our environment and our stdin, stdout and stderr file descriptors (SCM_RIGHTS): the worker reads
the config from our stdin and writes the result straight to our stdout, then sends the exit code.

Request: one SOCK_SEQPACKET message ``MAGIC \\0 plugin \\0 KEY=VALUE \\0 ...`` carrying fds 0, 1, 2.
Reply: ``rc:<exit code>``, or ``fallback`` when the service cannot serve us (we then run here).
"""

import os
import sys
from _socket import AF_UNIX, SCM_RIGHTS, SOCK_CLOEXEC, SOCK_SEQPACKET, SOL_SOCKET, socket

SOCKET_ENV = "CRIO_PY_CNI_SOCKET"
DEFAULT_SOCKET = "/run/crio-py/cni-plugins.sock"
MAGIC = b"crio-py-cni/1"
FALLBACK = b"fallback"
# Marks the re-exec under the plugin interpreter (runtimes pass plugins no arguments).
IN_PROCESS_FLAG = "--crio-py-in-process"
LOST = (
    b'{\n    "cniVersion": "1.1.0",\n    "code": 11,\n'
    b'    "msg": "crio-py CNI plugin service failed during the request"\n}'
)


def request_bytes(plugin: str, environ: dict[bytes, bytes]) -> bytes:
    """The request message: magic, plugin name, environment."""
    return b"\0".join([MAGIC, plugin.encode(), *(k + b"=" + v for k, v in environ.items())])


def parse_request(msg: bytes) -> tuple[str, dict[str, str]] | None:
    """(plugin, environment) of a request; None if it is not one."""
    parts = msg.split(b"\0")
    if len(parts) < 2 or parts[0] != MAGIC:
        return None
    env = {}
    for item in parts[2:]:
        key, _, value = item.partition(b"=")
        env[key.decode(errors="surrogateescape")] = value.decode(errors="surrogateescape")
    return parts[1].decode(), env


def via_service(plugin: str, path: str) -> int | None:
    """Run through the service; None when there is no (willing) service to ask."""
    sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)
    try:
        try:
            sock.connect(path)
            fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
            sock.sendmsg([request_bytes(plugin, dict(os.environb))], [(SOL_SOCKET, SCM_RIGHTS, fds)])
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
    # The worker took the request and vanished: an ADD may be half done, so say so, do not redo it.
    os.write(1, LOST)
    return 1


def in_process(plugin: str) -> int:
    """Run the plugin in this process (no service): the 'thick plugin' path."""
    if sys.flags.no_site:
        import site

        site.main()
    try:
        from cni_plugins import plugins, skel
    except ImportError as e:
        from cni_plugins.spec import ERR_INTERNAL, CNIError

        msg = f"cannot load the plugin with {sys.executable}: {e}"
        os.write(1, CNIError(ERR_INTERNAL, msg).to_json("1.1.0"))
        return 1
    outcome = skel.run(plugins.get(plugin), os.environ, sys.stdin.buffer.read())
    write_all(1, outcome.stdout)
    write_all(2, outcome.stderr)
    return outcome.rc


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(plugin: str, python: str = "") -> None:
    """Entry point of the launchers: the service, else in-process under ``python`` (re-exec)."""
    rc = via_service(plugin, os.environ.get(SOCKET_ENV, DEFAULT_SOCKET))
    if rc is None:
        if python and IN_PROCESS_FLAG not in sys.argv[1:]:
            # The launcher runs under the fastest-starting interpreter; the in-process path needs
            # the one that has pyroute2. exec keeps our stdin, stdout and environment.
            os.execv(python, [python, "-SE", os.path.abspath(sys.argv[0]), IN_PROCESS_FLAG])
        rc = in_process(plugin)
    sys.exit(rc)
