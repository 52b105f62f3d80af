"""Pulls from a real docker-registry on 127.0.0.1 through the daemon's ImageService."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import grpc
import pytest

from crio_py.cri import api_pb2 as pb
from crio_py.storage.mounts import unmount
from crio_py.storage.overlay import mount_overlay
from tests.support.cri import unique
from tests.support.daemon import DaemonHandle
from tests.support.oci_images import LAYER_TAR, LAYER_ZSTD, Layer, busybox_layer, push_image, push_index, tar_of_entries
from tests.support.registry import Registry, TokenFront, digest

pytestmark = pytest.mark.e2e


def pull(daemon: DaemonHandle, ref: str, auth: pb.AuthConfig | None = None) -> str:
    return daemon.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref), auth=auth), timeout=120).image_ref


def status(daemon: DaemonHandle, ref: str) -> pb.Image:
    return daemon.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))).image


def pull_error(daemon: DaemonHandle, ref: str, auth: pb.AuthConfig | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        pull(daemon, ref, auth)
    return err.value


def layer_dirs(daemon: DaemonHandle) -> set[str]:
    return {p.name for p in (Path(daemon.config["root"]) / "layers").iterdir() if not p.name.startswith(".")}


@pytest.fixture
def small_image(registry: Registry) -> tuple[str, str]:
    """A fresh two-layer image (own repository): (reference, image id)."""
    repo = unique("e2e/small")
    base = Layer(tar_of_entries({"etc/": None, "etc/motd": b"base\n", "data/": None, "data/gone": b"x",
                                 "opaque/": None, "opaque/old": b"old"}))
    top = Layer(tar_of_entries({"etc/motd": b"top\n", "data/.wh.gone": b"", "opaque/.wh..wh..opq": b"",
                                "opaque/new": b"new"}), media_type=LAYER_ZSTD)
    _digest, image_id = push_image(registry, repo, "v1", [base, top], config={"User": "1000:1000"})
    return f"{registry.host}/{repo}:v1", image_id


def test_pull_status_list_and_layers_in_overlay_form(
    daemon: DaemonHandle, small_image: tuple[str, str], tmp_path: Path
) -> None:
    ref, image_id = small_image
    assert pull(daemon, ref) == image_id
    image = status(daemon, ref)
    assert image.id == image_id and image.repo_tags == [ref]
    assert image.repo_digests[0].startswith(ref.rsplit(":", 1)[0] + "@sha256:")
    assert image.uid.value == 1000 and image.size > 0
    assert image_id in {i.id for i in daemon.images.ListImages(pb.ListImagesRequest()).images}
    # By id, by short id and by digest too.
    assert status(daemon, image_id).id == image_id
    assert status(daemon, image_id.removeprefix("sha256:")[:12]).id == image_id
    assert status(daemon, image.repo_digests[0]).id == image_id
    # The zstd top layer was unpacked in overlay form: a 0:0 char device and an opaque directory.
    layers = Path(daemon.config["root"]) / "layers"
    kinds = sorted(stat.S_ISCHR(os.lstat(p).st_mode) for p in layers.glob("*/diff/data/gone"))
    assert kinds == [False, True]  # the base layer's file, the top layer's whiteout
    whiteout = next(p for p in layers.glob("*/diff/data/gone") if stat.S_ISCHR(os.lstat(p).st_mode))
    assert os.lstat(whiteout).st_rdev == 0
    opaque = [p for p in layers.glob("*/diff/opaque") if (p / "new").exists()]
    assert os.getxattr(opaque[0], "trusted.overlay.opaque") == b"y"
    # Mounted the way a container's rootfs is, the upper layer wins and deletions show.
    info = daemon.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=True)).info
    lowers = [layers / c.removeprefix("sha256:") / "diff" for c in reversed(json.loads(info["info"])["chainIDs"])]
    rootfs = tmp_path / "rootfs"
    mount_overlay(lowers, tmp_path / "upper", tmp_path / "work", rootfs)
    try:
        assert (rootfs / "etc" / "motd").read_text() == "top\n"
        assert not (rootfs / "data" / "gone").exists()
        assert sorted(os.listdir(rootfs / "opaque")) == ["new"]
    finally:
        unmount(rootfs)


def test_unknown_image_status_is_empty_not_an_error(daemon: DaemonHandle) -> None:
    assert status(daemon, "127.0.0.1:1/not/pulled:here").id == ""


def test_mirrors_serve_under_the_requested_name_and_fall_back(
    daemon_handle: DaemonHandle, registry: Registry
) -> None:
    repo = unique("mirrored/app")
    _d, image_id = push_image(registry, repo, "1.0", [Layer(tar_of_entries({"hello": b"hi"}))])
    daemon_handle.config["registries"]["mirrors"] = {
        # The first mirror refuses connections; the second is the test registry.
        "registry.example.test": ["http://127.0.0.1:1", f"http://{registry.host}"],
    }
    daemon_handle.start()
    ref = f"registry.example.test/{repo}:1.0"
    assert pull(daemon_handle, ref) == image_id
    image = status(daemon_handle, ref)
    assert image.repo_tags == [ref]
    assert all(d.startswith(f"registry.example.test/{repo}@") for d in image.repo_digests)


def test_basic_auth(daemon: DaemonHandle) -> None:
    secured = Registry(htpasswd=("alice", "s3cret")).start()
    try:
        _d, image_id = push_image(secured, "private/app", "v1", [Layer(tar_of_entries({"f": b"1"}))])
        ref = f"{secured.host}/private/app:v1"
        daemon.stop()
        daemon.config["registries"]["insecure"].append(secured.host)
        daemon.start()
        assert pull_error(daemon, ref).code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = pull_error(daemon, ref, pb.AuthConfig(username="alice", password="nope"))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
        assert pull(daemon, ref, pb.AuthConfig(username="alice", password="s3cret")) == image_id
    finally:
        secured.stop()


def test_token_auth(daemon_handle: DaemonHandle, registry: Registry) -> None:
    repo = unique("token/app")
    _d, image_id = push_image(registry, repo, "v1", [Layer(tar_of_entries({"t": b"1"}))])
    front = TokenFront(registry, "bob", "hunter2")
    try:
        daemon_handle.config["registries"]["insecure"].append(front.host)
        daemon_handle.start()
        ref = f"{front.host}/{repo}:v1"
        assert pull_error(daemon_handle, ref).code() == grpc.StatusCode.UNAUTHENTICATED
        assert pull(daemon_handle, ref, pb.AuthConfig(username="bob", password="hunter2")) == image_id
    finally:
        front.stop()


def test_index_picks_this_platform(daemon: DaemonHandle, registry: Registry) -> None:
    repo = unique("multi/arch")
    amd, amd_id = push_image(registry, repo, "amd64", [Layer(tar_of_entries({"arch": b"amd64"}))])
    arm, _arm_id = push_image(registry, repo, "arm64", [Layer(tar_of_entries({"arch": b"arm64"}))], arch="arm64")
    push_index(registry, repo, "both", [(arm, "arm64"), (amd, "amd64")])
    push_index(registry, repo, "armonly", [(arm, "arm64")])
    assert pull(daemon, f"{registry.host}/{repo}:both") == amd_id
    err = pull_error(daemon, f"{registry.host}/{repo}:armonly")
    assert err.code() == grpc.StatusCode.NOT_FOUND and "linux/arm64" in err.details()
    err = pull_error(daemon, f"{registry.host}/{repo}:arm64")  # a plain arm64 manifest
    assert err.code() == grpc.StatusCode.NOT_FOUND and "arm64" in err.details()


def test_uncompressed_layers(daemon: DaemonHandle, registry: Registry) -> None:
    repo = unique("plain/tar")
    _d, image_id = push_image(registry, repo, "v1", [Layer(tar_of_entries({"plain": b"ok"}), media_type=LAYER_TAR)])
    assert pull(daemon, f"{registry.host}/{repo}:v1") == image_id


def test_bad_pulls_are_readable_errors_and_keep_nothing(daemon: DaemonHandle, registry: Registry) -> None:
    before = layer_dirs(daemon)
    assert pull_error(daemon, "Not_Valid//ref").code() == grpc.StatusCode.INVALID_ARGUMENT
    assert pull_error(daemon, f"{registry.host}/no/such:tag").code() == grpc.StatusCode.NOT_FOUND
    unreachable = pull_error(daemon, "127.0.0.1:1/some/image:v1")
    assert unreachable.code() == grpc.StatusCode.UNAVAILABLE and "127.0.0.1:1" in unreachable.details()

    # A layer escaping its root fails the pull.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../escaped")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"no"))
    repo = unique("evil/traversal")
    push_image(registry, repo, "v1", [Layer(buf.getvalue())])
    err = pull_error(daemon, f"{registry.host}/{repo}:v1")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "escapes" in err.details()

    # A layer whose content is not what the image config says it is (a corrupt or swapped blob).
    repo = unique("corrupt/blob")
    err = _pull_with_swapped_layer(
        daemon, registry, repo, Layer(tar_of_entries({"a": b"a"})), Layer(tar_of_entries({"b": b"b"}))
    )
    assert err.code() == grpc.StatusCode.INTERNAL and "sha256" in err.details()
    assert layer_dirs(daemon) == before
    assert not list((Path(daemon.config["root"]) / "layers").glob(".tmp-*"))


def _pull_with_swapped_layer(daemon: DaemonHandle, registry: Registry, repo: str, said: Layer,
                             served: Layer) -> grpc.RpcError:
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [digest(said.tar)]}}
    raw = json.dumps(config).encode()
    blob = served.blob
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": registry.push_blob(repo, raw), "size": len(raw)},
        "layers": [{"mediaType": served.media_type, "digest": registry.push_blob(repo, blob), "size": len(blob)}],
    }
    registry.push_manifest(repo, "swapped", manifest)
    return pull_error(daemon, f"{registry.host}/{repo}:swapped")


def test_restart_keeps_images_and_remove_untags_then_deletes_and_gcs(
    daemon: DaemonHandle, registry: Registry, small_image: tuple[str, str]
) -> None:
    ref, image_id = small_image
    pull(daemon, ref)
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    # The same manifest under a second tag: one image, two tags.
    with registry.client() as c:
        manifest = c.get(f"/v2/{repo}/manifests/v1",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).content
        c.put(f"/v2/{repo}/manifests/v2", content=manifest,
              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}).raise_for_status()
    second = ref.rsplit(":", 1)[0] + ":v2"
    pull(daemon, second)
    assert sorted(status(daemon, image_id).repo_tags) == sorted([ref, second])
    daemon.restart()
    assert sorted(status(daemon, image_id).repo_tags) == sorted([ref, second])
    layers_with = layer_dirs(daemon)
    daemon.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=second)))
    assert status(daemon, image_id).repo_tags == [ref]  # untagged only
    daemon.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)))
    assert status(daemon, image_id).id == ""
    assert len(layer_dirs(daemon)) == len(layers_with) - 2  # its two layers were collected
    daemon.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)))  # unknown: fine


def test_an_image_used_by_a_container_cannot_be_removed(
    daemon: DaemonHandle, busybox: str, cgroup_parent: str
) -> None:
    from tests.support.cri import pod_config

    pod = daemon.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config(cgroup_parent=cgroup_parent)))
    daemon.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.pod_sandbox_id,
        config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="user"), image=pb.ImageSpec(image=busybox),
                                  command=["true"])))
    with pytest.raises(grpc.RpcError) as err:
        daemon.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=busybox)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_concurrent_pulls_fetch_each_layer_once(daemon: DaemonHandle, registry: Registry) -> None:
    from concurrent.futures import ThreadPoolExecutor

    repo = unique("concurrent/pull")
    _d, image_id = push_image(registry, repo, "v1", [busybox_layer(), Layer(tar_of_entries({"x": b"1"}))])
    ref = f"{registry.host}/{repo}:v1"
    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(lambda _i: pull(daemon, ref), range(4))) == {image_id}
    # The daemon logs (at debug) each layer it downloads and unpacks: two layers, once each.
    assert daemon.log_text().count('msg="layer unpacked"') == 2
