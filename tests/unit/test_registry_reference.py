"""Image references as users write them, normalised like Docker and CRI-O do."""

from __future__ import annotations

import pytest

from crio_py.errors import InvalidArgument
from crio_py.registry.reference import Reference, looks_like_id, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", Reference("docker.io", "library/busybox", "latest")),
        ("busybox:1.36", Reference("docker.io", "library/busybox", "1.36")),
        ("library/busybox", Reference("docker.io", "library/busybox", "latest")),
        ("docker.io/busybox", Reference("docker.io", "library/busybox", "latest")),
        ("index.docker.io/library/busybox:1", Reference("docker.io", "library/busybox", "1")),
        ("someone/app", Reference("docker.io", "someone/app", "latest")),
        ("registry.k8s.io/pause:3.10", Reference("registry.k8s.io", "pause", "3.10")),
        ("localhost/app", Reference("localhost", "app", "latest")),
        ("127.0.0.1:5000/team/app:v1_2.3-rc", Reference("127.0.0.1:5000", "team/app", "v1_2.3-rc")),
        ("[::1]:5000/app:v1", Reference("[::1]:5000", "app", "v1")),
        (f"quay.io/a/b/c@{DIGEST}", Reference("quay.io", "a/b/c", "", DIGEST)),
        (f"busybox:1@{DIGEST}", Reference("docker.io", "library/busybox", "1", DIGEST)),
        ("my-registry.example.com/a__b/c.d/e-f", Reference("my-registry.example.com", "a__b/c.d/e-f", "latest")),
    ],
)
def test_parse_normalises(text: str, expected: Reference) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " busybox",
        "Busybox",
        "busybox:",
        "busybox:-x",
        "a//b",
        "a/B",
        "busybox@sha256:xyz",
        "busybox@md5:" + "a" * 32,
        "host:port:5000/app",
        "-lead/app",
        "app/",
        "busybox:" + "t" * 129,
    ],
)
def test_invalid_references_are_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse(text)
    assert repr(text) in err.value.message


def test_names_as_records_keep_them() -> None:
    ref = parse("127.0.0.1:5000/team/app:v1")
    assert ref.name == "127.0.0.1:5000/team/app"
    assert ref.tagged() == "127.0.0.1:5000/team/app:v1"
    assert ref.digested(DIGEST) == f"127.0.0.1:5000/team/app@{DIGEST}"
    assert ref.object == "v1"
    assert str(ref) == "127.0.0.1:5000/team/app:v1"
    pinned = parse(f"busybox@{DIGEST}")
    assert pinned.object == DIGEST and pinned.tagged() == "" and str(pinned) == f"docker.io/library/busybox@{DIGEST}"


@pytest.mark.parametrize(
    ("text", "is_id"),
    [("sha256:" + "a" * 64, True), ("a" * 64, True), ("abc123", True), ("abc12", False), ("busybox", False),
     ("sha256:xyz", False)],
)
def test_looks_like_id(text: str, is_id: bool) -> None:
    assert looks_like_id(text) is is_id
