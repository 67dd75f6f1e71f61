"""The pod's infra process: catatonit in the pod's namespaces and in a cgroup of its own.

It plays the part of containerd's pause container. The namespace pins already keep
net/ipc/uts alive (and stay what containers join); the infra process adds what a pin
cannot: a process in the pod's network namespace inside a cgroup named after the
sandbox id, under the pod's cgroup parent, which is where the kubelet's cadvisor looks
for a pod's network; and, for a pod sharing one, PID 1 of the pod's PID namespace.

It is spawned in a session of its own and not waited on by a thread: it outlives a
restart of the daemon, which finds it again from the pid file. The pid file records
start times, so a pid reused by another process is never mistaken for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cri_shim import cgroupfs
from cri_shim.atomic_file import write_state
from cri_shim.errors import Internal

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


@dataclass
class InfraProcess:
    pid: int  # catatonit
    start: int  # its start time, clock ticks after boot (/proc/<pid>/stat field 22)
    # What we spawned: `unshare` when it made a PID namespace (catatonit is its child),
    # else catatonit itself.
    spawned: int
    spawned_start: int


def start_time(pid: int) -> int | None:
    """The process's start time, or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_running(pid: int, start: int) -> bool:
    return pid > 0 and start_time(pid) == start


def read_pidfile(pidfile: Path) -> InfraProcess | None:
    try:
        return InfraProcess(**json.loads(pidfile.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def find(pidfile: Path) -> InfraProcess | None:
    """The infra process recorded in `pidfile`, if that very process still runs."""
    rec = read_pidfile(pidfile)
    return rec if rec is not None and is_running(rec.pid, rec.start) else None


def infra_argv(pause: str, pins: dict[str, Path], new_pidns: bool, procs: Sequence[Path]) -> list[str]:
    """cgroup join, then the pins, then (for a shared PID namespace) a new PID namespace."""
    argv = [pause, "-P"]
    if new_pidns:
        # --kill-child: catatonit dies with unshare, so neither outlives the other.
        argv = ["unshare", "--pid", "--fork", "--kill-child", *argv]
    if pins:
        argv = ["nsenter", *(f"--{kind}={path}" for kind, path in pins.items()), *argv]
    return cgroupfs.join_argv(procs, argv)


def _gone(pid: int) -> bool:
    """Reap `pid` if it is our exited child; True once it no longer runs."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
    except ChildProcessError:
        pass
    return start_time(pid) is None


def _child_named(pid: int, comm: str) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    for c in map(int, children):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{c}/comm").read_text().strip() == comm:
                return c
    return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _tail(path: Path, limit: int = 1000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""


async def start(pause: str, pins: dict[str, Path], new_pidns: bool, procs: Sequence[Path],
                pidfile: Path, log_path: Path) -> InfraProcess:
    """Spawn the infra process, wait until catatonit runs, record it in `pidfile`."""
    argv = infra_argv(pause, pins, new_pidns, procs)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        # posix_spawn, not a subprocess: no watcher thread per pod waits on it for its lifetime.
        spawned = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions, setsid=True)
    except OSError as e:
        raise Internal(f"infra process: cannot run {argv[0]}: {e.strerror}") from None
    comm = os.path.basename(pause)[:15]
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        pid = _child_named(spawned, comm) if new_pidns else (spawned if _comm(spawned) == comm else None)
        start_ticks = start_time(pid) if pid else None
        if pid and start_ticks is not None:
            rec = InfraProcess(pid, start_ticks, spawned, start_time(spawned) or 0)
            try:
                await asyncio.to_thread(write_state, pidfile, json.dumps(asdict(rec)))
            except OSError as e:
                await stop(pidfile, "", rec)
                raise Internal(f"infra process: writing {pidfile}: {e.strerror}") from None
            return rec
        if _gone(spawned):
            raise Internal(f"infra process {pause} exited at start: {_tail(log_path) or 'no output'}")
        if time.monotonic() >= deadline:
            await stop(pidfile, "", InfraProcess(0, 0, spawned, start_time(spawned) or 0))
            raise Internal(f"infra process {pause} did not start in {START_TIMEOUT:.0f}s")
        await asyncio.sleep(0.005)


async def stop(pidfile: Path, cgroup_rel: str, rec: InfraProcess | None = None) -> None:
    """Kill the infra process (and anything else in its cgroup); forget the pid file.

    catatonit goes first: its parent, unshare, then reaps it and exits by itself, so no
    zombie is left for init. Tolerates everything being gone already.
    """
    rec = rec or read_pidfile(pidfile)
    first: list[int] = []  # catatonit
    rest: list[int] = []  # unshare, and whatever else sits in the infra cgroup
    if rec is not None:
        if is_running(rec.pid, rec.start):
            first.append(rec.pid)
        if rec.spawned != rec.pid and is_running(rec.spawned, rec.spawned_start):
            rest.append(rec.spawned)
    if cgroup_rel:
        rest += [p for p in cgroupfs.pids(cgroup_rel) if p not in first and p not in rest]
    for pid in first:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if first and rec is not None and rec.spawned in rest:
        await _wait_gone([rec.spawned], 0.5)
    for pid in rest:
        if not _gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if rec is not None and rec.spawned > 0:
        # Our child if spawned in this daemon's lifetime: reap it even if it died long ago.
        _gone(rec.spawned)
    if not await _wait_gone(first + rest, STOP_TIMEOUT):
        raise Internal(f"infra process {first + rest} did not exit after SIGKILL")
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()


async def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    """True once none of `pids` runs (our exited children reaped), False after `timeout`.

    Each process is watched through a pidfd, which turns readable the moment it exits, so the
    wait ends then rather than at the next tick of a poll. Where a pidfd cannot be had (a
    kernel before Linux 5.3, no descriptor left) it polls every 10 ms instead."""
    fds = _pidfds([p for p in pids if not _gone(p)])
    if fds is None:
        deadline = time.monotonic() + timeout
        while not all(_gone(p) for p in pids):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True
    loop = asyncio.get_running_loop()
    exits: list[asyncio.Future[None]] = []
    try:
        for fd in fds:
            exited: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _exited, loop, fd, exited)
            exits.append(exited)
        if exits:
            await asyncio.wait(exits, timeout=timeout)
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)
    return all(_gone(p) for p in pids)


def _pidfds(pids: Sequence[int]) -> list[int] | None:
    """A pidfd for each process still there; None (and none left open) if one cannot be had."""
    fds: list[int] = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            continue
        except OSError:
            for fd in fds:
                os.close(fd)
            return None
    return fds


def _exited(loop: asyncio.AbstractEventLoop, fd: int, exited: asyncio.Future[None]) -> None:
    loop.remove_reader(fd)
    if not exited.done():
        exited.set_result(None)
