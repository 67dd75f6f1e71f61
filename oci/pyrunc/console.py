"""The console socket: a pty allocated inside the container, master sent over SCM_RIGHTS."""

from __future__ import annotations

import fcntl  # imported here: after pivot_root no module can be loaded
import os
import socket
import struct

from . import syscalls as sc

TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414


def connect(path: str) -> int:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        from .errors import PyruncError
        raise PyruncError(f"connect to console socket {path}: {e.strerror}") from None
    return s.detach()


def setup_pty(sock_fd: int, uid: int, size: dict | None) -> None:
    """Allocate a pty from the container's /dev/ptmx, hand the master over, make the slave our
    controlling terminal and stdio."""
    master, slave = os.openpty()
    try:
        os.fchown(slave, uid, -1)
    except OSError:
        pass
    if size:
        fcntl.ioctl(slave, TIOCSWINSZ, struct.pack("HHHH", size.get("height", 0), size.get("width", 0), 0, 0))
    s = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(s, [b"/dev/ptmx"], [master])
    finally:
        s.close()
    os.close(master)
    os.setsid()
    sc.ioctl_int(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
