"""PortForward's container side: a TCP connection to localhost:port inside a pod's network
namespace, as containerd's portForward (tcp4 localhost first, then tcp6).

Network namespaces belong to threads. A thread of its own enters the pod's namespace with
setns(2), connects, and goes back to the one it came from; the socket keeps the namespace it
was made in. A thread that could not go back never runs anything else: it is not a pool's.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT = 10.0

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _dial_localhost(port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout)
    except OSError as v4:
        try:
            return socket.create_connection(("::1", port), timeout)
        except OSError as v6:
            if isinstance(v4, ConnectionRefusedError):
                raise ConnectionRefusedError(
                    v4.errno, f"nothing listening on localhost:{port} (IPv4: {v4.strerror}; IPv6: {v6})"
                ) from None
            raise OSError(v4.errno, f"localhost:{port}: IPv4: {v4}; IPv6: {v6}") from None


def _connect_in(netns: Path | None, port: int, timeout: float) -> socket.socket:
    if netns is None:
        return _dial_localhost(port, timeout)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            return _dial_localhost(port, timeout)
        finally:
            _setns(own)  # should this fail, the thread ends with the error: it is ours alone
    finally:
        os.close(own)


async def connect(netns: Path | None, port: int, what: str,
                  timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A connected, non-blocking socket to localhost:port in ``netns`` (None: the host's).

    Errors are OSError (ConnectionRefusedError when nothing listens) naming ``what``, the pod.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def settle(result: socket.socket | None, error: BaseException | None) -> None:
        if done.cancelled():
            if result is not None:
                result.close()
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            sock = _connect_in(netns, port, timeout)
        except OSError as e:
            err: BaseException = type(e)(e.errno, f"port forward to {what}, port {port}: {e.strerror or e}")
            loop.call_soon_threadsafe(settle, None, err)
            return
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            loop.call_soon_threadsafe(settle, None, e)
            return
        sock.setblocking(False)
        loop.call_soon_threadsafe(settle, sock, None)

    threading.Thread(target=work, name=f"port-forward-{port}", daemon=True).start()
    return await done
