"""LinuxPodSandboxConfig.cgroup_parent: a place inside the cgroup tree, never above its root."""

from __future__ import annotations

from cri_shim import cgroup_paths
from cri_shim.validation.fields import FieldError, no_nul, show

NAME_MAX = 255  # each component becomes a directory name in every hierarchy


def check_cgroup_parent(path: str, value: str, driver: str) -> None:
    """Empty (the runtime picks), a cgroupfs path, or with the systemd driver a slice name.

    With cgroupfs the kubelet sends "/kubepods/burstable/pod<uid>" (or "/" when it does not
    make pod cgroups); a relative path is taken from the root as well, so the one way out is a
    '..' component: "../../.." would put containers at the top of every hierarchy. With
    systemd it sends "kubepods-burstable-pod<uid>.slice", which names nested slices.
    """
    no_nul(path, value)
    if not value:
        return
    if driver == "systemd":
        _slice(path, value)
        return
    parts = [p for p in value.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise FieldError(path, f"{show(value)} must not contain '.' or '..': "
                               "a cgroup parent may not leave the cgroup root")
    long = next((p for p in parts if len(p.encode()) > NAME_MAX), None)
    if long is not None:
        raise FieldError(path, f"component {show(long)} is longer than {NAME_MAX} bytes")


def _slice(path: str, value: str) -> None:
    if not value.endswith(cgroup_paths.SLICE):
        raise FieldError(path, f"{show(value)} is not a systemd slice name such as "
                               "'kubepods-besteffort-pod123.slice' (the cgroup driver is systemd)")
    try:
        cgroup_paths.expand_slice(value)
    except cgroup_paths.CgroupPathError:
        raise FieldError(path, f"{show(value)} is not a valid systemd slice name: no '/', and no "
                               "empty part between dashes") from None
    if len(value.encode()) > NAME_MAX:
        raise FieldError(path, f"{show(value)} is longer than {NAME_MAX} bytes")
