"""The client subcommands in crictl's spirit: their arguments, and one function per command.

Each command is a thin client of one or two CRI calls. Object ids may be unique prefixes, as
crictl prints them (the daemon resolves them). Lists print crictl's tables, or ``-o json|yaml``
documents shaped like crictl's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crio_py.client import output
from crio_py.client.connection import ClientError, Connection
from crio_py.client.exec_stream import StreamError, run_exec
from crio_py.client.files import ConfigFileError, load_message
from crio_py.client.logs import print_log
from crio_py.cri import api_pb2 as pb

# Seconds a call may take unless --timeout says otherwise; pulls and exec have none by default.
DEFAULT_TIMEOUT = 60.0

Handler = Callable[[Connection, argparse.Namespace], int]


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--timeout", type=float, default=None, help="seconds each call may take")
    return common


def _listing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    parser.add_argument("-q", "--quiet", action="store_true", help="only ids")
    parser.add_argument("--no-trunc", action="store_true", help="full ids")


def _inspecting(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-o", "--output", choices=("json", "yaml"), default="json")
    parser.add_argument("ids", nargs="+", metavar="ID", help=f"{what} id or unique prefix")


def add_commands(sub: Any) -> None:
    """Add the client subcommands to the ``crio-py`` parser's subparsers."""
    c = [_common()]
    _listing(sub.add_parser("pods", parents=c, help="list pod sandboxes"))
    ps = sub.add_parser("ps", parents=c, help="list running containers (-a: all)")
    _listing(ps)
    ps.add_argument("-a", "--all", action="store_true", help="containers in every state")
    ps.add_argument("-p", "--pod", default="", help="only the containers of this pod")
    _listing(sub.add_parser("images", parents=c, help="list images"))
    pull = sub.add_parser("pull", parents=c, help="pull an image")
    pull.add_argument("image")
    pull.add_argument("--creds", default="", metavar="USER[:PASSWORD]", help="registry credentials")
    rmi = sub.add_parser("rmi", parents=c, help="remove images")
    rmi.add_argument("ids", nargs="+", metavar="IMAGE")
    _inspecting(sub.add_parser("inspecti", parents=c, help="an image's status and config"), "image")
    runp = sub.add_parser("runp", parents=c, help="run a pod sandbox from a crictl JSON/YAML file")
    runp.add_argument("pod_file", type=Path)
    runp.add_argument("--runtime", default="", help="runtime handler (default: the daemon's default)")
    create = sub.add_parser("create", parents=c, help="create a container in a pod from crictl JSON/YAML files")
    create.add_argument("pod_id")
    create.add_argument("container_file", type=Path)
    create.add_argument("pod_file", type=Path)
    create.add_argument("--no-pull", action="store_true", help="do not pull the image when it is missing")
    for name, text in (("start", "start containers"), ("stopp", "stop pod sandboxes"),
                       ("rmp", "remove pod sandboxes (their containers too)")):
        sub.add_parser(name, parents=c, help=text).add_argument("ids", nargs="+", metavar="ID")
    stop = sub.add_parser("stop", parents=c, help="stop containers")
    stop.add_argument("-t", "--stop-timeout", type=int, default=10, help="seconds before SIGKILL (default 10)")
    stop.add_argument("ids", nargs="+", metavar="ID")
    rm = sub.add_parser("rm", parents=c, help="remove containers")
    rm.add_argument("-f", "--force", action="store_true", help="stop running ones first")
    rm.add_argument("ids", nargs="+", metavar="ID")
    exec_ = sub.add_parser("exec", parents=c, help="run a command in a running container")
    exec_.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    exec_.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    exec_.add_argument("-s", "--sync", action="store_true", help="ExecSync: the output once the command ends")
    exec_.add_argument("id", metavar="ID")
    exec_.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    logs = sub.add_parser("logs", parents=c, help="print a container's log")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    logs.add_argument("--tail", type=int, default=-1, help="only the last N lines")
    logs.add_argument("id", metavar="ID")
    _inspecting(sub.add_parser("inspect", parents=c, help="a container's status and details"), "container")
    _inspecting(sub.add_parser("inspectp", parents=c, help="a pod sandbox's status and details"), "pod sandbox")
    info = sub.add_parser("info", parents=c, help="the runtime's conditions, runtime roots, log and config")
    info.add_argument("-o", "--output", choices=("json", "yaml"), default="json")


