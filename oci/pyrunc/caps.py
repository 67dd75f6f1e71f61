"""Linux capabilities by name, applied in runc's order: bounding drop, then (after the uid
change) capset of effective/permitted/inheritable, then ambient raise.

No process can grant a capability it does not hold: effective/permitted must come from the
runtime's own permitted set, inheritable from its bounding set too. `check_available` says so
by name before anything is created (runc only learns it from capset's EPERM); a new user
namespace starts with every capability again, so it is only asked without one.
"""

import posix

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


def held() -> tuple[int, int]:
    """(permitted, bounding) masks of this process."""
    prm = bnd = 0
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"CapPrm:"):
                prm = int(line.split()[1], 16)
            elif line.startswith(b"CapBnd:"):
                bnd = int(line.split()[1], 16)
    return prm, bnd


def missing(caps: "dict[str, Any]", permitted: int, inheritable: int, last: int) -> list[str]:
    """Requested capabilities (up to `last`, the kernel's) that capset would refuse: effective
    and permitted ones outside `permitted`, inheritable ones outside `inheritable`."""
    top = (1 << (last + 1)) - 1
    want = (to_mask(caps.get("effective")) | to_mask(caps.get("permitted"))) & top & ~permitted
    want |= to_mask(caps.get("inheritable")) & top & ~inheritable
    return [NAMES[n] for n in range(min(last + 1, len(NAMES))) if want >> n & 1]


def unavailable_message(names: list[str], bounding: int) -> str:
    """runc's "unable to apply caps: operation not permitted", plus which ones and why."""
    outside = all(not bounding >> NUMBERS[n] & 1 for n in names)
    where = "the capability bounding set" if outside else "the permitted capabilities"
    verb = "is" if len(names) == 1 else "are"
    return f"unable to apply caps: {', '.join(names)} {verb} not in {where} of the runtime: " \
           "operation not permitted"


def check_available(caps: "dict[str, Any] | None") -> None:
    """Fail before forking when the container asks for a capability we cannot give."""
    if not caps:
        return
    prm, bnd = held()
    names = missing(caps, prm, prm & bnd, last_cap())
    if names:
        from .errors import PyruncError
        raise PyruncError(unavailable_message(names, bnd))


def drop_bounding(caps: "dict[str, Any]") -> None:
    from . import syscalls as sc
    keep = to_mask(caps.get("bounding"))
    for num in range(last_cap() + 1):
        if not keep & (1 << num):
            sc.prctl(sc.PR_CAPBSET_DROP, num)


def apply(caps: "dict[str, Any]") -> None:
    from . import syscalls as sc
    top = (1 << (last_cap() + 1)) - 1
    eff, perm, inh = (to_mask(caps.get(k)) & top for k in ("effective", "permitted", "inheritable"))
    try:
        sc.capset(eff, perm, inh)
    except OSError as e:
        raise _explain(caps, eff, perm, e) from None
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    amb = to_mask(caps.get("ambient")) & top
    for num in range(last_cap() + 1):
        if amb & (1 << num):
            try:
                sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, num)
            except OSError:
                pass  # not in permitted+inheritable: the kernel refuses, runc ignores it too


def _explain(caps: "dict[str, Any]", eff: int, perm: int, e: OSError) -> Exception:
    """capset only says EPERM; name the capabilities it refused."""
    import errno

    from .errors import PyruncError
    if e.errno != errno.EPERM:
        return PyruncError(f"unable to apply caps: {posix.strerror(e.errno or 0).lower()}")
    prm, bnd = held()
    names = missing(caps, prm, prm & bnd, last_cap())
    if names:
        return PyruncError(unavailable_message(names, bnd))
    extra = [NAMES[n] for n in range(len(NAMES)) if (eff & ~perm) >> n & 1]
    if extra:
        return PyruncError(f"unable to apply caps: effective {', '.join(extra)} not in the permitted list: "
                           "operation not permitted")
    return PyruncError("unable to apply caps: operation not permitted")
