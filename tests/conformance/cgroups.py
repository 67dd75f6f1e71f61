"""Read a process's cgroup settings from the host, on cgroup v1, hybrid or v2."""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIFIED_ONLY = (CGROUP_ROOT / "cgroup.controllers").exists()


def _v1_mounts() -> dict[str, Path]:
    """controller name -> mount point, from /proc/self/mountinfo."""
    mounts: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _source, opts = right.split()[:3]
            if fstype != "cgroup":
                continue
            mountpoint = Path(left.split()[4])
            for opt in opts.split(","):
                mounts.setdefault(opt, mountpoint)
    return mounts


def unified_mount() -> Path | None:
    if UNIFIED_ONLY:
        return CGROUP_ROOT
    p = CGROUP_ROOT / "unified"
    return p if (p / "cgroup.procs").exists() else None


def cgroup_dir(pid: int, controller: str) -> Path:
    """The directory holding ``pid``'s cgroup for ``controller`` (v1) or its unified cgroup (v2)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    if not UNIFIED_ONLY:
        mounts = _v1_mounts()
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return mounts[controller] / path.lstrip("/")
    for line in lines:
        hid, _, path = line.split(":", 2)
        if hid == "0":
            mount = unified_mount()
            assert mount is not None
            return mount / path.lstrip("/")
    raise LookupError(f"no {controller} cgroup for pid {pid}")


def read(pid: int, controller: str, v1_file: str, v2_file: str) -> str:
    d = cgroup_dir(pid, controller)
    return (d / (v2_file if UNIFIED_ONLY else v1_file)).read_text().strip()


def memory_limit(pid: int) -> int | None:
    value = read(pid, "memory", "memory.limit_in_bytes", "memory.max")
    return None if value == "max" else int(value)


def cpu_quota_period(pid: int) -> tuple[int | None, int]:
    if UNIFIED_ONLY:
        quota, period = read(pid, "cpu", "", "cpu.max").split()
        return (None if quota == "max" else int(quota)), int(period)
    q = int(read(pid, "cpu", "cpu.cfs_quota_us", ""))
    return (None if q < 0 else q), int(read(pid, "cpu", "cpu.cfs_period_us", ""))


def shares_to_weight(shares: int) -> int:
    """The conversion runc and crun use to map cgroup v1 shares to v2 weight."""
    return 1 + ((shares - 2) * 9999) // 262142


def cpu_shares_or_weight(pid: int) -> int:
    return int(read(pid, "cpu", "cpu.shares", "cpu.weight"))


def cpuset(pid: int) -> tuple[str, str]:
    cpus = read(pid, "cpuset", "cpuset.cpus", "cpuset.cpus")
    return cpus, read(pid, "cpuset", "cpuset.mems", "cpuset.mems")


def pids_max(pid: int) -> str:
    return read(pid, "pids", "pids.max", "pids.max")


def frozen(pid: int) -> bool:
    if UNIFIED_ONLY:
        return read(pid, "freezer", "", "cgroup.freeze") == "1"
    return read(pid, "freezer", "freezer.state", "") == "FROZEN"


def oom_kills(pid_cgroup_dir: Path) -> int | None:
    """OOM kill count of a memory cgroup dir (v1 memory.oom_control, v2 memory.events)."""
    name = "memory.events" if UNIFIED_ONLY else "memory.oom_control"
    try:
        text = (pid_cgroup_dir / name).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return None


def all_cgroup_dirs(relative: str) -> list[Path]:
    """Every place a cgroup with this path could live (each v1 controller and the unified tree)."""
    rel = relative.lstrip("/")
    dirs = []
    if not UNIFIED_ONLY:
        for mount in set(_v1_mounts().values()):
            dirs.append(mount / rel)
    unified = unified_mount()
    if unified is not None:
        dirs.append(unified / rel)
    return dirs


def remove_tree(path: Path) -> None:
    """rmdir a cgroup and its children, deepest first (cgroup dirs only go away with rmdir)."""
    if not path.is_dir():
        return
    for root, dirnames, _ in os.walk(path, topdown=False):
        for d in dirnames:
            try:
                os.rmdir(os.path.join(root, d))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass
