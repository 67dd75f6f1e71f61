"""PortForward's container side: a connection into a pod's network namespace (a real pinned
namespace, as RunPodSandbox makes), the host's for host-network pods, and its errors."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from cri_shim.errors import FailedPrecondition, InvalidArgument
from cri_shim.sandboxes import namespaces, port_forward
from cri_shim.sandboxes.manager import SandboxManager
from cri_shim.sandboxes.store import NOTREADY, READY

pytestmark = pytest.mark.root

# Answers each connection with its tag and then echoes; threads, so connections overlap.
SERVER = """
import socket, sys, threading
tag, port = sys.argv[1].encode(), int(sys.argv[2])
srv = socket.socket(socket.AF_INET6 if sys.argv[3] == "6" else socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("::1" if sys.argv[3] == "6" else "127.0.0.1", port))
srv.listen(64)
print("ready", flush=True)
def serve(c):
    c.sendall(tag + b"\\n")
    while data := c.recv(65536):
        c.sendall(data)
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Path]:
    pin = tmp_path / "net"
    asyncio.run(namespaces.pin_namespaces({"net": pin}, ""))
    yield pin
    namespaces.unpin(pin)


class Servers:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, tag: str, port: int, netns: Path | None, family: str = "4") -> None:
        enter = ["nsenter", f"--net={netns}"] if netns else []
        p = subprocess.Popen([*enter, sys.executable, "-c", SERVER, tag, str(port), family],
                             stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    yield s
    for p in s.procs:
        p.kill()
        p.wait()


async def _talk(netns: Path | None, port: int, payload: bytes) -> tuple[bytes, bytes]:
    sock = await port_forward.connect(netns, port, "pod sandbox test")
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        tag = await reader.readline()
        writer.write(payload)
        await writer.drain()
        echoed = await reader.readexactly(len(payload))
        return tag.strip(), echoed
    finally:
        writer.close()
        await writer.wait_closed()


def test_connects_inside_the_pod_netns_20_at_once(netns: Path, servers: Servers) -> None:
    port = _free_port()
    servers.start("pod", port, netns)
    servers.start("host", port, None)
    own = os.readlink("/proc/thread-self/ns/net")

    async def main() -> None:
        got = await asyncio.wait_for(asyncio.gather(
            *(_talk(netns, port, f"conn-{i}-".encode() * 1000) for i in range(20))), 30)
        assert [t for t, _ in got] == [b"pod"] * 20
        assert all(e == f"conn-{i}-".encode() * 1000 for i, (_, e) in enumerate(got))
        assert (await _talk(None, port, b"x"))[0] == b"host"  # host network: the host's

    asyncio.run(main())
    assert os.readlink("/proc/thread-self/ns/net") == own


def test_ipv6_localhost_when_v4_is_refused(netns: Path, servers: Servers) -> None:
    port = _free_port()
    servers.start("pod6", port, netns, family="6")
    assert asyncio.run(_talk(netns, port, b"y")) == (b"pod6", b"y")


def test_nothing_listening_is_a_clear_refusal(netns: Path) -> None:
    port = _free_port()
    with pytest.raises(ConnectionRefusedError) as e:
        asyncio.run(port_forward.connect(netns, port, "pod sandbox abc"))
    assert "pod sandbox abc" in str(e.value) and str(port) in str(e.value)


def test_manager_checks_the_pod(netns: Path, servers: Servers) -> None:
    port = _free_port()
    servers.start("pod", port, netns)
    sb = SimpleNamespace(meta=SimpleNamespace(id="p" * 64), status=SimpleNamespace(state=READY),
                         pins=lambda: {"net": netns})
    mgr = SimpleNamespace(get=lambda _id: sb)

    async def main() -> None:
        reader, writer = await SandboxManager.port_forward(mgr, "p", port)  # type: ignore[arg-type]
        assert await reader.readline() == b"pod\n"
        writer.close()
        await writer.wait_closed()
        with pytest.raises(InvalidArgument, match="p" * 64):
            await SandboxManager.port_forward(mgr, "p", 0)  # type: ignore[arg-type]
        sb.status.state = NOTREADY
        with pytest.raises(FailedPrecondition, match=f"{'p' * 64} is not ready"):
            await SandboxManager.port_forward(mgr, "p", port)  # type: ignore[arg-type]

    asyncio.run(main())
