from __future__ import annotations

from crio_py.cri import api_pb2, generate


def test_committed_stubs_match_a_fresh_generation() -> None:
    assert generate.main(["--check"]) == 0


def test_proto_is_the_recorded_cri_release() -> None:
    source = (generate.PROTO_DIR / "SOURCE").read_text()
    assert "k8s.io/cri-api v0.36.3" in source
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
