"""runtime.v1.ImageService over the image manager."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from cri_shim.criapi import api_pb2 as pb
from cri_shim.criapi import api_pb2_grpc
from cri_shim.imaging import auth
from cri_shim.server.list_batches import batches
from cri_shim.server.unimplemented import fill_unimplemented

if TYPE_CHECKING:
    from cri_shim.imaging.manager import ImageManager
    from cri_shim.imaging.store import ImageRecord
    from cri_shim.server.services import Services


def image_pb(rec: ImageRecord, in_volume: bool = False) -> pb.Image:
    """An image as the CRI shows it; one mounted as an image volume is pinned (in use)."""
    img = pb.Image(id=rec.id, repo_tags=rec.repo_tags, repo_digests=rec.repo_digests, size=rec.size,
                   spec=pb.ImageSpec(image=rec.id), pinned=rec.pinned or in_volume)
    user = str((rec.config.get("config") or {}).get("User") or "")
    name = user.split(":")[0]
    if name.isdigit():
        img.uid.value = int(name)
    elif name:
        img.username = name
    else:
        img.uid.value = 0
    return img


class ImageService(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services

    @property
    def _images(self) -> ImageManager:
        return self.services.images

    def _matches(self, img: pb.Image, f: pb.ImageFilter | None) -> bool:
        if f is None or not f.image.image:
            return True
        rec = self._images.find(f.image.image)
        return rec is not None and rec.id == img.id

    def ListImages(self, request: pb.ListImagesRequest, context: object) -> pb.ListImagesResponse:
        f = request.filter if request.HasField("filter") else None
        vols = self._images.volume_images
        imgs = [image_pb(r, r.id in vols) for r in list(self._images.images.values())]
        return pb.ListImagesResponse(images=[i for i in imgs if self._matches(i, f)])

    async def StreamImages(
        self, request: pb.StreamImagesRequest, context: object
    ) -> AsyncIterator[pb.StreamImagesResponse]:
        f = request.filter if request.HasField("filter") else None
        vols = self._images.volume_images
        imgs = [image_pb(r, r.id in vols) for r in list(self._images.images.values())]
        for batch in batches(i for i in imgs if self._matches(i, f)):
            yield pb.StreamImagesResponse(images=batch)

    def ImageStatus(self, request: pb.ImageStatusRequest, context: object) -> pb.ImageStatusResponse:
        rec = self._images.find(request.image.image)
        if rec is None:
            return pb.ImageStatusResponse()  # CRI: a missing image is an empty answer
        resp = pb.ImageStatusResponse(image=image_pb(rec, rec.id in self._images.volume_images))
        if request.verbose:
            resp.info["info"] = json.dumps({"imageSpec": rec.config, "chainIDs": rec.chain})
        return resp

    async def PullImage(self, request: pb.PullImageRequest, context: object) -> pb.PullImageResponse:
        a = request.auth
        creds = auth.from_auth_config(a.username, a.password, a.auth, a.identity_token, a.registry_token)
        start = time.monotonic()
        try:
            image_id = await self._images.pull(request.image.image, creds)
        except BaseException:
            self.services.telemetry.observe_pull(time.monotonic() - start, None)
            raise
        rec = self._images.find(image_id)
        self.services.telemetry.observe_pull(time.monotonic() - start, rec.size if rec else 0)
        return pb.PullImageResponse(image_ref=image_id)

    async def RemoveImage(self, request: pb.RemoveImageRequest, context: object) -> pb.RemoveImageResponse:
        await self._images.remove(request.image.image)
        return pb.RemoveImageResponse()

    async def ImageFsInfo(self, request: pb.ImageFsInfoRequest, context: object) -> pb.ImageFsInfoResponse:
        ib, ii, cb, ci = await self._images.fs_usage()
        ts = time.time_ns()
        root = self.services.config.root_dir
        image = pb.FilesystemUsage(timestamp=ts,
                                   fs_id=pb.FilesystemIdentifier(mountpoint=f"{root}/snapshots"))
        image.used_bytes.value, image.inodes_used.value = ib, ii
        ctr = pb.FilesystemUsage(timestamp=ts, fs_id=pb.FilesystemIdentifier(mountpoint=f"{root}/rootfs"))
        ctr.used_bytes.value, ctr.inodes_used.value = cb, ci
        return pb.ImageFsInfoResponse(image_filesystems=[image], container_filesystems=[ctr])


fill_unimplemented(ImageService, api_pb2_grpc.ImageServiceServicer, "ImageService")
