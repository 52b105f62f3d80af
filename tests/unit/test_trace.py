"""Start-up traces: phases back to back, spans inside, the store and the waterfall."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from crio_py import trace


@pytest.fixture
def store(tmp_path: Path) -> trace.TraceStore:
    trace.keep_traces(tmp_path)
    assert trace._store is not None
    return trace._store


def test_phases_add_up_to_the_operation_and_spans_nest(store: trace.TraceStore) -> None:
    with trace.operation("RunPodSandbox") as t:
        trace.owner("pod1", "pod1")
        time.sleep(0.01)
        step = trace.mark("network")
        assert step == "network"
        with trace.span("cni bridge"):
            time.sleep(0.02)
        trace.mark("pause start")
    phases = t.phases()
    assert list(phases) == ["validate", "network", "pause start"]
    assert sum(phases.values()) == pytest.approx(t.wall_ms, abs=0.5)
    assert phases["network"] >= 20
    [span] = [s for s in t.steps if s.depth == 1]
    assert span.name == "cni bridge" and span.ms >= 20
    doc = json.loads((store.directory / "pod1.json").read_text())
    assert doc["operations"][0]["operation"] == "RunPodSandbox"


def test_outside_an_operation_marks_and_spans_do_nothing() -> None:
    assert trace.mark("x") == "x"
    with trace.span("y"):
        pass
    assert trace.current() is None


def test_a_failed_operation_is_not_kept(store: trace.TraceStore) -> None:
    with pytest.raises(RuntimeError), trace.operation("CreateContainer"):
        trace.owner("c1", "pod1")
        raise RuntimeError("boom")
    assert not (store.directory / "c1.json").exists()


def test_a_pod_shows_with_its_containers(store: trace.TraceStore) -> None:
    for op, obj in (("RunPodSandbox", "podaaa"), ("CreateContainer", "ctrbbb"), ("StartContainer", "ctrbbb")):
        with trace.operation(op):
            trace.owner(obj, "podaaa")
            trace.mark("runtime")
    docs = store.find("poda")
    assert [d["id"] for d in docs] == ["podaaa", "ctrbbb"]
    assert [op["operation"] for op in docs[1]["operations"]] == ["CreateContainer", "StartContainer"]
    assert [d["id"] for d in store.find("ctrb")] == ["ctrbbb"]
    assert store.find("nothing") == []
    text = trace.waterfall(docs)
    assert "RunPodSandbox pod podaaa" in text and "StartContainer container ctrbbb" in text
    assert trace.print_trace(store.directory, "zzz") == 1
