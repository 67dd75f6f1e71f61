"""Typed model of the OCI runtime-spec v1.2 ``config.json`` (Linux parts).

Every object keeps the keys it does not model in ``extra`` so that ``Spec.from_json(s).to_json()``
loses nothing. ``validate`` checks what a runtime would otherwise fail on late and obscurely.
"""

from __future__ import annotations

import json
import os
from typing import Any

from oci._model import Model, SpecError, field
from oci.atomic_file import write_atomic

__all__ = [
    "OCI_VERSION", "SpecError", "Spec", "Process", "User", "Box", "Capabilities", "Rlimit", "Root",
    "Mount", "Hook", "Hooks", "Linux", "Namespace", "IDMapping", "Device", "DeviceRule", "Resources",
    "CPU", "Memory", "Pids", "HugepageLimit", "BlockIO", "WeightDevice", "ThrottleDevice",
    "Seccomp", "SeccompSyscall", "SeccompArg", "NAMESPACE_TYPES", "validate",
]

OCI_VERSION = "1.2.0"

NAMESPACE_TYPES = frozenset({"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"})
ROOTFS_PROPAGATIONS = frozenset({"private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
                                 "runbindable"})
SECCOMP_ACTIONS = frozenset({"SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                             "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",
                             "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY"})
RLIMIT_TYPES = frozenset({"RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE",
                          "RLIMIT_LOCKS", "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE",
                          "RLIMIT_NPROC", "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING",
                          "RLIMIT_STACK"})


# --- process ---------------------------------------------------------------------------------

class User(Model):
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: list[int] | None = None
    username: str | None = None  # Windows only, carried through


class Box(Model):
    height: int = 0
    width: int = 0


class Capabilities(Model):
    bounding: list[str] | None = None
    effective: list[str] | None = None
    inheritable: list[str] | None = None
    permitted: list[str] | None = None
    ambient: list[str] | None = None


class Rlimit(Model):
    type: str
    hard: int
    soft: int


class Process(Model):
    terminal: bool | None = None
    console_size: Box | None = None
    user: User = field(default_factory=User)
    args: list[str] | None = None
    command_line: str | None = None  # Windows only
    env: list[str] | None = None
    cwd: str = "/"
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] | None = None
    no_new_privileges: bool | None = None
    apparmor_profile: str | None = None
    oom_score_adj: int | None = None
    selinux_label: str | None = None
    # scheduler, ioPriority, execCPUAffinity are kept as plain objects: no runtime here acts on them
    scheduler: dict[str, Any] | None = None
    io_priority: dict[str, Any] | None = None
    exec_cpu_affinity: dict[str, Any] | None = field(default=None, json="execCPUAffinity")


# --- root, mounts, hooks ---------------------------------------------------------------------

class Root(Model):
    path: str
    readonly: bool | None = None


class IDMapping(Model):
    container_id: int = field(json="containerID")
    host_id: int = field(json="hostID")
    size: int


class Mount(Model):
    destination: str
    type: str | None = None
    source: str | None = None
    options: list[str] | None = None
    uid_mappings: list[IDMapping] | None = None
    gid_mappings: list[IDMapping] | None = None


class Hook(Model):
    path: str
    args: list[str] | None = None
    env: list[str] | None = None
    timeout: int | None = None


class Hooks(Model):
    prestart: list[Hook] | None = None  # deprecated in the spec, still run by every runtime
    create_runtime: list[Hook] | None = None
    create_container: list[Hook] | None = None
    start_container: list[Hook] | None = None
    poststart: list[Hook] | None = None
    poststop: list[Hook] | None = None


HOOK_KINDS = ("prestart", "create_runtime", "create_container", "start_container", "poststart", "poststop")


# --- linux -----------------------------------------------------------------------------------

class Namespace(Model):
    type: str
    path: str | None = None


class Device(Model):
    type: str
    path: str
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class DeviceRule(Model):
    allow: bool
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    access: str | None = None


class CPU(Model):
    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


