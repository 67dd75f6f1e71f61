"""Running a container's OCI runtime `create` under conmon.

conmon is started with a start pipe (_OCI_STARTPIPE), which it reads before it forks or
runs anything, and a sync pipe (_OCI_SYNCPIPE): after the runtime's `create` it writes one
JSON line, {"pid": N} on success or {"pid": -1, "message": "..."} on failure. So conmon is
spawned, and joins its cgroup (conmon_cgroup.py), while the container's bundle is still
being made (`spawn`), and runs the create once the bundle is complete (`go`). conmon and
the create it runs are never accounted to the daemon. conmon double-forks, so it outlives
us; it writes the CRI log, the exit code to <exit_dir>/<id> and, on an OOM kill, the file
"oom" to the persist dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cri_shim import cgroupfs
from cri_shim.errors import DeadlineExceeded, Internal

CREATE_TIMEOUT = 60.0
# conmon control FIFO message types (the bundle's "ctl" file).
CTL_RESIZE = 1
CTL_REOPEN_LOG = 2


@dataclass
class ConmonArgs:
    conmon: str
    runtime_path: str
    container_id: str
    name: str
    bundle: Path
    log_path: str
    exit_dir: Path
    persist_dir: Path
    socket_dir: Path
    stdin: bool = False
    stdin_once: bool = False
    terminal: bool = False
    # The runtime's global options (--root, --systemd-cgroup, ...), from the handler's
    # adapter, which builds every command line of the runtime.
    runtime_args: tuple[str, ...] = ()
    # cgroup.procs files conmon puts itself in before it starts (conmon_cgroup.prepare).
    cgroup_procs: tuple[Path, ...] = ()

    def argv(self) -> list[str]:
        a = [
            self.conmon,
            "--api-version", "1",
            "-b", str(self.bundle),
            "-c", self.container_id,
            "-u", self.container_id,
            "-n", self.name,
            "-r", self.runtime_path,
            "-p", str(self.bundle / "pidfile"),
            "-P", str(self.bundle / "conmon.pid"),
            "-l", f"k8s-file:{self.log_path}",
            "--exit-dir", str(self.exit_dir),
            "--persist-dir", str(self.persist_dir),
            "--socket-dir-path", str(self.socket_dir),
            "--log-level", "error",
        ]
        for extra in self.runtime_args:
            a += ["--runtime-arg", extra]
        if self.stdin:
            a.append("-i")
            if not self.stdin_once:
                a.append("--leave-stdin-open")
        if self.terminal:
            a.append("-t")
        return a


@dataclass
class Spawned:
    """A conmon started and waiting on its start pipe (see `spawn`)."""

    args: ConmonArgs
    proc: asyncio.subprocess.Process
    sync_r: int  # _OCI_SYNCPIPE's read end: the runtime's create reports here
    start_w: int  # _OCI_STARTPIPE's write end: conmon goes on once it is written


async def spawn(args: ConmonArgs) -> Spawned:
    """Start conmon (joining its cgroup first) up to its start pipe, where it waits before it
    forks or runs anything: what `go` then lets run needs the bundle's config.json, which need
    not exist yet. Moving a process into a cgroup can wait for an RCU grace period (the first
    write to a cgroup.procs file after a quiet spell: about 20 ms here), so this is done while
    the container's rootfs and spec are still being made."""
    for d in (args.exit_dir, args.persist_dir, args.socket_dir):
        d.mkdir(parents=True, exist_ok=True)
    sync_r, sync_w = os.pipe()
    start_r, start_w = os.pipe()
    os.set_inheritable(sync_w, True)
    os.set_inheritable(start_r, True)
    env = dict(os.environ, _OCI_SYNCPIPE=str(sync_w), _OCI_STARTPIPE=str(start_r))
    errlog = open(args.bundle / "conmon.log", "ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            *cgroupfs.join_argv(args.cgroup_procs, args.argv()), pass_fds=(sync_w, start_r), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=errlog, stderr=errlog, start_new_session=True,
            # conmon drops an "oom" marker in its working directory as well as the persist dir.
            cwd=str(args.bundle),
        )
    except BaseException:
        os.close(sync_r)
        os.close(start_w)
        raise
    finally:
        os.close(sync_w)
        os.close(start_r)
        errlog.close()
    return Spawned(args, proc, sync_r, start_w)


async def go(s: Spawned) -> int:
    """Let a spawned conmon run the runtime's create; return the container's host pid."""
    try:
        os.write(s.start_w, b"go")
    except BrokenPipeError:
        pass  # conmon is gone: the sync pipe says so (end of file), with its log
    finally:
        os.close(s.start_w)
    try:
        data = await asyncio.wait_for(asyncio.to_thread(_read_all, s.sync_r), CREATE_TIMEOUT)
    except TimeoutError:
        raise DeadlineExceeded(
            f"container {s.args.container_id}: runtime create did not finish in {CREATE_TIMEOUT:.0f}s"
        ) from None
    finally:
        os.close(s.sync_r)
        # The first conmon exits right after forking its monitor; reap it.
        with contextlib.suppress(ProcessLookupError):
            await s.proc.wait()
    return parse_sync(data, s.args)


async def abandon(s: Spawned) -> None:
    """Stop a spawned conmon that was never let go: it has forked nothing and run nothing."""
    with contextlib.suppress(ProcessLookupError):
        s.proc.kill()
    os.close(s.start_w)
    os.close(s.sync_r)
    await s.proc.wait()


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
        if b"\n" in b:
            return b"".join(chunks)


def parse_sync(data: bytes, args: ConmonArgs) -> int:
    """Interpret conmon's sync-pipe message; a failure carries the runtime's own words."""
    line = data.split(b"\n", 1)[0].strip()
    if not line:
        detail = _tail(args.bundle / "conmon.log")
        raise Internal(f"container {args.container_id}: conmon exited without reporting: {detail}")
    try:
        msg = json.loads(line)
        pid = int(msg.get("pid", msg.get("data", -1)))
    except (ValueError, AttributeError):
        raise Internal(f"container {args.container_id}: unreadable conmon message {line!r}") from None
    if pid <= 0:
        message = str(msg.get("message") or _tail(args.bundle / "conmon.log") or "unknown error")
        raise Internal(f"container {args.container_id}: runtime create failed: {message.strip()}")
    return pid


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""


def read_exit_code(exit_dir: Path, container_id: str) -> tuple[int, float] | None:
    """(exit code, time of exit) once conmon has recorded one, else None."""
    path = exit_dir / container_id
    try:
        text = path.read_text().strip()
        mtime = path.stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not text:
        return None  # conmon writes then renames, but be safe against a partial read
    try:
        return int(text), mtime
    except ValueError:
        return 255, mtime


def oom_killed(persist_dir: Path) -> bool:
    return (persist_dir / "oom").exists()


def send_ctl(bundle: Path, kind: int, a: int = 0, b: int = 0) -> None:
    """Write one control message to conmon's FIFO (reopen log, resize terminal)."""
    fd = os.open(bundle / "ctl", os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, f"{kind} {a} {b}\n".encode())
    finally:
        os.close(fd)


def conmon_alive(bundle: Path) -> bool:
    try:
        pid = int((bundle / "conmon.pid").read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return "conmon" in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False
