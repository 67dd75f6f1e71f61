"""System call names by audit architecture and number, from python-ptrace's tables.

python-ptrace's tables (`ptrace.syscall.linux.*`) date from Linux 5.8 (x86_64, aarch64) or
earlier (i386). Since Linux 5.1 a new system call has the same number on every architecture
(424 and up), so the calls added after those tables are one shared list here.
"""

from __future__ import annotations

from ptrace.syscall.linux import aarch64 as _aarch64
from ptrace.syscall.linux import i386 as _i386
from ptrace.syscall.linux import x86_64 as _x86_64

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
# An x32 call arrives under AUDIT_ARCH_X86_64 with this bit set in its number.
X32_SYSCALL_BIT = 0x40000000

# The unified numbers (424+) on every architecture, as in the kernel's syscall.tbl files.
UNIFIED = {
    424: "pidfd_send_signal", 425: "io_uring_setup", 426: "io_uring_enter", 427: "io_uring_register",
    428: "open_tree", 429: "move_mount", 430: "fsopen", 431: "fsconfig", 432: "fsmount", 433: "fspick",
    434: "pidfd_open", 435: "clone3", 436: "close_range", 437: "openat2", 438: "pidfd_getfd",
    439: "faccessat2", 440: "process_madvise", 441: "epoll_pwait2", 442: "mount_setattr",
    443: "quotactl_fd", 444: "landlock_create_ruleset", 445: "landlock_add_rule",
    446: "landlock_restrict_self", 447: "memfd_secret", 448: "process_mrelease", 449: "futex_waitv",
    450: "set_mempolicy_home_node", 451: "cachestat", 452: "fchmodat2", 453: "map_shadow_stack",
    454: "futex_wake", 455: "futex_wait", 456: "futex_requeue", 457: "statmount", 458: "listmount",
    459: "lsm_get_self_attr", 460: "lsm_set_self_attr", 461: "lsm_list_modules", 462: "mseal",
    463: "setxattrat", 464: "getxattrat", 465: "listxattrat", 466: "removexattrat",
    467: "open_tree_attr",
}

# audit architecture -> (runtime-spec architecture, number -> name)
ARCHITECTURES: dict[int, tuple[str, dict[int, str]]] = {
    AUDIT_ARCH_X86_64: ("SCMP_ARCH_X86_64", {**_x86_64.SYSCALL_NAMES, **UNIFIED}),
    AUDIT_ARCH_I386: ("SCMP_ARCH_X86", {**_i386.SYSCALL_NAMES, **UNIFIED}),
    AUDIT_ARCH_AARCH64: ("SCMP_ARCH_AARCH64", {**_aarch64.SYSCALL_NAMES, **UNIFIED}),
}


def scmp_arch(audit_arch: int, nr: int) -> str | None:
    """The runtime-spec architecture of a call (x32 calls are SCMP_ARCH_X32), None if unknown."""
    if audit_arch == AUDIT_ARCH_X86_64 and nr & X32_SYSCALL_BIT:
        return "SCMP_ARCH_X32"
    known = ARCHITECTURES.get(audit_arch)
    return known[0] if known else None


def name(audit_arch: int, nr: int) -> str | None:
    """The call's name, None when the table does not know the number (or the architecture)."""
    if audit_arch == AUDIT_ARCH_X86_64 and nr & X32_SYSCALL_BIT:
        nr &= ~X32_SYSCALL_BIT  # x32 shares x86_64's names (its own entries are 512 and up)
    known = ARCHITECTURES.get(audit_arch)
    return known[1].get(nr) if known else None


def all_names(audit_arch: int) -> set[str]:
    """Every native call name of an architecture (the x32-only entries left out)."""
    return {n for nr, n in ARCHITECTURES[audit_arch][1].items() if nr < 512}


_MACHINES = {"x86_64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64, "i686": AUDIT_ARCH_I386,
             "i386": AUDIT_ARCH_I386}


def native_audit_arch() -> int:
    import os
    return _MACHINES.get(os.uname().machine, AUDIT_ARCH_X86_64)


def native_arch() -> str:
    """The runtime-spec architecture of this host."""
    return ARCHITECTURES[native_audit_arch()][0]
