"""ImageService handlers: pull, status, list, remove, filesystem info."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from crio_py.cri import api_pb2 as pb
from crio_py.errors import InvalidArgument
from crio_py.image import AuthConfig, DirUsage, ImageManager, ImageRecord
from crio_py.server.listing import STREAM_CHUNK


class ImageService:
    """Handlers of runtime.v1.ImageService; RPCs not defined here answer UNIMPLEMENTED."""

    def __init__(self, images: ImageManager):
        self.images = images

    def PullImage(self, request: pb.PullImageRequest, context: Any) -> pb.PullImageResponse:
        if not request.image.image:
            raise InvalidArgument("PullImage needs an image reference")
        auth = None
        if request.HasField("auth"):
            a = request.auth
            auth = AuthConfig(a.username, a.password, a.auth, a.identity_token, a.registry_token)
        image = self.images.pull(request.image.image, auth)
        return pb.PullImageResponse(image_ref=image.id)

    def ImageStatus(self, request: pb.ImageStatusRequest, context: Any) -> pb.ImageStatusResponse:
        image = self.images.find(request.image.image)
        if image is None:
            return pb.ImageStatusResponse()  # unknown image: empty answer, not an error (CRI)
        info = {}
        if request.verbose:
            info["info"] = json.dumps({"imageSpec": self.images.image_config(image.id), "chainIDs": image.chain_ids})
        return pb.ImageStatusResponse(image=_to_pb(image), info=info)

    def ListImages(self, request: pb.ListImagesRequest, context: Any) -> pb.ListImagesResponse:
        return pb.ListImagesResponse(images=self._list(request.filter))

    def StreamImages(self, request: pb.StreamImagesRequest, context: Any) -> Iterator[Any]:
        items = self._list(request.filter)
        for start in range(0, len(items), STREAM_CHUNK):
            yield pb.StreamImagesResponse(images=items[start : start + STREAM_CHUNK])

    def _list(self, f: pb.ImageFilter) -> list[pb.Image]:
        if f.image.image:
            image = self.images.find(f.image.image)
            return [_to_pb(image)] if image else []
        return [_to_pb(i) for i in self.images.list()]

    def RemoveImage(self, request: pb.RemoveImageRequest, context: Any) -> pb.RemoveImageResponse:
        if not request.image.image:
            raise InvalidArgument("RemoveImage needs an image reference or id")
        self.images.remove(request.image.image)
        return pb.RemoveImageResponse()

    def ImageFsInfo(self, request: pb.ImageFsInfoRequest, context: Any) -> pb.ImageFsInfoResponse:
        usage_now = self.images.fs_usage()
        now = time.time_ns()

        def usage(u: DirUsage) -> pb.FilesystemUsage:
            return pb.FilesystemUsage(
                timestamp=now,
                fs_id=pb.FilesystemIdentifier(mountpoint=u.mountpoint),
                used_bytes=pb.UInt64Value(value=u.used_bytes),
                inodes_used=pb.UInt64Value(value=u.inodes_used),
            )

        return pb.ImageFsInfoResponse(
            image_filesystems=[usage(usage_now.images)], container_filesystems=[usage(usage_now.containers)]
        )


def _to_pb(image: ImageRecord) -> pb.Image:
    return pb.Image(
        id=image.id,
        repo_tags=image.repo_tags,
        repo_digests=image.repo_digests,
        size=image.size,
        uid=pb.Int64Value(value=image.uid) if image.uid is not None else None,
        username=image.username,
        pinned=image.pinned,
        spec=pb.ImageSpec(image=image.id, annotations=image.annotations),
    )
