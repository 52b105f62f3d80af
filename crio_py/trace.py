"""Start-up traces: where the time of RunPodSandbox, CreateContainer and StartContainer went.

The gRPC layer opens a trace around those RPCs (``operation``). The code they call names the
phase it enters with ``mark`` (which returns the name, so it fits an existing ``step = ...``
line) and times nested detail with ``span`` (each CNI plugin, the monitor's start). Phases are
back to back, so they add up to the operation's time. At the end each phase goes to the
``crio_py_startup_step_seconds`` histogram and to the RPC's closing log line, and the trace is
kept as a small JSON file per pod or container under ``<run_root>/traces``, which
``crio-py trace ID`` prints as a waterfall.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crio_py import faults, metrics
from crio_py.state import write_atomic

# Traces kept on disk; the oldest go first (they are diagnostics, not state).
MAX_TRACES = 1000
# The phase an operation is in before its code names one: argument checks, lookups.
FIRST_PHASE = "validate"


@dataclass
class Step:
    name: str
    start_ms: float  # from the start of the operation
    ms: float
    depth: int  # 0: a phase; 1 and more: a span inside it


@dataclass
class Trace:
    operation: str
    started_at_ns: int = field(default_factory=time.time_ns)
    steps: list[Step] = field(default_factory=list)
    wall_ms: float = 0.0
    object_id: str = ""
    pod_id: str = ""

    def __post_init__(self) -> None:
        self._t0 = time.perf_counter()
        self._phase = (FIRST_PHASE, self._t0)
        self._depth = 0

    def _now_ms(self, t: float) -> float:
        return (t - self._t0) * 1000

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        phase, since = self._phase
        self.steps.append(Step(phase, self._now_ms(since), (now - since) * 1000, 0))
        self._phase = (name, now)

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            self.steps.append(Step(name, self._now_ms(start), (time.perf_counter() - start) * 1000, self._depth + 1))

    def finish(self) -> None:
        self.mark("")
        self.wall_ms = self._now_ms(time.perf_counter())
        # Spans close before the phase holding them: order by start for reading.
        self.steps.sort(key=lambda s: (s.start_ms, s.depth))

    def phases(self) -> dict[str, float]:
        """Milliseconds per phase (a phase entered twice adds up)."""
        out: dict[str, float] = {}
        for s in self.steps:
            if s.depth == 0:
                out[s.name] = round(out.get(s.name, 0.0) + s.ms, 3)
        return out


_local = threading.local()


def current() -> Trace | None:
    return getattr(_local, "trace", None)


def mark(name: str) -> str:
    """Enter phase ``name`` of the current operation (nothing outside one); returns ``name``."""
    t = current()
    if t is not None:
        faults.point(f"{t.operation}:{name}")
        t.mark(name)
    return name


@contextlib.contextmanager
def span(name: str) -> Iterator[None]:
    """Time ``name`` inside the current phase (nothing outside an operation)."""
    t = current()
    if t is None:
        yield
        return
    faults.point(f"{t.operation}:{name}")
    with t.span(name):
        yield


def owner(object_id: str, pod_id: str) -> None:
    """Say which pod or container the current operation is about (for ``crio-py trace``)."""
    t = current()
    if t is not None:
        t.object_id, t.pod_id = object_id, pod_id


@contextlib.contextmanager
def operation(name: str) -> Iterator[Trace]:
    """Trace one RPC in this thread; on success its phases are observed and the trace kept."""
    t = Trace(name)
    _local.trace = t
    ok = False
    try:
        yield t
        ok = True
    finally:
        _local.trace = None
        t.finish()
        if ok:
            for phase, ms in t.phases().items():
                metrics.STARTUP_STEP_LATENCY.labels(name, phase).observe(ms / 1000)
            if _store is not None and t.object_id:
                _store.save(t)


class TraceStore:
    """One JSON file per pod or container: the traced operations on it, in order."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._lock = threading.Lock()

    def save(self, t: Trace) -> None:
        record = {"operation": t.operation, "started_at_ns": t.started_at_ns, "wall_ms": round(t.wall_ms, 3),
                  "steps": [asdict(s) for s in t.steps]}  # fmt: skip
        path = self.directory / f"{t.object_id}.json"
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            doc = _read(path) or {"id": t.object_id, "pod_id": t.pod_id, "operations": []}
            doc["operations"].append(record)
            write_atomic(path, json.dumps(doc).encode(), durable=False)
            self._prune()

    def _prune(self) -> None:
        files = list(self.directory.glob("*.json"))
        if len(files) <= MAX_TRACES:
            return
        files.sort(key=lambda p: p.stat().st_mtime_ns)
        for old in files[: len(files) - MAX_TRACES]:
            old.unlink(missing_ok=True)

    def find(self, id_prefix: str) -> list[dict[str, Any]]:
        """The traces of the pod or container ``id_prefix`` names: a pod's own, then its containers'."""
        docs = [d for d in (_read(p) for p in self.directory.glob("*.json")) if d is not None]
        hits = [d for d in docs if d["id"].startswith(id_prefix)]
        if len({d["id"] for d in hits}) != 1:
            return []
        doc = hits[0]
        if doc["id"] != doc["pod_id"]:
            return [doc]
        members = [d for d in docs if d["pod_id"] == doc["id"] and d["id"] != doc["id"]]
        members.sort(key=lambda d: d["operations"][0]["started_at_ns"])
        return [doc, *members]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "id" in doc and "operations" in doc else None


_store: TraceStore | None = None


def keep_traces(directory: Path) -> None:
    """Keep finished traces under ``directory`` (the daemon calls this at start)."""
    global _store
    _store = TraceStore(directory)


def waterfall(docs: list[dict[str, Any]], width: int = 40) -> str:
    """A readable waterfall of the operations in ``docs``, on one time axis from the first."""
    ops = [(d, op) for d in docs for op in d["operations"]]
    if not ops:
        return ""
    t0 = min(op["started_at_ns"] for _d, op in ops)
    end_ms = max((op["started_at_ns"] - t0) / 1e6 + op["wall_ms"] for _d, op in ops) or 1.0
    scale = width / end_ms
    lines = []
    for d, op in ops:
        base = (op["started_at_ns"] - t0) / 1e6
        what = "pod" if d["id"] == d["pod_id"] else "container"
        lines.append(f"{op['operation']} {what} {d['id'][:13]}  {op['wall_ms']:.1f} ms  (at +{base:.1f} ms)")
        for s in op["steps"]:
            start = base + s["start_ms"]
            bar = " " * int(start * scale) + "#" * max(1, round(s["ms"] * scale))
            label = "  " * (s["depth"] + 1) + s["name"]
            lines.append(f"  {label:<34} {s['ms']:9.1f} ms  |{bar:<{width}}|")
    return "\n".join(lines)


def print_trace(directory: Path, id_prefix: str) -> int:
    """``crio-py trace ID``: the waterfall of a pod (with its containers) or of one container."""
    if not id_prefix:
        print("crio-py trace: give a pod or container id (or a unique prefix)")
        return 2
    docs = TraceStore(directory).find(id_prefix) if directory.is_dir() else []
    if not docs:
        print(f"crio-py trace: no trace of {id_prefix!r} in {directory} (traces start with the daemon that "
              "ran the pod; an ambiguous prefix matches nothing)")  # fmt: skip
        return 1
    print(waterfall(docs))
    return 0
