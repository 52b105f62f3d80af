"""ImageManager against in-memory registries (httpx.MockTransport): names, mirrors, auth,
verification, concurrency, removal and GC, the offline pause image."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from crio_py import config as config_mod
from crio_py.errors import FailedPrecondition, Internal, InvalidArgument, NotFound, Unauthenticated, Unavailable
from crio_py.image import AuthConfig, ImageManager
from crio_py.registry import client as registry_client
from crio_py.state import RecordStore
from tests.support.oci_images import LAYER_TAR, LAYER_ZSTD, Layer, image_parts, tar_of_entries
from tests.support.registry import OCI_INDEX, OCI_MANIFEST, digest

# Layers hold 0:0 whiteout devices and trusted.* xattrs: only root unpacks them.
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root")

BASE = Layer(tar_of_entries({"etc/": None, "etc/os-release": b"base\n", "bin/": None, "bin/sh": b"#!"}))
TOP = Layer(tar_of_entries({"etc/os-release": b"top\n", "bin/.wh.sh": b""}), media_type=LAYER_ZSTD)


class FakeRegistry:
    """One registry host in memory; counts GETs by path; ``gate`` can hold a blob's answer."""

    def __init__(self, challenge: str = "", user: str = "", password: str = ""):
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.gets: Counter[str] = Counter()
        self.challenge = challenge  # "" (open), "basic" or a bearer realm URL
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.token = "tok-" + user
        self.gate: dict[str, tuple[threading.Event, threading.Event]] = {}  # digest -> (asked, release)
        self.serve: dict[str, bytes] = {}  # digest -> other bytes to answer with

    def image(self, repo: str, tag: str, layers: list[Layer], arch: str = "amd64") -> tuple[str, str, dict[str, Any]]:
        """Publish an image: (manifest digest, image id, manifest)."""
        manifest, blobs, image_id = image_parts(layers, arch=arch)
        self.blobs.update(blobs)
        return self.put_manifest(repo, tag, manifest), image_id, manifest

    def put_manifest(self, repo: str, tag: str, manifest: dict[str, Any]) -> str:
        raw = json.dumps(manifest).encode()
        media = manifest.get("mediaType", "application/json")
        self.manifests[(repo, tag)] = self.manifests[(repo, digest(raw))] = (media, raw)
        return digest(raw)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/token"):
            ok = request.headers.get("Authorization") == self.basic
            return httpx.Response(200, json={"token": self.token}) if ok else httpx.Response(401)
        if not self._authorised(request):
            kind = "Basic" if self.challenge == "basic" else "Bearer"
            realm = "test" if self.challenge == "basic" else self.challenge
            return httpx.Response(401, headers={"WWW-Authenticate": f'{kind} realm="{realm}",service="fake"'},
                                  json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
        self.gets[path] += 1
        repo, _, rest = path.removeprefix("/v2/").rpartition("/")
        repo, kind = repo.rsplit("/", 1)
        if kind == "manifests" and (repo, rest) in self.manifests:
            media, raw = self.manifests[(repo, rest)]
            return httpx.Response(200, content=raw, headers={"Content-Type": media})
        if kind == "blobs" and rest in self.blobs:
            if rest in self.gate:
                asked, release = self.gate[rest]
                asked.set()
                release.wait(10)
            return httpx.Response(200, content=self.serve.get(rest, self.blobs[rest]))
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]})

    def _authorised(self, request: httpx.Request) -> bool:
        if not self.challenge:
            return True
        if self.challenge == "basic":
            return request.headers.get("Authorization") == self.basic
        return request.headers.get("Authorization") == f"Bearer {self.token}"


class Hosts:
    """host -> FakeRegistry; any other host refuses connections."""

    def __init__(self) -> None:
        self.by_host: dict[str, FakeRegistry] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        fake = self.by_host.get(request.url.netloc.decode())
        if fake is None:
            raise httpx.ConnectError("connection refused", request=request)
        return fake.handle(request)


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> Hosts:
    routes = Hosts()
    monkeypatch.setattr(registry_client, "new_http_client",
                        lambda insecure=False: httpx.Client(transport=httpx.MockTransport(routes)))
    return routes


