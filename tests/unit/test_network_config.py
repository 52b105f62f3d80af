"""CNI config discovery: file order, .conf wrapping, invalid files, versions, default_network, watching."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crio_py.config import CNIConfig
from crio_py.network import CNIManager
from crio_py.network.cni_config import (
    ConfigInvalid,
    ConfigWatcher,
    discover,
    parse_bytes,
    version_at_least,
)

BRIDGE = {"type": "bridge", "bridge": "cni0"}


def write(path: Path, data: object) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def conflist(name: str, version: str = "1.0.0", plugins: list[dict] | None = None) -> dict:
    return {"cniVersion": version, "name": name, "plugins": plugins or [BRIDGE]}


def test_first_file_in_lexical_order_wins(tmp_path: Path) -> None:
    write(tmp_path / "20-b.conflist", conflist("b"))
    write(tmp_path / "10-a.conflist", conflist("a"))
    write(tmp_path / "05-ignored.yaml", conflist("yaml"))
    found = discover(tmp_path)
    assert found.network is not None
    assert found.network.name == "a"
    assert found.network.source == str(tmp_path / "10-a.conflist")


def test_conf_is_wrapped_into_a_single_plugin_list(tmp_path: Path) -> None:
    write(tmp_path / "10-single.conf", {"cniVersion": "0.4.0", "name": "single", **BRIDGE})
    net = discover(tmp_path).network
    assert net is not None
    assert net.cni_version == "0.4.0"
    assert len(net.plugins) == 1
    assert net.plugins[0]["type"] == "bridge"


def test_json_may_hold_either_form(tmp_path: Path) -> None:
    write(tmp_path / "a.json", {"cniVersion": "1.0.0", "name": "one", **BRIDGE})
    assert discover(tmp_path).network.plugins[0]["bridge"] == "cni0"  # type: ignore[union-attr]
    (tmp_path / "a.json").unlink()
    write(tmp_path / "a.json", conflist("list", plugins=[BRIDGE, {"type": "portmap"}]))
    assert len(discover(tmp_path).network.plugins) == 2  # type: ignore[union-attr]


def test_invalid_files_are_skipped_and_named(tmp_path: Path) -> None:
    write(tmp_path / "00-broken.conflist", "{not json")
    write(tmp_path / "01-old.conflist", conflist("old", version="0.2.0"))
    write(tmp_path / "02-good.conflist", conflist("good"))
    assert discover(tmp_path).network.name == "good"  # type: ignore[union-attr]
    (tmp_path / "02-good.conflist").unlink()
    found = discover(tmp_path)
    assert found.network is None
    assert "00-broken.conflist: invalid JSON" in found.problem
    assert "01-old.conflist: cniVersion '0.2.0' is not supported" in found.problem
    assert str(tmp_path) in found.problem


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"name": "x", "plugins": [BRIDGE]}, "cniVersion is missing"),
        ({"cniVersion": "9.9.9", "name": "x", "plugins": [BRIDGE]}, "not supported"),
        ({"cniVersion": "1.0.0", "name": "-bad", "plugins": [BRIDGE]}, "network name"),
        ({"cniVersion": "1.0.0", "name": "x", "plugins": []}, "non-empty"),
        ({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "../evil"}]}, "type"),
        ({"cniVersion": "1.0.0", "name": "x", "plugins": [BRIDGE], "disableCheck": "yes"}, "disableCheck"),
        ([1, 2], "JSON object"),
    ],
)
def test_invalid_configs(data: object, problem: str) -> None:
    with pytest.raises(ConfigInvalid, match=problem):
        parse_bytes(json.dumps(data).encode())


def test_cni_versions_picks_the_highest_supported() -> None:
    data = {"cniVersions": ["0.4.0", "1.0.0", "2.0.0"], "name": "x", "plugins": [BRIDGE]}
    net = parse_bytes(json.dumps(data).encode())
    assert net.cni_version == "1.0.0"
    assert net.supports_check and not net.supports_gc


def test_version_capabilities() -> None:
    assert not parse_bytes(json.dumps(conflist("x", "0.3.1")).encode()).supports_check
    net = parse_bytes(json.dumps(conflist("x", "1.1.0")).encode())
    assert net.supports_check and net.supports_gc and net.supports_status
    assert version_at_least("1.1.0", "0.4.0") and not version_at_least("0.3.1", "0.4.0")


def test_default_network_selects_by_name(tmp_path: Path) -> None:
    write(tmp_path / "10-a.conflist", conflist("a"))
    write(tmp_path / "20-b.conflist", conflist("b"))
    assert discover(tmp_path, "b").network.name == "b"  # type: ignore[union-attr]
    found = discover(tmp_path, "c")
    assert found.network is None and "no CNI network named 'c'" in found.problem


def test_missing_dir_is_not_ready_naming_it(tmp_path: Path) -> None:
    status = CNIManager(CNIConfig(conf_dir=str(tmp_path / "nope"), cache_dir=str(tmp_path / "c"))).status()
    assert not status.ready
    assert status.reason == "NetworkPluginNotReady"
    assert str(tmp_path / "nope") in status.message


def test_watcher_picks_up_new_and_changed_files(tmp_path: Path) -> None:
    watcher = ConfigWatcher(tmp_path)
    assert watcher.current().network is None
    write(tmp_path / "10-a.conflist", conflist("a"))
    assert watcher.current().network.name == "a"  # type: ignore[union-attr]
    path = write(tmp_path / "10-a.conflist", conflist("renamed"))
    # Same size and a coarse clock could hide an in-place edit; move the mtime to be sure.
    os.utime(path, ns=(1, 1))
    assert watcher.current().network.name == "renamed"  # type: ignore[union-attr]
    path.unlink()
    assert watcher.current().network is None


def test_status_names_missing_plugin(tmp_path: Path) -> None:
    write(tmp_path / "10-a.conflist", conflist("a", plugins=[{"type": "no-such-plugin"}]))
    cfg = CNIConfig(conf_dir=str(tmp_path), plugin_dirs=[str(tmp_path)], cache_dir=str(tmp_path))
    status = CNIManager(cfg).status()
    assert not status.ready
    assert "'no-such-plugin'" in status.message and "not found" in status.message
