"""``crio-py status``: the daemon's version, conditions, log and runtime roots."""

from __future__ import annotations

import json
import sys

import grpc

from crio_py.cri import api_pb2 as pb
from crio_py.cri import api_pb2_grpc


def print_status(socket_path: str, timeout: float) -> int:
    """Print version and runtime conditions of the daemon on ``socket_path``; 1 if unreachable."""
    with grpc.insecure_channel(f"unix://{socket_path}") as channel:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        try:
            version = stub.Version(pb.VersionRequest(), timeout=timeout)
            status = stub.Status(pb.StatusRequest(verbose=True), timeout=timeout)
        except grpc.RpcError as exc:
            print(f"crio-py: cannot reach the daemon on {socket_path}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"runtime: {version.runtime_name} {version.runtime_version} (CRI {version.runtime_api_version})")
    print(f"socket:  unix://{socket_path}")
    if "daemonLog" in status.info:
        print(f"log:     {json.loads(status.info['daemonLog'])}")
    for name, root in json.loads(status.info.get("runtimeRoots", "{}")).items():
        print(f"runtime {name}: state in {root} ({name} --root {root} list)")
    for cond in status.status.conditions:
        line = f"{cond.type}: {'true' if cond.status else 'false'}"
        if cond.reason:
            line += f" ({cond.reason}: {cond.message})"
        print(line)
    return 0
