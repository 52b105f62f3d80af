"""ImageManager when things go wrong around it: a crash between layers and record, a full disk,
mirrors with credentials of their own, manifests that are not JSON."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crio_py.errors import Internal, NotFound
from crio_py.image import AuthConfig
from crio_py.registry import client as registry_client
from crio_py.registry.reference import parse
from crio_py.storage.mounts import mount_tmpfs, unmount
from tests.support.oci_images import Layer, image_parts, tar_of_entries
from tests.support.registry import digest
from tests.unit.test_image_manager import BASE, FakeRegistry, Hosts, make_manager

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers and mounting need root")


@pytest.fixture
def routes(monkeypatch: pytest.MonkeyPatch) -> Hosts:
    hosts = Hosts()
    monkeypatch.setattr(registry_client, "new_http_client",
                        lambda insecure=False: httpx.Client(transport=httpx.MockTransport(hosts)))
    return hosts


@pytest.mark.skipif(not Path("/usr/bin/catatonit").exists(), reason="the local pause image is built from catatonit")
def test_a_restart_drops_what_a_crash_left_between_layers_and_record(tmp_path: Path) -> None:
    manager = make_manager(tmp_path)
    pause = manager.ensure_pause_image()  # 127.0.0.1:1 refuses: built locally, pinned
    assert pause.pinned and pause.repo_tags == ["127.0.0.1:1/pause:3.10"]
    # As if the daemon died after unpacking a layer and writing a config, before the record.
    orphan_tar = tar_of_entries({"orphan": b"1"})
    orphan = digest(orphan_tar)
    manager.layers.add_tar_bytes(orphan, orphan, orphan_tar)
    configs = tmp_path / "images"
    (configs / ("f" * 64 + ".json")).write_text("{}")
    (configs / ".half-written.json.1.2.tmp").write_text("{")
    again = make_manager(tmp_path)
    assert again.get(pause.id).pinned and not again.layers.has(orphan)
    assert all(path.exists() for path in again.lowerdirs(pause.id))
    assert sorted(p.name for p in configs.iterdir()) == [pause.id.removeprefix("sha256:") + ".json"]
    assert again.image_config(pause.id)["config"]["Entrypoint"] == ["/pause", "-P"]
    assert again.get(pause.id).stop_signal == ""


@pytest.fixture
def tiny_root(tmp_path: Path) -> Iterator[Path]:
    """A store root on a 512 KiB tmpfs: a bigger layer fills it."""
    root = tmp_path / "root"
    mount_tmpfs(root, 512 * 1024, mode="0755")
    try:
        yield root
    finally:
        unmount(root)


def test_a_full_disk_fails_the_pull_as_internal_and_keeps_nothing(routes: Hosts, tiny_root: Path) -> None:
    routes.by_host["reg.test"] = upstream = FakeRegistry()
    upstream.image("big/app", "v1", [BASE, Layer(tar_of_entries({"big": os.urandom(1 << 20)}))])
    manager = make_manager(tiny_root)
    with pytest.raises(Internal, match="No space left on device"):
        manager.pull("reg.test/big/app:v1")
    assert manager.list() == []
    assert sorted(os.listdir(tiny_root / "layers")) == []
    if Path("/usr/bin/catatonit").exists():
        with pytest.raises(Internal, match="No space left on device"):
            manager.ensure_pause_image()  # catatonit alone is bigger than the disk
        assert sorted(os.listdir(tiny_root / "layers")) == []


def test_a_mirror_uses_its_own_auth_file_entry_and_plain_http_without_a_port(routes: Hosts, tmp_path: Path) -> None:
    routes.by_host["mirror.test:5000"] = mirror = FakeRegistry("basic", "mirror-user", "mirror-pw")
    _d, image_id, _m = mirror.image("library/busybox", "1.36", [BASE])
    auth_file = tmp_path / "auth.json"
    entry = {"auth": base64.b64encode(b"mirror-user:mirror-pw").decode()}
    auth_file.write_text(json.dumps({"auths": {"mirror.test:5000": entry}}))
    manager = make_manager(tmp_path / "root", auth_file=str(auth_file), mirrors={"docker.io": ["mirror.test:5000"]},
                           insecure=["mirror.test"])
    image = manager.pull("busybox:1.36")
    assert image.id == image_id and image.repo_tags == ["docker.io/library/busybox:1.36"]
    # "mirror.test" listed without its port still makes the mirror plain HTTP.
    endpoints = registry_client.endpoints_for(parse("busybox"), {"docker.io": ["mirror.test:5000"]}, ["mirror.test"])
    assert endpoints[0].base_url == "http://mirror.test:5000"


def test_a_manifest_that_is_not_json_is_a_readable_error(routes: Hosts, tmp_path: Path) -> None:
    routes.by_host["reg.test"] = upstream = FakeRegistry()
    upstream.manifests[("team/app", "v1")] = ("application/vnd.oci.image.manifest.v1+json", b"<html>oops</html>")
    upstream.manifests[("team/app", "v2")] = ("text/html", b"<html>oops</html>")
    manager = make_manager(tmp_path)
    for tag in ("v1", "v2"):
        with pytest.raises(Internal, match="is not a JSON object"):
            manager.pull(f"reg.test/team/app:{tag}")


def test_layers_a_failed_mirror_unpacked_serve_the_upstream_then_a_failed_pull_keeps_none(
    routes: Hosts, tmp_path: Path
) -> None:
    top = Layer(tar_of_entries({"top": b"1"}))
    routes.by_host["mirror.test"] = mirror = FakeRegistry()
    routes.by_host["reg.test"] = upstream = FakeRegistry()
    _d, image_id, manifest = mirror.image("team/app", "v1", [BASE, top])
    upstream.image("team/app", "v1", [BASE, top])
    base_blob, top_blob = (desc["digest"] for desc in manifest["layers"])
    del mirror.blobs[top_blob]  # a pull-through cache missing a blob
    manager = make_manager(tmp_path, mirrors={"reg.test": ["mirror.test"]})
    assert manager.pull("reg.test/team/app:v1").id == image_id
    upstream_blobs = {path.rsplit("/", 1)[1] for path in upstream.gets if "/blobs/" in path}
    assert base_blob not in upstream_blobs and top_blob in upstream_blobs
    # The same failure with no upstream copy either: nothing of the pull stays.
    manager.remove(image_id)
    del upstream.blobs[top_blob]
    with pytest.raises(NotFound):
        manager.pull("reg.test/team/app:v1")
    assert os.listdir(manager.layers.root) == []


def test_the_pause_image_pulled_as_an_ordinary_image_is_pinned_when_it_becomes_the_pause_image(
    routes: Hosts, tmp_path: Path
) -> None:
    routes.by_host["127.0.0.1:1"] = upstream = FakeRegistry()  # the pause image's registry, reachable this time
    _d, image_id, _m = upstream.image("pause", "3.10", [BASE])
    manager = make_manager(tmp_path)
    assert not manager.pull("127.0.0.1:1/pause:3.10").pinned
    assert manager.ensure_pause_image().id == image_id
    assert make_manager(tmp_path).get(image_id).pinned


def test_lowerdirs_of_an_image_whose_layer_was_lost_say_so(routes: Hosts, tmp_path: Path) -> None:
    routes.by_host["reg.test"] = upstream = FakeRegistry()
    _d, image_id, _m = upstream.image("team/app", "v1", [BASE, Layer(tar_of_entries({"top": b"1"}))])
    manager = make_manager(tmp_path)
    image = manager.pull("reg.test/team/app:v1")
    assert [p.parent.name for p in manager.lowerdirs(image_id)] == [c[7:] for c in reversed(image.chain_ids)]
    manager.layers.remove(image.chain_ids[0])
    with pytest.raises(Internal, match="missing from the store"):
        manager.lowerdirs(image_id)


def test_the_record_keeps_user_and_stop_signal_of_the_config(routes: Hosts, tmp_path: Path) -> None:
    routes.by_host["reg.test"] = upstream = FakeRegistry()
    manifest, blobs, image_id = image_parts([BASE], {"User": "app:staff", "StopSignal": "SIGQUIT"})
    upstream.blobs.update(blobs)
    upstream.put_manifest("team/app", "v1", manifest)
    image = make_manager(tmp_path).pull("reg.test/team/app:v1")
    assert (image.id, image.uid, image.username, image.stop_signal) == (image_id, None, "app", "SIGQUIT")


def test_a_registry_token_from_the_request_answers_a_bearer_challenge(routes: Hosts, tmp_path: Path) -> None:
    routes.by_host["reg.test"] = secured = FakeRegistry("http://auth.test/token", "bob", "pw")
    _d, image_id, _m = secured.image("private/app", "v1", [BASE])
    manager = make_manager(tmp_path)
    assert manager.pull("reg.test/private/app:v1", AuthConfig(registry_token=secured.token)).id == image_id
