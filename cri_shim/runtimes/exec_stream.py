"""A streaming exec's plumbing: the runtime's `exec` in the foreground, its stdio wired to a
client's StreamIO, with pipes or with a pseudo-terminal of ours, as CRI-O's ExecContainer.

Non-tty: the runtime hands its own stdio to the process, so our pipes are the process's.
tty: the runtime runs `exec -t` with a pty we allocate as its stdin/stdout/stderr; it proxies
between that pty and the container's own pty. A resize sets our pty's window size and sends the
runtime SIGWINCH, upon which it copies the size to the container's pty (runc, crun and pyrunc
do; the runtime has a session of its own, so the kernel would not signal it for us).

Cancellation (the client went away) kills the exec'd process tree through the runtime's pid
file, reaps the runtime and closes the pty before CancelledError goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import socket
import struct
import termios
import tty as _tty
from collections.abc import Awaitable, Callable
from pathlib import Path

from cri_shim.runtimes import exec_sync
from cri_shim.streaming.stdio import StreamIO, TerminalSize, Writer
from oci.runtime import CommandLineRuntime
from oci.spec import Process

CHUNK = 32 * 1024
# Once the exec'd process has exited, how long its output may still take to drain: a child it
# left in the background can hold the pipe (or the runtime's pty) open for good.
OUTPUT_GRACE = 2.0

PIPE = asyncio.subprocess.PIPE
DEVNULL = asyncio.subprocess.DEVNULL


FIRST_SIZE_WAIT = 1.0


async def run(oci: CommandLineRuntime, container_id: str, process: Process, io: StreamIO,
              pid_file: Path) -> int:
    """Run ``process`` in the container with ``io`` as its streams; return its exit code."""
    if process.terminal:
        initial = None
        if io.sizes_coming and io.resize.empty():
            # kubectl and crictl send the terminal's size as they connect: wait for it briefly,
            # so the process starts with it rather than racing a resize (stty, full-screen tools)
            with contextlib.suppress(TimeoutError):
                first = await asyncio.wait_for(io.resize.get(), FIRST_SIZE_WAIT)
                io.resize.put_nowait(first)
        while not io.resize.empty():  # a size the client sent already is the initial one
            if (size := io.resize.get_nowait()) is None:
                break
            initial = size
        if initial is not None:
            # runc and pyrunc start the process before they copy their terminal's size.
            process = Process.from_dict(dict(process.to_dict(), consoleSize={
                "height": initial.height, "width": initial.width}))
        return await _run_tty(oci, container_id, process, io, pid_file, initial)
    return await _run_piped(oci, container_id, process, io, pid_file)


# --- pipes -------------------------------------------------------------------------------


async def _run_piped(oci: CommandLineRuntime, container_id: str, process: Process, io: StreamIO,
                     pid_file: Path) -> int:
    async with oci.exec_piped(container_id, process, pid_file=pid_file,
                              stdin=PIPE if io.stdin is not None else DEVNULL,
                              stdout=PIPE if io.stdout is not None else DEVNULL,
                              stderr=PIPE if io.stderr is not None else DEVNULL) as proc:
        outputs = []
        if proc.stdout is not None and io.stdout is not None:
            outputs.append(_copy_stream(proc.stdout, io.stdout))
        if proc.stderr is not None and io.stderr is not None:
            outputs.append(_copy_stream(proc.stderr, io.stderr))
        inputs = [_feed_pipe(io, proc.stdin)] if proc.stdin is not None else []
        return await _supervise(proc, pid_file, outputs, inputs)


async def _copy_stream(stream: asyncio.StreamReader, write: Writer) -> None:
    while chunk := await stream.read(CHUNK):
        await write(chunk)


async def _feed_pipe(io: StreamIO, pipe: asyncio.StreamWriter) -> None:
    try:
        while chunk := await io.read_stdin():
            pipe.write(chunk)
            await pipe.drain()
    except (BrokenPipeError, ConnectionResetError):
        return  # the process closed its stdin or exited: the rest of the input has no reader
    pipe.close()  # end of the client's stdin: the process sees EOF
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await pipe.wait_closed()


# --- pseudo-terminal -----------------------------------------------------------------------


async def _run_tty(oci: CommandLineRuntime, container_id: str, process: Process, io: StreamIO,
                   pid_file: Path, initial: TerminalSize | None) -> int:
    if oci.foreground_console_socket:
        return await _run_console_socket(oci, container_id, process, io, pid_file, initial)
    master, slave = os.openpty()
    try:
        # Raw from the start: the runtime makes its terminal raw too, but only once it runs, and
        # the client's first keys must not be echoed or cooked by our side of the proxy.
        _tty.setraw(slave)
        if initial is not None:
            set_size(master, initial)
        os.set_blocking(master, False)
        async with oci.exec_piped(container_id, process, pid_file=pid_file,
                                  stdin=slave, stdout=slave, stderr=slave) as proc:
            os.close(slave)  # the runtime has its copies; EIO on the master once they close
            slave = -1
            outputs = [_copy_master(master, io.stdout)] if io.stdout is not None else [_drain(master)]
            inputs = [_resizes(master, io, proc.pid)]
            if io.stdin is not None:
                inputs.append(_feed_master(master, io))
            return await _supervise(proc, pid_file, outputs, inputs)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


async def _run_console_socket(oci: CommandLineRuntime, container_id: str, process: Process,
                              io: StreamIO, pid_file: Path, initial: TerminalSize | None) -> int:
    """`exec -t --console-socket` in the foreground (crun): the container's pty master comes to
    us, so we copy to and from it and resize it ourselves; the runtime only waits."""
    # Reached through our fd of its directory: a bundle's path may be longer than sun_path.
    dir_fd = os.open(pid_file.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        srv.bind(f"/proc/self/fd/{dir_fd}/console.sock")
        srv.listen(1)
        srv.setblocking(False)
        async with oci.exec_piped(container_id, process, pid_file=pid_file,
                                  console_socket=f"/proc/{os.getpid()}/fd/{dir_fd}/console.sock",
                                  stdout=PIPE, stderr=PIPE) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            # The runtime's own complaints (no such executable) are what the user sees.
            write = io.stdout or _discard
            outputs = [_console(srv, io, initial), _copy_stream(proc.stdout, write),
                       _copy_stream(proc.stderr, write)]
            return await _supervise(proc, pid_file, outputs, [])
    finally:
        srv.close()
        os.close(dir_fd)


async def _discard(_: bytes) -> None:
    pass


async def _console(srv: socket.socket, io: StreamIO, initial: TerminalSize | None) -> None:
    loop = asyncio.get_running_loop()
    conn, _ = await loop.sock_accept(srv)
    with conn:
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
                break
            except BlockingIOError:
                await _wait_fd(conn.fileno())
    if not fds:
        return  # the runtime failed before it had a terminal; its exit status tells
    master = fds[0]
    try:
        for extra in fds[1:]:
            os.close(extra)
        os.set_blocking(master, False)
        if initial is not None:
            set_size(master, initial)
        helpers = [asyncio.ensure_future(_resizes(master, io, 0))]
        if io.stdin is not None:
            helpers.append(asyncio.ensure_future(_feed_master(master, io)))
        try:
            await (_copy_master(master, io.stdout) if io.stdout is not None else _drain(master))
        finally:
            for t in helpers:
                t.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
    finally:
        os.close(master)


def set_size(fd: int, size: TerminalSize) -> None:
    """Set a terminal's window size (rows first, as struct winsize has them)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))


