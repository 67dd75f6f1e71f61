"""The daemon's side of a recording: start the tracer, wait until it has attached, collect it.

`start` runs the tracer program with two pipes: it writes "ok" on the readiness pipe once every
thread of the created container is seized and stopped under PTRACE_SYSCALL (only then may the
runtime's `start` run), and it watches the other pipe, whose write end only the daemon holds
(close-on-exec, never passed to conmon or a runtime): when the daemon exits or is killed, the
kernel closes it and the tracer detaches, leaving the container running untraced.

The tracer ends by itself when the container's last process exits. `finish` waits for that and
then, if the tracer is somehow still there, asks it to detach (SIGTERM) and finally kills it,
so no tracer outlives its container's removal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("cri_shim.seccomp_recorder")

READY_TIMEOUT = 30.0
TRACER_MODULE = "cri_shim.seccomp_recorder.tracer"


class RecorderError(Exception):
    """The tracer could not attach; the message says why."""


@dataclass
class Recording:
    pid: int
    output: Path
    process: asyncio.subprocess.Process
    watch_fd: int  # the daemon's end of the watch pipe; closing it makes the tracer detach

    async def finish(self, timeout: float) -> int | None:
        """Wait up to `timeout` s for the tracer to end (the container has exited); then
        detach it, then kill it. Its exit code: 0 profile written, 3 detached (partial)."""
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(self.process.wait()), timeout)
        log.warning("seccomp recorder of process %d still running; detaching it", self.pid)
        self.close_watch()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(self.process.wait()), 15)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        return await self.process.wait()

    def close_watch(self) -> None:
        if self.watch_fd >= 0:
            os.close(self.watch_fd)
            self.watch_fd = -1


async def start(pid: int, output: Path, tail: tuple[str, ...], log_path: Path) -> Recording:
    """Attach a tracer to the created container whose init is `pid`; returns once every thread
    is traced. RecorderError (with the tracer's reason) if it cannot attach."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    watch_r, watch_w = os.pipe2(os.O_CLOEXEC)
    try:
        with open(log_path, "ab") as logf:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", TRACER_MODULE, "--pid", str(pid), "--output", str(output),
                "--tail", ",".join(tail), "--ready-fd", str(ready_w), "--watch-fd", str(watch_r),
                stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, pass_fds=(ready_w, watch_r),
                # Its own session: a signal to the daemon's process group is not one to the tracer,
                # which detaches when the daemon's end of the watch pipe closes instead.
                start_new_session=True)
    except BaseException:
        for fd in (ready_r, ready_w, watch_r, watch_w):
            os.close(fd)
        raise
    os.close(ready_w)
    os.close(watch_r)
    rec = Recording(pid, output, proc, watch_w)
    try:
        answer = await asyncio.wait_for(_read_all(ready_r), READY_TIMEOUT)
    except BaseException:
        rec.close_watch()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    finally:
        os.close(ready_r)
    if answer.strip() != b"ok":
        rec.close_watch()
        await rec.finish(5)
        reason = answer.decode(errors="replace").strip() or f"the tracer exited with {proc.returncode}"
        raise RecorderError(reason.removeprefix("error: "))
    return rec


async def _read_all(fd: int) -> bytes:
    """Read `fd` until EOF without blocking the loop."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
        elif not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)