def make_manager(root: Path, **registries: Any) -> ImageManager:
    base = config_mod.load(None, None)
    cfg = dataclasses.replace(base, root=str(root), pause_image="127.0.0.1:1/pause:3.10",
                              registries=dataclasses.replace(base.registries, **registries))
    return ImageManager(lambda: cfg, RecordStore(root))


@pytest.fixture
def upstream(hosts: Hosts) -> FakeRegistry:
    hosts.by_host["reg.test"] = fake = FakeRegistry()
    return fake


def layer_dirs(manager: ImageManager) -> set[str]:
    return {p.name for p in manager.layers.root.iterdir()}


def test_pull_records_the_requested_names_and_unpacks_each_layer(upstream: FakeRegistry, tmp_path: Path) -> None:
    manifest_digest, image_id, _m = upstream.image("team/app", "v1", [BASE, TOP])
    manager = make_manager(tmp_path)
    image = manager.pull("reg.test/team/app:v1")
    assert image.id == image_id
    assert image.repo_tags == ["reg.test/team/app:v1"]
    assert image.repo_digests == [f"reg.test/team/app@{manifest_digest}"]
    assert manager.image_config(image_id)["rootfs"]["diff_ids"] == [digest(BASE.tar), digest(TOP.tar)]
    top, base = manager.lowerdirs(image_id)  # topmost first, as overlay wants them
    assert (top / "etc/os-release").read_text() == "top\n" and (base / "etc/os-release").read_text() == "base\n"
    assert os.stat(top / "bin/sh").st_rdev == 0 and (base / "bin/sh").read_bytes() == b"#!"
    for name in ("reg.test/team/app:v1", image_id, image_id[7:19], f"reg.test/team/app@{manifest_digest}"):
        assert manager.get(name).id == image_id
    # Pulled again: nothing downloaded twice, the same record.
    gets = sum(upstream.gets.values())
    assert manager.pull("reg.test/team/app:v1").id == image_id
    assert sum(upstream.gets.values()) == gets + 2  # the manifest and the config only
    # Another manager on the same root (a restart) has it all.
    again = make_manager(tmp_path)
    assert again.get("reg.test/team/app:v1").repo_digests == image.repo_digests
    used, _containers = again.fs_usage()
    assert used.used_bytes > 0 and used.inodes_used >= 6 and used.mountpoint == str(tmp_path / "layers")


def test_mirrors_serve_under_the_requested_name_then_the_upstream(hosts: Hosts, tmp_path: Path) -> None:
    hosts.by_host["mirror2.test"] = mirror = FakeRegistry()
    _d, mirrored_id, _m = mirror.image("team/app", "v1", [BASE])
    manager = make_manager(tmp_path, mirrors={"registry.example.test": ["http://mirror1.test", "mirror2.test"],
                                              "reg.test": ["http://down.test"]})
    image = manager.pull("registry.example.test/team/app:v1")
    assert image.id == mirrored_id
    assert image.repo_tags == ["registry.example.test/team/app:v1"]
    assert image.repo_digests[0].startswith("registry.example.test/team/app@sha256:")
    # Every mirror down: the upstream itself answers.
    hosts.by_host["reg.test"] = upstream = FakeRegistry()
    _d, upstream_id, _m = upstream.image("other/app", "v2", [TOP])
    assert manager.pull("reg.test/other/app:v2").id == upstream_id
    # A mirror's 404 (it lacks the image) falls through to the upstream too.
    hosts.by_host["down.test"] = FakeRegistry()
    assert manager.pull("reg.test/other/app:v2").id == upstream_id


