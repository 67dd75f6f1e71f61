"""Device access on cgroup v2: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE.

cgroup v2 has no devices.allow/devices.deny files; the kernel asks a program attached to the
cgroup instead, once per mknod, open for read and open for write of a device node. `compile_rules`
turns the spec's rule list into that program (pure, unit-testable); `install` loads it and
attaches it, replacing whatever program pyrunc attached there before.

The rules mean what they mean on v1: evaluated in order with the last matching rule deciding,
and nothing allowed that no rule allows (pyrunc starts v1 from "deny a *:* rwm" too).
"""

import posix
import struct

from .errors import PyruncError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# struct bpf_cgroup_dev_ctx { u32 access_type; /* access << 16 | type */ u32 major; u32 minor; }
_ACC_MKNOD, _ACC_READ, _ACC_WRITE = 1, 2, 4
_ACCESS_BITS = {"m": _ACC_MKNOD, "r": _ACC_READ, "w": _ACC_WRITE}
_DEV_BLOCK, _DEV_CHAR = 1, 2
_DEV_TYPES = {"b": _DEV_BLOCK, "c": _DEV_CHAR, "u": _DEV_CHAR}

# eBPF opcodes used (class | op | source)
_LDX_W = 0x61        # dst = *(u32 *)(src + off)
_ALU32_AND_K = 0x54  # dst &= imm
_ALU32_RSH_K = 0x74  # dst >>= imm
_ALU64_MOV_X = 0xBF  # dst = src
_ALU64_MOV_K = 0xB7  # dst = imm
_JNE_K = 0x55        # if dst != imm: pc += off
_EXIT = 0x95

_R0, _R1, _R2, _R3, _R4, _R5 = range(6)

# bpf(2) commands, program and attach types, flags
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_DETACH = 9
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_PROG_QUERY = 16
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _access_mask(access: str) -> int:
    mask = 0
    for ch in access or "rwm":
        if ch not in _ACCESS_BITS:
            raise PyruncError(f"device rule: unknown access {ch!r} in {access!r}")
        mask |= _ACCESS_BITS[ch]
    return mask


def _rule_block(rule: "dict[str, Any]") -> tuple[list[bytes], bool] | None:
    """The instructions of one rule: checks that skip to the block's end, then the verdict.
    Returns (instructions, unconditional) or None for a rule that does not concern devices
    (type p: fifos are not device-controlled)."""
    typ = rule.get("type") or "a"
    if typ not in ("a", *_DEV_TYPES):
        return None
    checks: list[list[bytes]] = []  # each check's last instruction is the jump to the end
    if typ != "a":
        checks.append([_insn(_JNE_K, _R2, imm=_DEV_TYPES[typ])])
    mask = _access_mask(rule.get("access") or "rwm")
    if mask != _ACC_MKNOD | _ACC_READ | _ACC_WRITE:
        # the request must ask for nothing outside the rule's access
        checks.append([_insn(_ALU64_MOV_X, _R1, _R3), _insn(_ALU32_AND_K, _R1, imm=~mask & 7),
                       _insn(_JNE_K, _R1, imm=0)])
    for reg, key in ((_R4, "major"), (_R5, "minor")):
        value = rule.get(key)
        if value is not None and value >= 0:
            checks.append([_insn(_JNE_K, reg, imm=value)])
    verdict = [_insn(_ALU64_MOV_K, _R0, imm=1 if rule.get("allow") else 0), _insn(_EXIT)]
    body_len = sum(len(c) for c in checks) + len(verdict)
    out: list[bytes] = []
    for check in checks:
        *head, jump = check
        out += head
        # a jump's offset counts from the next instruction; the target is the block's end
        skip = body_len - len(out) - 1
        code, regs, _off, imm = struct.unpack("<BBhi", jump)
        out.append(struct.pack("<BBhi", code, regs, skip, imm))
    out += verdict
    return out, not checks


