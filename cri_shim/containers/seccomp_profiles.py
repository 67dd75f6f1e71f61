"""Seccomp profiles for CRI's RuntimeDefault, Unconfined and Localhost.

RuntimeDefault allows everything except the syscalls that break out of a container
or touch the whole host (kernel modules, keyrings, clocks, reboot, mounting, new
namespaces, ptrace, BPF, ...). Each denied call fails with EPERM, so programs that
probe for features degrade instead of dying. Calls whose only legitimate use needs a
capability are allowed again when the container has that capability, as the usual
engine defaults do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cri_shim.errors import InvalidArgument
from oci.spec import Seccomp, SeccompSyscall

EPERM = 1

ALWAYS_DENIED = (
    "acct", "add_key", "clock_adjtime", "clock_settime", "create_module", "get_kernel_syms",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "nfsservctl", "query_module",
    "request_key", "settimeofday", "stime", "swapoff", "swapon", "sysfs", "_sysctl", "uselib",
    "userfaultfd", "ustat", "vm86", "vm86old", "reboot", "delete_module", "finit_module",
    "init_module", "iopl", "ioperm", "open_by_handle_at", "name_to_handle_at", "bpf",
    "perf_event_open", "kcmp", "process_vm_readv", "process_vm_writev", "ptrace",
    "get_mempolicy", "set_mempolicy", "mbind", "move_pages", "quotactl", "quotactl_fd",
    "mount", "umount", "umount2", "pivot_root", "unshare", "setns", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "syslog", "fanotify_init",
    "lookup_dcookie", "clone3",
)

# Capability -> calls it makes legitimate again.
ALLOWED_WITH_CAPABILITY = {
    "CAP_SYS_ADMIN": (
        "mount", "umount", "umount2", "pivot_root", "unshare", "setns", "open_tree", "move_mount",
        "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "quotactl", "quotactl_fd",
        "lookup_dcookie", "perf_event_open", "fanotify_init", "name_to_handle_at",
        "open_by_handle_at", "clone3",
    ),
    "CAP_SYS_PTRACE": ("ptrace", "kcmp", "process_vm_readv", "process_vm_writev"),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_MODULE": ("delete_module", "finit_module", "init_module"),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_adjtime"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_SYS_NICE": ("get_mempolicy", "set_mempolicy", "mbind", "move_pages"),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}


def runtime_default(capabilities: list[str]) -> Seccomp:
    allowed: set[str] = set()
    for cap in capabilities:
        allowed.update(ALLOWED_WITH_CAPABILITY.get(cap, ()))
    denied = sorted(set(ALWAYS_DENIED) - allowed)
    # clone3 answers ENOSYS rather than EPERM: glibc then falls back to clone.
    syscalls = [SeccompSyscall(names=[n for n in denied if n != "clone3"], action="SCMP_ACT_ERRNO",
                               errno_ret=EPERM)]
    if "clone3" in denied:
        syscalls.append(SeccompSyscall(names=["clone3"], action="SCMP_ACT_ERRNO", errno_ret=38))
    return Seccomp(default_action="SCMP_ACT_ALLOW", syscalls=syscalls)


def load_localhost(path: str) -> Seccomp:
    """A profile file in OCI (or docker) seccomp format; its errors name the file."""
    if not path or not Path(path).is_absolute():
        raise InvalidArgument(f"seccomp localhost profile path {path!r} must be absolute")
    try:
        data: Any = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InvalidArgument(f"seccomp localhost profile {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"seccomp localhost profile {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or "defaultAction" not in data:
        raise InvalidArgument(f"seccomp localhost profile {path} has no defaultAction")
    # docker's format lists architectures under archMap; the OCI one under architectures.
    if "archMap" in data and "architectures" not in data:
        data["architectures"] = [a["architecture"] for a in data["archMap"]]
    data.pop("archMap", None)
    for s in data.get("syscalls") or []:
        if "name" in s and "names" not in s:
            s["names"] = [s.pop("name")]
        for k in ("includes", "excludes", "comment"):
            s.pop(k, None)
    try:
        return Seccomp.from_dict(data)
    except ValueError as e:
        raise InvalidArgument(f"seccomp localhost profile {path}: {e}") from None
