"""OCI artifacts: manifests that are not runnable images, and their file system.

What counts as an artifact (as CRI-O decides it): an image manifest whose config is not an
image config (the empty descriptor `application/vnd.oci.empty.v1+json`, or any other config
type, such as Helm's), or whose `artifactType` is set. Such a manifest has no rootfs diff_ids:
its layers are blobs of any media type.

The file system of an artifact (what an image volume of it shows) is one directory, built
from the layers in manifest order, later layers overwriting earlier ones (KEP-4639: "a single
directory containing the unpacked (in case of tarballs) and merged layer files"):

- a tar layer (a media type ending in `.tar`, `.tar+gzip`, `.tar+zstd`, Docker's
  `.tar.gzip`, or `application/x-tar`; the compression is recognised by its magic bytes) is
  extracted at the root, with the same safe unpacker as image layers; its whiteouts remove
  what earlier layers put there;
- any other layer is one regular file (mode 0644, owner root), named by its
  `org.opencontainers.image.title` annotation, or by its digest (`sha256:<hex>`) when it has
  none. A title may name a file in a sub-directory (`conf/app.yaml`, as CRI-O's artifacts use
  for sub-paths) but must be relative and plain: an empty title, an absolute one, `.` or `..`
  components, empty components (`a//b`, a trailing `/`), NUL, over-long names, two layers with
  the same title, or a title that another one needs as a directory are INVALID_ARGUMENT
  naming the layer's digest and title, before anything is downloaded. An untitled layer of
  the empty descriptor's type (the placeholder of an artifact with no content) adds nothing.

The tree is built by `materialise` into a snapshot directory that the image manager commits
like an unpacked layer; it is pure file work and runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cri_shim.errors import InvalidArgument
from cri_shim.imaging import layers, snapshots

TITLE = "org.opencontainers.image.title"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
IMAGE_CONFIG_TYPES = frozenset({
    "",  # no mediaType on the config: an old image
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
})
_TAR_TYPE = re.compile(r"(\.tar(\+gzip|\+zstd|\.gzip)?|^application/x-tar)$")
NAME_MAX, PATH_MAX = 255, 4096


@dataclass(frozen=True)
class ArtifactLayer:
    digest: str
    media_type: str
    size: int
    name: str  # where a file layer goes, relative to the root; "" for a tar layer
    is_tar: bool


def artifact_type(manifest: dict[str, Any]) -> str:
    """The manifest's artifact type when it describes an artifact, else "" (an image)."""
    config = manifest.get("config")
    config_type = str(config.get("mediaType") or "") if isinstance(config, dict) else ""
    declared = manifest.get("artifactType")
    declared = declared if isinstance(declared, str) else ""
    if config_type not in IMAGE_CONFIG_TYPES:
        return declared or config_type
    return declared


def is_tar_type(media_type: str) -> bool:
    return bool(_TAR_TYPE.search(media_type.split(";")[0].strip().lower()))


def check_title(title: str, digest: str) -> str:
    """The title as a relative path inside the artifact, or InvalidArgument naming the layer."""
    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f"artifact layer {digest}: title {title!r} {why}")

    if not title:
        raise bad("is empty")
    if "\0" in title:
        raise bad("contains a NUL byte")
    if title.startswith("/"):
        raise bad("is an absolute path; it must be a relative file name")
    if len(title.encode()) > PATH_MAX:
        raise bad(f"is longer than {PATH_MAX} bytes")
    parts = title.split("/")
    if any(p in (".", "..") for p in parts):
        raise bad("has a '.' or '..' component; it must stay inside the artifact")
    if any(not p for p in parts):
        raise bad("has an empty path component")
    if any(len(p.encode()) > NAME_MAX for p in parts):
        raise bad(f"has a component longer than {NAME_MAX} bytes")
    return title


def plan(manifest: dict[str, Any], what: str) -> list[ArtifactLayer]:
    """The layers of an artifact manifest with where each goes; refuses unsafe or clashing
    titles and malformed descriptors before anything is fetched."""
    descs = manifest.get("layers")
    if not isinstance(descs, list):
        raise InvalidArgument(f"{what}: artifact manifest has no layers list")
    out: list[ArtifactLayer] = []
    names: dict[str, str] = {}  # file name -> digest of its layer
    for d in descs:
        if not isinstance(d, dict) or not isinstance(d.get("digest"), str):
            raise InvalidArgument(f"{what}: artifact layer descriptor without a digest")
        digest, media_type = d["digest"], str(d.get("mediaType") or "")
        size = d.get("size", 0)
        if not isinstance(size, int) or size < 0:
            raise InvalidArgument(f"{what}: artifact layer {digest} has a bad size {size!r}")
        annotations = d.get("annotations") if isinstance(d.get("annotations"), dict) else {}
        title = annotations.get(TITLE)
        if is_tar_type(media_type):
            out.append(ArtifactLayer(digest, media_type, size, "", True))
            continue
        if title is None and media_type == EMPTY_TYPE:
            continue  # the placeholder layer of an artifact without content
        name = digest if title is None else check_title(str(title), digest)
        if name in names:
            raise InvalidArgument(f"artifact layer {digest}: title {name!r} is also the title of "
                                  f"layer {names[name]}")
        names[name] = digest
        out.append(ArtifactLayer(digest, media_type, size, name, False))
    for name, digest in names.items():
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in names:
                raise InvalidArgument(
                    f"artifact layer {names[parent]}: title {parent!r} is a file, but layer {digest} "
                    f"(title {name!r}) needs it as a directory")
    return out


# --- materialising (blocking file work, for a worker thread) -------------------------------------


def _open_dir(parent_fd: int, name: str) -> int:
    """A directory entry opened without following symlinks; whatever else is there (a file or
    a symlink from an earlier tar layer) is replaced by a new directory: later layers win."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(name, dir_fd=parent_fd)
    os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, flags, dir_fd=parent_fd)


def write_file(root: Path, name: str, blob: Path) -> int:
    """Copy blob to root/name (mode 0644), never through a symlink; return its size."""
    parts = name.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for p in parts[:-1]:
            nfd = _open_dir(fd, p)
            os.close(fd)
            fd = nfd
        leaf = parts[-1]
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(leaf, dir_fd=fd).st_mode):
                shutil.rmtree(f"/proc/self/fd/{fd}/{leaf}")
            else:
                os.unlink(leaf, dir_fd=fd)
        out = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o644, dir_fd=fd)
        try:
            with open(blob, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                copied = 0
                while copied < size:
                    n = os.copy_file_range(src.fileno(), out, size - copied)
                    if n == 0:
                        break
                    copied += n
            os.fchmod(out, 0o644)
            return copied
        finally:
            os.close(out)
    finally:
        os.close(fd)


def materialise(plan_: list[ArtifactLayer], blob_path: Callable[[str], Path], dest: Path, what: str) -> int:
    """Build the artifact's tree in dest (which must not exist) from its stored blobs, in
    layer order; synced, ready for the caller to commit. Returns the bytes written."""
    dest.mkdir(mode=0o755, parents=True)
    stage = dest.parent / (dest.name + ".layer")
    total = 0
    try:
        for layer in plan_:
            if layer.is_tar:
                snapshots.remove_tree(stage)
                _, size = layers.unpack(blob_path(layer.digest), stage, f"{what} {layer.digest}")
                snapshots.copy_layers([stage], dest)
                total += size
            else:
                total += write_file(dest, layer.name, blob_path(layer.digest))
    finally:
        snapshots.remove_tree(stage)
    os.chmod(dest, 0o755)
    layers.sync_tree(dest)
    return total