def compile_rules(rules: "list[dict[str, Any]]") -> bytes:
    """The program for these rules: the last matching rule decides; no match denies."""
    prog = [
        _insn(_LDX_W, _R2, _R1, 0), _insn(_ALU32_AND_K, _R2, imm=0xFFFF),  # r2 = device type
        _insn(_LDX_W, _R3, _R1, 0), _insn(_ALU32_RSH_K, _R3, imm=16),      # r3 = access asked
        _insn(_LDX_W, _R4, _R1, 4),                                         # r4 = major
        _insn(_LDX_W, _R5, _R1, 8),                                         # r5 = minor
    ]
    for rule in reversed(rules):
        block = _rule_block(rule)
        if block is None:
            continue
        insns, unconditional = block
        prog += insns
        if unconditional:
            return b"".join(prog)  # the verifier refuses unreachable instructions after it
    prog += [_insn(_ALU64_MOV_K, _R0, imm=0), _insn(_EXIT)]
    return b"".join(prog)


def _attr(size: int = 128) -> "Any":
    from . import ffi
    return ffi.string_buffer(size)


def _load(program: bytes) -> int:
    from . import ffi
    from . import syscalls as sc
    insns = ffi.string_buffer(program, len(program))
    license_ = ffi.string_buffer(b"Apache-2.0")
    log = ffi.string_buffer(1 << 16)

    def attempt(log_level: int) -> int:
        attr = _attr()
        struct.pack_into("<IIQQII", attr, 0, _BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8,
                         ffi.addressof(insns), ffi.addressof(license_),
                         log_level, len(log) if log_level else 0)
        if log_level:
            struct.pack_into("<Q", attr, 32, ffi.addressof(log))
        return sc.bpf(_BPF_PROG_LOAD, attr)

    try:
        return attempt(0)
    except OSError as e:
        if e.errno == 1:  # kernels before 5.11 charge programs to RLIMIT_MEMLOCK
            from .process import RLIMITS
            try:
                sc.setrlimit(RLIMITS["RLIMIT_MEMLOCK"], sc.RLIM_INFINITY, sc.RLIM_INFINITY)
                return attempt(0)
            except OSError:
                pass
        try:
            return attempt(1)
        except OSError:
            detail = log.value.decode(errors="replace").strip().splitlines()[-3:]
            raise PyruncError(f"cgroup v2 device filter: loading the eBPF program failed: {e.strerror}"
                              + (f" ({'; '.join(detail)})" if detail else "")) from None


def _attached(cgroup_fd: int) -> list[int]:
    """Ids of the device programs attached to this cgroup itself (not inherited)."""
    from . import ffi
    from . import syscalls as sc
    ids = (ffi.c_uint32 * 64)()
    attr = _attr()
    struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, _BPF_CGROUP_DEVICE, 0, 0, ffi.addressof(ids), 64)
    sc.bpf(_BPF_PROG_QUERY, attr)
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[:count])


def install(cgroup_dir: str, rules: "list[dict[str, Any]]") -> None:
    """Attach the program for `rules` to the cgroup, then detach the ones pyrunc put there before
    (in that order, so the cgroup is never without a filter)."""
    from . import syscalls as sc
    program = compile_rules(rules)
    cg = posix.open(cgroup_dir, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    prog = -1
    try:
        try:
            old = _attached(cg)
        except OSError as e:
            raise PyruncError(f"cgroup v2 device filter: query {cgroup_dir}: {e.strerror}") from None
        prog = _load(program)
        attr = _attr()
        struct.pack_into("<IIII", attr, 0, cg, prog, _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI)
        try:
            sc.bpf(_BPF_PROG_ATTACH, attr)
        except OSError as e:
            raise PyruncError(f"cgroup v2 device filter: attach to {cgroup_dir}: {e.strerror}") from None
        for prog_id in old:
            _detach(cg, prog_id)
    finally:
        if prog >= 0:
            posix.close(prog)
        posix.close(cg)


def _detach(cgroup_fd: int, prog_id: int) -> None:
    from . import syscalls as sc
    attr = _attr()
    struct.pack_into("<I", attr, 0, prog_id)
    try:
        fd = sc.bpf(_BPF_PROG_GET_FD_BY_ID, attr)
    except OSError as e:
        if e.errno == 2:  # gone meanwhile
            return
        raise PyruncError(f"cgroup v2 device filter: program {prog_id}: {e.strerror}") from None
    try:
        attr = _attr()
        struct.pack_into("<III", attr, 0, cgroup_fd, fd, _BPF_CGROUP_DEVICE)
        try:
            sc.bpf(_BPF_PROG_DETACH, attr)
        except OSError as e:
            if e.errno != 2:
                raise PyruncError(f"cgroup v2 device filter: detach {prog_id}: {e.strerror}") from None
    finally:
        posix.close(fd)
