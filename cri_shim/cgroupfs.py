"""Creating, joining and removing cgroups by writing cgroupfs, on v1, hybrid and v2 hosts.

For the processes cri-shim starts itself (the pod's infra process, conmon); the OCI
runtime places containers. A cgroup is named by a path relative to each hierarchy's
root (see cri_shim.cgroup_paths) and lives in every mounted hierarchy, as runc's
cgroupfs manager does: each v1 hierarchy, plus the unified one on hybrid and v2 hosts.

A process joins before it runs anything: `join_argv` wraps a command in a shell that
writes its own pid into each cgroup.procs and then execs the command, so nothing it
forks is ever accounted elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
V1_CONTROLLERS = frozenset((
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
    "net_cls", "net_prio", "perf_event", "rdma", "misc"))
# Writes $$ into each file up to "--", then execs the rest; -e stops at a failed write.
JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1"; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: Path
    version: int  # 1 or 2
    controllers: tuple[str, ...] = ()  # v1 only; "name=systemd" for named hierarchies


def parse_mountinfo(text: str) -> list[Hierarchy]:
    """Mounted cgroup hierarchies, each once (the first mount of a superblock wins)."""
    out: list[Hierarchy] = []
    seen: set[str] = set()
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if not sep or len(fields) < 5 or len(rfields) < 3:
            continue
        fstype, dev = rfields[0], fields[2]
        if fstype not in ("cgroup", "cgroup2") or dev in seen:
            continue
        seen.add(dev)
        mnt = Path(fields[4].replace("\\040", " "))
        if fstype == "cgroup2":
            out.append(Hierarchy(mnt, 2))
        else:
            opts = rfields[2].split(",")
            ctrls = tuple(o for o in opts if o in V1_CONTROLLERS or o.startswith("name="))
            out.append(Hierarchy(mnt, 1, ctrls))
    return out


@functools.cache
def hierarchies() -> tuple[Hierarchy, ...]:
    """This host's hierarchies (cgroup mounts do not change under a running daemon)."""
    return tuple(parse_mountinfo(MOUNTINFO.read_text()))


def dirs(rel: str, hs: Sequence[Hierarchy] | None = None) -> list[Path]:
    """The cgroup's directory in each hierarchy."""
    rel = rel.strip("/")
    return [h.mountpoint / rel for h in (hierarchies() if hs is None else hs)]


def _read(path: Path) -> str:
    return path.read_text().strip()


def _init_cpuset(d: Path) -> None:
    """A new v1 cpuset cgroup starts with no cpus/mems (no task may join); copy the parent's."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        f = d / name
        if f.exists() and not _read(f):
            f.write_text(_read(d.parent / name))


def _enable_controllers(d: Path) -> None:
    """v2: let `d`'s children use every controller `d` has (as runc does on the way down).

    All at once, else one at a time ignoring refusals: one controller can be refused (cpu
    with realtime tasks) without the others being useless.
    """
    try:
        available = _read(d / "cgroup.controllers").split()
        missing = [c for c in available if c not in _read(d / "cgroup.subtree_control").split()]
    except OSError:
        return
    if not missing:
        return
    try:
        (d / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
    except OSError:
        for c in missing:
            with contextlib.suppress(OSError):
                (d / "cgroup.subtree_control").write_text(f"+{c}")


def create(rel: str, hs: Sequence[Hierarchy] | None = None) -> list[Path]:
    """Make the cgroup (and missing parents) in every hierarchy; return its cgroup.procs files."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"invalid cgroup path {rel!r}")
    procs = []
    for h in hierarchies() if hs is None else hs:
        d = h.mountpoint
        cpuset = h.version == 1 and "cpuset" in h.controllers
        for part in parts:
            if h.version == 2:
                _enable_controllers(d)
            d = d / part
            with contextlib.suppress(FileExistsError):
                d.mkdir()
            if cpuset:
                _init_cpuset(d)
        procs.append(d / "cgroup.procs")
    return procs


def pids(rel: str, hs: Sequence[Hierarchy] | None = None) -> set[int]:
    """Processes in the cgroup in any hierarchy (a half-done join may have left some in one)."""
    out: set[int] = set()
    for d in dirs(rel, hs):
        with contextlib.suppress(OSError, ValueError):
            out.update(int(p) for p in (d / "cgroup.procs").read_text().split())
    return out


def remove(rel: str, hs: Sequence[Hierarchy] | None = None, timeout: float = 0.0) -> list[str]:
    """rmdir the cgroup in every hierarchy, retrying while processes are still leaving.

    Returns what could not be removed (as messages); a missing directory is not an error.
    Blocking: call through asyncio.to_thread.
    """
    deadline = time.monotonic() + timeout
    left = dirs(rel, hs)
    while True:
        busy = []
        for d in left:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    return [f"{d}: {e.strerror}"]
                busy.append(d)
        if not busy:
            return []
        if time.monotonic() >= deadline:
            return [f"{d}: still in use" for d in busy]
        left = busy
        time.sleep(0.02)


def join_argv(procs: Sequence[Path | str], argv: Sequence[str]) -> list[str]:
    """`argv`, run so that its process is in every cgroup of `procs` before it starts."""
    if not procs:
        return list(argv)
    return ["/bin/sh", "-ec", JOIN_SCRIPT, "cgroup-join", *map(str, procs), "--", *argv]

