"""ImageStatus and ListImages answer with each image's encoded view (cri_shim.imaging.views):
decoded, the answer is the message built field by field, and it follows a moved tag, a pin, an
image volume and a removal."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from cri_shim.criapi import api_pb2 as pb
from cri_shim.encoded import Encoded
from cri_shim.imaging.store import ImageRecord
from cri_shim.imaging.views import image_pb
from cri_shim.server.image_service import ImageService

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


class Images:
    """The part of ImageManager the calls use: records by id, lookup by tag or id."""

    def __init__(self, *recs: ImageRecord) -> None:
        self.images = {r.id: r for r in recs}
        self.volume_uses: dict[str, str] = {}

    @property
    def volume_images(self) -> set[str]:
        return set(self.volume_uses.values())

    def find(self, ref: str) -> ImageRecord | None:
        for r in self.images.values():
            if ref == r.id or ref in r.repo_tags:
                return r
        return None

    async def remove(self, ref: str) -> None:
        rec = self.find(ref)
        if rec is not None:
            del self.images[rec.id]


def _service() -> tuple[ImageService, Images]:
    images = Images(
        ImageRecord(id=A, repo_tags=["r/a:1", "r/a:latest"], repo_digests=["r/a@sha256:" + "1" * 64],
                    size=100, config={"config": {"User": "1000:1000"}}),
        ImageRecord(id=B, repo_tags=["r/b:1"], size=200, config={"config": {"User": "nobody"}}))
    return ImageService(SimpleNamespace(images=images)), images  # type: ignore[arg-type]


def _listed(svc: ImageService, ref: str = "") -> pb.ListImagesResponse:
    req = pb.ListImagesRequest()
    if ref:
        req.filter.image.image = ref
    got = svc.ListImages(req, None)
    assert isinstance(got, Encoded)
    return pb.ListImagesResponse.FromString(got.SerializeToString())


def _status(svc: ImageService, ref: str, verbose: bool = False) -> pb.ImageStatusResponse:
    got = svc.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=verbose), None)
    return pb.ImageStatusResponse.FromString(got.SerializeToString())


def test_answers_decode_to_the_messages() -> None:
    svc, images = _service()
    a, b = images.images[A], images.images[B]
    assert _listed(svc) == pb.ListImagesResponse(images=[image_pb(a), image_pb(b)])
    assert _listed(svc, "r/b:1") == pb.ListImagesResponse(images=[image_pb(b)])
    assert _listed(svc, "r/none:1") == pb.ListImagesResponse()
    assert _status(svc, "r/a:latest") == pb.ImageStatusResponse(image=image_pb(a))
    assert _status(svc, "r/a:latest").image.uid.value == 1000
    assert _status(svc, B).image.username == "nobody"
    assert _status(svc, "r/none:1") == pb.ImageStatusResponse()  # missing: an empty answer
    verbose = _status(svc, A, verbose=True)
    assert verbose.image == image_pb(a) and '"chainIDs"' in verbose.info["info"]


def test_views_follow_tags_pins_volumes_and_removals() -> None:
    svc, images = _service()
    a, b = images.images[A], images.images[B]
    _listed(svc)
    # the tag r/a:latest moves to b (as a pull of a newer image does)
    a.repo_tags.remove("r/a:latest")
    b.repo_tags.append("r/a:latest")
    assert _status(svc, "r/a:latest").image.id == B
    assert list(_status(svc, A).image.repo_tags) == ["r/a:1"]
    assert list(_status(svc, B).image.repo_tags) == ["r/b:1", "r/a:latest"]
    b.pinned = True
    assert _status(svc, B).image.pinned
    images.volume_uses["c1/0"] = A  # in use as an image volume: reported pinned
    assert [i.pinned for i in _listed(svc).images] == [True, True]
    asyncio.run(svc.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=B)), None))
    assert [i.id for i in _listed(svc).images] == [A]
    assert len(svc._views) == 1  # the removed image's view is gone too
