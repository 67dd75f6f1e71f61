"""The CRI view of an image record (pb.Image), and its encoding kept per record: ImageStatus
and ListImages send the encoded views (cri_shim.encoded) instead of building and serializing
every image's message on each call; a pull builds the new image's view before it answers."""

from __future__ import annotations

from collections.abc import Collection

from cri_shim.criapi import api_pb2 as pb
from cri_shim.imaging.store import ImageRecord


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


class ImageViews:
    """Each image's encoded view, rebuilt when what it shows changes: its tags and digests
    (a tag moves to another image), its size, whether it is pinned or in use as a volume. The
    rest of a record is fixed by its id."""

    def __init__(self) -> None:
        self._bodies: dict[str, tuple[tuple[object, ...], bytes]] = {}

    def body(self, rec: ImageRecord, in_volume: bool) -> bytes:
        key = (tuple(rec.repo_tags), tuple(rec.repo_digests), rec.size, rec.pinned, in_volume)
        got = self._bodies.get(rec.id)
        if got is not None and got[0] == key:
            return got[1]
        body = image_pb(rec, in_volume).SerializeToString()
        self._bodies[rec.id] = (key, body)
        return body

    def __len__(self) -> int:
        return len(self._bodies)

    def forget_except(self, ids: Collection[str]) -> None:
        """Drop the views of images no longer present (`ids`: the present ones)."""
        for gone in [i for i in self._bodies if i not in ids]:
            del self._bodies[gone]
