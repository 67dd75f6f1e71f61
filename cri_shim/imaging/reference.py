"""Docker-style image references: `busybox` is docker.io/library/busybox:latest."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from cri_shim.errors import InvalidArgument

DOCKER_HUB = "docker.io"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.repository
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    @property
    def lookup(self) -> str:
        """What to ask the registry's manifest endpoint for."""
        return self.digest or self.tag or "latest"


@functools.lru_cache(maxsize=1024)  # ImageStatus and CreateContainer parse the same few again and again
def parse(ref: str) -> Reference:
    if not ref or len(ref) > 4096 or any(c.isspace() for c in ref):
        raise InvalidArgument(f"invalid image reference {ref!r}")
    name, _, digest = ref.partition("@")
    if digest and not _DIGEST.match(digest):
        raise InvalidArgument(f"image reference {ref!r}: invalid digest {digest!r}")
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.match(tag):
            raise InvalidArgument(f"image reference {ref!r}: invalid tag {tag!r}")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, name
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path or not all(_COMPONENT.match(c) for c in path.split("/")):
        raise InvalidArgument(f"image reference {ref!r}: invalid repository name {path!r}")
    if not tag and not digest:
        tag = "latest"
    return Reference(domain, path, tag, digest)


def is_image_id(ref: str) -> bool:
    s = ref.removeprefix("sha256:")
    return 12 <= len(s) <= 64 and all(c in "0123456789abcdef" for c in s) and "/" not in ref
