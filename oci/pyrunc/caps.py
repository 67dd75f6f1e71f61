"""Linux capabilities by name, applied in runc's order: bounding drop, then (after the uid
change) capset of effective/permitted/inheritable, then ambient raise."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any

NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]
NUMBERS = {n: i for i, n in enumerate(NAMES)}


_last: int | None = None


def last_cap() -> int:
    global _last
    if _last is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _last = int(f.read())
        except OSError:
            _last = len(NAMES) - 1
    return _last


def to_mask(names: list[str] | None, unknown: list[str] | None = None) -> int:
    mask = 0
    for n in names or []:
        num = NUMBERS.get(n.upper() if n.upper().startswith("CAP_") else "CAP_" + n.upper())
        if num is None:
            if unknown is not None:
                unknown.append(n)
            continue
        mask |= 1 << num
    return mask


def drop_bounding(caps: dict[str, Any]) -> None:
    from . import syscalls as sc
    keep = to_mask(caps.get("bounding"))
    for num in range(last_cap() + 1):
        if not keep & (1 << num):
            sc.prctl(sc.PR_CAPBSET_DROP, num)


def apply(caps: dict[str, Any]) -> None:
    from . import syscalls as sc
    top = (1 << (last_cap() + 1)) - 1
    eff, perm, inh = (to_mask(caps.get(k)) & top for k in ("effective", "permitted", "inheritable"))
    sc.capset(eff, perm, inh)
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    amb = to_mask(caps.get("ambient")) & top
    for num in range(last_cap() + 1):
        if amb & (1 << num):
            try:
                sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, num)
            except OSError:
                pass  # not in permitted+inheritable: the kernel refuses, runc ignores it too