def get_size(fd: int) -> TerminalSize:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return TerminalSize(width=cols, height=rows)


async def _resizes(master: int, io: StreamIO, runtime_pid: int) -> None:
    """Apply each resize to ``master``; tell the runtime proxying it (``runtime_pid``, 0 when
    ``master`` is the container's own pty, whose processes the kernel tells itself)."""
    while (size := await io.resize.get()) is not None:
        set_size(master, size)
        if runtime_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(runtime_pid, signal.SIGWINCH)


async def _wait_fd(fd: int, writable: bool = False) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    add(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        remove(fd)


async def _read_master(master: int) -> bytes:
    """The next output from the pty; b"" once every slave is closed (Linux says EIO)."""
    while True:
        try:
            return os.read(master, CHUNK)
        except BlockingIOError:
            await _wait_fd(master)
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise


async def _copy_master(master: int, write: Writer) -> None:
    while chunk := await _read_master(master):
        await write(chunk)


async def _drain(master: int) -> None:
    while await _read_master(master):
        pass  # no one asked for the output; read it so the process is never blocked on it


async def _feed_master(master: int, io: StreamIO) -> None:
    # The end of the client's stdin is not the end of a terminal session: nothing is closed,
    # as CRI-O's ttyCmd does (the client may type ^D itself).
    while chunk := await io.read_stdin():
        view = memoryview(chunk)
        while view:
            try:
                view = view[os.write(master, view):]
            except BlockingIOError:
                await _wait_fd(master, writable=True)
            except OSError as e:
                if e.errno == errno.EIO:
                    return  # the runtime is gone
                raise


# --- both ----------------------------------------------------------------------------------


async def _supervise(proc: asyncio.subprocess.Process, pid_file: Path,
                     outputs: list[Awaitable[None]], inputs: list[Awaitable[None]]) -> int:
    """Run the copies until the runtime exits and its output is drained; return its status.

    On any failure (the client's writer failing, or cancellation) the exec'd process tree is
    killed and the runtime reaped before the exception goes on.
    """
    out_tasks = [asyncio.ensure_future(o) for o in outputs]
    in_tasks = [asyncio.ensure_future(i) for i in inputs]
    waiter = asyncio.ensure_future(proc.wait())
    try:
        watched: set[asyncio.Future[object]] = {waiter, *out_tasks, *in_tasks}
        while not waiter.done():
            done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # a failed copy ends the session
        if out_tasks:
            finished, _ = await asyncio.wait(out_tasks, timeout=OUTPUT_GRACE)
            for t in finished:
                t.result()
        return waiter.result()
    except BaseException:
        await _shielded(lambda: exec_sync.kill_exec(proc, pid_file))
        raise
    finally:
        for t in (*in_tasks, *out_tasks, waiter):
            t.cancel()
        await asyncio.gather(*in_tasks, *out_tasks, waiter, return_exceptions=True)


async def _shielded(cleanup: Callable[[], Awaitable[None]]) -> None:
    """Run cleanup to its end even if the caller is cancelled again meanwhile."""
    task = asyncio.ensure_future(cleanup())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
