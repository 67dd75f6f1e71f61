"""The receiving end of --console-socket: a unix socket that gets the pty master over SCM_RIGHTS."""

from __future__ import annotations

import errno
import os
import select
import shutil
import socket
import tempfile
import time


class ConsoleSocket:
    def __init__(self) -> None:
        # sun_path is limited to 108 bytes; pytest tmp paths can get long, so use a short dir
        self._dir = tempfile.mkdtemp(prefix="cs-", dir="/tmp")
        self.path = os.path.join(self._dir, "console.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(1)
        self.master: int | None = None

    def receive(self, timeout: float = 10.0) -> int:
        """Accept the runtime's connection and return the pty master it sent."""
        self._sock.settimeout(timeout)
        conn, _ = self._sock.accept()
        with conn:
            conn.settimeout(timeout)
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
        if not fds:
            raise RuntimeError("runtime connected to the console socket but sent no file descriptor")
        for extra in fds[1:]:
            os.close(extra)
        self.master = fds[0]
        return self.master

    def read_until(self, needle: str, timeout: float = 10.0) -> str:
        """Read the terminal until ``needle`` appears, the slave side closes, or time runs out."""
        assert self.master is not None
        buf = b""
        deadline = time.monotonic() + timeout
        while needle.encode() not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError as e:
                if e.errno == errno.EIO:  # every slave fd closed: the process is gone
                    break
                raise
            if not chunk:
                break
            buf += chunk
        return buf.decode(errors="replace")

    def write(self, text: str) -> None:
        assert self.master is not None
        os.write(self.master, text.encode())

    def close(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)