def test_when_every_endpoint_fails_the_error_names_each_and_why(hosts: Hosts, tmp_path: Path) -> None:
    hosts.by_host["mirror.test"] = FakeRegistry()
    manager = make_manager(tmp_path, mirrors={"docker.io": ["http://mirror.test"], "reg.test": ["http://down.test"]})
    # The mirror lacks it, Docker Hub is unreachable (an offline node): NOT_FOUND, both named.
    with pytest.raises(NotFound) as err:
        manager.pull("docker.io/library/nosuch:1")
    message = err.value.message
    assert message.startswith("image docker.io/library/nosuch:1: manifest library/nosuch:1 on http://mirror.test: "
                              "HTTP 404 (MANIFEST_UNKNOWN: unknown); https://registry-1.docker.io: cannot connect")
    # Nobody answered at all: UNAVAILABLE, each endpoint named once.
    with pytest.raises(Unavailable) as err:
        manager.pull("reg.test/app:v1")
    assert err.value.message.count("http://down.test") == 1 and "https://reg.test: cannot connect" in err.value.message
    # An answer other than not-found (a refused login) wins over unreachable endpoints.
    hosts.by_host["down.test"] = FakeRegistry(challenge="basic")
    with pytest.raises(Unauthenticated, match=r"on http://down\.test: HTTP 401.*; https://reg\.test: cannot connect"):
        manager.pull("reg.test/app:v1")


def test_errors_say_what_went_wrong(upstream: FakeRegistry, tmp_path: Path) -> None:
    manager = make_manager(tmp_path)
    with pytest.raises(InvalidArgument):
        manager.pull("Not_Valid//ref")
    with pytest.raises(NotFound, match="HTTP 404"):
        manager.pull("reg.test/no/such:tag")
    with pytest.raises(Unavailable, match=r"nowhere\.test"):
        manager.pull("nowhere.test/app:v1")
    upstream.put_manifest("old/schema1", "v1", {"schemaVersion": 1, "name": "old/schema1", "fsLayers": []})
    with pytest.raises(InvalidArgument, match="unsupported manifest"):
        manager.pull("reg.test/old/schema1:v1")


def test_an_index_picks_amd64_and_arm64_only_is_not_found(upstream: FakeRegistry, tmp_path: Path) -> None:
    amd, amd_id, amd_manifest = upstream.image("multi/arch", "amd64", [BASE])
    arm, _arm_id, arm_manifest = upstream.image("multi/arch", "arm64", [TOP], arch="arm64")

    def entry(dgst: str, manifest: dict[str, Any], arch: str) -> dict[str, Any]:
        return {"mediaType": OCI_MANIFEST, "digest": dgst, "size": len(json.dumps(manifest).encode()),
                "platform": {"os": "linux", "architecture": arch}}

    upstream.put_manifest("multi/arch", "both", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        entry(arm, arm_manifest, "arm64"), entry(amd, amd_manifest, "amd64")]})
    upstream.put_manifest("multi/arch", "armonly", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        entry(arm, arm_manifest, "arm64")]})
    manager = make_manager(tmp_path)
    assert manager.pull("reg.test/multi/arch:both").id == amd_id
    with pytest.raises(NotFound, match="the index has: linux/arm64"):
        manager.pull("reg.test/multi/arch:armonly")
    with pytest.raises(NotFound, match="is for linux/arm64"):
        manager.pull("reg.test/multi/arch:arm64")


