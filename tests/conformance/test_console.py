"""process.terminal with --console-socket: the runtime hands us a working pty master."""

from __future__ import annotations

import pytest

from oci.spec import Process, User
from tests.conformance.conftest import Harness
from tests.conformance.console import ConsoleSocket

pytestmark = pytest.mark.root


def test_console_socket_gives_working_tty(h: Harness) -> None:
    cs = ConsoleSocket()
    try:
        b = h.spec("sh", "-c", "tty; stty size; read line; echo got:$line")
        b.terminal(True, height=40, width=100)
        c = h.create(b, console_socket=cs.path)
        cs.receive()
        h.rt.start(c.id)
        out = cs.read_until("\n40 100")
        assert "/dev/pts/" in out and "40 100" in out, out
        cs.write("hello\n")
        out = cs.read_until("got:hello")
        assert "got:hello" in out, out
        result = h.wait(c)
        assert result.code == 0, result
    finally:
        cs.close()


def test_terminal_is_controlling_tty(h: Harness) -> None:
    cs = ConsoleSocket()
    try:
        script = "echo $(readlink /proc/self/fd/0) $(cut -d' ' -f7 /proc/self/stat)"
        c = h.create(h.spec("sh", "-c", script).terminal(True), console_socket=cs.path)
        cs.receive()
        h.rt.start(c.id)
        out = cs.read_until("\n")
        fd0, tty_nr = out.split()[:2]
        assert fd0.startswith("/dev/pts/") and tty_nr != "0", out
        h.wait(c)
    finally:
        cs.close()


def test_exec_with_tty(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100"))
    cs = ConsoleSocket()
    try:
        proc = Process(args=["sh", "-c", "tty; echo exec-tty-ok"], terminal=True, cwd="/", user=User(),
                       env=["PATH=/bin"])
        h.rt.exec(c.id, proc, console_socket=cs.path, detach=True)
        cs.receive()
        out = cs.read_until("exec-tty-ok")
        assert "/dev/pts/" in out and "exec-tty-ok" in out, out
    finally:
        cs.close()
