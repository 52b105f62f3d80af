"""Images against the real docker-registry, beyond test_image_pulls: blob GETs counted at a
token front, a pull killed half way, upstream fallback, listings, and an overlay of
ImageManager.lowerdirs() with deleted and opaque directories."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from crio_py import config as config_mod
from crio_py.cri import api_pb2 as pb
from crio_py.image import ImageManager
from crio_py.server.image_service import ImageService
from crio_py.state import RecordStore
from crio_py.storage.mounts import unmount
from crio_py.storage.overlay import mount_overlay
from tests.e2e.test_image_pulls import layer_dirs, pull, pull_error, status
from tests.support.cri import unique
from tests.support.daemon import DaemonHandle
from tests.support.oci_images import Layer, image_parts, push_image, skopeo_push, tar_of_entries, umoci_layout
from tests.support.registry import OCI_MANIFEST, Registry, TokenFront, digest

pytestmark = pytest.mark.e2e
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def random_layer(name: str, size: int) -> Layer:
    """A layer of incompressible data, big enough for a download to take a while."""
    return Layer(tar_of_entries({name: os.urandom(size)}))


def test_token_front_wrong_password_then_shared_layers_are_fetched_once(
    daemon_handle: DaemonHandle, registry: Registry
) -> None:
    base = random_layer("base.bin", 4 << 20)
    tops = [random_layer(f"top{i}.bin", 1 << 20) for i in range(3)]
    refs = []
    ids = set()
    for i, top in enumerate(tops):  # three repositories, one base layer
        repo = unique(f"shared/app{i}")
        _d, image_id = push_image(registry, repo, "v1", [base, top])
        ids.add(image_id)
        refs.append(repo)
    front = TokenFront(registry, "bob", "hunter2")
    try:
        daemon_handle.config["registries"]["insecure"].append(front.host)
        daemon_handle.start()
        refs = [f"{front.host}/{repo}:v1" for repo in refs]
        wrong = pull_error(daemon_handle, refs[0], pb.AuthConfig(username="bob", password="nope"))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED and "token service" in wrong.details()
        auth = pb.AuthConfig(username="bob", password="hunter2")
        with ThreadPoolExecutor(6) as pool:
            assert set(pool.map(lambda ref: pull(daemon_handle, ref, auth), refs * 2)) == ids
        fetched = {layer: sum(n for path, n in front.gets.items() if path.endswith(digest(layer.blob)))
                   for layer in [base, *tops]}
        assert list(fetched.values()) == [1, 1, 1, 1], fetched
    finally:
        front.stop()


def test_a_pull_killed_half_way_leaves_nothing_and_the_restart_keeps_the_rest(
    daemon_handle: DaemonHandle, registry: Registry
) -> None:
    kept_repo, held_repo = unique("crash/kept"), unique("crash/held")
    _d, kept_id = push_image(registry, kept_repo, "v1", [Layer(tar_of_entries({"kept": b"1"}))])
    held = random_layer("held.bin", 8 << 20)
    _d, held_id = push_image(registry, held_repo, "v1", [held])
    front = TokenFront(registry, "bob", "hunter2")
    auth = pb.AuthConfig(username="bob", password="hunter2")
    try:
        daemon_handle.config["registries"]["insecure"].append(front.host)
        daemon_handle.start()
        assert pull(daemon_handle, f"{front.host}/{kept_repo}:v1", auth) == kept_id
        front.hold_blob = digest(held.blob)
        with ThreadPoolExecutor(1) as pool:
            pulling = pool.submit(pull, daemon_handle, f"{front.host}/{held_repo}:v1", auth)
            assert front.holding.wait(30)
            layers = Path(daemon_handle.config["root"]) / "layers"
            assert list(layers.glob(".tmp-*"))  # the layer is being unpacked as it arrives
            daemon_handle.kill()
            front.release.set()
            with pytest.raises(grpc.RpcError):
                pulling.result(60)
        daemon_handle.start()
        assert not list(layers.glob(".tmp-*"))
        assert status(daemon_handle, f"{front.host}/{held_repo}:v1").id == ""
        assert status(daemon_handle, f"{front.host}/{kept_repo}:v1").id == kept_id
        assert len(layer_dirs(daemon_handle)) == 1
        front.hold_blob = ""
        assert pull(daemon_handle, f"{front.host}/{held_repo}:v1", auth) == held_id
    finally:
        front.stop()


def test_every_mirror_down_the_upstream_serves(daemon_handle: DaemonHandle, registry: Registry) -> None:
    repo = unique("fallback/app")
    _d, image_id = push_image(registry, repo, "v1", [Layer(tar_of_entries({"up": b"stream"}))])
    daemon_handle.config["registries"]["mirrors"] = {registry.host: ["http://127.0.0.1:1", "127.0.0.1:2"]}
    daemon_handle.start()
    ref = f"{registry.host}/{repo}:v1"
    assert pull(daemon_handle, ref) == image_id
    assert status(daemon_handle, ref).repo_tags == [ref]


def test_a_layer_shorter_than_its_descriptor_fails_and_keeps_nothing(daemon: DaemonHandle, registry: Registry) -> None:
    repo = unique("short/blob")
    manifest, blobs, _id = image_parts([Layer(tar_of_entries({"a": b"a" * 5000}))])
    for blob in blobs.values():
        registry.push_blob(repo, blob)
    manifest["layers"][0]["size"] += 10
    registry.push_manifest(repo, "v1", manifest)
    before = layer_dirs(daemon)
    err = pull_error(daemon, f"{registry.host}/{repo}:v1")
    assert err.code() == grpc.StatusCode.INTERNAL and "expected" in err.details()
    assert layer_dirs(daemon) == before
    assert status(daemon, f"{registry.host}/{repo}:v1").id == ""


def test_list_filter_stream_and_fs_info(daemon: DaemonHandle, busybox: str) -> None:
    image_id = status(daemon, busybox).id
    listed = daemon.images.ListImages(pb.ListImagesRequest(filter=pb.ImageFilter(image=pb.ImageSpec(image=busybox))))
    assert [i.id for i in listed.images] == [image_id]
    assert not daemon.images.ListImages(
        pb.ListImagesRequest(filter=pb.ImageFilter(image=pb.ImageSpec(image="127.0.0.1:1/nothing:here")))).images
    streamed = [i.id for chunk in daemon.images.StreamImages(pb.StreamImagesRequest()) for i in chunk.images]
    assert image_id in streamed
    assert sorted(streamed) == sorted(i.id for i in daemon.images.ListImages(pb.ListImagesRequest()).images)
    fs = daemon.images.ImageFsInfo(pb.ImageFsInfoRequest())
    (images,) = fs.image_filesystems
    assert images.used_bytes.value > 0 and images.inodes_used.value > 0
    assert images.fs_id.mountpoint == str(Path(daemon.config["root"]) / "layers")
    assert fs.container_filesystems[0].fs_id.mountpoint == str(Path(daemon.config["root"]) / "containers")
    # An id in the spec, as kubelet sends: the same image.
    assert daemon.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image_id))).image.id == image_id


def test_an_overlay_of_lowerdirs_shows_deleted_and_opaque_directories(registry: Registry, tmp_path: Path) -> None:
    repo = unique("whiteouts/dirs")
    bottom = Layer(tar_of_entries({"gone/": None, "gone/x": b"x", "again/": None, "again/old": b"old",
                                   "opaque/": None, "opaque/old": b"old", "kept": b"1"}))
    middle = Layer(tar_of_entries({".wh.gone": b"", ".wh.again": b"", "opaque/": None,
                                   "opaque/.wh..wh..opq": b"", "opaque/new": b"new"}))
    top = Layer(tar_of_entries({"again/": None, "again/new": b"new"}))
    _d, image_id = push_image(registry, repo, "v1", [bottom, middle, top])
    base = config_mod.load(None, None)
    cfg = dataclasses.replace(base, root=str(tmp_path / "root"),
                              registries=dataclasses.replace(base.registries, insecure=[registry.host]))
    manager = ImageManager(lambda: cfg, RecordStore(tmp_path / "root"))
    assert manager.pull(f"{registry.host}/{repo}:v1").id == image_id
    lowers = manager.lowerdirs(image_id)
    # In the store, the middle layer holds overlay whiteouts: 0:0 character devices, an opaque xattr.
    for name in ("gone", "again"):
        st = os.lstat(lowers[1] / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(lowers[1] / "opaque", "trusted.overlay.opaque") == b"y"
    rootfs = tmp_path / "rootfs"
    mount_overlay(lowers, tmp_path / "upper", tmp_path / "work", rootfs)
    try:
        assert sorted(os.listdir(rootfs)) == ["again", "kept", "opaque"]
        assert sorted(os.listdir(rootfs / "again")) == ["new"]  # recreated above its whiteout: nothing old
        assert sorted(os.listdir(rootfs / "opaque")) == ["new"]
    finally:
        unmount(rootfs)


def test_pull_while_the_image_is_removed_ends_with_a_whole_image(daemon: DaemonHandle, registry: Registry) -> None:
    repo = unique("race/remove")
    _d, image_id = push_image(registry, repo, "v1", [random_layer("r.bin", 2 << 20)])
    ref = f"{registry.host}/{repo}:v1"
    stop = threading.Event()

    def remover() -> None:
        while not stop.is_set():
            daemon.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)))

    with ThreadPoolExecutor(1) as pool:
        removing = pool.submit(remover)
        try:
            for _ in range(5):
                assert pull(daemon, ref) == image_id
        finally:
            stop.set()
            removing.result(30)
    # Whatever the interleaving, a recorded image has every layer on disk.
    assert pull(daemon, ref) == image_id
    info = daemon.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=True)).info
    layers = Path(daemon.config["root"]) / "layers"
    for chain in json.loads(info["info"])["chainIDs"]:
        assert (layers / chain.removeprefix("sha256:") / "layer.json").exists()


def test_an_umoci_image_pulls_as_oci_as_docker_schema_2_and_through_a_docker_list(
    registry: Registry, tmp_path: Path
) -> None:
    """Layers as real tools write them (umoci's ./ entries and whiteouts, skopeo's v2s2 conversion)."""

    def base(rootfs: Path) -> None:
        for directory in ("etc", "data", "bin"):
            (rootfs / directory).mkdir()
        (rootfs / "etc" / "motd").write_text("base\n")
        (rootfs / "etc" / "gone").write_text("deleted above\n")
        (rootfs / "data" / "old").write_text("old\n")
        (rootfs / "bin" / "tool").write_text("#!/bin/sh\n")
        os.chown(rootfs / "bin" / "tool", 1000, 1000)
        os.chmod(rootfs / "bin" / "tool", 0o4755)
        os.link(rootfs / "bin" / "tool", rootfs / "bin" / "tool-hard")
        (rootfs / "etc" / "link").symlink_to("motd")

    def change(rootfs: Path) -> None:
        (rootfs / "etc" / "gone").unlink()
        shutil.rmtree(rootfs / "data")
        (rootfs / "etc" / "motd").write_text("top\n")

    layout = tmp_path / "layout"
    umoci_layout(layout, "v1", [base, change], user="1000:1000")
    oci_repo, docker_repo = unique("umoci/oci"), unique("umoci/docker")
    skopeo_push(layout, "v1", registry, oci_repo)
    skopeo_push(layout, "v1", registry, docker_repo, docker_format=True)
    base_cfg = config_mod.load(None, None)
    cfg = dataclasses.replace(base_cfg, root=str(tmp_path / "root"),
                              registries=dataclasses.replace(base_cfg.registries, insecure=[registry.host]))
    manager = ImageManager(lambda: cfg, RecordStore(tmp_path / "root"))
    service = ImageService(manager)

    oci_ref, docker_ref = f"{registry.host}/{oci_repo}:v1", f"{registry.host}/{docker_repo}:v1"
    image = manager.pull(oci_ref)
    assert image.uid == 1000 and len(image.chain_ids) == 2
    layers_after_first = {p.name for p in (tmp_path / "root" / "layers").iterdir()}
    # Schema 2 of the same image: the same config (so the same id) and layers, nothing unpacked again.
    assert manager.pull(docker_ref).id == image.id
    assert {p.name for p in (tmp_path / "root" / "layers").iterdir()} == layers_after_first
    with registry.client() as c:
        resp = c.get(f"/v2/{docker_repo}/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
        assert resp.headers["content-type"] == DOCKER_MANIFEST
        amd64 = {"mediaType": DOCKER_MANIFEST, "digest": digest(resp.content), "size": len(resp.content),
                 "platform": {"os": "linux", "architecture": "amd64"}}
    arm_digest, _arm_id = push_image(registry, docker_repo, "arm64", [Layer(tar_of_entries({"arm": b"1"}))],
                                     arch="arm64")
    arm64 = {"mediaType": OCI_MANIFEST, "digest": arm_digest, "size": 0,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
    with registry.client() as c:
        arm64["size"] = len(c.get(f"/v2/{docker_repo}/manifests/{arm_digest}",
                                  headers={"Accept": OCI_MANIFEST}).content)
    list_digest = registry.push_manifest(docker_repo, "multi", {"schemaVersion": 2, "mediaType": DOCKER_LIST,
                                                                "manifests": [arm64, amd64]})
    multi_ref = f"{registry.host}/{docker_repo}:multi"
    pulled = manager.pull(multi_ref)
    assert pulled.id == image.id
    assert sorted(pulled.repo_tags) == sorted([oci_ref, docker_ref, multi_ref])
    assert f"{registry.host}/{docker_repo}@{list_digest}" in pulled.repo_digests  # the list's digest, as Docker

    # The store mounted read-only as a container would see it.
    rootfs = tmp_path / "rootfs"
    mount_overlay(manager.lowerdirs(image.id), tmp_path / "upper", tmp_path / "work", rootfs, readonly=True)
    try:
        assert (rootfs / "etc" / "motd").read_text() == "top\n"
        assert not (rootfs / "etc" / "gone").exists() and not (rootfs / "data").exists()
        assert os.readlink(rootfs / "etc" / "link") == "motd"
        tool = os.stat(rootfs / "bin" / "tool")
        assert (stat.S_IMODE(tool.st_mode), tool.st_uid) == (0o4755, 1000)
        assert os.stat(rootfs / "bin" / "tool-hard").st_ino == tool.st_ino
    finally:
        unmount(rootfs)

    # The RPCs on the same manager: verbose status carries the config; a tag untags, the id deletes.
    verbose = service.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=docker_ref), verbose=True), None)
    assert json.loads(verbose.info["info"])["imageSpec"]["config"]["User"] == "1000:1000"
    service.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=docker_ref)), None)
    assert sorted(service.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image.id)), None)
                  .image.repo_tags) == sorted([oci_ref, multi_ref])
    service.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image.id)), None)
    assert service.ListImages(pb.ListImagesRequest(), None).images == []
    assert [p for p in (tmp_path / "root" / "layers").iterdir() if not p.name.startswith(".")] == []


def test_an_unknown_host_is_unavailable_naming_it(daemon: DaemonHandle) -> None:
    # .invalid never resolves (RFC 2606): the name lookup fails, not a connection.
    err = pull_error(daemon, "registry.invalid/team/app:v1")
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "registry.invalid" in err.details()
