"""ContainerConfig: argv, environment, paths, mounts, devices, log path, resources."""

from __future__ import annotations

from cri_shim.criapi import api_pb2 as pb
from cri_shim.validation.fields import (
    FieldError,
    absolute_path,
    item,
    no_nul,
    no_nul_all,
    no_nul_keys,
    show,
    stays_inside,
)
from cri_shim.validation.host import HostFacts
from cri_shim.validation.resources import check_resources

DEVICE_ACCESS = frozenset("rwm")


def check_container_config(path: str, cfg: pb.ContainerConfig, host: HostFacts) -> None:
    no_nul(f"{path}.metadata.name", cfg.metadata.name)
    no_nul_all(f"{path}.command", cfg.command)
    no_nul_all(f"{path}.args", cfg.args)
    # runc runs the process in an absolute cwd; empty means the image's.
    absolute_path(f"{path}.working_dir", cfg.working_dir, required=False)
    for i, kv in enumerate(cfg.envs):
        _env(item(f"{path}.envs", i), kv)
    for i, m in enumerate(cfg.mounts):
        _mount(item(f"{path}.mounts", i), m)
    for i, d in enumerate(cfg.devices):
        _device(item(f"{path}.devices", i), d)
    no_nul_keys(f"{path}.labels", cfg.labels)
    no_nul_keys(f"{path}.annotations", cfg.annotations)
    _log_path(f"{path}.log_path", cfg.log_path)
    linux = cfg.linux
    check_resources(f"{path}.linux.resources", linux.resources, host)
    _security_context(f"{path}.linux.security_context", linux.security_context)


def _env(path: str, kv: pb.KeyValue) -> None:
    # "KEY=VALUE" strings of execve(2): a key with '=' would split somewhere else.
    no_nul(f"{path}.key", kv.key)
    if not kv.key:
        raise FieldError(f"{path}.key", "an environment variable needs a name")
    if "=" in kv.key:
        raise FieldError(f"{path}.key", f"{show(kv.key)} contains '='")
    no_nul(f"{path}.value", kv.value)


def _mount(path: str, m: pb.Mount) -> None:
    absolute_path(f"{path}.container_path", m.container_path)
    if m.image.image:  # an image volume: the image's file system, no host path
        no_nul(f"{path}.image.image", m.image.image)
        no_nul(f"{path}.image_sub_path", m.image_sub_path)
        return
    absolute_path(f"{path}.host_path", m.host_path)
    if m.image_sub_path:
        raise FieldError(f"{path}.image_sub_path", "only an image volume (mount.image) has a sub-path")


def _device(path: str, d: pb.Device) -> None:
    absolute_path(f"{path}.host_path", d.host_path)
    # Empty means the same path as on the host.
    absolute_path(f"{path}.container_path", d.container_path, required=False)
    if not set(d.permissions) <= DEVICE_ACCESS:
        raise FieldError(f"{path}.permissions", f"{show(d.permissions)} is not within 'rwm'")


def _log_path(path: str, value: str) -> None:
    """Relative to the pod's log_directory and inside it: "<name>/<attempt>.log" from the kubelet."""
    if not value:
        return
    stays_inside(path, value)
    if value.endswith("/"):
        raise FieldError(path, f"{show(value)} names a directory, not a file")


def _security_context(path: str, sc: pb.LinuxContainerSecurityContext) -> None:
    no_nul(f"{path}.run_as_username", sc.run_as_username)
    no_nul(f"{path}.seccomp.localhost_ref", sc.seccomp.localhost_ref)
    no_nul(f"{path}.seccomp_profile_path", sc.seccomp_profile_path)
    no_nul(f"{path}.apparmor.localhost_ref", sc.apparmor.localhost_ref)
    no_nul(f"{path}.apparmor_profile", sc.apparmor_profile)
    # Paths inside the container that runc masks or remounts read-only.
    for field in ("masked_paths", "readonly_paths"):
        for i, p in enumerate(getattr(sc, field)):
            absolute_path(item(f"{path}.{field}", i), p)
