"""Attach's container side: a client's streams on conmon's attach socket.

conmon listens on a SOCK_SEQPACKET unix socket, `attach` in `<socket dir>/<container id>/`
(a link to the bundle). Each packet it sends is one byte naming the stream and the data:
2 stdout, 3 stderr (conmon's and podman's numbering, 1 being stdin), not 1 and 2. What a
client sends is the container's stdin. When a client's side is shut, conmon closes the
container's stdin unless it was started with --leave-stdin-open (a container whose stdin_once
is false). Resizes go through conmon's control FIFO, "1 <height> <width>".
conmon closes every attach connection when the container exits.

As containerd: the client's stdin reaches the container only if the container was created
with stdin; at the end of the client's stdin, a stdin_once container's stdin is closed; the
attach lasts until the container's output ends (it exited) or the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

from cri_shim.containers import conmon
from cri_shim.streaming.stdio import StreamIO

STDOUT, STDERR = 2, 3  # conmon's STDOUT_PIPE, STDERR_PIPE
# conmon reads a packet from an attach client into a 32 KiB buffer (and its stdio in 8 KiB
# pieces); a longer SEQPACKET packet would be cut, so stdin goes in pieces no longer than this.
STDIN_PACKET = 8192
RECV_SIZE = 64 * 1024


async def connect(socket_dir: Path, container_id: str) -> socket.socket:
    """Connect to the container's attach socket, through an fd of its directory (sun_path
    holds 108 bytes; a state directory can make the full path longer)."""
    dir_fd = os.open(socket_dir / container_id, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{dir_fd}/attach")
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(dir_fd)
    return sock


async def run(sock: socket.socket, bundle: Path, io: StreamIO, *, stdin_once: bool) -> None:
    """Copy between the client and conmon until the container's output ends; ``sock`` is
    closed on return (or cancellation)."""
    with sock:
        output = asyncio.ensure_future(_receive(sock, io))
        helpers = [asyncio.ensure_future(_resizes(bundle, io))]
        if io.stdin is not None:
            helpers.append(asyncio.ensure_future(_send_stdin(sock, io, stdin_once)))
        try:
            pending: set[asyncio.Future[None]] = {output, *helpers}
            while not output.done():
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()
        finally:
            for t in (output, *helpers):
                t.cancel()
            await asyncio.gather(output, *helpers, return_exceptions=True)


async def _receive(sock: socket.socket, io: StreamIO) -> None:
    loop = asyncio.get_running_loop()
    while packet := await loop.sock_recv(sock, RECV_SIZE):
        stream, data = packet[0], packet[1:]
        if stream not in (STDOUT, STDERR):
            continue
        write = io.stderr if stream == STDERR and io.stderr is not None else io.stdout
        if stream == STDERR and io.stderr is None and not io.tty:
            continue  # the client did not ask for stderr
        if write is not None and data:
            await write(data)


async def _send_stdin(sock: socket.socket, io: StreamIO, stdin_once: bool) -> None:
    loop = asyncio.get_running_loop()
    try:
        while chunk := await io.read_stdin():
            for i in range(0, len(chunk), STDIN_PACKET):
                await loop.sock_sendall(sock, chunk[i:i + STDIN_PACKET])
        if stdin_once:
            sock.shutdown(socket.SHUT_WR)  # conmon closes the container's stdin
    except (BrokenPipeError, ConnectionResetError):
        return  # conmon is gone: the output side ends the attach


async def _resizes(bundle: Path, io: StreamIO) -> None:
    while (size := await io.resize.get()) is not None:
        with contextlib.suppress(OSError):  # conmon gone: the attach is ending anyway
            conmon.send_ctl(bundle, conmon.CTL_RESIZE, size.height, size.width)
