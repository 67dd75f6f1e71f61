"""Image volumes (KEP-4639): an image's file system mounted read-only into containers.

One mount per image, under <root>/image-volumes/<image id>, shared by every container that
mounts the image: its layers as a read-only overlay (no upper directory), or a read-only bind
of the single layer of a one-layer image (overlay wants two lowers without an upper), with
nosuid, nodev and noexec as the Kubernetes documentation states for image volumes. Each use is
recorded as a snapshot row "<container id>/image-volume/<n>" -> image id, which is what makes
RemoveImage refuse the image and the kubelet's GC see it in use; the mount goes once its last
use is released. `sub_path` resolves a directory inside the image without leaving it.

OCI artifacts (imaging.artifacts: manifests that are not runnable images, whose layers are
plain files or tarballs, as CRI-O serves them) are image volumes too: their files are
materialised at pull time into one snapshot directory (each non-tar layer a file named by its
`org.opencontainers.image.title` annotation, else by its digest; tar layers extracted at the
root; later layers overwrite earlier ones, as KEP-4639 states), which is mounted here like a
one-layer image: a read-only bind with the same flags. Using an artifact as a container's own
image is FAILED_PRECONDITION naming it.

A sub-path must be a directory, for images and artifacts alike: KEP-4639 leaves single files
out and restricts the mount to directories, containerd refuses a file sub-path ("only
directory subpath is supported") and CRI-O's artifact sub-path selects the files under a
directory. A file is INVALID_ARGUMENT naming the sub-path and the image.
"""

from __future__ import annotations

import os
from pathlib import Path

from cri_shim import mounts
from cri_shim.errors import InvalidArgument

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
USE_MARK = "/image-volume/"


def use_key(container_id: str, index: int) -> str:
    return f"{container_id}{USE_MARK}{index}"


def is_use_of(key: str, container_id: str) -> bool:
    return key.startswith(container_id + USE_MARK)


def is_volume_use(key: str) -> bool:
    return USE_MARK in key


def mount_image(lowers_top_first: list[Path], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if mounts.is_mounted(target):
        return
    if len(lowers_top_first) == 1:
        mounts.mount(str(lowers_top_first[0]), target, "", MS_BIND, "", "image volume")
        mounts.mount("", target, "", MS_BIND | MS_REMOUNT | FLAGS, "", "image volume (read-only)")
        return
    lower = ":".join(str(p) for p in lowers_top_first)
    mounts.mount("overlay", target, "overlay", FLAGS, f"lowerdir={lower}", "image volume")


def unmount_image(target: Path) -> None:
    mounts.unmount(target)
    try:
        target.rmdir()
    except OSError:
        pass


def sub_path(root: Path, sub: str, image: str) -> Path:
    """root/sub, refusing what leaves the image (.., absolute paths, symlinks pointing out)
    and what does not exist or is not a directory."""
    if not sub:
        return root
    if sub.startswith("/") or "\0" in sub or any(part == ".." for part in sub.split("/")):
        raise InvalidArgument(f"image_sub_path {sub!r} of image {image} must be a relative path inside it")
    real_root = os.path.realpath(root)
    resolved = os.path.realpath(os.path.join(real_root, sub))
    if resolved != real_root and not resolved.startswith(real_root + "/"):
        raise InvalidArgument(f"image_sub_path {sub!r} of image {image} leads outside the image "
                              f"(a symbolic link)")
    if not os.path.exists(resolved):
        raise InvalidArgument(f"image_sub_path {sub!r} does not exist in image {image}")
    if not os.path.isdir(resolved):
        raise InvalidArgument(f"image_sub_path {sub!r} of image {image} is not a directory "
                              "(an image volume mounts a directory, not a single file)")
    return Path(resolved)
