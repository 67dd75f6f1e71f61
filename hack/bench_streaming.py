#!/usr/bin/env python3
"""Benchmark CRI streaming: cri-shim beside containerd, with one client for both.

    .venv/bin/python hack/bench_streaming.py [--cri-shim unix:///run/cri-shim/cri-shim.sock]
        [--handlers runc,crun,pyrunc] [--containerd unix:///run/containerd/containerd.sock]
        [-n 100] [--pf-mb 100] [--pf-reps 5]

Both endpoints must already be running (the script starts no daemon); a side that does not
answer is skipped with the reason, never given a number. Per target (cri-shim: each handler;
containerd 1.6: its default handler only, runc, since it has no crun or pyrunc handler) one pod
with a long-running busybox container, then `-n` rounds, each target in turn, of:

- exec via streaming: the Exec RPC for `true` (stdout + stderr), the HTTP upgrade to SPDY/3.1
  (v4.channel.k8s.io) on the returned URL, streams error/stdout/stderr, until all three end
  (FIN, reset or the connection's EOF) and the exit status (the v4 error stream's JSON) is read:
  the whole round trip a client sees;
- ExecSync of `true`.

Then port forward: per side, one pod running busybox httpd that serves a file of `--pf-mb` MB;
PortForward RPC, SPDY upgrade (portforward.k8s.io), one error + data stream pair to port 8000,
an HTTP/1.0 GET through it, timed from the request to the last byte of the body (MB = 10^6
bytes). Repeated `--pf-reps` times, the sides alternating; best and median.

The client is the project's sans-IO SPDY core in client mode over asyncio sockets, the same code
for both sides. Like kubectl's and critest's client (moby/spdystream) it does no SPDY flow
control and sends no WINDOW_UPDATE (flow_control=False, auto_window_update=False).
Prints p50/p95 per target, the ratio cri-shim/containerd, and where the streaming round trip's
time goes (Exec RPC, upgrade, session).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cri_shim.config import DEFAULT_SOCKET  # noqa: E402
from cri_shim.criapi import api_pb2 as pb  # noqa: E402
from cri_shim.criapi import api_pb2_grpc  # noqa: E402
from cri_shim.streaming import spdy  # noqa: E402

IMAGE = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
PF_PORT = 8000
EXEC_PROTOCOL = "v4.channel.k8s.io"
PF_PROTOCOL = "portforward.k8s.io"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


# ------------------------------------------------------------------------------------ client


class SpdyClient:
    """One SPDY/3.1 client session: the HTTP upgrade by hand, then streams until a condition."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        # As kubectl's and critest's spdystream: no SPDY flow control and no WINDOW_UPDATE sent.
        self.conn = spdy.Connection(client=True, auto_window_update=False)
        self.data: dict[int, bytearray] = {}
        self.sinks: dict[int, Callable[[bytes], None]] = {}
        self.replied: set[int] = set()
        self.ended: set[int] = set()  # FIN or RST_STREAM from the peer
        self.eof = False

    @classmethod
    async def connect(cls, url: str, protocol: str) -> SpdyClient:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise RuntimeError(f"streaming URL {url!r}: this client speaks plain http only")
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write((f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: Upgrade\r\n"
                      f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n"
                      "Content-Length: 0\r\n\r\n").encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = head.split(" ", 2)[1]
        if status != "101":
            writer.close()
            raise RuntimeError(f"upgrade refused: {head.splitlines()[0]}")
        return cls(reader, writer)

    def open(self, headers: dict[str, str], sink: Callable[[bytes], None] | None = None) -> int:
        sid = self.conn.open_stream(headers)
        self.data[sid] = bytearray()
        if sink is not None:
            self.sinks[sid] = sink
        return sid

    async def pump(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        """Send what is queued and handle input until done() or the peer's EOF."""
        async with asyncio.timeout(timeout):
            while True:
                out = self.conn.data_to_send()
                if out:
                    self.writer.write(out)
                if done() or self.eof:
                    return
                chunk = await self.reader.read(1 << 18)
                if not chunk:
                    self.eof = True
                for ev in self.conn.receive_data(chunk):
                    if isinstance(ev, spdy.Data):
                        sink = self.sinks.get(ev.stream_id)
                        if sink is not None:
                            sink(ev.data)
                        elif ev.stream_id in self.data:
                            self.data[ev.stream_id] += ev.data
                        if ev.fin:
                            self.ended.add(ev.stream_id)
                    elif isinstance(ev, spdy.StreamReply):
                        self.replied.add(ev.stream_id)
                        if ev.fin:
                            self.ended.add(ev.stream_id)
                    elif isinstance(ev, spdy.StreamReset):
                        self.ended.add(ev.stream_id)
                    elif isinstance(ev, spdy.ProtocolError) and ev.stream_id is None:
                        raise RuntimeError(f"SPDY session error: {ev.message}")

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


# ------------------------------------------------------------------------------------ targets


@dataclass
class Side:
    name: str  # "cri-shim" | "containerd"
    endpoint: str
    runtime: api_pb2_grpc.RuntimeServiceStub
    images: api_pb2_grpc.ImageServiceStub
    version: str
    pods: list[str] = field(default_factory=list)


@dataclass
class Target:
    side: Side
    handler: str  # "" is the endpoint's default
    label: str
    pod: str = ""
    container: str = ""
    stream: list[float] = field(default_factory=list)
    parts: list[tuple[float, float, float]] = field(default_factory=list)  # rpc, upgrade, session
    sync: list[float] = field(default_factory=list)
    ends: dict[str, int] = field(default_factory=dict)  # how sessions ended


def connect_side(name: str, endpoint: str) -> Side | str:
    """The side's stubs, or why it cannot be used."""
    channel = grpc.insecure_channel(endpoint, options=[("grpc.max_receive_message_length", 16 << 20)])
    try:
        grpc.channel_ready_future(channel).result(timeout=3)
        rt = api_pb2_grpc.RuntimeServiceStub(channel)
        v = rt.Version(pb.VersionRequest(), timeout=5)
    except grpc.FutureTimeoutError:
        channel.close()
        return f"{endpoint} does not answer"
    except grpc.RpcError as e:
        channel.close()
        return f"{endpoint}: Version failed: {e.code().name} {e.details()}"
    return Side(name, endpoint, rt, api_pb2_grpc.ImageServiceStub(channel),
                f"{v.runtime_name} {v.runtime_version}")


def run_pod(side: Side, handler: str, name: str, command: list[str]) -> tuple[str, str]:
    uid = uuid.uuid4().hex[:8]
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"{name}-{uid}", namespace="bench-streaming", uid=uid),
        hostname=name)
    pod = side.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg, runtime_handler=handler),
                                     timeout=120).pod_sandbox_id
    side.pods.append(pod)
    ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=IMAGE),
                              command=command)
    cid = side.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, sandbox_config=cfg, config=ccfg), timeout=120).container_id
    side.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=120)
    return pod, cid