@pytest.mark.parametrize(
    ("flip_a_byte", "size_off_by", "error"),
    [(True, 0, "digest mismatch"), (False, -1, "larger than its declared"), (False, +1, "expected")],
    ids=["other-content", "longer-than-declared", "shorter-than-declared"],
)
def test_a_blob_that_is_not_what_the_manifest_says_fails_and_keeps_nothing(
    upstream: FakeRegistry, tmp_path: Path, flip_a_byte: bool, size_off_by: int, error: str
) -> None:
    layer = Layer(tar_of_entries({"good": b"y" * 1000}))
    manifest, blobs, _image_id = image_parts([BASE, layer])
    upstream.blobs.update(blobs)
    desc = manifest["layers"][1]
    if flip_a_byte:
        corrupt = bytearray(blobs[desc["digest"]])
        corrupt[len(corrupt) // 2] ^= 0xFF
        upstream.serve[desc["digest"]] = bytes(corrupt)
    desc["size"] += size_off_by
    upstream.put_manifest("bad/blob", "v1", manifest)
    manager = make_manager(tmp_path)
    with pytest.raises(Internal, match=error):
        manager.pull("reg.test/bad/blob:v1")
    assert manager.list() == []
    # Only the good base layer may stay (its own download finished); the bad one left nothing.
    assert layer_dirs(manager) <= {digest(BASE.tar).removeprefix("sha256:")}


def test_a_layer_whose_content_is_not_its_diff_id_fails(upstream: FakeRegistry, tmp_path: Path) -> None:
    manifest, blobs, _id = image_parts([Layer(tar_of_entries({"a": b"a"}), media_type=LAYER_TAR)])
    config = json.loads(blobs[manifest["config"]["digest"]])
    config["rootfs"]["diff_ids"] = [digest(b"something else")]
    raw = json.dumps(config).encode()
    upstream.blobs.update(blobs)
    upstream.blobs[digest(raw)] = raw
    manifest["config"] = {**manifest["config"], "digest": digest(raw), "size": len(raw)}
    upstream.put_manifest("bad/diffid", "v1", manifest)
    manager = make_manager(tmp_path)
    with pytest.raises(Internal, match="the image config says"):
        manager.pull("reg.test/bad/diffid:v1")
    assert layer_dirs(manager) == set()


def test_a_download_that_breaks_off_is_unavailable(upstream: FakeRegistry, tmp_path: Path) -> None:
    class Broken(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield BASE.blob[:100]
            raise httpx.ReadError("connection reset by peer")

    _d, _id, manifest = upstream.image("broken/app", "v1", [BASE])
    layer_digest = manifest["layers"][0]["digest"]
    handle = upstream.handle
    upstream.handle = lambda request: (  # type: ignore[method-assign]
        httpx.Response(200, stream=Broken()) if request.url.path.endswith(layer_digest) else handle(request))
    manager = make_manager(tmp_path)
    with pytest.raises(Unavailable, match="broke off"):
        manager.pull("reg.test/broken/app:v1")
    assert layer_dirs(manager) == set()


@pytest.mark.parametrize("challenge", ["basic", "http://auth.test/token"])
def test_credentials_answer_basic_and_bearer_challenges(hosts: Hosts, tmp_path: Path, challenge: str) -> None:
    hosts.by_host["reg.test"] = hosts.by_host["auth.test"] = secured = FakeRegistry(challenge, "alice", "s3cret")
    _d, image_id, _m = secured.image("private/app", "v1", [BASE])
    manager = make_manager(tmp_path)
    with pytest.raises(Unauthenticated):
        manager.pull("reg.test/private/app:v1")
    with pytest.raises(Unauthenticated):
        manager.pull("reg.test/private/app:v1", AuthConfig(username="alice", password="wrong"))
    assert manager.pull("reg.test/private/app:v1", AuthConfig(username="alice", password="s3cret")).id == image_id
    encoded = base64.b64encode(b"alice:s3cret").decode()
    assert manager.pull("reg.test/private/app:v1", AuthConfig(auth=encoded)).id == image_id


def test_credentials_from_the_auth_file_and_garbled_ones(hosts: Hosts, tmp_path: Path) -> None:
    hosts.by_host["reg.test"] = secured = FakeRegistry("basic", "bob", "pw")
    _d, image_id, _m = secured.image("private/app", "v1", [BASE])
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {"reg.test": {"auth": base64.b64encode(b"bob:pw").decode()}}}))
    manager = make_manager(tmp_path / "root", auth_file=str(auth_file))
    assert manager.pull("reg.test/private/app:v1").id == image_id
    with pytest.raises(InvalidArgument, match="not base64"):
        manager.pull("reg.test/private/app:v1", AuthConfig(auth="%%%not-base64"))


