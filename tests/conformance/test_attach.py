"""Attach (CRI Attach's container side) through conmon's attach socket, on every backend:
two clients at once, stdout and stderr apart, stdin_once closing the container's stdin, and a
terminal resized through conmon's control FIFO."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri_shim.containers import attach, conmon
from cri_shim.streaming.stdio import StreamIO, TerminalSize
from oci.builder import SpecBuilder
from oci.cli_runtime import CLIRuntime
from oci.errors import OCIRuntimeError
from tests.conformance.conftest import CGROUP_PARENT, backend_binary

pytestmark = pytest.mark.root
CONMON = shutil.which("conmon")
TIMEOUT = 20.0


class Client:
    def __init__(self, *, stdin: bool, tty: bool = False) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.io = StreamIO(stdin=asyncio.Queue() if stdin else None, stdout=self._out,
                           stderr=None if tty else self._err, tty=tty)

    async def _out(self, b: bytes) -> None:
        self.out += b

    async def _err(self, b: bytes) -> None:
        self.err += b

    async def wait_out(self, needle: bytes) -> None:
        deadline = time.monotonic() + TIMEOUT
        while needle not in self.out:
            assert time.monotonic() < deadline, f"{needle!r} not in {bytes(self.out)!r}"
            await asyncio.sleep(0.01)


class Monitored:
    """One container under conmon, as ConmonOCIRuntime.create makes it."""

    def __init__(self, backend: str, root: Path, tmp: Path, rootfs_template: Path) -> None:
        binary = backend_binary(backend)
        assert binary and CONMON
        self.rt = CLIRuntime(binary, root, name=backend)
        self.id = f"at-{uuid.uuid4().hex[:12]}"
        self.bundle = tmp / self.id
        self.bundle.mkdir()
        shutil.copytree(rootfs_template, self.bundle / "rootfs", symlinks=True)
        self.socket_dir = tmp / "sockets"
        self.tmp = tmp
        self.binary = binary

    async def create(self, builder: SpecBuilder, *, stdin_once: bool, terminal: bool = False) -> None:
        spec = builder.build(check=False)
        assert spec.linux is not None
        spec.linux.cgroups_path = f"/{CGROUP_PARENT}/{self.id}"
        spec.save(self.bundle / "config.json")
        args = conmon.ConmonArgs(
            conmon=CONMON or "", runtime_path=self.binary, container_id=self.id, name=self.id,
            bundle=self.bundle, log_path=str(self.tmp / f"{self.id}.log"), exit_dir=self.tmp / "exits",
            persist_dir=self.bundle / "persist", socket_dir=self.socket_dir, stdin=True,
            stdin_once=stdin_once, terminal=terminal, runtime_args=tuple(self.rt.runtime_args()))
        await conmon.go(await conmon.spawn(args))
        await self.rt.start(self.id)

    async def attach(self, client: Client, *, stdin_once: bool) -> asyncio.Task[None]:
        sock = await attach.connect(self.socket_dir, self.id)
        return asyncio.create_task(attach.run(sock, self.bundle, client.io, stdin_once=stdin_once))

    async def remove(self) -> None:
        with contextlib.suppress(OCIRuntimeError):
            await self.rt.delete(self.id, force=True)
        # The harness is a child subreaper, so conmon's monitor is re-parented to us: reap it.
        pid = int((self.bundle / "conmon.pid").read_text())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            if not conmon.conmon_alive(self.bundle):
                break
            await asyncio.sleep(0.02)
        assert not conmon.conmon_alive(self.bundle), f"conmon of {self.id} still running"


@pytest.fixture
def monitored(backend: str, runtime_root: Path, rootfs_template: Path, tmp_path: Path) -> Iterator[Monitored]:
    if CONMON is None:
        pytest.fail("conmon is not installed")
    m = Monitored(backend, runtime_root, tmp_path, rootfs_template)
    yield m
    asyncio.run(m.remove())


def test_two_clients_streams_and_stdin_once(monitored: Monitored) -> None:
    script = "while read x; do echo out-$x; echo err-$x >&2; done; echo bye"

    async def main() -> None:
        await monitored.create(SpecBuilder().rootfs("rootfs").args("sh", "-c", script), stdin_once=True)
        a, b = Client(stdin=True), Client(stdin=False)
        ta = await monitored.attach(a, stdin_once=True)
        tb = await monitored.attach(b, stdin_once=True)
        await asyncio.sleep(0.2)
        assert a.io.stdin is not None
        a.io.stdin.put_nowait(b"one\n")
        for c in (a, b):
            await c.wait_out(b"out-one\n")
        a.io.stdin.put_nowait(None)  # stdin_once: the container's stdin closes, the loop ends
        await asyncio.wait_for(asyncio.gather(ta, tb), TIMEOUT)  # the container exited
        for c in (a, b):
            assert bytes(c.out) == b"out-one\nbye\n" and bytes(c.err) == b"err-one\n"

    asyncio.run(main())


def test_client_leaving_keeps_stdin_open_without_stdin_once(monitored: Monitored) -> None:
    async def main() -> None:
        await monitored.create(SpecBuilder().rootfs("rootfs").args("cat"), stdin_once=False)
        first = Client(stdin=True)
        t1 = await monitored.attach(first, stdin_once=False)
        assert first.io.stdin is not None
        first.io.stdin.put_nowait(b"ping\n")
        await first.wait_out(b"ping\n")
        first.io.stdin.put_nowait(None)
        await asyncio.sleep(0.2)
        t1.cancel()  # the client goes away
        with pytest.raises(asyncio.CancelledError):
            await t1
        second = Client(stdin=True)
        t2 = await monitored.attach(second, stdin_once=False)
        assert second.io.stdin is not None
        second.io.stdin.put_nowait(b"pong\n")
        await second.wait_out(b"pong\n")  # cat still reads: its stdin was left open
        t2.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t2

    asyncio.run(main())


def test_tty_resize_through_conmon(monitored: Monitored) -> None:
    async def main() -> None:
        builder = SpecBuilder().rootfs("rootfs").args("sh", "-c", "while read x; do stty size; done")
        builder.spec.process.terminal = True  # type: ignore[union-attr]
        await monitored.create(builder, stdin_once=True, terminal=True)
        client = Client(stdin=True, tty=True)
        task = await monitored.attach(client, stdin_once=True)
        client.io.resize.put_nowait(TerminalSize(width=123, height=45))
        await asyncio.sleep(0.3)
        assert client.io.stdin is not None
        client.io.stdin.put_nowait(b"\r")
        await client.wait_out(b"45 123")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
