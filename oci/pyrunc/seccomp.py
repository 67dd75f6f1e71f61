"""linux.seccomp through libseccomp (through ffi). `translate` is pure: spec -> (default action,
arches, rules); `load` builds and loads the filter."""

import errno as _errno

from .errors import PyruncError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (and collections) cost milliseconds at every short-lived command
    from collections.abc import Callable
    from typing import Any

ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000
ACT_NOTIFY = 0x7FC00000

OPERATORS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
             "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
ACTIONS = ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG"]
ARCHES = {"SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
          "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64", "SCMP_ARCH_MIPS": "mips",
          "SCMP_ARCH_MIPS64": "mips64", "SCMP_ARCH_MIPS64N32": "mips64n32", "SCMP_ARCH_MIPSEL": "mipsel",
          "SCMP_ARCH_MIPSEL64": "mipsel64", "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
          "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64", "SCMP_ARCH_PPC64LE": "ppc64le",
          "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x", "SCMP_ARCH_RISCV64": "riscv64"}
_FLTATR_CTL_NNP = 3


def action(name: str, errno_ret: int | None) -> int:
    if name == "SCMP_ACT_NOTIFY":
        raise PyruncError("seccomp action SCMP_ACT_NOTIFY is not supported by pyrunc")
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return ACT_KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return ACT_KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return ACT_TRAP
    if name == "SCMP_ACT_ERRNO":
        return ACT_ERRNO | ((_errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return ACT_TRACE | ((_errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_ALLOW":
        return ACT_ALLOW
    if name == "SCMP_ACT_LOG":
        return ACT_LOG
    raise PyruncError(f"unknown seccomp action {name!r}")


Rule = tuple[str, int, list[tuple[int, int, int, int]]]


def translate(spec: "dict[str, Any]") -> tuple[int, list[str], list[Rule]]:
    default = action(spec.get("defaultAction", ""), spec.get("defaultErrnoRet"))
    arches = []
    for a in spec.get("architectures") or []:
        if a not in ARCHES:
            raise PyruncError(f"unknown seccomp architecture {a!r}")
        arches.append(ARCHES[a])
    rules: list[Rule] = []
    for sc in spec.get("syscalls") or []:
        act = action(sc.get("action", ""), sc.get("errnoRet"))
        if act == default:
            continue  # libseccomp rejects rules that repeat the default action
        args = []
        for a in sc.get("args") or []:
            op = OPERATORS.get(a.get("op", ""))
            if op is None:
                raise PyruncError(f"unknown seccomp operator {a.get('op')!r}")
            args.append((a.get("index", 0), op, a.get("value", 0), a.get("valueTwo", 0)))
        names = sc.get("names") or ([sc["name"]] if sc.get("name") else [])
        # several conditions on one argument cannot share a rule: emit one rule per condition
        same_index = len({x[0] for x in args}) != len(args)
        for name in names:
            if same_index:
                rules += [(name, act, [c]) for c in args]
            else:
                rules.append((name, act, args))
    return default, arches, rules


def load(spec: "dict[str, Any]") -> None:
    prepare(spec)()


def prepare(spec: "dict[str, Any]") -> "Callable[[], None]":
    """Build the filter now (libseccomp must be loaded while the host filesystem is still
    visible); the returned function loads it into the kernel."""
    from . import ffi

    default, arches, rules = translate(spec)
    try:
        lib = ffi.Library("libseccomp.so.2")
    except OSError as e:
        raise PyruncError(f"seccomp: cannot load libseccomp: {e}") from None

    class ArgCmp(ffi.Structure):
        _fields_ = [("arg", ffi.c_uint), ("op", ffi.c_int), ("datum_a", ffi.c_uint64),
                    ("datum_b", ffi.c_uint64)]

    lib.seccomp_init.restype = ffi.c_void_p
    lib.seccomp_init.argtypes = [ffi.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ffi.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ffi.c_char_p]
    lib.seccomp_arch_add.argtypes = [ffi.c_void_p, ffi.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ffi.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ffi.c_void_p, ffi.c_uint32, ffi.c_int, ffi.c_uint,
                                           ffi.c_void_p]
    lib.seccomp_attr_set.argtypes = [ffi.c_void_p, ffi.c_int, ffi.c_uint32]
    lib.seccomp_load.argtypes = [ffi.c_void_p]
    lib.seccomp_release.argtypes = [ffi.c_void_p]
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise PyruncError("seccomp_init failed")
    try:
        # libseccomp would set no_new_privs itself; that is the spec's decision, not ours
        lib.seccomp_attr_set(ctx, _FLTATR_CTL_NNP, 0)
        for a in arches:
            token = lib.seccomp_arch_resolve_name(a.encode())
            if token == 0:
                continue
            rc = lib.seccomp_arch_add(ctx, token)
            if rc < 0 and rc != -_errno.EEXIST:
                raise PyruncError(f"seccomp_arch_add {a}: {-rc}")
        for name, act, args in rules:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == -1:
                continue  # unknown on this kernel/arch: runc skips it too
            arr = (ArgCmp * max(1, len(args)))(*[ArgCmp(*c) for c in args])
            rc = lib.seccomp_rule_add_array(ctx, act, nr, len(args), arr)
            if rc < 0:
                raise PyruncError(f"seccomp: adding rule for {name}: {_errno.errorcode.get(-rc, -rc)}")
    except BaseException:
        lib.seccomp_release(ctx)
        raise

    def install() -> None:
        rc = lib.seccomp_load(ctx)
        lib.seccomp_release(ctx)
        if rc < 0:
            raise PyruncError(f"seccomp_load: {_errno.errorcode.get(-rc, -rc)}")
    return install
