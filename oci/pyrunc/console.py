"""The console socket: a pty allocated inside the container, master sent over SCM_RIGHTS."""

import fcntl  # imported here: after pivot_root no module can be loaded
import posix
import socket
import struct

from . import fs
from . import syscalls as sc

TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
TIOCGWINSZ = 0x5413


# sun_path holds 108 bytes with its NUL; a bundle or state dir under a long root (a 64-digit
# container id) can exceed it
_SUN_PATH_MAX = 107


def _reachable(path: str) -> str:
    """path, or the same socket file through /proc/self/fd of its directory when path is too
    long for a unix socket address. The directory's descriptor stays open for the process's
    life (pyrunc commands are short) and is inherited by the children that connect."""
    if len(path.encode("utf-8", "surrogateescape")) <= _SUN_PATH_MAX:  # os.fsencode
        return path
    directory, name = fs.split(path)
    fd = posix.open(directory or ".", posix.O_PATH | posix.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{name}"


def connect(path: str) -> int:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(_reachable(path))
    except OSError as e:
        s.close()
        from .errors import PyruncError
        raise PyruncError(f"connect to console socket {path}: {e.strerror}") from None
    return s.detach()


def setup_pty(sock_fd: int, uid: int, size: dict | None) -> None:
    """Allocate a pty from the container's /dev/ptmx, hand the master over, make the slave our
    controlling terminal and stdio."""
    master, slave = posix.openpty()
    try:
        posix.fchown(slave, uid, -1)
    except OSError:
        pass
    if size:
        fcntl.ioctl(slave, TIOCSWINSZ, struct.pack("HHHH", size.get("height", 0), size.get("width", 0), 0, 0))
    s = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(s, [b"/dev/ptmx"], [master])
    finally:
        s.close()
    posix.close(master)
    posix.setsid()
    sc.ioctl_int(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        posix.dup2(slave, fd)
    if slave > 2:
        posix.close(slave)


def listen(path: str) -> tuple[socket.socket, str]:
    """Our own console socket, for `exec -t` in the foreground without --console-socket."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = _reachable(path)
    srv.bind(path)
    srv.listen(1)
    return srv, path


def _copy_size(master: int) -> None:
    """Give the container's pty our terminal's window size (when ours has one), as runc does."""
    for fd in (0, 1, 2):
        try:
            size = fcntl.ioctl(fd, TIOCGWINSZ, b"\0" * 8)
        except OSError:
            continue
        if size != b"\0" * 8:
            fcntl.ioctl(master, TIOCSWINSZ, size)
        return


def _follow_size(master: int, pid: int) -> None:
    """The size now and at each SIGWINCH (a resize of our terminal); other signals go to the
    process, as runc's signal handler does while it proxies."""
    import _signal as signal  # not `signal`: its IntEnum set-up costs milliseconds

    def forward(signum: int, _frame: object) -> None:
        try:
            posix.kill(pid, signum)
        except ProcessLookupError:
            pass

    def resize(_signum: int, _frame: object) -> None:
        try:
            _copy_size(master)
        except OSError:
            pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, forward)
    signal.signal(signal.SIGWINCH, resize)
    resize(0, None)


def proxy_until_exit(srv: socket.socket, pid: int, wait: object) -> int:
    """Receive the pty master, copy our stdin/stdout to and from it until the process exits."""
    import select
    import termios
    import tty
    conn, _ = srv.accept()
    path = srv.getsockname()
    srv.close()
    try:
        posix.unlink(path)
    except OSError:
        pass
    _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    conn.close()
    if not fds:  # it died between connecting and sending the pty: its status tells the rest
        return wait(pid)  # type: ignore[operator]
    master = fds[0]
    saved = None
    if posix.isatty(0):
        saved = termios.tcgetattr(0)
        # TCSANOW: the default TCSAFLUSH would drop what the client typed before we got here
        tty.setraw(0, termios.TCSANOW)
    _follow_size(master, pid)
    try:
        stdin_open = True
        while True:
            r, _, _ = select.select([master] + ([0] if stdin_open else []), [], [], 0.1)
            if master in r:
                try:
                    data = posix.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                posix.write(1, data)
            if 0 in r:
                data = posix.read(0, 65536)
                if data:
                    posix.write(master, data)
                else:
                    stdin_open = False
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        posix.close(master)
    return wait(pid)  # type: ignore[operator]
