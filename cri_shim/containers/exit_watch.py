"""Event-driven notice of the exit files conmon writes: inotify on the exit directory.

conmon records a container's exit code by writing <exit_dir>/<id> (glib's
g_file_set_contents: a temporary file renamed into place, so IN_MOVED_TO; IN_CLOSE_WRITE too
for a writer that writes in place). The kernel queues one event per file, and the event loop
reads them as soon as they arrive, so a StopContainer returns as soon as the container's exit
is on disk, with no polling interval in between.

`parse_events` is the sans-IO part (bytes of `struct inotify_event` records → names);
`ExitWatch` is the thin wrapper: the inotify descriptor (libc through ctypes, the standard
library has no binding) registered with the event loop. If the kernel queue overflows
(IN_Q_OVERFLOW), the callback gets None: look at the whole directory.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import select
import struct
from collections.abc import Callable
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


def parse_events(data: bytes) -> list[str | None]:
    """The file names in a buffer of inotify events; None for a queue overflow."""
    out: list[str | None] = []
    off = 0
    while off + _EVENT.size <= len(data):
        _wd, mask, _cookie, length = _EVENT.unpack_from(data, off)
        off += _EVENT.size
        name = data[off:off + length].split(b"\0", 1)[0]
        off += length
        if mask & IN_Q_OVERFLOW:
            out.append(None)
        elif name:
            out.append(os.fsdecode(name))
    return out


class ExitWatch:
    """Calls `on_exit(name)` for each file that appears in `directory` (None: rescan)."""

    def __init__(self, directory: Path, on_exit: Callable[[str | None], None]) -> None:
        self.directory = directory
        self.on_exit = on_exit
        self.fd = -1
        self._poll = select.poll()  # catch_up's look at fd

    def start(self) -> bool:
        """Start watching; False if inotify is unavailable (the caller keeps polling)."""
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                return False
            wd = libc.inotify_add_watch(fd, os.fsencode(self.directory), IN_MOVED_TO | IN_CLOSE_WRITE)
        except (OSError, AttributeError):
            return False
        if wd < 0:
            os.close(fd)
            return False
        self.fd = fd
        self._poll.register(fd, select.POLLIN)
        asyncio.get_running_loop().add_reader(fd, self._readable)
        return True

    @property
    def watching(self) -> bool:
        return self.fd >= 0

    def catch_up(self) -> None:
        """Handle the events queued so far, now: the kernel queues one the moment a file
        appears, so after this every exit file on disk has been seen. One poll(2) when none
        is pending (a read would fail with EAGAIN, an exception to build), where looking for
        a container's file costs a path lookup."""
        if self.fd >= 0 and self._poll.poll(0):
            self._readable()

    def _readable(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            for name in parse_events(data):
                self.on_exit(name)

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
