"""runtime.v1.ImageService over the image manager."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from cri_shim.criapi import api_pb2 as pb
from cri_shim.criapi import api_pb2_grpc
from cri_shim.encoded import Encoded, entry
from cri_shim.imaging import auth
from cri_shim.imaging.views import ImageViews
from cri_shim.server.list_batches import batches
from cri_shim.server.unimplemented import fill_unimplemented

if TYPE_CHECKING:
    from cri_shim.imaging.manager import ImageManager
    from cri_shim.server.services import Services


# ListImagesResponse.images and ImageStatusResponse.image: where the encoded views go
_IMAGES = pb.ListImagesResponse.DESCRIPTOR.fields_by_name["images"].number
_IMAGE = pb.ImageStatusResponse.DESCRIPTOR.fields_by_name["image"].number


class ImageService(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services
        self._views = ImageViews()

    @property
    def _images(self) -> ImageManager:
        return self.services.images

    def _listed(self, f: pb.ImageFilter | None) -> list[bytes]:
        """The encoded views of the images ListImages and StreamImages answer with."""
        if f is not None and f.image.image:
            want = self._images.find(f.image.image)
            recs = [want] if want is not None else []
        else:
            recs = list(self._images.images.values())
        vols = self._images.volume_images
        return [self._views.body(r, r.id in vols) for r in recs]

    def ListImages(self, request: pb.ListImagesRequest, context: object) -> Encoded:
        f = request.filter if request.HasField("filter") else None
        return Encoded(pb.ListImagesResponse, b"".join([entry(_IMAGES, b) for b in self._listed(f)]))

    async def StreamImages(
        self, request: pb.StreamImagesRequest, context: object
    ) -> AsyncIterator[pb.StreamImagesResponse]:
        f = request.filter if request.HasField("filter") else None
        for batch in batches(pb.Image.FromString(b) for b in self._listed(f)):
            yield pb.StreamImagesResponse(images=batch)

    def ImageStatus(
        self, request: pb.ImageStatusRequest, context: object
    ) -> pb.ImageStatusResponse | Encoded:
        rec = self._images.find(request.image.image)
        if rec is None:
            return pb.ImageStatusResponse()  # CRI: a missing image is an empty answer
        body = self._views.body(rec, rec.id in self._images.volume_images)
        if not request.verbose:
            return Encoded(pb.ImageStatusResponse, entry(_IMAGE, body))
        resp = pb.ImageStatusResponse(image=pb.Image.FromString(body))
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
        if rec is not None:  # its view, for the ImageStatus that follows a pull
            self._views.body(rec, rec.id in self._images.volume_images)
        return pb.PullImageResponse(image_ref=image_id)

    async def RemoveImage(self, request: pb.RemoveImageRequest, context: object) -> pb.RemoveImageResponse:
        await self._images.remove(request.image.image)
        self._views.forget_except(self._images.images)  # the one way an image goes
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
