"""Line messages between `pyrunc create`/`exec` and the processes it forks.

Child -> parent: ERR <msg>, USERNS, PID <n>, HOOKS, READY. Parent -> child: OK.
"""

from __future__ import annotations

import os


class Channel:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self._buf = b""

    def send(self, msg: str) -> None:
        data = (msg.replace("\n", " ") + "\n").encode()
        while data:
            data = data[os.write(self.wfd, data):]

    def tell(self, msg: str) -> None:
        """send() for the parent: a child that already failed has closed its end, and its
        error message is still waiting to be read, so a broken pipe is not the story."""
        try:
            self.send(msg)
        except BrokenPipeError:
            pass

    def recv(self) -> str | None:
        """Next line, or None at EOF."""
        while b"\n" not in self._buf:
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def expect_ok(self) -> str:
        msg = self.recv()
        if msg is None or not msg.startswith("OK"):
            raise SystemExit(1)  # the parent gave up on us
        return msg[3:]

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


def pair() -> tuple[Channel, Channel]:
    """(parent side, child side)."""
    p2c_r, p2c_w = os.pipe()
    c2p_r, c2p_w = os.pipe()
    return Channel(c2p_r, p2c_w), Channel(p2c_r, c2p_w)
