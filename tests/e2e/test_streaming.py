"""Issue 10: Exec, Attach and PortForward through the socket and the streaming server, on
every handler: SPDY with our client on the project's SPDY core, WebSocket with the
independent `websockets` client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from websockets.sync.client import connect as ws_connect

from cri_shim.criapi import api_pb2 as pb
from tests.e2e.cni_fixtures import PodNetwork, test_network  # noqa: F401 - fixture
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pods import BACKENDS, Pod
from tests.support.spdy_client import SpdyClient, UpgradeRefused

pytestmark = pytest.mark.root

V4, V5 = "v4.channel.k8s.io", "v5.channel.k8s.io"


def exec_url(d: DaemonProcess, cid: str, cmd: list[str], *, stdin: bool = False, tty: bool = False,
             stderr: bool = True) -> str:
    return d.runtime.Exec(pb.ExecRequest(container_id=cid, cmd=cmd, stdin=stdin, stdout=True,
                                         stderr=stderr and not tty, tty=tty)).url


def ws(url: str) -> str:
    return url.replace("http://", "ws://", 1)


def ws_session(url: str, send: list[bytes] = ()) -> dict[int, bytes]:  # type: ignore[assignment]
    """Every channel's bytes until the server closes; send goes out first, in order."""
    got: dict[int, bytes] = {}
    with ws_connect(ws(url), subprotocols=[V5], open_timeout=10) as conn:  # type: ignore[list-item]
        assert conn.subprotocol == V5
        for message in send:
            conn.send(message)
        for message in conn:
            assert isinstance(message, bytes)
            got[message[0]] = got.get(message[0], b"") + message[1:]
    return got


def spdy_exec(url: str, *, stdin: bytes | None = None, resize: bytes = b"",
              stderr: bool = True) -> dict[str, bytes]:
    async def main() -> dict[str, bytes]:
        client = await SpdyClient.connect(url, f"{V4}, v3.channel.k8s.io")
        streams = {"error": client.open({"streamtype": "error"})}
        if stdin is not None:
            streams["stdin"] = client.open({"streamtype": "stdin"})
        streams["stdout"] = client.open({"streamtype": "stdout"})
        if stderr:
            streams["stderr"] = client.open({"streamtype": "stderr"})
        if resize:
            streams["resize"] = client.open({"streamtype": "resize"})
            client.send(streams["resize"], resize)
        if stdin is not None:
            client.send(streams["stdin"], stdin, fin=not resize)
        ends = {streams[k] for k in ("error", "stdout", "stderr") if k in streams}
        await client.pump_until(lambda: ends <= client.fin)
        client.close()
        return {k: bytes(client.data[v]) for k, v in streams.items()}
    return asyncio.run(main())


def exit_code(status_json: bytes) -> int:
    status = json.loads(status_json)
    if status["status"] == "Success":
        return 0
    assert status["reason"] == "NonZeroExitCode", status
    return int(status["details"]["causes"][0]["message"])


def processes(pod: Pod, cid: str) -> str:
    return pod.exec(cid, ["ps", "-o", "pid,args"]).stdout.decode()