def run(command: str, ns: argparse.Namespace, socket_path: str) -> int:
    """Run client ``command``; 1 with a message on stderr when a call fails."""
    timeout = ns.timeout if ns.timeout is not None else DEFAULT_TIMEOUT
    with Connection(socket_path, timeout) as conn:
        try:
            return COMMANDS[command](conn, ns)
        except (ClientError, ConfigFileError) as exc:
            print(f"crio-py {command}: {exc}", file=sys.stderr)
            return 1


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# ---- lists --------------------------------------------------------------------------------


def pods(conn: Connection, ns: argparse.Namespace) -> int:
    resp = conn.runtime("ListPodSandbox", pb.ListPodSandboxRequest())
    items = sorted(resp.items, key=lambda p: -p.created_at)
    if ns.output != "table":
        _print(output.dump({"items": [output.as_data(p) for p in items]}, ns.output))
        return 0
    if ns.quiet:
        _print("".join(p.id + "\n" for p in items))
        return 0
    rows = [
        (output.short_id(p.id, ns.no_trunc), output.ago(p.created_at),
         "Ready" if p.state == pb.SANDBOX_READY else "NotReady", p.metadata.name, p.metadata.namespace,
         str(p.metadata.attempt), p.runtime_handler or "(default)")
        for p in items
    ]
    _print(output.table(("POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"), rows))
    return 0


_STATE = {pb.CONTAINER_CREATED: "Created", pb.CONTAINER_RUNNING: "Running", pb.CONTAINER_EXITED: "Exited",
          pb.CONTAINER_UNKNOWN: "Unknown"}


def ps(conn: Connection, ns: argparse.Namespace) -> int:
    filt = pb.ContainerFilter(pod_sandbox_id=ns.pod)
    if not ns.all:
        filt.state.state = pb.CONTAINER_RUNNING
    resp = conn.runtime("ListContainers", pb.ListContainersRequest(filter=filt))
    items = sorted(resp.containers, key=lambda c: -c.created_at)
    if ns.output != "table":
        _print(output.dump({"containers": [output.as_data(c) for c in items]}, ns.output))
        return 0
    if ns.quiet:
        _print("".join(c.id + "\n" for c in items))
        return 0
    pod_names = {p.id: p.metadata.name for p in conn.runtime("ListPodSandbox", pb.ListPodSandboxRequest()).items}
    rows = []
    for c in items:
        image = c.image.user_specified_image or c.image.image or c.image_ref
        if image.startswith("sha256:"):
            image = output.short_id(image, ns.no_trunc)
        rows.append((output.short_id(c.id, ns.no_trunc), image, output.ago(c.created_at), _STATE[c.state],
                     c.metadata.name, str(c.metadata.attempt), output.short_id(c.pod_sandbox_id, ns.no_trunc),
                     pod_names.get(c.pod_sandbox_id, "unknown")))
    _print(output.table(("CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD"), rows))
    return 0


def _split_tag(repo_tag: str) -> tuple[str, str]:
    repo, sep, tag = repo_tag.rpartition(":")
    return (repo, tag) if sep and "/" not in tag else (repo_tag, "<none>")


