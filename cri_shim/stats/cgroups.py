"""Reading CPU and memory usage of a cgroupfs path, on cgroup v1 or v2.

The working set is usage minus inactive file pages, as the kubelet and cAdvisor
define it (the number the eviction manager compares with limits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP2_MAGIC = 0x63677270


def is_unified(root: Path = CGROUP_ROOT) -> bool:
    return (root / "cgroup.controllers").exists()


@dataclass
class Usage:
    cpu_ns: int | None = None
    memory_usage: int | None = None
    working_set: int | None = None
    rss: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    memory_limit: int | None = None  # None: unlimited

    @property
    def available(self) -> int | None:
        """Bytes left before the limit, as the kubelet's summary API reports them."""
        if self.memory_limit is None or self.working_set is None:
            return None
        return max(self.memory_limit - self.working_set, 0)


# Limits at or above this are "unlimited" (v1 reports a page-rounded LONG_MAX).
UNLIMITED = 1 << 62


def _limit(value: int | None) -> int | None:
    return value if value is not None and value < UNLIMITED else None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if v.strip().lstrip("-").isdigit():
                out[k] = int(v)
    except OSError:
        pass
    return out


def read_usage(cgroups_path: str, root: Path = CGROUP_ROOT) -> Usage:
    rel = cgroups_path.lstrip("/")
    if is_unified(root):
        d = root / rel
        cpu = _read_kv(d / "cpu.stat")
        mem = _read_kv(d / "memory.stat")
        usage = _read_int(d / "memory.current")
        inactive = mem.get("inactive_file", 0)
        return Usage(
            cpu_ns=cpu["usage_usec"] * 1000 if "usage_usec" in cpu else None,
            memory_usage=usage,
            working_set=max(usage - inactive, 0) if usage is not None else None,
            rss=mem.get("anon"), page_faults=mem.get("pgfault"), major_page_faults=mem.get("pgmajfault"),
            memory_limit=_limit(_read_int(d / "memory.max")),  # "max" reads as None
        )
    cpu_ns = _read_int(root / "cpuacct" / rel / "cpuacct.usage")
    if cpu_ns is None:
        cpu_ns = _read_int(root / "cpu,cpuacct" / rel / "cpuacct.usage")
    mdir = root / "memory" / rel
    usage = _read_int(mdir / "memory.usage_in_bytes")
    mem = _read_kv(mdir / "memory.stat")
    inactive = mem.get("total_inactive_file", mem.get("inactive_file", 0))
    return Usage(
        cpu_ns=cpu_ns, memory_usage=usage,
        working_set=max(usage - inactive, 0) if usage is not None else None,
        rss=mem.get("total_rss", mem.get("rss")), page_faults=mem.get("total_pgfault"),
        major_page_faults=mem.get("total_pgmajfault"),
        memory_limit=_limit(_read_int(mdir / "memory.limit_in_bytes")),
    )


def dir_usage(path: str, recurse: bool = True) -> tuple[int, int]:
    """(bytes, inodes) below path, without following symlinks or crossing mounts (recurse=False:
    only the entries of path itself, its subdirectories counted but not entered)."""
    total = inodes = 0
    try:
        dev = os.lstat(path).st_dev
    except OSError:
        return 0, 0
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_dev != dev:
                        continue
                    inodes += 1
                    total += st.st_blocks * 512
                    if recurse and e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
        except OSError:
            continue
    return total, inodes


def read_process_count(cgroups_path: str, root: Path = CGROUP_ROOT) -> int | None:
    rel = cgroups_path.lstrip("/")
    base = root / rel if is_unified(root) else root / "pids" / rel
    return _read_int(base / "pids.current")
