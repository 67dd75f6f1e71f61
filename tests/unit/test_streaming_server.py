"""The streaming server over loopback with a fake daemon: HTTP errors before the upgrade,
exec and attach over WebSocket (the `websockets` library as an independent client) and over
SPDY (our sans-IO core as the client), port-forward over both."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Message, Request

from cri_shim.errors import FailedPrecondition, NotFound
from cri_shim.streaming import spdy
from cri_shim.streaming.server import StreamingServer
from cri_shim.streaming.stdio import StreamIO
from cri_shim.streaming.targets import AttachTarget, ExecTarget, PortForwardTarget
from tests.support.spdy_client import SpdyClient


class FakeBackend:
    """A 'container' that runs a tiny script: echo stdin, report sizes, exit with a code."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.echo_port = 0

    def check_container(self, container_id: str) -> None:
        if container_id == "gone":
            raise NotFound(f"container {container_id} not found")
        if container_id == "stopped":
            raise FailedPrecondition(f"container {container_id} is not running (exited)")

    def check_pod(self, pod_id: str) -> None:
        if pod_id != "pod":
            raise NotFound(f"pod sandbox {pod_id} not found")

    async def exec(self, target: ExecTarget, io: StreamIO) -> int:
        cmd = target.cmd
        try:
            if cmd[0] == "out-err":
                assert io.stdout and io.stderr
                await io.stdout(b"out\n")
                await io.stderr(b"err\n")
                return int(cmd[1])
            if cmd[0] == "cat":
                assert io.stdout
                while chunk := await io.read_stdin():
                    await io.stdout(chunk)
                return 0
            if cmd[0] == "size":
                assert io.stdout
                size = await io.resize.get()
                assert size
                await io.stdout(f"{size.height} {size.width}\n".encode())
                return 0
            if cmd[0] == "hang":
                await asyncio.sleep(3600)
            return 127
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def attach(self, target: AttachTarget, io: StreamIO) -> None:
        assert io.stdout
        while chunk := await io.read_stdin():
            await io.stdout(chunk.upper())

    async def port_forward(self, pod_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if port == 81:
            raise ConnectionRefusedError(f"nothing listens on port {port} in pod {pod_id}")
        return await asyncio.open_connection("127.0.0.1", self.echo_port)


@asynccontextmanager
async def serving(**kwargs: object) -> AsyncIterator[tuple[StreamingServer, FakeBackend]]:
    backend = FakeBackend()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    backend.echo_port = echo_server.sockets[0].getsockname()[1]
    server = StreamingServer(backend, **kwargs)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server, backend
    finally:
        await server.stop()
        echo_server.close()
        await echo_server.wait_closed()


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://", 1)


async def http_status(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    host, _, rest = url.removeprefix("http://").partition("/")
    h, _, p = host.rpartition(":")
    reader, writer = await asyncio.open_connection(h, int(p))
    lines = [f"POST /{rest} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = await reader.read()
    writer.close()
    status_line, _, body = response.decode().partition("\r\n")
    return int(status_line.split()[1]), body.rpartition("\r\n\r\n")[2]


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def test_http_errors_before_any_upgrade() -> None:
    async def main() -> None:
        async with serving() as (server, _):
            url = server.url_for(ExecTarget("c1", ("true",), False, False, True, False))
            status, body = await http_status(url)  # no upgrade asked
            assert status == 400 and "upgrade" in body
            status, body = await http_status(url, {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"})
            assert status == 404 and "already used" in body  # the first try consumed it
            status, _ = await http_status(server.base_url + "/exec/made-up")
            assert status == 404
            status, _ = await http_status(server.base_url + "/elsewhere/x")
            assert status == 404
            url = server.url_for(ExecTarget("gone", ("true",), False, False, True, False))
            status, body = await http_status(url, {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"})
            assert status == 404 and "container gone not found" in body
            url = server.url_for(ExecTarget("stopped", ("true",), False, False, True, False))
            status, body = await http_status(url, {"Connection": "Upgrade", "Upgrade": "websocket"})
            assert status == 409 and "not running" in body
            url = server.url_for(ExecTarget("c1", ("true",), False, False, True, False))
            status, body = await http_status(url, {"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                                                   "X-Stream-Protocol-Version": "v9.channel.k8s.io"})
            assert status == 403 and "unable to negotiate" in body
            # an exec URL is not an attach URL
            url = server.url_for(ExecTarget("c1", ("true",), False, False, True, False))
            status, _ = await http_status(url.replace("/exec/", "/attach/"))
            assert status == 404
            # a head too large
            url = server.url_for(ExecTarget("c1", ("true",), False, False, True, False))
            status, _ = await http_status(url, {"X-Big": "a" * 20000})
            assert status == 431
    run(main())


def test_connections_are_capped() -> None:
    async def main() -> None:
        async with serving(max_connections=1) as (server, _):
            host, port = server.base_url.removeprefix("http://").split(":")
            _, idle_writer = await asyncio.open_connection(host, int(port))  # holds the one slot
            await asyncio.sleep(0.05)
            status, body = await http_status(server.base_url + "/exec/x")
            assert status == 503 and "busy" in body
            idle_writer.close()
    run(main())


def test_url_requests_are_validated() -> None:
    from cri_shim.errors import InvalidArgument
    server = StreamingServer(FakeBackend())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="tty and stderr"):
        server.url_for(ExecTarget("c", ("sh",), True, True, True, True))
    with pytest.raises(InvalidArgument, match="one of stdin, stdout, or stderr"):
        server.url_for(AttachTarget("c", False, False, False, False))
    with pytest.raises(InvalidArgument, match="cmd"):
        server.url_for(ExecTarget("c", (), False, False, True, False))
    with pytest.raises(InvalidArgument, match="pod_sandbox_id"):
        server.url_for(PortForwardTarget("", (80,)))
    with pytest.raises(InvalidArgument, match="70000"):
        server.url_for(PortForwardTarget("p", (70000,)))


async def ws_session(url: str, proto: str, send: list[bytes] = ()) -> dict[int, bytes]:  # type: ignore[assignment]
    got: dict[int, bytes] = {}
    async with websockets.connect(ws_url(url), subprotocols=[proto]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == proto
        for message in send:
            await ws.send(message)
        async for message in ws:
            assert isinstance(message, bytes)
            got[message[0]] = got.get(message[0], b"") + message[1:]
    return got


@pytest.mark.parametrize("proto", ["v4.channel.k8s.io", "v5.channel.k8s.io"])
def test_websocket_exec_reports_streams_and_exit_code(proto: str) -> None:
    async def main() -> None:
        async with serving() as (server, _):
            url = server.url_for(ExecTarget("c1", ("out-err", "3"), False, False, True, True))
            got = await ws_session(url, proto)
            assert got[1] == b"out\n" and got[2] == b"err\n"
            status = json.loads(got[3])
            assert status["reason"] == "NonZeroExitCode"
            assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "3"}
            url = server.url_for(ExecTarget("c1", ("out-err", "0"), False, False, True, True))
            assert json.loads((await ws_session(url, proto))[3]) == {"metadata": {}, "status": "Success"}
    run(main())


def test_websocket_v5_stdin_close_signal_and_resize() -> None:
    async def main() -> None:
        async with serving() as (server, _):
            url = server.url_for(ExecTarget("c1", ("cat",), False, True, True, False))
            got = await ws_session(url, "v5.channel.k8s.io", [b"\x00hello ", b"\x00world", b"\xff\x00"])
            assert got[1] == b"hello world"
            url = server.url_for(ExecTarget("c1", ("size",), True, True, True, False))
            resize = b"\x04" + json.dumps({"Width": 132, "Height": 43}).encode()
            got = await ws_session(url, "v5.channel.k8s.io", [resize])
            assert got[1] == b"43 132\n"
    run(main())


def test_websocket_base64_and_unknown_protocol() -> None:
    async def main() -> None:
        async with serving() as (server, _):
            url = server.url_for(ExecTarget("c1", ("out-err", "0"), False, False, True, True))
            async with websockets.connect(ws_url(url), subprotocols=["v4.base64.channel.k8s.io"]) as ws:  # type: ignore[list-item]
                texts = [m async for m in ws]
            assert "1" + "b3V0Cg==" in texts  # "out\n"
            url = server.url_for(ExecTarget("c1", ("true",), False, False, True, False))
            with pytest.raises(InvalidStatus) as info:
                async with websockets.connect(ws_url(url), subprotocols=["v9.channel.k8s.io"]):  # type: ignore[list-item]
                    pass
            assert info.value.response.status_code == 400
    run(main())


def test_client_leaving_cancels_the_exec() -> None:
    async def main() -> None:
        async with serving() as (server, backend):
            url = server.url_for(ExecTarget("c1", ("hang",), False, False, True, False))
            async with websockets.connect(ws_url(url), subprotocols=["v4.channel.k8s.io"]):  # type: ignore[list-item]
                await asyncio.sleep(0.1)
            await asyncio.wait_for(backend.cancelled.wait(), 5)
    run(main())


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "v2.channel.k8s.io"])
def test_spdy_exec(protocol: str) -> None:
    async def main() -> None:
        async with serving() as (server, _):
            url = server.url_for(ExecTarget("c1", ("out-err", "3"), False, False, True, True))
            client = await SpdyClient.connect(url, f"{protocol}, channel.k8s.io")
            assert f"X-Stream-Protocol-Version: {protocol}" in client.head
            err = client.open({"streamtype": "error"})
            out = client.open({"streamtype": "stdout"})
            errout = client.open({"streamtype": "stderr"})
            await client.pump_until(lambda: {err, out, errout} <= client.fin)
            assert client.data[out] == b"out\n" and client.data[errout] == b"err\n"
            if protocol.startswith("v4"):
                assert json.loads(client.data[err])["details"]["causes"][0]["message"] == "3"
            else:
                assert b"exit code 3" in client.data[err]
            client.writer.close()
    run(main())


def test_spdy_exec_with_stdin_and_tty_resize() -> None:
    async def main() -> None:
        async with serving() as (server, _):
            url = server.url_for(ExecTarget("c1", ("cat",), False, True, True, False))
            client = await SpdyClient.connect(url, "v4.channel.k8s.io")
            err = client.open({"streamtype": "error"})
            sin = client.open({"streamtype": "stdin"})
            out = client.open({"streamtype": "stdout"})
            client.send(sin, b"x" * 200_000, fin=True)  # past the 64 KiB windows
            await client.pump_until(lambda: {err, out} <= client.fin)
            assert client.data[out] == b"x" * 200_000
            client.writer.close()

            url = server.url_for(ExecTarget("c1", ("size",), True, True, True, False))
            client = await SpdyClient.connect(url, "v4.channel.k8s.io")
            err = client.open({"streamtype": "error"})
            sin = client.open({"streamtype": "stdin"})
            out = client.open({"streamtype": "stdout"})
            size = client.open({"streamtype": "resize"})
            client.send(size, b'{"Width":100,"Height":30}\n')
            await client.pump_until(lambda: {err, out} <= client.fin)
            assert client.data[out] == b"30 100\n"
            client.writer.close()
    run(main())


def test_spdy_attach() -> None:
    async def main() -> None:
        async with serving() as (server, _):
            url = server.url_for(AttachTarget("c1", False, True, True, False))
            client = await SpdyClient.connect(url, "v4.channel.k8s.io")
            err = client.open({"streamtype": "error"})
            sin = client.open({"streamtype": "stdin"})
            out = client.open({"streamtype": "stdout"})
            client.send(sin, b"hello\n", fin=True)
            await client.pump_until(lambda: {err, out} <= client.fin)
            assert client.data[out] == b"HELLO\n"
            client.writer.close()
    run(main())


def test_spdy_port_forward_many_connections_and_a_refused_port() -> None:
    async def main() -> None:
        async with serving() as (server, _):
            url = server.url_for(PortForwardTarget("pod", ()))
            client = await SpdyClient.connect(url, "portforward.k8s.io")
            pairs = []
            for i in range(20):
                client.open({"streamtype": "error", "port": "80", "requestid": str(i)})
                d = client.open({"streamtype": "data", "port": "80", "requestid": str(i)})
                client.send(d, f"request {i}".encode())
                pairs.append(d)
            refused_err = client.open({"streamtype": "error", "port": "81", "requestid": "r"})
            client.open({"streamtype": "data", "port": "81", "requestid": "r"})
            bad = client.open({"streamtype": "data", "port": "0", "requestid": "b"})
            await client.pump_until(lambda: all(client.data[d] == f"request {i}".encode()
                                                for i, d in enumerate(pairs))
                                    and refused_err in client.fin and bad in client.reset)
            assert b"port 81" in client.data[refused_err]
            client.writer.close()
    run(main())


def test_websocket_port_forward_channels_and_spdy_tunnel() -> None:
    async def main() -> None:
        async with serving() as (server, _):
            url = server.url_for(PortForwardTarget("pod", (80, 81)))
            async with websockets.connect(ws_url(url), subprotocols=["v4.channel.k8s.io"]) as ws:  # type: ignore[list-item]
                got: dict[int, bytes] = {}
                for _ in range(4):  # every channel first carries its port
                    m = await ws.recv()
                    assert isinstance(m, bytes)
                    got[m[0]] = m[1:]
                assert got == {0: struct.pack("<H", 80), 1: struct.pack("<H", 80),
                               2: struct.pack("<H", 81), 3: struct.pack("<H", 81)}
                await ws.send(b"\x00ping")
                seen = {}
                while 0 not in seen or 3 not in seen:
                    m = await ws.recv()
                    assert isinstance(m, bytes)
                    seen[m[0]] = m[1:]
                assert seen[0] == b"ping" and b"port 81" in seen[3]

            # client-go tunnels SPDY through WebSocket; `websockets` refuses the "/" in its
            # subprotocol name, so this client is wsproto's
            url = server.url_for(PortForwardTarget("pod", ()))
            host, _, path = url.removeprefix("http://").partition("/")
            reader, writer = await asyncio.open_connection(*host.split(":"))
            ws = WSConnection(ConnectionType.CLIENT)
            writer.write(ws.send(Request(host=host, target="/" + path,
                                         subprotocols=["SPDY/3.1+portforward.k8s.io"])))
            conn = spdy.Connection(client=True)
            conn.open_stream({"streamtype": "error", "port": "80", "requestid": "0"})
            d = conn.open_stream({"streamtype": "data", "port": "80", "requestid": "0"})
            conn.send_data(d, b"tunnelled")
            data = b""
            accepted = False
            while data != b"tunnelled":
                ws.receive_data(await reader.read(65536))
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        assert event.subprotocol == "SPDY/3.1+portforward.k8s.io"
                        accepted = True
                        # gorilla sends empty messages for empty writes: not the end
                        writer.write(ws.send(Message(data=b"")))
                        writer.write(ws.send(Message(data=conn.data_to_send())))
                    elif isinstance(event, BytesMessage):
                        for ev in conn.receive_data(event.data):
                            if isinstance(ev, spdy.Data) and ev.stream_id == d:
                                data += ev.data
            assert accepted
            writer.close()
    run(main())


def test_tls(tmp_path: Path) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False

    async def main() -> None:
        async with serving(tls=server_ctx) as (server, _):
            assert server.base_url.startswith("https://127.0.0.1:")
            url = server.url_for(ExecTarget("c1", ("out-err", "0"), False, False, True, True))
            async with websockets.connect(url.replace("https://", "wss://"), ssl=client_ctx,
                                          subprotocols=["v4.channel.k8s.io"]) as ws:  # type: ignore[list-item]
                got = [m async for m in ws]
            assert b"\x01out\n" in got
    run(main())