def images(conn: Connection, ns: argparse.Namespace) -> int:
    resp = conn.image("ListImages", pb.ListImagesRequest())
    if ns.output != "table":
        _print(output.dump({"images": [output.as_data(i) for i in resp.images]}, ns.output))
        return 0
    if ns.quiet:
        _print("".join(i.id + "\n" for i in resp.images))
        return 0
    rows = []
    for image in resp.images:
        names = [_split_tag(t) for t in image.repo_tags] or [
            (d.partition("@")[0], "<none>") for d in image.repo_digests[:1]
        ] or [("<none>", "<none>")]
        for repo, tag in names:
            rows.append((repo, tag, output.short_id(image.id, ns.no_trunc), output.human_size(image.size)))
    rows.sort()
    _print(output.table(("IMAGE", "TAG", "IMAGE ID", "SIZE"), rows))
    return 0


# ---- images -------------------------------------------------------------------------------


def _auth(creds: str) -> pb.AuthConfig | None:
    if not creds:
        return None
    user, _, password = creds.partition(":")
    return pb.AuthConfig(username=user, password=password)


def pull(conn: Connection, ns: argparse.Namespace) -> int:
    req = pb.PullImageRequest(image=pb.ImageSpec(image=ns.image), auth=_auth(ns.creds))
    resp = conn.image("PullImage", req, timeout=ns.timeout)
    _print(f"Image is up to date for {resp.image_ref}\n")
    return 0


def rmi(conn: Connection, ns: argparse.Namespace) -> int:
    for ref in ns.ids:
        status = conn.image("ImageStatus", pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)))
        if not status.image.id:
            raise ClientError(f"NOT_FOUND: no image {ref!r}")
        conn.image("RemoveImage", pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)))
        _print(f"Deleted: {ref}\n")
    return 0


def inspecti(conn: Connection, ns: argparse.Namespace) -> int:
    for ref in ns.ids:
        resp = conn.image("ImageStatus", pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=True))
        if not resp.image.id:
            raise ClientError(f"NOT_FOUND: no image {ref!r}")
        _print(output.dump(output.with_info(output.as_data(resp.image), dict(resp.info)), ns.output))
    return 0


# ---- pods and containers ------------------------------------------------------------------


def runp(conn: Connection, ns: argparse.Namespace) -> int:
    config = load_message(ns.pod_file, pb.PodSandboxConfig)
    resp = conn.runtime("RunPodSandbox", pb.RunPodSandboxRequest(config=config, runtime_handler=ns.runtime))
    _print(resp.pod_sandbox_id + "\n")
    return 0


def create(conn: Connection, ns: argparse.Namespace) -> int:
    config = load_message(ns.container_file, pb.ContainerConfig)
    pod_config = load_message(ns.pod_file, pb.PodSandboxConfig)
    if not ns.no_pull and config.image.image:
        status = conn.image("ImageStatus", pb.ImageStatusRequest(image=config.image))
        if not status.image.id:  # as crictl: pull what is missing
            conn.image("PullImage", pb.PullImageRequest(image=config.image, sandbox_config=pod_config), timeout=None)
    req = pb.CreateContainerRequest(pod_sandbox_id=ns.pod_id, config=config, sandbox_config=pod_config)
    _print(conn.runtime("CreateContainer", req).container_id + "\n")
    return 0


def start(conn: Connection, ns: argparse.Namespace) -> int:
    for cid in ns.ids:
        conn.runtime("StartContainer", pb.StartContainerRequest(container_id=cid))
        _print(cid + "\n")
    return 0


def stop(conn: Connection, ns: argparse.Namespace) -> int:
    for cid in ns.ids:
        # The call lasts as long as the stop may: the grace period plus the kill.
        timeout = ns.timeout if ns.timeout is not None else ns.stop_timeout + DEFAULT_TIMEOUT
        conn.runtime("StopContainer", pb.StopContainerRequest(container_id=cid, timeout=ns.stop_timeout),
                     timeout=timeout)
        _print(cid + "\n")
    return 0


