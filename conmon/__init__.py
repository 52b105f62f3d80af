"""conmon: crio-py's container monitor, one process per pod serving every container of the pod.

The monitor keeps containers independent of the daemon: it holds their stdio, writes their CRI
logs, serves attach, reaps them (it is a child subreaper, so containers become its children once
``runc create`` exits) and records each exit in an exit file. The daemon may stop, crash or
restart; the monitor and the containers carry on. It is a small standalone program: only C
modules of the standard library (``posix``, ``_socket``, ``select``, ``_signal``, ``_json``),
no ``crio_py`` and no asyncio, to stay near a bare interpreter's memory and start time.

On-disk layout, in ``<monitors dir>/<pod id>/``::

    monitor.pid              the monitor's pid (written before it serves)
    control.sock             control socket (SOCK_STREAM)
    monitor.log              the monitor's own stderr (the daemon opens it)
    <container id>/pid       the container's pid (the runtime's --pid-file)
    <container id>/exit      exit record, see conmon.exitfile
    <container id>/attach.sock  attach socket, see conmon.attach

Control protocol: JSON lines over ``control.sock``. Each request is one JSON object on one line;
the monitor answers each with one JSON object on one line, in order, on the same connection.
Every reply has ``"ok"``; a refusal is ``{"ok": false, "error": "<message>"}``.

``{"op": "ping"}``
    -> ``{"ok": true, "pid": <monitor pid>, "pod_id": "<id>"}``
``{"op": "version"}``
    -> ``{"ok": true, "version": 2, "features": ["create", "ping", ...]}``: the ops this monitor
    serves (a monitor older than "version" answers "unknown op"; it serves version 1's ops).
``{"op": "subscribe"}``
    -> ``{"ok": true, "pid", "pod_id", "exits": {"<id>": <exit record>}}`` (the exits recorded so
    far), then, on the same connection, one line per later container exit, the moment it is
    reaped and its exit file written: ``{"event": "exit", "id": "<id>", <exit record fields>}``.
    A subscriber that does not read its events is disconnected.
``{"op": "status"}``
    -> ping's fields and ``"containers": {"<id>": {"pid": N, "running": bool, "exit": <exit record>|null}}``
``{"op": "create", "id", "bundle", "runtime", "root", "log_path", "tty", "stdin", "stdin_once",
"log_size_max", "runtime_args": [...], "timeout": <seconds>}``
    runs the runtime's create (see conmon.runtime) and answers when it exited:
    ``{"ok": true, "pid": <container pid>}`` or
    ``{"ok": false, "error": "runtime create failed: ...", "stderr": "<what the runtime said>"}``.
    The runtime is killed if it takes longer than ``timeout`` (default 60 s).
    An unwritable log path fails the create before the runtime runs.
``{"op": "reopen_log", "id"}``
    -> ``{"ok": true}`` once output goes to a new file at the log path (kubelet's rotation).
``{"op": "resize", "id", "width", "height"}``
    -> ``{"ok": true}`` once the terminal has the new size (tty containers only).
``{"op": "shutdown", "force": bool}``
    -> ``{"ok": true, "running": N}``. The monitor then refuses creates and exits when no
    container is running any more, at once if none is or if ``force``. It never kills
    containers: those still running lose their log and exit record.

Logs: see conmon.crilog (CRI format, P/F lines, size limit). Attach: see conmon.attach.
"""
