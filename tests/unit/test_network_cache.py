"""The CNI result cache: libcni's layout and format, round trips, lookups by pod."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from crio_py.network.cni_cache import CacheEntry, ResultCache


def entry(cid: str = "abc123", network: str = "net-1", result: dict | None = None) -> CacheEntry:
    return CacheEntry(
        network=network,
        container_id=cid,
        ifname="eth0",
        config=b'{"name": "net-1"}',
        netns=f"/run/netns/{cid}",
        cni_args=[("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")],
        capability_args={"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]},
        result=result,
    )


def test_round_trip_in_libcni_layout(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    e = entry(result={"cniVersion": "1.0.0", "ips": []})
    cache.write(e)
    path = tmp_path / "results" / "net-1-abc123-eth0"
    data = json.loads(path.read_text())
    assert data["kind"] == "cniCacheV1"
    assert base64.b64decode(data["config"]) == e.config
    assert data["cniArgs"] == [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p"]]
    assert cache.find("abc123", "eth0") == [e]
    assert cache.all() == [e]
    assert list((tmp_path / "results").iterdir()) == [path]


def test_pending_entry_has_no_result(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.write(entry())
    (found,) = cache.find("abc123", "eth0")
    assert found.result is None
    assert "result" not in json.loads((tmp_path / "results" / "net-1-abc123-eth0").read_text())


def test_find_is_exact_and_remove_is_idempotent(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    a, b = entry("abc123"), entry("xabc123")
    cache.write(a)
    cache.write(b)
    assert cache.find("abc123", "eth0") == [a]
    cache.remove(a)
    cache.remove(a)
    assert cache.all() == [b]


def test_missing_dir_and_garbage_are_tolerated(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    assert cache.all() == [] and cache.find("x", "eth0") == []
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "net-x-eth0").write_text("garbage")
    (tmp_path / "results" / "net-y-eth0").write_text('{"kind": "cniCacheV1"}')
    assert cache.all() == []
    assert cache.find("x", "eth0") == []
