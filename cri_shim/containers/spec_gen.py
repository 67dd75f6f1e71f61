"""CRI ContainerConfig + image config + pod context -> OCI runtime spec.

The rules follow what the kubelet expects of containerd and CRI-O:
- command: CRI command replaces the image ENTRYPOINT; CRI args replace CMD; with
  command set and no args, CMD is not used.
- env: image env, then CRI envs (later wins per key).
- user: run_as_username, else run_as_user (+ run_as_group), else the image USER; the
  primary gid comes from the image's /etc/passwd when not given; run_as_group without a
  user is an error. The process's groups are the primary gid, then the user's groups
  in the image's /etc/group and the CRI ones (policy Merge), or only the CRI ones
  (policy Strict), as containerd and CRI-O set them (`id -G` shows the primary too).
- capabilities: "all" (privileged, or add ALL) means all the daemon holds; an
  oom_score_adj below what the daemon may set is raised to that floor (host_limits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cri_shim import cgroup_paths, mounts
from cri_shim.containers import cdi, seccomp_profiles
from cri_shim.containers.host_devices import host_device
from cri_shim.containers.host_limits import HostLimits, host_limits
from cri_shim.containers.users import resolve, split_image_user
from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import InvalidArgument
from cri_shim.ports import UserNamespace
from oci.builder import ALL_CAPABILITIES, DEFAULT_CAPABILITIES, SpecBuilder
from oci.spec import Spec, SpecError

PROPAGATION = {
    pb.PROPAGATION_PRIVATE: "rprivate",
    pb.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    pb.PROPAGATION_BIDIRECTIONAL: "rshared",
}


@dataclass
class PodContext:
    """What a container takes from its pod."""

    id: str
    hostname: str = ""
    # Pinned namespace files; None means the host's namespace (host network/IPC).
    netns_path: str | None = None
    ipcns_path: str | None = None
    utsns_path: str | None = None
    # PID namespace of the pod (only when the pod shares one), e.g. /proc/<pid>/ns/pid.
    pidns_path: str | None = None
    host_pid: bool = False
    cgroup_parent: str = ""
    # Pod files bind-mounted into every container.
    hosts_path: str | None = None
    resolv_path: str | None = None
    hostname_path: str | None = None
    shm_path: str | None = None
    sysctls: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    name: str = ""
    namespace: str = ""
    uid: str = ""
    # The pod's own user namespace (CRI userns_options mode POD); None: the host's.
    userns: UserNamespace | None = None


@dataclass
class ImageContext:
    ref: str  # the image's resolved reference (name or digest) for annotations
    config: dict[str, Any]  # the OCI image config's "config" object (User, Env, ...)


def _caps(name: str) -> str:
    name = name.upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def _command(cfg: pb.ContainerConfig, image: ImageContext) -> list[str]:
    entrypoint = list(image.config.get("Entrypoint") or [])
    cmd = list(image.config.get("Cmd") or [])
    if cfg.command:
        args = list(cfg.command) + list(cfg.args)
    elif cfg.args:
        args = entrypoint + list(cfg.args)
    else:
        args = entrypoint + cmd
    if not args:
        raise InvalidArgument(
            f"container {cfg.metadata.name!r}: no command: neither the request nor image "
            f"{image.ref} gives an entrypoint or cmd"
        )
    return args


def _env(cfg: pb.ContainerConfig, image: ImageContext, pod: PodContext) -> list[str]:
    env: dict[str, str] = {}
    if pod.hostname:
        env["HOSTNAME"] = pod.hostname
    for item in image.config.get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    for kv in cfg.envs:  # names and values checked by cri_shim.validation
        env[kv.key] = kv.value.decode("utf-8", "surrogateescape")
    if "PATH" not in env:
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return [f"{k}={v}" for k, v in env.items()]


def _user(cfg: pb.ContainerConfig, image: ImageContext, rootfs: Path) -> tuple[int, int, list[int]]:
    sc = cfg.linux.security_context
    group: str | None = str(sc.run_as_group.value) if sc.HasField("run_as_group") else None
    if group is not None and not sc.run_as_username and not sc.HasField("run_as_user"):
        raise InvalidArgument(
            f"container {cfg.metadata.name!r}: run_as_group {group} is set without run_as_user "
            "or run_as_username")
    if sc.run_as_username:
        user = sc.run_as_username
    elif sc.HasField("run_as_user"):
        user = str(sc.run_as_user.value)
    else:
        image_user = image.config.get("User") or "0"
        user, image_group = split_image_user(image_user)
        group = group or image_group
    resolved = resolve(rootfs, user, group, what="user")
    extra = list(sc.supplemental_groups)
    if sc.supplemental_groups_policy == pb.Strict:
        gids = extra
    else:
        gids = resolved.additional_gids + extra
    groups = [resolved.gid]
    for g in gids:
        if g not in groups:
            groups.append(g)
    return resolved.uid, resolved.gid, groups


def _seccomp(sc: pb.LinuxContainerSecurityContext, caps: list[str], privileged: bool):
    if privileged:
        return None  # privileged means unconfined, whatever profile is named (as containerd)
    profile = sc.seccomp if sc.HasField("seccomp") else None
    if profile is None and sc.seccomp_profile_path:
        legacy = sc.seccomp_profile_path
        if legacy in ("runtime/default", "docker/default"):
            profile = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
        elif legacy == "unconfined":
            profile = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
        elif legacy.startswith("localhost/"):
            profile = pb.SecurityProfile(
                profile_type=pb.SecurityProfile.Localhost, localhost_ref=legacy[len("localhost"):]
            )
        else:
            raise InvalidArgument(f"unknown seccomp profile path {legacy!r}")
    if profile is None:
        # Kubelet sends RuntimeDefault explicitly when it wants it; absent means unconfined.
        return None
    if profile.profile_type == pb.SecurityProfile.Unconfined:
        return None
    if profile.profile_type == pb.SecurityProfile.Localhost:
        return seccomp_profiles.load_localhost(profile.localhost_ref)
    return seccomp_profiles.runtime_default(caps)


def _check_recursive_read_only(m: pb.Mount, supported: bool) -> None:
    where = f"mount {m.container_path!r}"
    if not m.readonly:
        raise InvalidArgument(f"{where}: recursive_read_only needs readonly")
    if m.propagation != pb.PROPAGATION_PRIVATE:
        raise InvalidArgument(f"{where}: recursive_read_only needs private propagation, "
                              f"not {pb.MountPropagation.Name(m.propagation)}")
    if not supported:
        raise InvalidArgument(f"{where}: recursive_read_only is not supported by this runtime handler")


IdMap = tuple[tuple[tuple[int, int, int], ...], tuple[tuple[int, int, int], ...]]


def _idmap(pod: PodContext, source: str, m: pb.Mount | None) -> IdMap | None:
    """The mappings of an idmapped bind mount in a user-namespaced pod: the CRI mount's own
    (uidMappings/gidMappings, which the kubelet may set) or else the pod's, so what is root's
    on disk is root's in the pod and what the pod writes keeps its ids on disk. None for a pod
    in the host's user namespace, and where the file system takes no idmapped mount
    (overlayfs, as an image volume is): that mount shows host ids, unmapped ones as nobody."""
    if pod.userns is None:
        return None
    if m is not None and (m.uidMappings or m.gidMappings):
        if not m.uidMappings or not m.gidMappings:
            raise InvalidArgument(f"mount {m.container_path}: uidMappings and gidMappings go together")
        return (tuple((x.container_id, x.host_id, x.length) for x in m.uidMappings),
                tuple((x.container_id, x.host_id, x.length) for x in m.gidMappings))
    if not mounts.can_idmap(source, pod.userns.path):
        return None
    return pod.userns.uid_mappings, pod.userns.gid_mappings


def apply_resources(b: SpecBuilder, r: pb.LinuxContainerResources) -> None:
    if r.cpu_shares or r.cpu_quota or r.cpu_period:
        b.cpu(shares=r.cpu_shares or None, quota=r.cpu_quota or None, period=r.cpu_period or None)
    if r.cpuset_cpus or r.cpuset_mems:
        b.cpuset(r.cpuset_cpus or None, r.cpuset_mems or None)
    if r.memory_limit_in_bytes or r.memory_swap_limit_in_bytes:
        b.memory(limit=r.memory_limit_in_bytes or None, swap=r.memory_swap_limit_in_bytes or None)
    for h in r.hugepage_limits:
        b.hugepage_limit(h.page_size, h.limit)
    for k, v in r.unified.items():
        b.unified(k, v)


def build_spec(
    cfg: pb.ContainerConfig,
    container_id: str,
    pod: PodContext,
    image: ImageContext,
    rootfs: Path,
    sandbox_config: pb.PodSandboxConfig | None = None,
    *,
    limits: HostLimits | None = None,
    recursive_read_only: bool = False,
    cgroup_driver: str = "cgroupfs",
    cdi_registry: cdi.Registry | None = None,
) -> Spec:
    """The spec; `recursive_read_only` says whether the handler's runtime does `rro` mounts,
    `cgroup_driver` which form of cgroupsPath the runtime is given (cgroup_paths)."""
    limits = limits or host_limits()
    name = cfg.metadata.name
    linux = cfg.linux
    sc = linux.security_context
    b = SpecBuilder()
    b.rootfs(str(rootfs), readonly=sc.readonly_rootfs)
    b.args(*_command(cfg, image))
    b.env(_env(cfg, image, pod), replace=True)
    b.cwd(cfg.working_dir or image.config.get("WorkingDir") or "/")
    uid, gid, groups = _user(cfg, image, rootfs)
    b.user(uid, gid, groups or None)
    if cfg.tty:
        b.terminal(True)

    # Capabilities: privileged gets all the daemon holds; else the default set with CRI add/drop.
    if sc.privileged:
        b.privileged()
        caps = list(limits.capabilities)
        b.capabilities(caps)
    else:
        caps = list(DEFAULT_CAPABILITIES)
        add = [_caps(c) for c in sc.capabilities.add_capabilities]
        drop = [_caps(c) for c in sc.capabilities.drop_capabilities]
        if "CAP_ALL" in add:
            caps = list(limits.capabilities)
        if "CAP_ALL" in drop:
            caps = []
        unknown = [c for c in add + drop if c != "CAP_ALL" and c not in ALL_CAPABILITIES]
        if unknown:
            raise InvalidArgument(f"container {name!r}: unknown capabilities {', '.join(unknown)}")
        caps = [c for c in caps if c not in drop] + [c for c in add if c != "CAP_ALL" and c not in caps]
        b.capabilities(caps)
    b.no_new_privileges(sc.no_new_privs)
    b.seccomp(_seccomp(sc, caps, sc.privileged))
    if not sc.privileged:
        if sc.masked_paths:
            b.masked_paths(sc.masked_paths)
        if sc.readonly_paths:
            b.readonly_paths(sc.readonly_paths)

    # Namespaces: join the pod's; mount is always new.
    ns = sc.namespace_options
    for kind, path in (("network", pod.netns_path), ("ipc", pod.ipcns_path), ("uts", pod.utsns_path)):
        if path:
            b.namespace(kind, path)
        else:
            b.without_namespace(kind)
    if ns.pid == pb.NODE or pod.host_pid:
        b.without_namespace("pid")
    elif ns.pid == pb.POD and pod.pidns_path:
        b.namespace("pid", pod.pidns_path)
    elif ns.pid == pb.TARGET:
        if not ns.target_id:
            raise InvalidArgument(f"container {name!r}: pid namespace TARGET without target_id")
        # Filled in by the manager, which knows the target's pid.
    else:
        b.namespace("pid")

    if pod.userns is not None:
        # joined, not made: every container of the pod shares the pod's; the mappings say
        # to the runtime who root is (and which ids an idmap mount without its own uses)
        b.user_namespace(pod.userns.uid_mappings, pod.userns.gid_mappings, path=str(pod.userns.path))

    # Pod files first, so an explicit CRI mount at the same place wins.
    for path, dest in ((pod.hosts_path, "/etc/hosts"), (pod.resolv_path, "/etc/resolv.conf"),
                       (pod.hostname_path, "/etc/hostname")):
        if path:
            b.bind_mount(path, dest, readonly=sc.readonly_rootfs, idmap=_idmap(pod, path, None))
    if pod.shm_path:
        b.bind_mount(pod.shm_path, "/dev/shm", idmap=_idmap(pod, pod.shm_path, None))
    for m in cfg.mounts:
        # Absolute paths are checked by cri_shim.validation; whether the source exists is
        # a fact of the moment of creation.
        if not os.path.exists(m.host_path):
            raise InvalidArgument(f"mount host_path {m.host_path} does not exist")
        if m.recursive_read_only:
            _check_recursive_read_only(m, recursive_read_only)
        if m.image.image:
            # an image volume, as the Kubernetes documentation has it: read-only, noexec
            b.add_mount(m.container_path, "bind", m.host_path,
                        ["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"])
            continue
        b.bind_mount(m.host_path, m.container_path, readonly=m.readonly,
                     propagation=PROPAGATION.get(m.propagation, "rprivate"),
                     recursive_readonly=m.recursive_read_only, idmap=_idmap(pod, m.host_path, m))
    # A mount can only propagate as far as the root it sits in does (as containerd sets it):
    # back to the host needs a shared root, from the host at least a slave one.
    kinds = {m.propagation for m in cfg.mounts}
    if pb.PROPAGATION_BIDIRECTIONAL in kinds:
        b.rootfs_propagation("rshared")
    elif pb.PROPAGATION_HOST_TO_CONTAINER in kinds:
        b.rootfs_propagation("rslave")

    for dev in cfg.devices:
        kind, major, minor, mode = host_device(dev.host_path, f"device {dev.host_path!r}")
        perms = dev.permissions or "rwm"  # within "rwm": cri_shim.validation
        b.add_device(dev.container_path or dev.host_path, kind, major, minor, file_mode=mode, access=perms)
    if cfg.CDI_devices:
        cdi.apply(b, [d.name for d in cfg.CDI_devices], cdi_registry or cdi.load(cdi.DEFAULT_SPEC_DIRS))

    r = linux.resources
    apply_resources(b, r)
    if r.oom_score_adj:
        b.oom_score_adj(limits.clamp_oom_score_adj(r.oom_score_adj))
    b.cgroups_path(cgroup_paths.container_cgroups_path(cgroup_driver, pod.cgroup_parent, pod.id,
                                                       container_id))
    for k, v in pod.sysctls.items():
        # Namespaced sysctls the pod asked for apply to each container's view too.
        if k.startswith(("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")) and pod.ipcns_path:
            b.sysctl(k, v)
    for k, v in cfg.annotations.items():
        b.annotation(k, v)
    b.annotation("io.kubernetes.cri.container-type", "container")
    b.annotation("io.kubernetes.cri.container-name", name)
    b.annotation("io.kubernetes.cri.sandbox-id", pod.id)
    b.annotation("io.kubernetes.cri.sandbox-name", pod.name)
    b.annotation("io.kubernetes.cri.sandbox-namespace", pod.namespace)
    b.annotation("io.kubernetes.cri.sandbox-uid", pod.uid)
    b.annotation("io.kubernetes.cri.image-name", image.ref)
    try:
        return b.build()
    except SpecError as e:
        raise InvalidArgument(f"container {name!r}: invalid runtime spec: {e}") from None