def cleanup(side: Side) -> None:
    for pod in side.pods:
        try:
            side.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
            side.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
        except grpc.RpcError as e:
            print(f"  warning: removing pod {pod[:12]} on {side.name}: {e.code().name} {e.details()}")
    side.pods.clear()


# ------------------------------------------------------------------------------------ exec


def exit_status(raw: bytes) -> str:
    """The v4 error stream: a JSON Status (Success, or a failure with the exit code)."""
    if not raw:
        return "Success"  # older servers close the error stream without a body on success
    status = json.loads(raw)
    if status.get("status") == "Success":
        return "Success"
    return f"{status.get('reason')}: {status.get('message')}"


async def exec_streaming(t: Target) -> None:
    t0 = time.perf_counter()
    url = t.side.runtime.Exec(pb.ExecRequest(container_id=t.container, cmd=["true"], stdout=True,
                                             stderr=True), timeout=30).url
    t1 = time.perf_counter()
    client = await SpdyClient.connect(url, EXEC_PROTOCOL)
    t2 = time.perf_counter()
    err = client.open({"streamtype": "error"})
    ends = {err, client.open({"streamtype": "stdout"}), client.open({"streamtype": "stderr"})}
    await client.pump(lambda: ends <= client.ended, timeout=30)
    t3 = time.perf_counter()
    how = "fin" if ends <= client.ended else "eof"
    await client.close()
    status = exit_status(bytes(client.data[err]))
    if status != "Success":
        raise RuntimeError(f"{t.label}: exec `true` via streaming: {status}")
    t.stream.append(t3 - t0)
    t.parts.append((t1 - t0, t2 - t1, t3 - t2))
    t.ends[how] = t.ends.get(how, 0) + 1


def exec_sync(t: Target) -> None:
    t0 = time.perf_counter()
    r = t.side.runtime.ExecSync(pb.ExecSyncRequest(container_id=t.container, cmd=["true"], timeout=30),
                                timeout=60)
    t.sync.append(time.perf_counter() - t0)
    if r.exit_code != 0:
        raise RuntimeError(f"{t.label}: ExecSync `true` exited {r.exit_code}: {r.stderr!r}")