def rm(conn: Connection, ns: argparse.Namespace) -> int:
    for cid in ns.ids:
        status = conn.runtime("ContainerStatus", pb.ContainerStatusRequest(container_id=cid)).status
        if status.state == pb.CONTAINER_RUNNING:
            if not ns.force:
                raise ClientError(f"FAILED_PRECONDITION: container {cid} is running: stop it first or use rm -f")
            conn.runtime("StopContainer", pb.StopContainerRequest(container_id=cid, timeout=0))
        conn.runtime("RemoveContainer", pb.RemoveContainerRequest(container_id=cid))
        _print(cid + "\n")
    return 0


def stopp(conn: Connection, ns: argparse.Namespace) -> int:
    for pid in ns.ids:
        conn.runtime("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=pid))
        _print(f"Stopped sandbox {pid}\n")
    return 0


def rmp(conn: Connection, ns: argparse.Namespace) -> int:
    for pid in ns.ids:
        conn.runtime("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=pid))
        _print(f"Removed sandbox {pid}\n")
    return 0


def exec_(conn: Connection, ns: argparse.Namespace) -> int:
    if not ns.cmd:
        raise ClientError("INVALID_ARGUMENT: exec needs a command after the container id")
    if not ns.sync:
        req = pb.ExecRequest(container_id=ns.id, cmd=ns.cmd, tty=ns.tty, stdin=ns.interactive, stdout=True,
                             stderr=not ns.tty)  # a terminal carries both streams
        try:
            url = conn.runtime("Exec", req).url
        except ClientError as exc:
            if not str(exc).startswith("UNIMPLEMENTED") or ns.interactive or ns.tty:
                raise
        else:
            try:
                return run_exec(url, stdin=ns.interactive, tty_=ns.tty)
            except StreamError as exc:
                raise ClientError(f"UNAVAILABLE: {exc}") from None
    resp = conn.runtime("ExecSync", pb.ExecSyncRequest(container_id=ns.id, cmd=ns.cmd, timeout=0),
                        timeout=ns.timeout)
    sys.stdout.buffer.write(resp.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(resp.stderr)
    sys.stderr.flush()
    return int(resp.exit_code)


def logs(conn: Connection, ns: argparse.Namespace) -> int:
    def status() -> pb.ContainerStatus:
        return conn.runtime("ContainerStatus", pb.ContainerStatusRequest(container_id=ns.id)).status

    path = status().log_path
    if not path:
        raise ClientError(f"FAILED_PRECONDITION: container {ns.id} has no log path")
    try:
        print_log(path, tail=ns.tail, follow=ns.follow, running=lambda: status().state == pb.CONTAINER_RUNNING)
    except FileNotFoundError:
        raise ClientError(f"NOT_FOUND: the log {path} of container {ns.id} does not exist (yet)") from None
    return 0


def inspect(conn: Connection, ns: argparse.Namespace) -> int:
    for cid in ns.ids:
        resp = conn.runtime("ContainerStatus", pb.ContainerStatusRequest(container_id=cid, verbose=True))
        _print(output.dump(output.with_info(output.as_data(resp.status), dict(resp.info)), ns.output))
    return 0


def inspectp(conn: Connection, ns: argparse.Namespace) -> int:
    for pid in ns.ids:
        resp = conn.runtime("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=pid, verbose=True))
        _print(output.dump(output.with_info(output.as_data(resp.status), dict(resp.info)), ns.output))
    return 0


def info(conn: Connection, ns: argparse.Namespace) -> int:
    resp = conn.runtime("Status", pb.StatusRequest(verbose=True))
    _print(output.dump(output.with_info(output.as_data(resp.status), dict(resp.info)), ns.output))
    return 0


COMMANDS: dict[str, Handler] = {
    "pods": pods, "ps": ps, "images": images, "pull": pull, "rmi": rmi, "inspecti": inspecti,
    "runp": runp, "create": create, "start": start, "stop": stop, "rm": rm, "stopp": stopp, "rmp": rmp,
    "exec": exec_, "logs": logs, "inspect": inspect, "inspectp": inspectp, "info": info,
}