def test_concurrent_pulls_download_each_shared_layer_once(upstream: FakeRegistry, tmp_path: Path) -> None:
    _d, first_id, manifest = upstream.image("a/one", "v1", [BASE, TOP])
    _d, second_id, second = upstream.image("a/two", "v1", [BASE, Layer(tar_of_entries({"two": b"2"}))])
    manager = make_manager(tmp_path)
    refs = ["reg.test/a/one:v1", "reg.test/a/two:v1"] * 4
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda ref: manager.pull(ref).id, refs))
    assert ids == [first_id, second_id] * 4
    layer_gets = Counter({path.rsplit("/", 1)[1]: n for path, n in upstream.gets.items() if "/blobs/" in path})
    # Each layer is fetched once, the base once for both repositories.
    for desc in manifest["layers"] + second["layers"]:
        assert layer_gets[desc["digest"]] == 1
    assert len(layer_dirs(manager)) == 3


def test_remove_untags_then_deletes_refuses_in_use_and_collects_layers(
    upstream: FakeRegistry, tmp_path: Path
) -> None:
    _d, image_id, manifest = upstream.image("rm/app", "v1", [BASE, TOP])
    upstream.put_manifest("rm/app", "v2", manifest)
    _d, _other_id, _m = upstream.image("rm/other", "v1", [BASE])
    manager = make_manager(tmp_path)
    manager.pull("reg.test/rm/app:v1")
    manager.pull("reg.test/rm/app:v2")
    manager.pull("reg.test/rm/other:v1")
    assert sorted(manager.get(image_id).repo_tags) == ["reg.test/rm/app:v1", "reg.test/rm/app:v2"]
    manager.remove("reg.test/rm/app:v2")
    assert manager.get(image_id).repo_tags == ["reg.test/rm/app:v1"]
    manager.set_in_use_check(lambda used: used == image_id)
    with pytest.raises(FailedPrecondition, match="used by a container"):
        manager.remove("reg.test/rm/app:v1")
    manager.set_in_use_check(lambda _id: False)
    manager.remove(image_id[7:19])  # by short id, as crictl prints it
    assert manager.find(image_id) is None and not (tmp_path / "images" / f"{image_id[7:]}.json").exists()
    # The top layer went; the base stays for the other image.
    assert layer_dirs(manager) == {digest(BASE.tar).removeprefix("sha256:")}
    manager.remove("reg.test/rm/other:v1")
    assert layer_dirs(manager) == set() and manager.list() == []
    manager.remove("reg.test/rm/other:v1")  # unknown: nothing to do, no error
    assert make_manager(tmp_path).list() == []


def test_gc_keeps_the_layers_of_a_pull_in_flight(upstream: FakeRegistry, tmp_path: Path) -> None:
    _d, _first, _m = upstream.image("gc/first", "v1", [BASE])
    extra = Layer(tar_of_entries({"late": b"1"}))
    _d, second_id, manifest = upstream.image("gc/second", "v1", [BASE, extra])
    asked, release = threading.Event(), threading.Event()
    upstream.gate[manifest["layers"][1]["digest"]] = (asked, release)
    manager = make_manager(tmp_path)
    manager.pull("reg.test/gc/first:v1")
    with ThreadPoolExecutor(1) as pool:
        pulling = pool.submit(manager.pull, "reg.test/gc/second:v1")
        assert asked.wait(10)  # the second pull has the base layer and waits for its top one
        manager.remove("reg.test/gc/first:v1")  # no record wants the base now, but the pull does
        release.set()
        assert pulling.result(10).id == second_id
    assert all(d.is_dir() for d in manager.lowerdirs(second_id))


def test_the_pause_image_is_built_offline_and_pulls_then_use_it(tmp_path: Path, hosts: Hosts) -> None:
    manager = make_manager(tmp_path)
    pause = manager.ensure_pause_image()  # 127.0.0.1:1 refuses: built from catatonit
    assert pause.pinned and pause.repo_tags == ["127.0.0.1:1/pause:3.10"]
    config = manager.image_config(pause.id)
    assert config["config"]["Entrypoint"] == ["/pause", "-P"]
    (diff,) = manager.lowerdirs(pause.id)
    assert (diff / "pause").read_bytes() == Path("/usr/bin/catatonit").read_bytes()
    assert manager.pull("127.0.0.1:1/pause:3.10").id == pause.id  # registry down: the local one
    assert make_manager(tmp_path).ensure_pause_image().id == pause.id