# ------------------------------------------------------------------------------------ port forward


async def http_get(side: Side, pod: str, path: str) -> tuple[int, float]:
    """GET path on the pod's port 8000 through PortForward; (body bytes, seconds for the body)."""
    url = side.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=pod, port=[PF_PORT]),
                                   timeout=30).url
    client = await SpdyClient.connect(url, PF_PROTOCOL)
    head = bytearray()
    body = 0
    expect = -1

    def sink(chunk: bytes) -> None:
        nonlocal body, expect
        if expect >= 0:
            body += len(chunk)
            return
        head.extend(chunk)
        end = head.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(head[:end]).decode("latin-1").split("\r\n")
        if lines[0].split(" ")[1] != "200":
            raise RuntimeError(f"port forward GET {path}: {lines[0]}")
        expect = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                      if k.strip().lower() == "content-length")
        body = len(head) - end - 4

    hdr = {"port": str(PF_PORT), "requestid": "0"}
    err = client.open({"streamtype": "error", **hdr})
    data = client.open({"streamtype": "data", **hdr}, sink=sink)
    try:
        # spdystream drops DATA on a stream it has not replied to yet
        await client.pump(lambda: data in client.replied or bool(client.data[err]), timeout=30)
        if client.data[err]:
            raise RuntimeError(f"port forward: {bytes(client.data[err]).decode(errors='replace')}")
        client.conn.send_data(data, f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        t0 = time.perf_counter()
        await client.pump(lambda: 0 <= expect <= body or data in client.ended, timeout=600)
        elapsed = time.perf_counter() - t0
        if client.data[err]:
            raise RuntimeError(f"port forward: {bytes(client.data[err]).decode(errors='replace')}")
        if expect < 0 or body < expect:
            raise RuntimeError(f"port forward GET {path}: {body} of {expect} body bytes, then the end")
        return body, elapsed
    finally:
        await client.close()


async def wait_http(side: Side, pod: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            await http_get(side, pod, "/ok")
            return
        except (RuntimeError, OSError, grpc.RpcError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


# ------------------------------------------------------------------------------------ report


def ms(x: float) -> str:
    return f"{x * 1000:8.2f}"


def report_exec(targets: list[Target], n: int) -> None:
    print(f"\nexec `true`, {n} sequential round trips per target (targets interleaved), ms")
    print(f"  {'target':34s} {'streaming p50':>13s} {'p95':>8s}   {'ExecSync p50':>12s} {'p95':>8s}")
    for t in targets:
        print(f"  {t.label:34s} {ms(statistics.median(t.stream)):>13s} {ms(pct(t.stream, 0.95))}   "
              f"{ms(statistics.median(t.sync)):>12s} {ms(pct(t.sync, 0.95))}")
    base = next((t for t in targets if t.side.name == "containerd"), None)
    ours = [t for t in targets if t.side.name == "cri-shim"]
    if base and ours:
        print(f"  ratio cri-shim / {base.label} (>1: cri-shim slower)")
        for t in ours:
            r = [statistics.median(t.stream) / statistics.median(base.stream),
                 pct(t.stream, 0.95) / pct(base.stream, 0.95),
                 statistics.median(t.sync) / statistics.median(base.sync),
                 pct(t.sync, 0.95) / pct(base.sync, 0.95)]
            print(f"  {t.label:34s} {r[0]:12.2f}x {r[1]:7.2f}x   {r[2]:11.2f}x {r[3]:7.2f}x")
    print("  streaming round trip, median of each part (ms): Exec RPC | HTTP upgrade | session to the end")
    for t in targets:
        rpc, up, sess = (statistics.median(p[i] for p in t.parts) for i in range(3))
        ends = ", ".join(f"{k} {v}" for k, v in sorted(t.ends.items()))
        print(f"  {t.label:34s} {ms(rpc)} | {ms(up)} | {ms(sess)}   (streams ended by: {ends})")
    print("  drift: streaming p50 of the first and second half of the rounds (ms)")
    for t in targets:
        h = len(t.stream) // 2
        if h:
            first, second = statistics.median(t.stream[:h]), statistics.median(t.stream[h:])
            print(f"  {t.label:34s} {ms(first)} {ms(second)}")


# ------------------------------------------------------------------------------------ main


async def bench(sides: list[Side], handlers: list[str], a: argparse.Namespace) -> None:
    targets: list[Target] = []
    for side in sides:
        side.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=IMAGE)), timeout=300)
        hs = handlers if side.name == "cri-shim" else [""]
        for h in hs:
            label = f"{side.name} {h}" if h else f"{side.name} runc (default handler)"
            t = Target(side, h, label)
            try:
                t.pod, t.container = run_pod(side, h, f"exec-{h or 'default'}", ["sleep", "86400"])
            except grpc.RpcError as e:
                print(f"skipping {label}: its pod does not start: {e.code().name} {e.details()}")
                continue
            targets.append(t)
    if targets and a.n > 0:
        for t in targets:  # one unmeasured warm-up each
            await exec_streaming(t)
            exec_sync(t)
            t.stream.clear()
            t.parts.clear()
            t.sync.clear()
            t.ends.clear()
        for i in range(a.n):
            order = targets if i % 2 == 0 else targets[::-1]
            for t in order:
                await exec_streaming(t)
                exec_sync(t)
        report_exec(targets, a.n)

    if a.pf_reps <= 0:
        return
    size = a.pf_mb * 1_000_000
    serve = ("mkdir -p /www && echo ok > /www/ok && "
             f"head -c {size} /dev/zero > /www/.blob && mv /www/.blob /www/blob && "
             f"exec httpd -f -p {PF_PORT} -h /www")
    pf: list[tuple[Side, str, list[float]]] = []
    for side in sides:
        h = a.pf_handler if side.name == "cri-shim" else ""
        try:
            pod, _ = run_pod(side, h, "pf", ["sh", "-c", serve])
            await wait_http(side, pod)
        except (grpc.RpcError, RuntimeError, OSError, TimeoutError) as e:
            print(f"skipping port forward on {side.name}: {e}")
            continue
        pf.append((side, pod, []))
    if not pf:
        return
    for rep in range(a.pf_reps):
        for side, pod, rates in pf if rep % 2 == 0 else pf[::-1]:
            n, dt = await http_get(side, pod, "/blob")
            assert n == size, (n, size)
            rates.append(n / dt / 1e6)
    print(f"\nport forward: HTTP GET of {a.pf_mb} MB from busybox httpd through one data stream, "
          f"{a.pf_reps} runs per side (alternating), MB/s")
    print(f"  {'side':34s} {'best':>8s} {'median':>8s}   all")
    for side, _, rates in pf:
        h = f" ({a.pf_handler} pod)" if side.name == "cri-shim" else " (runc pod)"
        print(f"  {side.name + h:34s} {max(rates):8.1f} {statistics.median(rates):8.1f}   "
              + " ".join(f"{r:.0f}" for r in rates))
    if len(pf) == 2:
        (_, _, ours), (_, _, theirs) = pf
        print(f"  ratio cri-shim / containerd (>1: cri-shim faster): best {max(ours) / max(theirs):.2f}x, "
              f"median {statistics.median(ours) / statistics.median(theirs):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cri-shim", default=f"unix://{DEFAULT_SOCKET}", help="cri-shim's CRI endpoint")
    ap.add_argument("--handlers", default="runc,crun,pyrunc", help="cri-shim runtime handlers")
    ap.add_argument("--containerd", default="unix:///run/containerd/containerd.sock",
                    help="containerd's CRI endpoint (its default handler is used)")
    ap.add_argument("--no-containerd", action="store_true", help="measure cri-shim alone")
    ap.add_argument("-n", type=int, default=100, help="exec round trips per target and kind")
    ap.add_argument("--pf-mb", type=int, default=100, help="port-forward transfer size, MB")
    ap.add_argument("--pf-reps", type=int, default=5, help="port-forward runs per side (0: none)")
    ap.add_argument("--pf-handler", default="runc", help="cri-shim handler of the port-forward pod")
    a = ap.parse_args()

    sides: list[Side] = []
    wanted = [("cri-shim", a.cri_shim)] + ([] if a.no_containerd else [("containerd", a.containerd)])
    for name, endpoint in wanted:
        got = connect_side(name, endpoint)
        if isinstance(got, str):
            print(f"skipping {name}: {got}")
            continue
        print(f"{name}: {got.version} on {endpoint}")
        sides.append(got)
    if not sides:
        sys.exit("no endpoint answers: nothing to measure")
    if any(s.name == "containerd" for s in sides):
        print("containerd 1.6 has only its default handler (runc): every cri-shim handler is "
              "compared with it")
    print(f"client: cri_shim.streaming.spdy in client mode (one for both sides); image {IMAGE}",
          flush=True)
    try:
        asyncio.run(bench(sides, [h for h in a.handlers.split(",") if h], a))
    finally:
        for side in sides:
            cleanup(side)


if __name__ == "__main__":
    main()
