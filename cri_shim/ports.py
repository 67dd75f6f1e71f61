"""What the container side needs from the pod and image sides, as types both can import without
importing the container lifecycle (sandboxes and imaging implement these; containers use them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cri_shim.criapi import api_pb2 as pb

if TYPE_CHECKING:
    from cri_shim.containers.spec_gen import PodContext


Mapping = tuple[int, int, int]  # (container id, host id, size), as the OCI runtime spec has it


@dataclass(frozen=True)
class UserNamespace:
    """A pod's own user namespace (CRI NamespaceMode POD): where it is pinned, its mappings."""

    path: Path
    uid_mappings: tuple[Mapping, ...]
    gid_mappings: tuple[Mapping, ...]

    @property
    def root_ids(self) -> tuple[int, int]:
        """The host uid and gid of the namespace's root."""
        return _host_id(self.uid_mappings, 0), _host_id(self.gid_mappings, 0)


def _host_id(mappings: tuple[Mapping, ...], container_id: int) -> int:
    for first, host, size in mappings:
        if first <= container_id < first + size:
            return host + container_id - first
    raise ValueError(f"id {container_id} is not mapped")


@dataclass
class PodInfo:
    """What the pod side tells the container side about one pod."""

    context: PodContext
    handler: str
    log_directory: str
    ready: bool
    config: pb.PodSandboxConfig = field(default_factory=pb.PodSandboxConfig)


class PodProvider(Protocol):
    def container_pod(self, pod_id: str) -> PodInfo:
        """The pod, or NotFound naming it."""
        ...


@dataclass
class ResolvedImage:
    id: str  # config digest, "sha256:..."
    repo_ref: str  # a repo digest reference, for ContainerStatus.image_ref
    config: dict[str, Any]  # the image config's "config" object


class ImageProvider(Protocol):
    async def resolve(self, ref: str) -> ResolvedImage:
        """The local image named by ref (tag, digest or id); NotFound when absent."""
        ...

    async def prepare_rootfs(self, container_id: str, image_id: str,
                             userns: UserNamespace | None = None) -> Path:
        """A writable, mounted root file system for the container; seen through the mappings
        of `userns` (idmapped layers) when the pod has its own user namespace."""
        ...

    async def release_rootfs(self, container_id: str) -> None: ...

    async def forget_containers_except(self, live: set[str]) -> None:
        """At start: release what is still recorded for containers not in `live`."""
        ...

    async def mount_volume(self, container_id: str, index: int, ref: str, sub: str = "") -> Path:
        """The image `ref` mounted read-only for the container's image volume `index`; the
        directory `sub` inside it (InvalidArgument when it leaves the image or is missing)."""
        ...

    async def release_volumes(self, container_id: str) -> None: ...

    def rootfs_usage(self, container_id: str) -> tuple[int, int] | None:
        """(bytes, inodes) used by the container's writable layer."""
        ...