@pytest.mark.parametrize("handler", BACKENDS)
def test_exec_attach_and_port_forward(cri: DaemonProcess, handler: str, tmp_path: Path,
                                      test_network: PodNetwork, busybox_image: str) -> None:  # noqa: F811
    pod = Pod(cri, f"stream-{handler}", handler, tmp_path / "logs", busybox_image)
    box = pod.run("box", ["sleep", "3600"])
    web = pod.run("web", ["sh", "-c", "mkdir -p /www && echo page-from-pod > /www/index.html && "
                          "exec httpd -f -p 8080 -h /www"])
    echo_cfg = pod.container_config("echo", ["cat"])
    echo_cfg.stdin = True
    echo = cri.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=echo_cfg, sandbox_config=pod.config)).container_id
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=echo))
    for cid in (box, web, echo):
        pod.wait_state(cid, pb.CONTAINER_RUNNING)
    script = ["sh", "-c", "echo out; echo err >&2; exit 3"]

    # exec: both streams and the exit code, over SPDY and over WebSocket
    got = spdy_exec(exec_url(cri, box, script))
    assert (got["stdout"], got["stderr"], exit_code(got["error"])) == (b"out\n", b"err\n", 3)
    got_ws = ws_session(exec_url(cri, box, script))
    assert (got_ws[1], got_ws[2], exit_code(got_ws[3])) == (b"out\n", b"err\n", 3)

    # stdin round trip; the end of stdin is the end of cat (v5's close signal over WebSocket)
    got = spdy_exec(exec_url(cri, box, ["cat"], stdin=True), stdin=b"through spdy\n")
    assert got["stdout"] == b"through spdy\n" and exit_code(got["error"]) == 0
    got_ws = ws_session(exec_url(cri, box, ["cat"], stdin=True), [b"\x00through ", b"\x00ws\n", b"\xff\x00"])
    assert got_ws[1] == b"through ws\n" and exit_code(got_ws[3]) == 0

    # a tty: the process sees a terminal, and the size the client sets
    resize = json.dumps({"Width": 123, "Height": 45}).encode()
    got = spdy_exec(exec_url(cri, box, ["sh", "-c", "read x; stty size; tty"], stdin=True, tty=True),
                    stdin=b"go\n", resize=resize, stderr=False)
    assert b"45 123" in got["stdout"] and b"/dev/pts/" in got["stdout"], got
    got_ws = ws_session(exec_url(cri, box, ["sh", "-c", "read x; stty size"], stdin=True, tty=True),
                        [b"\x04" + json.dumps({"Width": 99, "Height": 33}).encode(), b"\x00go\n"])
    assert b"33 99" in got_ws[1], got_ws

    # the client goes away: the exec'd process is killed
    with ws_connect(ws(exec_url(cri, box, ["sleep", "1234"])), subprotocols=[V5]):  # type: ignore[list-item]
        deadline = time.monotonic() + 10
        while "sleep 1234" not in processes(pod, box) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "sleep 1234" in processes(pod, box)
    deadline = time.monotonic() + 10
    while "sleep 1234" in processes(pod, box) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "sleep 1234" not in processes(pod, box)

    # attach: a container echoing its stdin
    url = cri.runtime.Attach(pb.AttachRequest(container_id=echo, stdin=True, stdout=True, stderr=True)).url
    with ws_connect(ws(url), subprotocols=[V5]) as conn:  # type: ignore[list-item]
        conn.send(b"\x00hello attach\n")
        seen = b""
        deadline = time.monotonic() + 10
        while b"hello attach\n" not in seen and time.monotonic() < deadline:
            message = conn.recv(timeout=10)
            assert isinstance(message, bytes)
            if message[0] == 1:
                seen += message[1:]
        assert seen == b"hello attach\n"

    # port-forward: httpd in the pod, 20 connections at once; nothing on 8081
    async def forward() -> None:
        url = cri.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=pod.id)).url
        client = await SpdyClient.connect(url, "portforward.k8s.io")
        data = []
        for i in range(20):
            client.open({"streamtype": "error", "port": "8080", "requestid": str(i)})
            d = client.open({"streamtype": "data", "port": "8080", "requestid": str(i)})
            client.send(d, b"GET /index.html HTTP/1.0\r\n\r\n")
            data.append(d)
        refused = client.open({"streamtype": "error", "port": "8081", "requestid": "none"})
        client.open({"streamtype": "data", "port": "8081", "requestid": "none"})
        await client.pump_until(lambda: set(data) <= client.fin and refused in client.fin)
        for d in data:
            assert client.data[d].startswith(b"HTTP/1.") and client.data[d].endswith(b"page-from-pod\n")
        assert b"8081" in client.data[refused] and b"refused" in client.data[refused].lower()
        client.close()
    asyncio.run(forward())

    # a URL for a container stopped since: 409; an unknown container or a stopped one: gRPC errors
    late = exec_url(cri, web, ["true"])
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=web, timeout=2))
    with pytest.raises(UpgradeRefused) as refused_info:
        asyncio.run(SpdyClient.connect(late, V4))
    assert refused_info.value.status == 409 and web in refused_info.value.body
    with pytest.raises(grpc.RpcError) as info:
        exec_url(cri, web, ["true"])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and web in str(info.value.details())
    with pytest.raises(grpc.RpcError) as info:
        exec_url(cri, "f" * 64, ["true"])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_tokens_and_requests(cri: DaemonProcess, tmp_path: Path, test_network: PodNetwork,  # noqa: F811
                                 busybox_image: str) -> None:
    pod = Pod(cri, "stream-tokens", "runc", tmp_path / "logs", busybox_image)
    box = pod.run("box", ["sleep", "3600"])
    pod.wait_state(box, pb.CONTAINER_RUNNING)
    url = exec_url(cri, box, ["true"])
    got = spdy_exec(url)
    assert exit_code(got["error"]) == 0
    with pytest.raises(UpgradeRefused) as info:  # a token works once
        asyncio.run(SpdyClient.connect(url, V4))
    assert info.value.status == 404 and "already used" in info.value.body
    base = url.rsplit("/", 2)[0]
    for path in ("/exec/not-a-token", "/attach/", "/nothing"):
        with pytest.raises(urllib.error.HTTPError) as http_info:
            urllib.request.urlopen(base + path, timeout=10)
        assert http_info.value.code == 404
    with pytest.raises(grpc.RpcError) as rpc_info:
        cri.runtime.Exec(pb.ExecRequest(container_id=box, cmd=["sh"], tty=True, stderr=True, stdout=True))
    assert rpc_info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as rpc_info:
        cri.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id="0" * 64))
    assert rpc_info.value.code() == grpc.StatusCode.NOT_FOUND
    # the streaming server's address is the configured one (loopback, any free port)
    assert base.startswith("http://127.0.0.1:")
    # and nothing lingers: no runtime exec process left behind
    left = subprocess.run(["pgrep", "-f", f"exec.*{box}"], capture_output=True, text=True).stdout
    assert not left.strip()
