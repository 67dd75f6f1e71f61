"""A container that cannot run is refused at once, by name, and leaves nothing behind.

Each case breaks one thing the container's process needs (a capability the runtime does not
hold, its executable, its cwd, its user, an rlimit, a sysctl, a mount, its seccomp profile) or
kills the init while it is being set up. The contract every backend meets: `create` (or, where
a runtime defers the step, `start`) exits non-zero within FAST seconds with a message that
names what was wrong, and after a refused create there is no state, cgroup, mount or process.
Runtime calls get a short timeout, so a runtime that hangs fails the test instead of the suite.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oci.builder import SpecBuilder
from oci.cli_errors import error_message
from oci.errors import ContainerNotFound, RuntimeFailure, RuntimeTimeout, WrongState
from oci.spec import Seccomp
from tests.conformance import cgroups
from tests.conformance.capabilities import outside_bounding_set
from tests.conformance.conftest import Harness, backend_binary
from tests.conformance.rootfs import APP_GID, APP_UID

pytestmark = pytest.mark.root

FAST = 5.0  # seconds: runc and crun answer in well under 0.2 s
CALL_TIMEOUT = 3 * FAST  # what a hung runtime costs before the test fails


@dataclass
class Refusal:
    command: str  # "create" or "start"
    message: str
    exit_code: int | None
    seconds: float

    def names(self, *alternatives: str) -> bool:
        low = self.message.lower()
        return any(a.lower() in low for a in alternatives)


@pytest.fixture
def fast(h: Harness) -> Iterator[Harness]:
    """The harness with a runtime call timeout short enough to call a hang a failure."""
    previous = h.rt.runtime.timeout
    h.rt.runtime.timeout = CALL_TIMEOUT
    try:
        yield h
    finally:
        h.rt.runtime.timeout = previous


def _refused(h: Harness, builder: SpecBuilder) -> Refusal:
    """Create and start; one of them must fail, promptly. After a failed create nothing of the
    container may exist (cleanup then checks the rest after a forced delete either way)."""
    t0 = time.monotonic()
    try:
        c = h.create(builder)
    except RuntimeTimeout as e:
        raise AssertionError(f"{h.backend} create hung: {e}") from None
    except RuntimeFailure as e:
        took = time.monotonic() - t0
        _assert_nothing_left(h, h.containers[-1].id, h.containers[-1].cgroups_path)
        return Refusal("create", e.runtime_message or "", e.exit_code, took)
    t1 = time.monotonic()
    try:
        h.rt.start(c.id)
    except RuntimeTimeout as e:
        raise AssertionError(f"{h.backend} start hung: {e}") from None
    except (RuntimeFailure, WrongState) as e:  # runc: "cannot start a container that has stopped"
        return Refusal("start", e.runtime_message or "", e.exit_code, time.monotonic() - t1)
    raise AssertionError(f"{h.backend} created and started a container that cannot run")


def _assert_nothing_left(h: Harness, cid: str, cgroups_path: str) -> None:
    with pytest.raises(ContainerNotFound):
        h.rt.state(cid)
    assert not (Path(h.rt.runtime.root) / cid).exists(), "state directory left behind"
    left = [str(d) for d in cgroups.all_cgroup_dirs(cgroups_path) if d.exists()] if cgroups_path else []
    assert not left, f"cgroups left behind: {left}"
    assert cid not in Path("/proc/self/mountinfo").read_text()


def _check(r: Refusal, *names: str) -> None:
    assert r.seconds < FAST, f"{r.command} took {r.seconds:.2f}s to fail: {r}"
    assert r.exit_code not in (None, 0), r
    assert r.message.strip(), f"{r.command} failed without a message"
    if names:
        assert r.names(*names), f"the message names none of {names}: {r.message!r}"


def test_capability_outside_the_bounding_set(fast: Harness) -> None:
    missing = outside_bounding_set()
    if not missing:
        pytest.skip("the runtime holds every capability here: none can be asked for in vain")
    r = _refused(fast, fast.spec("true").add_capabilities(missing[0]))
    assert r.command == "create", r  # every backend applies capabilities before create returns
    _check(r, missing[0], "caps", "capset")
    if fast.backend == "pyrunc":  # runc and crun only say "operation not permitted"
        assert missing[0] in r.message, r


@pytest.mark.parametrize("args,names", [
    (["/no/such/binary"], ["/no/such/binary"]),
    (["no-such-command"], ["no-such-command"]),
    (["/etc/passwd"], ["/etc/passwd", "executable"]),  # crun: "open executable: Permission denied"
    (["/etc"], ["/etc", "executable"]),
], ids=["missing", "not-in-path", "not-executable", "directory"])
def test_executable_that_cannot_run(fast: Harness, args: list[str], names: list[str]) -> None:
    r = _refused(fast, fast.spec(*args))
    _check(r, *names)


def test_cwd_that_is_a_file(fast: Harness) -> None:
    _check(_refused(fast, fast.spec("true").cwd("/etc/passwd")), "/etc/passwd")


def test_user_outside_the_user_namespace_mappings(fast: Harness) -> None:
    b = fast.spec("true").user(APP_UID, APP_GID)
    b.user_namespace([(0, 100000, 100)], [(0, 100000, 100)])  # 0..99: devpts' gid 5 exists, 1000 not
    b.remove_mount("/sys/fs/cgroup")  # not mountable from a user namespace without a cgroup one
    fast.reachable_by_mapped_root()
    _check(_refused(fast, b), str(APP_UID), "unmapped")


@pytest.mark.known_failure("crun", "crun 1.8 refuses it but leaves the container's cgroup behind on "
                           "cgroup v2 (empty and removable: its cleanup skips it)", cgroup="v2")
def test_soft_rlimit_above_hard(fast: Harness) -> None:
    _check(_refused(fast, fast.spec("true").rlimit("NOFILE", 2048, 1024)), "rlimit")


def test_unknown_sysctl(fast: Harness) -> None:
    _check(_refused(fast, fast.spec("true").sysctl("net.ipv4.no_such_knob", "1")), "no_such_knob")


def test_bind_mount_of_a_missing_source(fast: Harness) -> None:
    b = fast.spec("true").bind_mount("/no-such-source-dir", "/mnt/x")
    _check(_refused(fast, b), "/no-such-source-dir")


def test_lowering_oom_score_adj_without_cap_sys_resource(fast: Harness) -> None:
    if "CAP_SYS_RESOURCE" not in outside_bounding_set():
        pytest.skip("the runtime holds CAP_SYS_RESOURCE: lowering oom_score_adj is allowed")
    _check(_refused(fast, fast.spec("true").oom_score_adj(-1000)), "oom_score_adj")


def test_seccomp_profile_that_denies_everything(fast: Harness) -> None:
    """Without no_new_privs the filter goes on before the init reports back, so the init dies
    where it stands; runc notices at start, crun and pyrunc at create. No backend can say more
    than that the init died (its own error cannot be written), so only the timing is asked."""
    b = fast.spec("true").no_new_privileges(False).seccomp(Seccomp(default_action="SCMP_ACT_ERRNO"))
    _check(_refused(fast, b))


def test_init_killed_while_being_set_up(fast: Harness, tmp_path: Path) -> None:
    """A prestart hook (run by the runtime, with the state on stdin) SIGKILLs the init. The
    hook's short timeout is for crun 1.8, which now and then waits it out before failing."""
    killer = tmp_path / "kill-init.sh"
    killer.write_text("#!/bin/sh\nkill -9 $(sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p')\n")
    killer.chmod(0o755)
    r = _refused(fast, fast.spec("true").hook("prestart", str(killer), timeout=2))
    assert r.command == "create", r
    _check(r)


