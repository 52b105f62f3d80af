"""The client's crictl-style formatting, file reading and CRI log printing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from crio_py.client import output
from crio_py.client.files import ConfigFileError, load_message
from crio_py.client.logs import print_log
from crio_py.cri import api_pb2 as pb


@pytest.mark.parametrize(("seconds", "text"), [
    (0.4, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (119, "About a minute"), (120, "2 minutes"), (3599, "59 minutes"), (3600, "About an hour"),
    (5 * 3600, "5 hours"), (3 * 86400, "3 days"), (20 * 86400, "2 weeks"), (90 * 86400, "3 months"),
    (800 * 86400, "2 years"),
])
def test_human_duration_is_go_units(seconds: float, text: str) -> None:
    assert output.human_duration(seconds) == text


@pytest.mark.parametrize(("size", "text"), [(999, "999B"), (315_000, "315kB"), (1_460_123, "1.46MB"),
                                            (52_000_000, "52MB"), (2_500_000_000, "2.5GB")])
def test_human_size_is_go_units(size: int, text: str) -> None:
    assert output.human_size(size) == text


def test_table_pads_like_tabwriter() -> None:
    assert output.table(("A", "LONGER"), [("xyz", "1"), ("", "22")]) == "A     LONGER\nxyz   1\n      22\n"


def test_files_take_crictl_json_yaml_snake_or_camel_and_enum_numbers(tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text("metadata: {name: a}\nlogDirectory: /l\nlinux:\n  security_context:\n"
                 "    namespace_options: {network: 2, pid: POD}\n")
    pod = load_message(f, pb.PodSandboxConfig)
    assert pod.log_directory == "/l"
    assert pod.linux.security_context.namespace_options.network == pb.NODE
    assert pod.linux.security_context.namespace_options.pid == pb.POD
    f.write_text('{\n\t"metadata": {"name": "tabs are JSON, not YAML"}\n}')
    assert load_message(f, pb.ContainerConfig).metadata.name == "tabs are JSON, not YAML"
    for text, problem in (("[1]", "expected a mapping"), ("a: [", "neither JSON nor YAML"),
                          ("metadata: {nam: x}", "not a ContainerConfig")):
        f.write_text(text)
        with pytest.raises(ConfigFileError, match=problem):
            load_message(f, pb.ContainerConfig)


def test_logs_join_partial_lines_split_streams_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(
        b"2026-01-01T00:00:00.000000000Z stdout P hel\n"
        b"2026-01-01T00:00:00.000000001Z stdout F lo\n"
        b"2026-01-01T00:00:00.000000002Z stderr F oops\n"
        b"2026-01-01T00:00:00.000000003Z stdout F \n"
        b"2026-01-01T00:00:00.000000004Z stdout F last\n"
        b"2026-01-01T00:00:00.000000005Z stdout F half-writ"
    )
    out, err = io.BytesIO(), io.BytesIO()
    print_log(str(log), out=out, err=err)
    assert (out.getvalue(), err.getvalue()) == (b"hello\n\nlast\n", b"oops\n")
    out = io.BytesIO()
    print_log(str(log), tail=1, out=out, err=io.BytesIO())
    assert out.getvalue() == b"last\n"
    out = io.BytesIO()
    print_log(str(log), tail=0, out=out, err=io.BytesIO())
    assert out.getvalue() == b""
