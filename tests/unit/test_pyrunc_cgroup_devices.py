"""pyrunc's cgroup v2 device filter: the compiled eBPF program, run by a small interpreter of the
instructions it uses, against the v1 meaning of the rules (last match decides, default deny)."""

from __future__ import annotations

import itertools
import struct

import pytest

from oci.pyrunc.cgroup_devices import compile_rules
from oci.pyrunc.devices import cgroup_rules
from oci.pyrunc.errors import PyruncError

M, R, W = 1, 2, 4
BLOCK, CHAR = 1, 2


def run(program: bytes, dev_type: int, access: int, major: int, minor: int) -> int:
    """Execute the program on one request, as the kernel would; returns r0 (1 allow, 0 deny)."""
    insns = [struct.unpack_from("<BBhi", program, i) for i in range(0, len(program), 8)]
    ctx = {0: (access << 16) | dev_type, 4: major, 8: minor}
    regs = [0] * 11
    pc = 0
    seen = set()
    while True:
        code, regbyte, off, imm = insns[pc]
        seen.add(pc)
        dst, src = regbyte & 0xF, regbyte >> 4
        pc += 1
        if code == 0x61:
            assert src == 1, "only the context is read"
            regs[dst] = ctx[off]
        elif code == 0x54:
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif code == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == 0xBF:
            regs[dst] = regs[src]
        elif code == 0xB7:
            regs[dst] = imm
        elif code == 0x55:
            assert off >= 0, "forward jumps only"
            if regs[dst] != imm:
                pc += off
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def reference(rules: list[dict], dev_type: int, access: int, major: int, minor: int) -> int:
    verdict = 0
    for r in rules:
        t = r.get("type") or "a"
        if t == "p":
            continue
        if t != "a" and {"b": BLOCK, "c": CHAR, "u": CHAR}[t] != dev_type:
            continue
        mask = sum({"m": M, "r": R, "w": W}[ch] for ch in (r.get("access") or "rwm"))
        if access & ~mask:
            continue
        if r.get("major") not in (None, -1) and r["major"] != major:
            continue
        if r.get("minor") not in (None, -1) and r["minor"] != minor:
            continue
        verdict = 1 if r.get("allow") else 0
    return verdict


def rule(allow: bool, typ: str = "a", major: int | None = None, minor: int | None = None,
         access: str = "rwm") -> dict:
    return {"allow": allow, "type": typ, "major": major, "minor": minor, "access": access}


REQUESTS = list(itertools.product((BLOCK, CHAR), (M, R, W, R | W), (1, 5, 10, 136), (3, 5, 237)))

RULE_SETS = {
    "pyrunc defaults": cgroup_rules([rule(False)], []),
    "defaults plus a device": cgroup_rules([rule(False)], [{"type": "c", "major": 10, "minor": 237}]),
    "privileged": cgroup_rules([rule(False), rule(True)], []),
    "deny after allow": [rule(True, "c", 1), rule(False, "c", 1, 5, "w")],
    "partial access": [rule(True, "c", 10, None, "rw"), rule(True, "b", None, None, "m")],
    "fifo rules ignored": [rule(True, "p"), rule(True, "c", 1, 3, "r")],
    "empty": [],
}


@pytest.mark.parametrize("name", RULE_SETS)
def test_program_matches_v1_semantics(name: str) -> None:
    rules = RULE_SETS[name]
    program = compile_rules(rules)
    assert len(program) % 8 == 0
    for req in REQUESTS:
        assert run(program, *req) == reference(rules, *req), (name, req)


def test_defaults_allow_mknod_and_standard_nodes_only() -> None:
    program = compile_rules(cgroup_rules([rule(False)], []))
    assert run(program, CHAR, M, 10, 237) == 1      # mknod of anything, as runc allows
    assert run(program, CHAR, R, 10, 237) == 0      # but not opening it
    assert run(program, CHAR, R | W, 1, 3) == 1     # /dev/null
    assert run(program, BLOCK, R, 7, 0) == 0


def test_nothing_unreachable_after_an_unconditional_rule() -> None:
    # the verifier refuses dead code: an allow-all rule ends the program
    program = compile_rules([rule(True, "c", 1, 3), rule(True)])
    assert len(program) // 8 == 6 + 2


def test_bad_access_letter() -> None:
    with pytest.raises(PyruncError, match="unknown access 'x'"):
        compile_rules([rule(True, "c", 1, 3, "rx")])


def test_a_kernel_charging_programs_to_memlock_gets_its_limit_lifted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before 5.11 a program load is refused (EPERM) under a small RLIMIT_MEMLOCK: the limit is
    raised to infinity (prlimit through libc, not the resource module) and the load tried again."""
    from oci.pyrunc import cgroup_devices
    from oci.pyrunc import syscalls as sc
    loads: list[int] = []
    limits: list[tuple[int, int, int]] = []

    def bpf(cmd: int, attr: object) -> int:
        loads.append(cmd)
        if len(loads) == 1:
            raise OSError(1, "Operation not permitted")
        return 7

    monkeypatch.setattr(sc, "bpf", bpf)
    monkeypatch.setattr(sc, "setrlimit", lambda res, soft, hard: limits.append((res, soft, hard)))
    assert cgroup_devices._load(compile_rules(cgroup_rules([], []))) == 7
    assert limits == [(8, sc.RLIM_INFINITY, sc.RLIM_INFINITY)] and len(loads) == 2
