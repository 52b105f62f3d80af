"""CNI plugin types: result versions, error JSON, VERSION output, CNI_ARGS, the skeleton's checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cni-plugins"))

from cni_plugins import client, invoke, skel
from cni_plugins.spec import (
    DNS,
    CNIError,
    Interface,
    IPConfig,
    Result,
    Route,
    go_json,
    parse_cni_args,
    parse_version,
    version_info_json,
)


def _result() -> Result:
    return Result(
        interfaces=[
            Interface("cni0", "aa:bb:cc:dd:ee:ff", mtu=1400),
            Interface("eth0", "02:00:00:00:00:01", sandbox="/ns"),
        ],
        ips=[IPConfig("10.1.2.3/24", "10.1.2.1", 1), IPConfig("fd00::3/64", None, 1)],
        routes=[Route("0.0.0.0/0", "10.1.2.1", mtu=1300)],
    )


def test_current_result_bytes_match_go() -> None:
    out = _result().to_json("1.0.0")
    assert out == (
        b'{\n    "cniVersion": "1.0.0",\n    "interfaces": [\n        {\n            "name": "cni0",\n'
        b'            "mac": "aa:bb:cc:dd:ee:ff"\n        },\n        {\n            "name": "eth0",\n'
        b'            "mac": "02:00:00:00:00:01",\n            "sandbox": "/ns"\n        }\n    ],\n'
        b'    "ips": [\n        {\n            "interface": 1,\n            "address": "10.1.2.3/24",\n'
        b'            "gateway": "10.1.2.1"\n        },\n        {\n            "interface": 1,\n'
        b'            "address": "fd00::3/64"\n        }\n    ],\n    "routes": [\n        {\n'
        b'            "dst": "0.0.0.0/0",\n            "gw": "10.1.2.1"\n        }\n    ],\n    "dns": {}\n}'
    )


def test_older_versions_carry_ip_version_and_drop_new_fields() -> None:
    obj = _result().to_obj("0.4.0")
    assert [ip["version"] for ip in obj["ips"]] == ["4", "6"]
    assert list(obj["ips"][0]) == ["version", "interface", "address", "gateway"]
    assert "mtu" not in obj["interfaces"][0] and "mtu" not in obj["routes"][0]
    assert _result().to_obj("0.3.0")["cniVersion"] == "0.3.0"


def test_1_1_keeps_mtu() -> None:
    obj = _result().to_obj("1.1.0")
    assert obj["interfaces"][0]["mtu"] == 1400 and obj["routes"][0]["mtu"] == 1300


def test_prev_result_of_old_version_converts_up() -> None:
    old = {
        "cniVersion": "0.3.1",
        "ips": [{"version": "4", "address": "10.0.0.5/16", "interface": 0}],
        "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "dns": {"nameservers": ["10.0.0.10"]},
    }
    res = Result.from_obj(old)
    obj = res.to_obj("1.0.0")
    assert obj["ips"] == [{"interface": 0, "address": "10.0.0.5/16"}]
    assert obj["dns"] == {"nameservers": ["10.0.0.10"]}


def test_unsupported_result_version() -> None:
    with pytest.raises(CNIError) as e:
        _result().to_obj("0.2.0")
    assert e.value.code == 1
    with pytest.raises(CNIError):
        Result.from_obj({"cniVersion": "0.1.0"})


def test_error_json() -> None:
    err = CNIError(7, "bad <config>", "details & more")
    assert err.to_json("1.0.0") == (
        b'{\n    "cniVersion": "1.0.0",\n    "code": 7,\n    "msg": "bad \\u003cconfig\\u003e",\n'
        b'    "details": "details \\u0026 more"\n}'
    )
    assert "details" not in json.loads(CNIError(11, "later").to_json("1.1.0"))


def test_version_info() -> None:
    assert version_info_json() == (
        b'{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
    )


def test_go_json_keeps_unicode() -> None:
    assert go_json({"a": "é"}, indent=False) == '{"a":"é"}'.encode()


def test_parse_version() -> None:
    assert parse_version("1.1") == (1, 1, 0)
    for bad in ("", "1.2.3.4", "x.1"):
        with pytest.raises(ValueError):
            parse_version(bad)


def test_cni_args() -> None:
    known = ("IP", "K8S_POD_NAME")
    assert parse_cni_args("IP=10.1.1.1;K8S_POD_NAME=p", known) == {"IP": "10.1.1.1", "K8S_POD_NAME": "p"}
    assert parse_cni_args("IgnoreUnknown=1;FOO=bar;IP=1.2.3.4", known) == {"IP": "1.2.3.4"}
    with pytest.raises(CNIError) as e:
        parse_cni_args("FOO=bar", known)
    assert e.value.code == 4
    with pytest.raises(CNIError):
        parse_cni_args("novalue", known)


def test_dns_from_anything() -> None:
    assert DNS.from_obj(None) == DNS()
    assert DNS.from_obj({"search": ["a"], "domain": "d"}).to_obj() == {"domain": "d", "search": ["a"]}


class _Fake(skel.Plugin):
    name = "fake"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def add(self, args: skel.CmdArgs) -> Result:
        self.calls.append("ADD")
        if args.conf.get("boom"):
            raise RuntimeError("boom")
        return Result(ips=[IPConfig("10.9.9.9/24")])

    def delete(self, args: skel.CmdArgs) -> None:
        self.calls.append("DEL")


ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/p"}
CONF = {"cniVersion": "0.4.0", "name": "net", "type": "fake"}


def _run(env: dict[str, str], conf: object) -> tuple[int, dict]:
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    out = skel.run(_Fake(), env, stdin)
    return out.rc, json.loads(out.stdout) if out.stdout else {}


@pytest.mark.parametrize(
    ("env", "conf", "code"),
    [
        ({k: v for k, v in ENV.items() if k != "CNI_COMMAND"}, CONF, 4),
        ({**ENV, "CNI_COMMAND": "NOPE"}, CONF, 4),
        ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, CONF, 4),
        ({k: v for k, v in ENV.items() if k != "CNI_CONTAINERID"}, CONF, 4),
        ({**ENV, "CNI_CONTAINERID": "bad/id"}, CONF, 4),
        ({**ENV, "CNI_IFNAME": "a" * 16}, CONF, 4),
        ({**ENV, "CNI_IFNAME": "a b"}, CONF, 4),
        (ENV, b"{nope", 6),
        (ENV, b"[1]", 6),
        (ENV, {**CONF, "name": ""}, 7),
        (ENV, {**CONF, "name": "bad name"}, 7),
        (ENV, {**CONF, "cniVersion": "0.2.0"}, 1),
        (ENV, {k: v for k, v in CONF.items() if k != "cniVersion"}, 1),
        ({**ENV, "CNI_COMMAND": "CHECK"}, {**CONF, "cniVersion": "0.3.1"}, 1),
        ({**ENV, "CNI_COMMAND": "GC"}, CONF, 1),
        (ENV, {**CONF, "boom": True}, 999),
    ],
)
def test_skeleton_errors(env: dict[str, str], conf: object, code: int) -> None:
    rc, err = _run(env, conf)
    assert rc == 1 and err["code"] == code, err
    assert set(err) <= {"cniVersion", "code", "msg", "details"}


def test_skeleton_add_prints_in_config_version_and_del_prints_nothing() -> None:
    rc, res = _run(ENV, CONF)
    assert rc == 0 and res == {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.9.9.9/24"}], "dns": {}}
    out = skel.run(_Fake(), {**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, json.dumps(CONF).encode())
    assert out.rc == 0 and out.stdout == b""


def test_incompatible_version_details() -> None:
    _, err = _run(ENV, {**CONF, "cniVersion": "0.2.0"})
    assert err["msg"] == "incompatible CNI versions"
    assert err["details"] == 'config is "0.2.0", plugin supports [0.3.0 0.3.1 0.4.0 1.0.0 1.1.0]'


def test_internal_error_has_traceback_on_stderr() -> None:
    out = skel.run(_Fake(), ENV, json.dumps({**CONF, "boom": True}).encode())
    assert b"RuntimeError" in out.stderr


def test_version_needs_no_stdin() -> None:
    out = skel.run(_Fake(), {"CNI_COMMAND": "VERSION"}, b"garbage")
    assert out.rc == 0 and json.loads(out.stdout)["supportedVersions"][-1] == "1.1.0"


def test_families_from_prev_result() -> None:
    args = skel.CmdArgs(
        "DEL",
        "c",
        "",
        "eth0",
        "",
        "",
        b"",
        {"cniVersion": "1.0.0", "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "fd00::2/64"}]}},
    )
    assert args.families() == {6}
    args.conf.pop("prevResult")
    assert args.families() == {4, 6}


def test_service_request_roundtrip() -> None:
    msg = client.request_bytes("bridge", {b"CNI_COMMAND": b"ADD", b"X": b"a=b"})
    assert client.parse_request(msg) == ("bridge", {"CNI_COMMAND": "ADD", "X": "a=b"})
    assert client.parse_request(b"other\0bridge") is None


def test_delegate_lookup(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    theirs, ours = tmp_path / "a" / "host-local", tmp_path / "b" / "host-local"
    theirs.write_bytes(b"\x7fELF...")
    ours.write_text(f"#!/bin/sh\n# {invoke.MARKER.decode()}: host-local\n")
    for f in (theirs, ours):
        f.chmod(0o755)
    assert invoke.find("host-local", f"{tmp_path}/a:{tmp_path}/b") == str(theirs)
    assert not invoke.is_ours(str(theirs)) and invoke.is_ours(str(ours))
    with pytest.raises(CNIError):
        invoke.find("host-local", str(tmp_path))
    with pytest.raises(CNIError):
        invoke.find("../x", str(tmp_path))
