"""Resources land in the cgroup and are enforced; update, pause and resume."""

from __future__ import annotations

import os
import signal
import time

import pytest

from oci.spec import CPU, Memory, Pids, Resources
from tests.conformance import cgroups
from tests.conformance.conftest import Harness

pytestmark = pytest.mark.root

MiB = 1 << 20


def test_memory_limit_oom_kills(h: Harness) -> None:
    # tail keeps the whole "line" in memory: /dev/zero has no newline, so it grows until killed
    b = h.spec("sh", "-c", "exec tail /dev/zero").memory(32 * MiB)
    c = h.start(b)
    assert c.pid and cgroups.memory_limit(c.pid) == 32 * MiB
    memdir = cgroups.cgroup_dir(c.pid, "memory")
    result = h.wait(c, timeout=60)
    assert result.signal == signal.SIGKILL, result
    kills = cgroups.oom_kills(memdir)
    assert kills is None or kills >= 1, f"oom_kill={kills}"
    h.rt.delete(c.id)


def test_pids_limit_stops_fork_bomb(h: Harness) -> None:
    # ash gives up on the first failed fork; without the limit all 200 children would start
    script = "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; echo all-started"
    c = h.create(h.spec("sh", "-c", script).pids(16))
    assert c.pid and cgroups.pids_max(c.pid) == "16"
    h.rt.start(c.id)
    result = h.wait(c, timeout=30)
    assert "all-started" not in result.stdout and "can't fork" in result.stderr, result
    h.rt.delete(c.id)


def test_cpu_values_land_in_cgroup(h: Harness) -> None:
    cpus = "0" if os.cpu_count() == 1 else "1"
    b = h.spec("sleep", "100").cpu(shares=512, quota=50000, period=100000, cpus=cpus, mems="0")
    c = h.start(b)
    assert c.pid
    assert cgroups.cpu_quota_period(c.pid) == (50000, 100000)
    want = 512 if not cgroups.UNIFIED_ONLY else cgroups.shares_to_weight(512)
    assert cgroups.cpu_shares_or_weight(c.pid) == want
    assert cgroups.cpuset(c.pid) == (cpus, "0")
    # and the kernel applies the cpuset to the process
    allowed = open(f"/proc/{c.pid}/status").read().split("Cpus_allowed_list:")[1].split()[0]
    assert allowed == cpus


def test_update_memory_and_pids(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100").memory(64 * MiB).pids(100))
    assert c.pid and cgroups.memory_limit(c.pid) == 64 * MiB
    h.rt.update(c.id, Resources(memory=Memory(limit=128 * MiB), pids=Pids(limit=50)))
    assert cgroups.memory_limit(c.pid) == 128 * MiB
    assert cgroups.pids_max(c.pid) == "50"
    assert h.rt.state(c.id).status == "running"


def test_update_cpu(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100"))
    assert c.pid
    h.rt.update(c.id, Resources(cpu=CPU(quota=20000, period=100000)))
    assert cgroups.cpu_quota_period(c.pid) == (20000, 100000)


def test_pause_and_resume(h: Harness) -> None:
    c = h.start(h.spec("sh", "-c", "while true; do echo tick; sleep 0.02; done"))
    assert c.pid
    h.wait_for_output(c, "tick")
    h.rt.pause(c.id)
    # crun 1.8 on cgroup v1 returns while freezer.state may still read FREEZING, and then
    # reports "running"; under load that lasts a few ms. Paused must follow promptly.
    deadline = time.monotonic() + 2
    while h.rt.state(c.id).status != "paused" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert h.rt.state(c.id).status == "paused"
    assert cgroups.frozen(c.pid)
    size = c.stdout.stat().st_size
    time.sleep(0.3)
    assert c.stdout.stat().st_size == size, "container kept running while paused"
    h.rt.resume(c.id)
    assert h.rt.state(c.id).status == "running"
    assert not cgroups.frozen(c.pid)
    deadline = time.monotonic() + 5
    while c.stdout.stat().st_size == size and time.monotonic() < deadline:
        time.sleep(0.02)
    assert c.stdout.stat().st_size > size, "container did not resume"


def test_delete_force_paused_container(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100"))
    h.rt.pause(c.id)
    h.rt.delete(c.id, force=True)
    h.wait(c)


def test_memory_swap_and_reservation(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100").memory(64 * MiB, swap=128 * MiB, reservation=32 * MiB))
    assert c.pid
    if cgroups.UNIFIED_ONLY:
        # v2 counts swap separately: memory.swap.max is swap minus the memory limit
        assert cgroups.read(c.pid, "memory", "", "memory.swap.max") == str(64 * MiB)
        assert cgroups.read(c.pid, "memory", "", "memory.low") == str(32 * MiB)
    else:
        assert cgroups.read(c.pid, "memory", "memory.memsw.limit_in_bytes", "") == str(128 * MiB)
        assert cgroups.read(c.pid, "memory", "memory.soft_limit_in_bytes", "") == str(32 * MiB)


def test_hugepage_limit(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100").hugepage_limit("2MB", 4 * MiB))
    assert c.pid
    assert cgroups.read(c.pid, "hugetlb", "hugetlb.2MB.limit_in_bytes", "hugetlb.2MB.max") == str(4 * MiB)


def _cgroup_lines(pid: int) -> list[tuple[str, str]]:
    """(controllers, path) of each hierarchy the process is in; "" is the cgroup2 one."""
    out = []
    for line in open(f"/proc/{pid}/cgroup").read().splitlines():
        _, ctrls, path = line.split(":", 2)
        out.append((ctrls, path))
    return out


@pytest.mark.parametrize("userns", [False, True], ids=["host-users", "user-namespace"])
def test_init_is_in_its_cgroup_in_every_hierarchy(h: Harness, userns: bool) -> None:
    """Every hierarchy, the cgroup2 one of a hybrid host included (runc joins it too): pyrunc
    moves its set-up process into v1 through `tasks` and forks the init into cgroup2 with
    clone3, or, in a user namespace, moves the init there itself; all must end in one place."""
    b = h.spec("sleep", "100")
    if userns:
        b.user_namespace([(0, 100000, 65536)], [(0, 100000, 65536)])
        b.remove_mount("/sys/fs/cgroup")
        h.reachable_by_mapped_root()
    c = h.create(b)
    assert c.pid
    lines = _cgroup_lines(c.pid)
    assert lines, lines
    for ctrls, path in lines:
        assert path == c.cgroups_path, (ctrls, path, lines)
    # the runtime's own set-up processes are gone from the container's cgroups: only the init
    assert h.rt.pids(c.id) == [c.pid]
    h.rt.start(c.id)
    h.rt.kill(c.id, signal.SIGKILL)
    h.wait(c, timeout=30)
    h.rt.delete(c.id)


def test_pids_limit_of_one(h: Harness) -> None:
    """A limit of one process still lets the init start (it is the one); its first fork fails."""
    c = h.create(h.spec("sh", "-c", "echo started; true & echo forked").pids(1))
    assert c.pid and cgroups.pids_max(c.pid) == "1"
    h.rt.start(c.id)
    result = h.wait(c, timeout=30)
    assert "started" in result.stdout and "forked" not in result.stdout, result
    h.rt.delete(c.id)