class Memory(Model):
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = field(default=None, json="kernelTCP")
    swappiness: int | None = None
    disable_oom_killer: bool | None = field(default=None, json="disableOOMKiller")
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


class Pids(Model):
    limit: int


class HugepageLimit(Model):
    page_size: str
    limit: int


class WeightDevice(Model):
    major: int
    minor: int
    weight: int | None = None
    leaf_weight: int | None = None


class ThrottleDevice(Model):
    major: int
    minor: int
    rate: int


class BlockIO(Model):
    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: list[WeightDevice] | None = None
    throttle_read_bps_device: list[ThrottleDevice] | None = None
    throttle_write_bps_device: list[ThrottleDevice] | None = None
    throttle_read_iops_device: list[ThrottleDevice] | None = field(
        default=None, json="throttleReadIOPSDevice")
    throttle_write_iops_device: list[ThrottleDevice] | None = field(
        default=None, json="throttleWriteIOPSDevice")


class Resources(Model):
    devices: list[DeviceRule] | None = None
    memory: Memory | None = None
    cpu: CPU | None = None
    pids: Pids | None = None
    block_io: BlockIO | None = field(default=None, json="blockIO")
    hugepage_limits: list[HugepageLimit] | None = None
    network: dict[str, Any] | None = None
    rdma: dict[str, Any] | None = None
    unified: dict[str, str] | None = None


class SeccompArg(Model):
    index: int
    value: int
    value_two: int | None = None
    op: str


class SeccompSyscall(Model):
    names: list[str]
    action: str
    errno_ret: int | None = None
    args: list[SeccompArg] | None = None


class Seccomp(Model):
    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] | None = None
    flags: list[str] | None = None
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: list[SeccompSyscall] | None = None


class Linux(Model):
    uid_mappings: list[IDMapping] | None = None
    gid_mappings: list[IDMapping] | None = None
    sysctl: dict[str, str] | None = None
    resources: Resources | None = None
    cgroups_path: str | None = None
    namespaces: list[Namespace] | None = None
    devices: list[Device] | None = None
    seccomp: Seccomp | None = None
    rootfs_propagation: str | None = None
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    mount_label: str | None = None
    intel_rdt: dict[str, Any] | None = None  # no backend here acts on it; carried through
    personality: dict[str, Any] | None = None
    time_offsets: dict[str, Any] | None = None

    def namespace(self, ns_type: str) -> Namespace | None:
        return next((ns for ns in self.namespaces or () if ns.type == ns_type), None)


# --- the document ----------------------------------------------------------------------------

