"""Line messages between `pyrunc create`/`exec` and the processes it forks.

Child -> parent: ERR <msg>, USERNS, PID <n> placed|moved-by-parent (create: whether the init
was forked into its cgroup2 directory or the parent must move it), HOOKS, READY. Parent ->
child: OK (create's first: the cgroups exist with their limits and the fifo is there, the child
may join them; after USERNS: maps written; after PID: the init is in all its cgroups under all
their limits; after HOOKS: "OK <host pid>"; after READY: state recorded). An init that create
forks itself (init.stage0) has no set-up process before it: it sends neither USERNS nor PID,
and create's first OK is the only one before HOOKS.

The parent must never wait on a child that can no longer answer. End of file alone is not
enough: it only comes once every copy of the write end is closed, and a copy that leaked into
some other process would keep the parent waiting forever. So the parent also `watch`es the
process that is expected to write next and stops waiting when it exits.
"""

import errno
import posix
import select

_POLL_FALLBACK_MS = 50  # only without pidfd_open (Linux < 5.3)


class Channel:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self._buf = b""
        self._pidfd = -1
        self._watched = 0

    @property
    def closed(self) -> bool:
        return self.wfd < 0

    def send(self, msg: str) -> None:
        if self.closed:  # the fd number may since belong to another file: never write to it
            raise OSError(errno.EBADF, "sync channel is closed")
        data = (msg.replace("\n", " ") + "\n").encode()
        while data:
            data = data[posix.write(self.wfd, data):]

    def tell(self, msg: str) -> None:
        """send() for the parent: a child that already failed has closed its end, and its
        error message is still waiting to be read, so a broken pipe is not the story."""
        try:
            self.send(msg)
        except BrokenPipeError:
            pass

    def watch(self, pid: int) -> None:
        """Make recv() return None once `pid` has exited and left no complete message.
        Called right after the pid is learnt: it could only name another process if the one
        it meant had died, been reaped by its new parent and the pid reused in between."""
        self._unwatch()
        self._watched = pid
        try:
            self._pidfd = posix.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd = -1  # already gone (and reaped): _exited() says so
        except (AttributeError, OSError):
            self._pidfd = -1  # no pidfd support: poll /proc instead

    def _unwatch(self) -> None:
        if self._pidfd >= 0:
            posix.close(self._pidfd)
        self._pidfd, self._watched = -1, 0

    def _exited(self) -> bool:
        if not self._watched:
            return False
        if self._pidfd >= 0:
            return bool(select.select([self._pidfd], [], [], 0)[0])
        return not _running(self._watched)

    def _wait_readable(self) -> bool:
        """Block until there is data (or EOF) to read: True; or the watched process exited: False."""
        if not self._watched:
            return True
        poller = select.poll()
        poller.register(self.rfd, select.POLLIN)
        if self._pidfd >= 0:
            poller.register(self._pidfd, select.POLLIN)
        while True:
            try:
                events = poller.poll(-1 if self._pidfd >= 0 else _POLL_FALLBACK_MS)
            except InterruptedError:
                continue
            if any(fd == self.rfd for fd, _ in events):
                return True  # read what is there even if the writer has just exited
            if events or self._exited():
                return False

    def recv(self) -> str | None:
        """Next line, or None at EOF or once the watched process has exited without one."""
        while b"\n" not in self._buf:
            if self._wait_readable():
                chunk = posix.read(self.rfd, 65536)
            else:
                chunk = self._read_nowait()
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def _read_nowait(self) -> bytes:
        posix.set_blocking(self.rfd, False)
        try:
            return posix.read(self.rfd, 65536)
        except BlockingIOError:
            return b""
        finally:
            posix.set_blocking(self.rfd, True)

    def pending_error(self) -> str | None:
        """The first ERR line already written, read without waiting: for a parent whose own
        step failed because the child had just died of an error it reported."""
        if self.rfd < 0:
            return None
        while chunk := self._read_nowait():
            self._buf += chunk
        for line in self._buf.split(b"\n"):
            if line.startswith(b"ERR "):
                return line[4:].decode(errors="replace")
        return None

    def expect_ok(self) -> str:
        msg = self.recv()
        if msg is None or not msg.startswith("OK"):
            raise SystemExit(1)  # the parent gave up on us
        return msg[3:]

    def close(self) -> None:
        self._unwatch()
        for fd in (self.rfd, self.wfd):
            if fd >= 0:
                try:
                    posix.close(fd)
                except OSError:
                    pass
        self.rfd = self.wfd = -1


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie child of someone else can no longer write either)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def pair() -> tuple[Channel, Channel]:
    """(parent side, child side). Both pipes are close-on-exec (posix.pipe's default), so an
    exec'd container process or hook never inherits them."""
    p2c_r, p2c_w = posix.pipe()
    c2p_r, c2p_w = posix.pipe()
    return Channel(c2p_r, p2c_w), Channel(p2c_r, c2p_w)
