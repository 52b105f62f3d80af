"""CNI results: validation per version, conversion to the common form and back, the pod's IPs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from crio_py.network.cni_result import ResultInvalid, normalize, pod_ips, render

IFACES = [{"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"}, {"name": "eth0", "sandbox": "/run/netns/x"}]


def old_result(version: str) -> dict:
    return {
        "cniVersion": version,
        "interfaces": IFACES,
        "ips": [
            {"version": "6", "address": "fd00::5/64", "interface": 1},
            {"version": "4", "address": "10.235.1.5/24", "gateway": "10.235.1.1", "interface": 1},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.235.1.1"}],
        "dns": {"nameservers": ["10.0.0.10"]},
    }


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_old_results_lose_the_per_address_version(version: str) -> None:
    common = normalize(old_result(version))
    assert all("version" not in ip for ip in common["ips"])
    assert common["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.235.1.1"}]
    assert pod_ips(common) == ["10.235.1.5", "fd00::5"]


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_new_results(version: str) -> None:
    data = {
        "cniVersion": version,
        "interfaces": IFACES,
        "ips": [{"address": "10.235.1.5/24", "interface": 1}],
        "routes": [{"dst": "10.0.0.0/8", "mtu": 1400}],
    }
    common = normalize(data)
    assert pod_ips(common) == ["10.235.1.5"]
    assert common["cniVersion"] == version


def test_render_for_old_versions_adds_version_and_drops_new_fields() -> None:
    common = normalize(
        {
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "sandbox": "/x", "mtu": 1500}],
            "ips": [{"address": "fd00::5/64", "interface": 0}],
            "routes": [{"dst": "::/0", "gw": "fd00::1", "table": 5}],
        }
    )
    old = render(common, "0.4.0")
    assert old["cniVersion"] == "0.4.0"
    assert old["ips"] == [{"address": "fd00::5/64", "interface": 0, "version": "6"}]
    assert old["routes"] == [{"dst": "::/0", "gw": "fd00::1"}]
    assert old["interfaces"] == [{"name": "eth0", "sandbox": "/x"}]
    assert render(common, "1.1.0")["routes"][0]["table"] == 5
    assert normalize(old) == {**common, "cniVersion": "0.4.0", "interfaces": old["interfaces"], "routes": old["routes"]}


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda r: r.update(cniVersion="0.2.0"), "not supported"),
        (lambda r: r["ips"].append({"version": "4", "address": "10.1.1.1"}), "CIDR"),
        (lambda r: r["ips"].append({"address": "10.1.1.1/24", "version": "4", "interface": 7}), "index"),
        (lambda r: r["ips"].append({"address": "10.1.1.1/24", "version": "6"}), "does not match"),
        (lambda r: r["ips"].append({"address": "10.1.1.1/24"}), "must be \"4\" or \"6\""),
        (lambda r: r["ips"].append({"address": "10.1.1.1/24", "version": "4", "gateway": "nope"}), "gateway"),
        (lambda r: r["routes"].append({"gw": "10.1.1.1"}), "routes"),
        (lambda r: r["interfaces"].append({"mac": "x"}), "name"),
        (lambda r: r.update(dns=[]), "dns"),
        (lambda r: r.update(ips={}), "ips must be a list"),
    ],
)
def test_invalid_results(mutate: Callable[[dict], object], problem: str) -> None:
    data = old_result("0.4.0")
    data["ips"] = list(data["ips"])
    data["routes"] = list(data["routes"])
    data["interfaces"] = list(data["interfaces"])
    mutate(data)
    with pytest.raises(ResultInvalid, match=problem):
        normalize(data)


def test_pod_ips_skip_host_side_interfaces_and_put_ipv4_first() -> None:
    common = normalize(
        {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "veth1"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [
                {"address": "10.9.9.1/24", "interface": 0},
                {"address": "fd00::2/64", "interface": 1},
                {"address": "10.235.2.2/24", "interface": 1},
                {"address": "10.235.3.3/24"},
            ],
        }
    )
    assert pod_ips(common) == ["10.235.2.2", "fd00::2", "10.235.3.3"]


def test_empty_result_has_no_ips() -> None:
    assert pod_ips(normalize({"cniVersion": "1.0.0"})) == []
