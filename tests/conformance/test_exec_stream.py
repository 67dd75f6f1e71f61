"""Streaming exec (CRI Exec's container side) on every backend: ConmonOCIRuntime.exec_stream
with pipes and with a terminal, stdin, resizes, exit codes, and cancellation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cri_shim.config import Config
from cri_shim.runtimes.conmon_oci import ConmonOCIRuntime, ConmonSettings
from cri_shim.streaming.stdio import StreamIO, TerminalSize
from oci.cli_runtime import CLIRuntime
from oci.spec import Process
from tests.conformance.conftest import Container, Harness, backend_binary

pytestmark = pytest.mark.root
TIMEOUT = 20.0


class Client:
    """A StreamIO with the output collected, as a streaming client would see it."""

    def __init__(self, *, stdin: bool = False, tty: bool = False) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.io = StreamIO(stdin=asyncio.Queue() if stdin else None, stdout=self._out,
                           stderr=None if tty else self._err, tty=tty)

    async def _out(self, b: bytes) -> None:
        self.out += b

    async def _err(self, b: bytes) -> None:
        self.err += b

    def send(self, data: bytes | None) -> None:
        assert self.io.stdin is not None
        self.io.stdin.put_nowait(data)

    async def wait_out(self, needle: bytes) -> None:
        deadline = time.monotonic() + TIMEOUT
        while needle not in self.out:
            assert time.monotonic() < deadline, f"{needle!r} not in {bytes(self.out)!r}"
            await asyncio.sleep(0.01)


def _runtime(h: Harness) -> ConmonOCIRuntime:
    binary = backend_binary(h.backend)
    assert binary
    oci = CLIRuntime(binary, h.rt.runtime.root, name=h.backend)  # type: ignore[attr-defined]
    config = Config(state_dir=str(h.tmp / "state"))
    return ConmonOCIRuntime(h.backend, oci, Path(oci.root), ConmonSettings.from_config(config))


def _proc(*args: str, tty: bool = False) -> Process:
    return Process(args=list(args), env=["PATH=/bin", "TERM=xterm"], cwd="/", terminal=tty)


def _exec(h: Harness, c: Container, process: Process, client: Client) -> asyncio.Task[int]:
    return asyncio.create_task(_runtime(h).exec_stream(c.id, c.bundle, process, client.io))


def _exec_dirs(c: Container) -> list[Path]:
    return list(c.bundle.glob("exec-*"))


def test_streams_and_exit_code(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100"))

    async def main() -> None:
        client = Client()
        code = await asyncio.wait_for(
            _exec(h, c, _proc("sh", "-c", "echo out; echo err >&2; exit 3"), client), TIMEOUT)
        assert (code, bytes(client.out), bytes(client.err)) == (3, b"out\n", b"err\n")
        killed = await asyncio.wait_for(_exec(h, c, _proc("sh", "-c", "kill -9 $$"), Client()), TIMEOUT)
        assert killed == 137

    asyncio.run(main())
    assert not _exec_dirs(c)


def test_stdin_round_trip_and_none(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100"))

    async def main() -> None:
        client = Client(stdin=True)
        task = _exec(h, c, _proc("cat"), client)
        client.send(b"hello ")
        await client.wait_out(b"hello ")  # echoed while stdin is still open
        client.send(b"x" * 200_000)
        client.send(None)
        assert await asyncio.wait_for(task, TIMEOUT) == 0
        assert bytes(client.out) == b"hello " + b"x" * 200_000
        # no stdin asked for: the process reads /dev/null
        none = Client()
        assert await asyncio.wait_for(_exec(h, c, _proc("cat"), none), TIMEOUT) == 0
        assert none.out == b""

    asyncio.run(main())


def test_tty_sees_terminal_and_resizes(h: Harness) -> None:
    c = h.start(h.spec("sleep", "100"))

    async def main() -> None:
        client = Client(stdin=True, tty=True)
        client.io.resize.put_nowait(TerminalSize(width=100, height=30))  # before it starts
        # after the line, wait (up to 10 s) for the resize to reach the container's pty: the
        # runtime applies it asynchronously (SIGWINCH), which may lag behind the input under load
        script = ("tty; stty size; read x; n=0; "
                  "while [ \"$(stty size)\" != '40 120' ] && [ $n -lt 200 ]; "
                  "do sleep 0.05; n=$((n+1)); done; stty size; echo got-$x; exit 5")
        task = _exec(h, c, _proc("sh", "-c", script, tty=True), client)
        await client.wait_out(b"30 100")
        client.io.resize.put_nowait(TerminalSize(width=120, height=40))
        client.send(b"hi\r")
        assert await asyncio.wait_for(task, TIMEOUT) == 5
        # Line ends as a terminal shows them: runc clears ONLCR on the container's pty only after
        # the process starts, so under load its first lines can come as \r\r\n.
        lines = bytes(client.out).replace(b"\r", b"").split(b"\n")
        assert lines[0].startswith(b"/dev/pts/"), lines
        assert lines[1:5] == [b"30 100", b"hi", b"40 120", b"got-hi"], lines

    asyncio.run(main())
    assert not _exec_dirs(c)


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
def test_cancel_kills_the_process(h: Harness, tty: bool) -> None:
    c = h.start(h.spec("sleep", "100"))

    async def main() -> None:
        client = Client(stdin=True, tty=tty)
        task = _exec(h, c, _proc("sh", "-c", "sleep 1000 & echo started; wait", tty=tty), client)
        await client.wait_out(b"started")
        assert len(await h.rt.runtime.pids(c.id)) > 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert h.rt.pids(c.id) == [c.pid], "the exec'd processes must be gone"
    assert not _exec_dirs(c)