# --- exec: the same failures in a new process of a running container ----------------------

def _exec_refused(h: Harness, cid: str, process: dict[str, object]) -> Refusal:
    """`exec` straight through the binary (CLIRuntime gives a foreground exec a day), with the
    json log the adapters read."""
    binary = backend_binary(h.backend)
    assert binary
    pfile = h.tmp / f"process-{time.monotonic_ns()}.json"
    pfile.write_text(json.dumps(process))
    log = pfile.with_suffix(".log")
    t0 = time.monotonic()
    argv = [binary, "--root", str(h.rt.runtime.root), "--log", str(log), "--log-format", "json",
            "exec", "--process", str(pfile), cid]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=CALL_TIMEOUT)
    took = time.monotonic() - t0
    assert done.returncode != 0, f"exec of {process['args']} succeeded"
    return Refusal("exec", error_message(log.read_text() if log.exists() else "", done.stderr),
                   done.returncode, took)


def _process(*args: str, **extra: object) -> dict[str, object]:
    caps = ["CAP_KILL"]
    base: dict[str, object] = {"args": list(args), "env": ["PATH=/bin"], "cwd": "/",
                               "user": {"uid": 0, "gid": 0},
                               "capabilities": {k: caps for k in ("bounding", "effective", "permitted")}}
    base.update(extra)
    return base


def _exec_cases() -> list[tuple[str, dict[str, object], list[str]]]:
    cases = [
        ("missing", _process("/no/such/binary"), ["/no/such/binary"]),
        ("not-executable", _process("/etc/passwd"), ["/etc/passwd", "executable"]),
        ("cwd-is-a-file", _process("true", cwd="/etc/passwd"), ["/etc/passwd"]),
        ("soft-rlimit-above-hard",
         _process("true", rlimits=[{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}]), ["rlimit"]),
    ]
    missing = outside_bounding_set()
    if missing:
        want = {k: ["CAP_KILL", missing[0]] for k in ("bounding", "effective", "permitted")}
        cases.append(("capability-outside-bounding-set", _process("true", capabilities=want),
                      [missing[0], "caps", "capset"]))
    return cases


def test_exec_failures_are_prompt_and_named(fast: Harness) -> None:
    c = fast.start(fast.spec("sleep", "100"))
    for name, process, names in _exec_cases():
        r = _exec_refused(fast, c.id, process)
        assert r.seconds < FAST, f"exec {name} took {r.seconds:.2f}s to fail: {r}"
        assert r.names(*names), f"exec {name}: the message names none of {names}: {r.message!r}"
        if fast.backend == "pyrunc" and name == "capability-outside-bounding-set":
            assert names[0] in r.message, r
    assert fast.rt.state(c.id).status == "running"  # a failed exec does not hurt the container
    assert fast.rt.pids(c.id) == [c.pid], "a failed exec left a process in the container"