class Spec(Model):
    oci_version: str = OCI_VERSION
    process: Process | None = None
    root: Root | None = None
    hostname: str | None = None
    domainname: str | None = None
    mounts: list[Mount] | None = None
    hooks: Hooks | None = None
    annotations: dict[str, str] | None = None
    linux: Linux | None = None

    @classmethod
    def from_json(cls, text: str | bytes) -> Spec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"malformed JSON: {e}") from None
        return cls.from_dict(data)

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Spec:
        with open(path, "rb") as f:
            return cls.from_json(f.read())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a half-written config.json must never be seen by a runtime."""
        write_atomic(path, self.to_json(indent=2), 0o644)


# --- validation ------------------------------------------------------------------------------

def validate(spec: Spec) -> None:
    """Raise SpecError naming every problem found (not just the first)."""
    problems: list[str] = []

    def bad(path: str, msg: str) -> None:
        problems.append(f"{path}: {msg}")

    if not spec.oci_version or not spec.oci_version.startswith("1."):
        bad("ociVersion", f"unsupported version {spec.oci_version!r}")
    if spec.root is None or not spec.root.path:
        bad("root.path", "missing")
    if spec.process is not None:
        p = spec.process
        if not p.args:
            bad("process.args", "must name the program to run")
        if not p.cwd.startswith("/"):
            bad("process.cwd", f"must be absolute, got {p.cwd!r}")
        for i, env in enumerate(p.env or ()):
            if "=" not in env:
                bad(f"process.env[{i}]", f"{env!r} is not KEY=VALUE")
        for i, rl in enumerate(p.rlimits or ()):
            if rl.type not in RLIMIT_TYPES:
                bad(f"process.rlimits[{i}].type", f"unknown rlimit {rl.type!r}")
            if rl.soft > rl.hard:
                bad(f"process.rlimits[{i}]", "soft limit above hard limit")
        for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            for cap in getattr(p.capabilities, kind, None) or ():
                if not cap.startswith("CAP_"):
                    bad(f"process.capabilities.{kind}", f"{cap!r} is not a capability name")
    for i, m in enumerate(spec.mounts or ()):
        if not m.destination:
            bad(f"mounts[{i}].destination", "missing")
        elif not m.destination.startswith("/"):
            bad(f"mounts[{i}].destination", f"must be absolute, got {m.destination!r}")
        if m.type is None and not any(o in ("bind", "rbind") for o in m.options or ()):
            bad(f"mounts[{i}]", f"mount of {m.destination!r} has neither a type nor a bind option")
    if spec.hooks is not None:
        for kind in HOOK_KINDS:
            for i, h in enumerate(getattr(spec.hooks, kind) or ()):
                if not h.path.startswith("/"):
                    bad(f"hooks.{kind}[{i}].path", f"must be absolute, got {h.path!r}")
                if h.timeout is not None and h.timeout <= 0:
                    bad(f"hooks.{kind}[{i}].timeout", "must be positive")
    if spec.linux is not None:
        _validate_linux(spec.linux, bad)
    if problems:
        raise SpecError("invalid runtime spec: " + "; ".join(problems))


def _validate_linux(lx: Linux, bad: Any) -> None:
    seen: set[str] = set()
    for i, ns in enumerate(lx.namespaces or ()):
        if ns.type not in NAMESPACE_TYPES:
            bad(f"linux.namespaces[{i}].type", f"unknown namespace type {ns.type!r}")
        elif ns.type in seen:
            bad(f"linux.namespaces[{i}].type", f"duplicate namespace {ns.type!r}")
        seen.add(ns.type)
        if ns.path is not None and not ns.path.startswith("/"):
            bad(f"linux.namespaces[{i}].path", f"must be absolute, got {ns.path!r}")
    if (lx.uid_mappings or lx.gid_mappings) and "user" not in seen:
        bad("linux.uidMappings", "ID mappings need a user namespace")
    if lx.rootfs_propagation is not None and lx.rootfs_propagation not in ROOTFS_PROPAGATIONS:
        bad("linux.rootfsPropagation", f"unknown propagation {lx.rootfs_propagation!r}")
    for i, d in enumerate(lx.devices or ()):
        if d.type not in ("c", "b", "u", "p"):
            bad(f"linux.devices[{i}].type", f"unknown device type {d.type!r}")
        if not d.path.startswith("/dev/"):
            bad(f"linux.devices[{i}].path", f"must be under /dev, got {d.path!r}")
    res = lx.resources
    for i, rule in enumerate((res.devices if res else None) or ()):
        if rule.type not in (None, "a", "c", "b"):
            bad(f"linux.resources.devices[{i}].type", f"unknown device type {rule.type!r}")
        if rule.access is not None and (not rule.access or set(rule.access) - set("rwm")):
            bad(f"linux.resources.devices[{i}].access", f"must be a combination of r, w, m: {rule.access!r}")
    if res and res.pids is not None and res.pids.limit == 0:
        bad("linux.resources.pids.limit", "0 would forbid the container's own init; use -1 for no limit")
    if lx.seccomp is not None:
        if lx.seccomp.default_action not in SECCOMP_ACTIONS:
            bad("linux.seccomp.defaultAction", f"unknown action {lx.seccomp.default_action!r}")
        for i, sc in enumerate(lx.seccomp.syscalls or ()):
            if sc.action not in SECCOMP_ACTIONS:
                bad(f"linux.seccomp.syscalls[{i}].action", f"unknown action {sc.action!r}")
            if not sc.names:
                bad(f"linux.seccomp.syscalls[{i}].names", "empty")
