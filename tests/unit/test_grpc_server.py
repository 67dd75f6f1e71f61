"""cri-shim's own gRPC server (cri_shim/server/grpc_server.py over cri_shim/server/http2.py).

The server runs on an event loop in a background thread; it is driven by grpcio's sync client
(an independent HTTP/2 + gRPC implementation) and, for what a client library will not send, by
raw HTTP/2 frames written on a plain Unix socket (header blocks coded with `hpack`)."""

from __future__ import annotations

import asyncio
import gzip
import inspect
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote

import grpc
import hpack
import pytest

from cri_shim.criapi import api_pb2 as pb
from cri_shim.criapi import api_pb2_grpc as pb_grpc
from cri_shim.encoded import Encoded
from cri_shim.errors import NotFound
from cri_shim.server import grpc_server
from cri_shim.server.grpc_server import GrpcServer

BIG = 16 << 20  # max_message of the usual server
WAIT = 5.0  # bound on every wait for an event

# ---------------------------------------------------------------------------------------- HTTP/2

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10))
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
NO_ERROR, PROTOCOL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = (
    0, 1, 5, 6, 7, 8, 9)
SETTINGS_INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x4, 0x5
FLOW_CONTROL_ERROR = 3
VERSION_PATH = "/runtime.v1.RuntimeService/Version"


class Frame(NamedTuple):
    type: int
    flags: int
    sid: int
    payload: bytes


def h2frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, ftype, flags, sid) + payload


def settings_payload(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(">HL", k, v) for k, v in pairs)


def grpc_framed(message: bytes, compressed: bool = False) -> bytes:
    return bytes((1 if compressed else 0,)) + len(message).to_bytes(4, "big") + message


def grpc_messages(data: bytes) -> list[bytes]:
    out = []
    while data:
        assert len(data) >= 5, f"truncated gRPC message prefix: {data!r}"
        n = int.from_bytes(data[1:5], "big")
        assert data[0] == 0, "the server compressed its answer"
        assert len(data) >= 5 + n, "truncated gRPC message"
        out.append(data[5:5 + n])
        data = data[5 + n:]
    return out


@dataclass
class Response:
    blocks: list[dict[str, str]] = field(default_factory=list)  # header blocks, in order
    data: bytes = b""
    reset: int | None = None  # RST_STREAM's code
    ended: bool = False  # END_STREAM seen

    @property
    def trailers(self) -> dict[str, str]:
        return self.blocks[-1]


class RawH2:
    """An HTTP/2 client written frame by frame."""

    def __init__(self, path: str, preface: bool = True, settings: bytes = b"") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        self.sock.connect(path)
        self.buf = bytearray()
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder(max_header_list_size=1 << 20)
        self.seen: list[Frame] = []  # every frame read, in order
        if preface:
            self.sock.sendall(PREFACE + h2frame(SETTINGS, 0, 0, settings))

    def close(self) -> None:
        self.sock.close()

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def block(self, headers: list[tuple[str, str]]) -> bytes:
        return self.encoder.encode(headers)

    def request_headers(self, path: str = VERSION_PATH, method: str = "POST",
                        content_type: str = "application/grpc",
                        extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
        return [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                ("content-type", content_type), ("te", "trailers"), *extra]

    def unary(self, sid: int, message: bytes, path: str = VERSION_PATH,
              extra: tuple[tuple[str, str], ...] = (), compressed: bool = False) -> None:
        """A whole unary request: HEADERS, then one DATA with END_STREAM."""
        block = self.block(self.request_headers(path, extra=extra))
        body = grpc_framed(message, compressed)
        chunks = [body[i:i + 16384] for i in range(0, len(body), 16384)]
        self.send(h2frame(HEADERS, END_HEADERS, sid, block),
                  *(h2frame(DATA, 0, sid, chunk) for chunk in chunks[:-1]),
                  h2frame(DATA, END_STREAM, sid, chunks[-1]))

    def read_frame(self) -> Frame | None:
        """The next frame, None at the end of the connection."""
        while True:
            if len(self.buf) >= 9:
                hi, lo, ftype, flags, sid = struct.unpack_from(">HBBBL", self.buf)
                n = (hi << 8) | lo
                if len(self.buf) >= 9 + n:
                    f = Frame(ftype, flags, sid & 0x7FFFFFFF, bytes(self.buf[9:9 + n]))
                    del self.buf[:9 + n]
                    self.seen.append(f)
                    return f
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:  # a Unix socket closed with our data unread
                chunk = b""
            if not chunk:
                assert not self.buf, f"connection closed in the middle of a frame: {bytes(self.buf)!r}"
                return None
            self.buf += chunk

    def expect(self, pred: Callable[[Frame], bool], what: str) -> Frame:
        while True:
            f = self.read_frame()
            assert f is not None, f"connection closed before {what}; frames seen: {self.seen}"
            if pred(f):
                return f

    def read_to_eof(self) -> list[Frame]:
        frames = []
        while (f := self.read_frame()) is not None:
            frames.append(f)
        return frames

    def response(self, sid: int) -> Response:
        """The frames of stream `sid` until it ends (END_STREAM or RST_STREAM)."""
        r = Response()
        pending: bytearray | None = None  # a header block being assembled
        while (not r.ended or pending is not None) and r.reset is None:
            f = self.expect(lambda f: f.sid == sid, f"the end of stream {sid}")
            if f.type in (HEADERS, CONTINUATION):
                if f.type == HEADERS:
                    assert pending is None, "HEADERS inside a header block"
                    assert not f.flags & (PADDED | PRIORITY_FLAG)
                    pending = bytearray()
                    r.ended = bool(f.flags & END_STREAM)
                assert pending is not None, "CONTINUATION outside a header block"
                pending += f.payload
                if f.flags & END_HEADERS:
                    r.blocks.append(dict(self.decoder.decode(bytes(pending))))
                    pending = None
            elif f.type == DATA:
                assert pending is None, "DATA inside a header block"
                r.data += f.payload
                r.ended = bool(f.flags & END_STREAM)
            elif f.type == RST_STREAM:
                r.reset = int.from_bytes(f.payload, "big")
        assert pending is None, "the stream was reset inside a header block"
        return r


def goaway_code(f: Frame) -> tuple[int, int]:
    """(last stream id, error code) of a GOAWAY frame."""
    return int.from_bytes(f.payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(f.payload[4:8], "big")


# ---------------------------------------------------------------------------------------- harness


STREAMING = frozenset(m.name for svc in pb.DESCRIPTOR.services_by_name.values()
                      for m in svc.methods if m.server_streaming)


class Servicer:
    """Any method of the CRI services; each test sets `impl[name]` to what it should do.

    GrpcServer.add_service binds the methods at once, so the lookup happens per call. A method
    is a coroutine function (the server answers it in a task) unless named in `inline`: then it
    is a plain function (the server answers it from its read callback), and so must `impl`'s be.
    """

    def __init__(self, inline: tuple[str, ...] = ()) -> None:
        self.impl: dict[str, Callable[..., Any]] = {}
        self.inline = inline

    def _impl(self, name: str) -> Callable[..., Any]:
        fn = self.impl.get(name)
        if fn is None:
            raise NotImplementedError(name)
        return fn

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name in ("impl", "inline"):
            raise AttributeError(name)
        if name in self.inline or name in STREAMING:  # a stream's impl returns an async generator
            def plain(request: Any, context: Any) -> Any:
                return self._impl(name)(request, context)

            return plain

        async def call(request: Any, context: Any) -> Any:
            result = self._impl(name)(request, context)
            return await result if inspect.isawaitable(result) else result

        return call


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []  # what reached the loop's exception handler
        self.loop.set_exception_handler(lambda loop, ctx: self.errors.append(ctx))
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-grpc-server-loop")
        self.thread.start()

    def run(self, coro: Any, timeout: float = WAIT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def drain() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        try:
            self.run(drain())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the server's loop thread did not stop"
        self.loop.close()


@dataclass
class Served:
    loop: LoopThread
    server: GrpcServer
    path: str
    servicer: Servicer
    observed: list[tuple[str, str, float]]
    channels: list[grpc.Channel]
    raws: list[RawH2]

    def channel(self) -> grpc.Channel:
        ch = grpc.insecure_channel("unix://" + self.path)
        self.channels.append(ch)
        return ch

    def runtime(self) -> pb_grpc.RuntimeServiceStub:
        return pb_grpc.RuntimeServiceStub(self.channel())

    def raw(self, preface: bool = True, settings: bytes = b"") -> RawH2:
        c = RawH2(self.path, preface, settings)
        self.raws.append(c)
        return c

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.loop.call_soon_threadsafe(fn, *args)

    def observed_for(self, method: str) -> list[tuple[str, float]]:
        """The calls of `method` counted so far. A call is counted once its answer is written,
        by the loop callback that wrote it: a round trip through the loop waits for that."""
        self.loop.run(asyncio.sleep(0))
        return [(code, s) for m, code, s in list(self.observed) if m == method]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """serve(max_message=...): a GrpcServer on its own socket, on the test's loop thread."""
    loop = LoopThread()
    made: list[Served] = []
    short_dirs: list[str] = []

    def make(max_message: int = BIG, inline: tuple[str, ...] = ()) -> Served:
        path = str(tmp_path / f"g{len(made)}.sock")
        if len(path) > 100:  # sun_path is 108 bytes
            short_dirs.append(tempfile.mkdtemp(prefix="grpc-test-"))
            path = f"{short_dirs[-1]}/g.sock"
        observed: list[tuple[str, str, float]] = []
        server = GrpcServer(lambda m, c, s: observed.append((m, c, s)), max_message)
        servicer = Servicer(inline)
        server.add_service("RuntimeService", servicer)
        server.add_service("ImageService", servicer)
        loop.run(server.start(path))
        s = Served(loop, server, path, servicer, observed, [], [])
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            for ch in s.channels:
                ch.close()
            for r in s.raws:
                r.close()
        try:
            for s in made:
                loop.run(s.server.stop(0.5))
        finally:
            loop.close()
            for d in short_dirs:
                for p in Path(d).iterdir():
                    p.unlink()
                Path(d).rmdir()
    assert not loop.errors, f"errors on the server's event loop: {loop.errors}"


def cancel_recorder(entered: threading.Event, cancelled: threading.Event,
                    seconds: float = 30.0) -> Callable[..., Any]:
    """A unary method that signals it started, sleeps, and records its cancellation."""

    async def method(request: Any, context: Any) -> Any:
        entered.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return pb.VersionResponse(version="slept")

    return method


# ---------------------------------------------------------------------------------------- unary


def test_unary_round_trip_and_observe(serve: Callable[..., Served]) -> None:
    s = serve()
    seen: list[pb.VersionRequest] = []
    answer = pb.VersionResponse(version="0.1.0", runtime_name="cri-shim", runtime_version="v9",
                                runtime_api_version="v1")

    async def version(request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        seen.append(request)
        return answer

    async def list_images(request: pb.ListImagesRequest, context: Any) -> pb.ListImagesResponse:
        return pb.ListImagesResponse(images=[pb.Image(id="sha256:" + "a" * 64, size=7)])

    s.servicer.impl["Version"] = version
    s.servicer.impl["ListImages"] = list_images
    ch = s.channel()
    got = pb_grpc.RuntimeServiceStub(ch).Version(pb.VersionRequest(version="v1alpha9"), timeout=WAIT)
    assert got == answer
    assert seen == [pb.VersionRequest(version="v1alpha9")]
    [(code, seconds)] = s.observed_for("Version")
    assert code == "OK" and 0 <= seconds < WAIT
    images = pb_grpc.ImageServiceStub(ch).ListImages(pb.ListImagesRequest(), timeout=WAIT)
    assert images == pb.ListImagesResponse(images=[pb.Image(id="sha256:" + "a" * 64, size=7)])
    assert [c for c, _ in s.observed_for("ListImages")] == ["OK"]
    # a method the servicer does not implement: NotImplementedError -> UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as e:
        pb_grpc.RuntimeServiceStub(ch).Status(pb.StatusRequest(), timeout=WAIT)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Status" in e.value.details()


@pytest.mark.parametrize(("exc", "code", "details"), [
    (NotFound("container abc not found"), grpc.StatusCode.NOT_FOUND, "container abc not found"),
    (NotFound("pod «x» 100% gone\n"), grpc.StatusCode.NOT_FOUND, "pod «x» 100% gone\n"),
    (NotFound("%41 is not A, %zz, 100%"), grpc.StatusCode.NOT_FOUND, "%41 is not A, %zz, 100%"),
    (ValueError("bad value"), grpc.StatusCode.INTERNAL, "Version: internal error: ValueError: bad value"),
])
def test_errors_become_statuses(serve: Callable[..., Served], exc: Exception, code: grpc.StatusCode,
                                details: str) -> None:
    s = serve()

    async def version(request: Any, context: Any) -> Any:
        raise exc

    s.servicer.impl["Version"] = version
    with pytest.raises(grpc.RpcError) as e:
        s.runtime().Version(pb.VersionRequest(), timeout=WAIT)
    assert e.value.code() == code
    assert e.value.details() == details
    assert [c for c, _ in s.observed_for("Version")] == [code.name]


def test_unknown_method_is_unimplemented(serve: Callable[..., Served]) -> None:
    s = serve()
    ch = s.channel()
    for path in ("/runtime.v1.RuntimeService/NoSuch", "/runtime.v1.NoService/Version", "/x"):
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary(path)(b"", timeout=WAIT)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, path
        assert path in e.value.details()
    # the channel is fine afterwards
    s.servicer.impl["Version"] = _version_echo
    assert s.runtime().Version(pb.VersionRequest(version="ok"), timeout=WAIT).version == "ok"


async def _version_echo(request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
    return pb.VersionResponse(version=request.version)


def _plain_version_echo(request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
    return pb.VersionResponse(version=request.version)


def test_plain_methods_are_answered_inline(serve: Callable[..., Served]) -> None:
    """A servicer's plain function is called from the read callback (no task), and its answer,
    errors and counting are those of a coroutine's."""
    s = serve(inline=("Version", "ImageStatus"))
    tasks: list[object] = []

    def version(request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        tasks.append(asyncio.current_task())
        if request.version == "missing":
            raise NotFound("pod «p» 100% gone")
        if request.version == "broken":
            raise ValueError("bad value")
        return pb.VersionResponse(version=request.version)

    s.servicer.impl["Version"] = version
    stub = s.runtime()
    assert stub.Version(pb.VersionRequest(version="v1"), timeout=WAIT).version == "v1"
    assert tasks == [None], "the plain method ran inside a task"
    for version_, code, details in (("missing", grpc.StatusCode.NOT_FOUND, "pod «p» 100% gone"),
                                    ("broken", grpc.StatusCode.INTERNAL,
                                     "Version: internal error: ValueError: bad value")):
        with pytest.raises(grpc.RpcError) as e:
            stub.Version(pb.VersionRequest(version=version_), timeout=WAIT)
        assert (e.value.code(), e.value.details()) == (code, details)
    assert [c for c, _ in s.observed_for("Version")] == ["OK", "NOT_FOUND", "INTERNAL"]
    # an inline method the servicer does not implement (NotImplementedError) is UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as e:
        pb_grpc.ImageServiceStub(s.channel()).ImageStatus(pb.ImageStatusRequest(), timeout=WAIT)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # and a request that cannot be parsed is refused before the method runs
    with pytest.raises(grpc.RpcError) as e:
        s.channel().unary_unary("/runtime.v1.RuntimeService/Version")(b"\xff\xff", timeout=WAIT)
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert len(tasks) == 3


# ---------------------------------------------------------------------------------------- deadlines


def test_deadline_exceeded_cancels_the_servicer(serve: Callable[..., Served]) -> None:
    s = serve()
    entered, cancelled = threading.Event(), threading.Event()
    s.servicer.impl["Version"] = cancel_recorder(entered, cancelled, seconds=5)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        s.runtime().Version(pb.VersionRequest(), timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 2
    assert entered.is_set()
    assert cancelled.wait(WAIT), "the servicer's coroutine was not cancelled"


def test_grpc_timeout_header_ends_the_call_server_side(serve: Callable[..., Served]) -> None:
    """No client deadline races the server's here: only the server can end the call."""
    s = serve()
    entered, cancelled = threading.Event(), threading.Event()
    s.servicer.impl["Version"] = cancel_recorder(entered, cancelled, seconds=5)
    c = s.raw()
    start = time.monotonic()
    c.unary(1, pb.VersionRequest().SerializeToString(), extra=(("grpc-timeout", "100m"),))
    r = c.response(1)
    elapsed = time.monotonic() - start
    assert r.reset is None and r.ended
    assert len(r.blocks) == 1, "a call failing before any message gets trailers only"
    assert r.trailers[":status"] == "200"
    assert r.trailers["grpc-status"] == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    assert "deadline exceeded" in r.trailers["grpc-message"]
    assert r.data == b""
    assert 0.09 <= elapsed < 2
    assert cancelled.wait(WAIT)
    [(code, seconds)] = s.observed_for("Version")
    assert code == "DEADLINE_EXCEEDED" and 0.09 <= seconds < 2


# ---------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("inline", [False, True], ids=["task", "inline"])
def test_two_megabyte_answer_and_request(serve: Callable[..., Served], inline: bool) -> None:
    s = serve(inline=("ListContainers",) if inline else ())
    containers = [pb.Container(id=f"{i:064x}", pod_sandbox_id="p" * 64,
                               metadata=pb.ContainerMetadata(name=f"c{i}", attempt=i),
                               labels={"io.kubernetes.example": f"{i}-" + "v" * 5000})
                  for i in range(420)]
    big_answer = pb.ListContainersResponse(containers=containers)
    assert big_answer.ByteSize() > 2_000_000
    received: list[pb.CreateContainerRequest] = []

    def list_containers(request: Any, context: Any) -> pb.ListContainersResponse:
        return big_answer

    async def create_container(request: pb.CreateContainerRequest, context: Any) -> Any:
        received.append(request)
        return pb.CreateContainerResponse(container_id=f"{len(request.config.labels)}")

    s.servicer.impl["ListContainers"] = list_containers
    s.servicer.impl["CreateContainer"] = create_container
    stub = s.runtime()
    got = stub.ListContainers(pb.ListContainersRequest(), timeout=WAIT)
    assert got == big_answer

    big_request = pb.CreateContainerRequest(
        pod_sandbox_id="pod", config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="big"),
            labels={f"label-{i}": chr(0x61 + i % 26) * 10_000 for i in range(210)}))
    assert big_request.ByteSize() > 2_000_000
    answer = stub.CreateContainer(big_request, timeout=WAIT)
    assert answer.container_id == "210"
    assert received == [big_request]
    # the same connection keeps working both ways
    assert stub.ListContainers(pb.ListContainersRequest(), timeout=WAIT) == big_answer


def test_requests_beyond_the_connection_window(serve: Callable[..., Served]) -> None:
    """20 MB of requests on one connection: more than the 16 MB the server grants at first, so
    the client stalls unless the server credits the connection's window back."""
    s = serve()
    sizes: list[int] = []

    async def create_container(request: pb.CreateContainerRequest, context: Any) -> Any:
        sizes.append(request.ByteSize())
        return pb.CreateContainerResponse(container_id=request.pod_sandbox_id)

    s.servicer.impl["CreateContainer"] = create_container
    stub = s.runtime()
    labels = {f"l{i}": "v" * 100_000 for i in range(20)}
    for i in range(10):
        request = pb.CreateContainerRequest(pod_sandbox_id=f"pod-{i}",
                                            config=pb.ContainerConfig(labels=labels))
        assert stub.CreateContainer(request, timeout=WAIT).container_id == f"pod-{i}"
    assert len(sizes) == 10 and sum(sizes) > 20_000_000


def test_max_message_limits_requests_and_answers(serve: Callable[..., Served]) -> None:
    s = serve(max_message=4096)

    async def version(request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        if request.version.startswith("answer:"):
            return pb.VersionResponse(runtime_version="y" * int(request.version[7:]))
        return pb.VersionResponse(version=str(len(request.version)))

    async def stream(request: Any, context: Any) -> Any:
        yield pb.StreamContainersResponse(containers=[pb.Container(id="small")])
        yield pb.StreamContainersResponse(containers=[pb.Container(id="z" * 5000)])

    s.servicer.impl["Version"] = version
    s.servicer.impl["StreamContainers"] = stream
    stub = s.runtime()
    # exactly max_message is allowed
    at_limit = pb.VersionRequest(version="x" * 4093)
    assert at_limit.ByteSize() == 4096
    assert stub.Version(at_limit, timeout=WAIT).version == "4093"
    with pytest.raises(grpc.RpcError) as e:
        stub.Version(pb.VersionRequest(version="x" * 4094), timeout=WAIT)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "4097 vs. 4096" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.Version(pb.VersionRequest(version="x" * 100_000), timeout=WAIT)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # answers
    assert pb.VersionResponse(runtime_version="y" * 4093).ByteSize() == 4096
    assert len(stub.Version(pb.VersionRequest(version="answer:4093"), timeout=WAIT).runtime_version) == 4093
    with pytest.raises(grpc.RpcError) as e:
        stub.Version(pb.VersionRequest(version="answer:4094"), timeout=WAIT)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "answer is larger than max (4097 vs. 4096)" in e.value.details()
    # a stream's second message is too large: the first arrives, then the status
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for m in stub.StreamContainers(pb.StreamContainersRequest(), timeout=WAIT):
            got.append(m)
    assert [m.containers[0].id for m in got] == ["small"]
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # the connection still serves
    assert stub.Version(pb.VersionRequest(version="abc"), timeout=WAIT).version == "3"


# ---------------------------------------------------------------------------------------- streaming


def _containers(*ids: str) -> pb.StreamContainersResponse:
    return pb.StreamContainersResponse(containers=[pb.Container(id=i) for i in ids])


def test_server_streaming_in_order(serve: Callable[..., Served]) -> None:
    s = serve()

    async def stream(request: pb.StreamContainersRequest, context: Any) -> Any:
        for i in range(3):
            await asyncio.sleep(0)
            yield _containers(f"{request.filter.id}-{i}")

    s.servicer.impl["StreamContainers"] = stream
    call = s.runtime().StreamContainers(
        pb.StreamContainersRequest(filter=pb.ContainerFilter(id="f")), timeout=WAIT)
    assert list(call) == [_containers("f-0"), _containers("f-1"), _containers("f-2")]
    assert call.code() == grpc.StatusCode.OK
    assert [c for c, _ in s.observed_for("StreamContainers")] == ["OK"]


def test_server_streaming_with_no_message(serve: Callable[..., Served]) -> None:
    s = serve()

    async def stream(request: Any, context: Any) -> Any:
        return
        yield  # an async generator that yields nothing

    s.servicer.impl["StreamContainers"] = stream
    call = s.runtime().StreamContainers(pb.StreamContainersRequest(), timeout=WAIT)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


def test_server_streaming_error_after_two_messages(serve: Callable[..., Served]) -> None:
    s = serve()

    async def stream(request: Any, context: Any) -> Any:
        yield _containers("a")
        yield _containers("b")
        raise NotFound("container c not found")

    s.servicer.impl["StreamContainers"] = stream
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for m in s.runtime().StreamContainers(pb.StreamContainersRequest(), timeout=WAIT):
            got.append(m)
    assert got == [_containers("a"), _containers("b")]
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "container c not found"
    assert [c for c, _ in s.observed_for("StreamContainers")] == ["NOT_FOUND"]


def test_client_cancel_of_a_stream_cancels_the_generator(serve: Callable[..., Served]) -> None:
    s = serve()
    ended: list[str] = []
    done = threading.Event()

    async def stream(request: Any, context: Any) -> Any:
        yield _containers("first")
        try:
            await asyncio.Event().wait()  # forever
        except (asyncio.CancelledError, GeneratorExit) as e:
            ended.append(type(e).__name__)
            done.set()
            raise

    s.servicer.impl["StreamContainers"] = stream
    call = s.runtime().StreamContainers(pb.StreamContainersRequest(), timeout=30)
    assert next(call) == _containers("first")
    assert call.cancel()
    assert done.wait(WAIT), "the server kept the stream's generator running"
    assert ended == ["CancelledError"]
    with pytest.raises(grpc.RpcError) as e:
        next(call)
    assert e.value.code() == grpc.StatusCode.CANCELLED


# ---------------------------------------------------------------------------------------- concurrency


def test_fifty_concurrent_calls_on_one_channel(serve: Callable[..., Served]) -> None:
    s = serve()
    n = 50
    arrived = 0
    all_in = asyncio.Event()

    async def version(request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        nonlocal arrived
        arrived += 1  # only the loop thread touches it
        if arrived == n:
            all_in.set()
        # every call is answered only once all 50 are in flight together
        await asyncio.wait_for(all_in.wait(), WAIT)
        return pb.VersionResponse(version=request.version, runtime_version=request.version * 50)

    s.servicer.impl["Version"] = version
    stub = s.runtime()

    def one(i: int) -> tuple[int, pb.VersionResponse]:
        return i, stub.Version(pb.VersionRequest(version=f"call-{i}"), timeout=WAIT * 2)

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    assert len(results) == n
    for i, r in results:
        assert r.version == f"call-{i}"
        assert r.runtime_version == f"call-{i}" * 50
    assert [c for c, _ in s.observed_for("Version")] == ["OK"] * n


# ---------------------------------------------------------------------------------------- gzip


def test_gzip_compressed_request(serve: Callable[..., Served], monkeypatch: pytest.MonkeyPatch) -> None:
    s = serve()
    s.servicer.impl["Version"] = _version_echo
    inflated: list[int] = []
    real = gzip.decompress

    def counting(data: bytes) -> bytes:
        out = real(data)
        inflated.append(len(out))
        return out

    monkeypatch.setattr(grpc_server.gzip, "decompress", counting)
    text = "compress me " * 2000
    got = s.runtime().Version(pb.VersionRequest(version=text), timeout=WAIT,
                              compression=grpc.Compression.Gzip)
    assert got.version == text
    assert inflated == [pb.VersionRequest(version=text).ByteSize()], "the client did not compress"


@pytest.mark.parametrize(("encoding", "flag", "status"), [
    ("gzip", True, grpc.StatusCode.OK),
    ("identity", False, grpc.StatusCode.OK),
    ("deflate", True, grpc.StatusCode.UNIMPLEMENTED),
    ("identity", True, grpc.StatusCode.INTERNAL),
])
def test_raw_message_codings(serve: Callable[..., Served], encoding: str, flag: bool,
                             status: grpc.StatusCode) -> None:
    s = serve()
    s.servicer.impl["Version"] = _version_echo
    c = s.raw()
    message = pb.VersionRequest(version="zipped?").SerializeToString()
    c.unary(1, gzip.compress(message) if flag else message, extra=(("grpc-encoding", encoding),),
            compressed=flag)
    r = c.response(1)
    assert r.trailers["grpc-status"] == str(status.value[0]), r.trailers
    if status == grpc.StatusCode.OK:
        assert [pb.VersionResponse.FromString(m) for m in grpc_messages(r.data)] == [
            pb.VersionResponse(version="zipped?")]


# ---------------------------------------------------------------------------------------- raw HTTP/2


@pytest.mark.parametrize("preface", [b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"PRI * HTTP/1.1"])
def test_bad_preface_gets_goaway(serve: Callable[..., Served], preface: bytes) -> None:
    s = serve()
    c = s.raw(preface=False)
    c.send(preface)
    frames = c.read_to_eof()  # the server closes the connection
    goaways = [f for f in frames if f.type == GOAWAY]
    assert len(goaways) == 1, frames
    assert goaway_code(goaways[0]) == (0, PROTOCOL_ERROR)
    assert b"preface" in goaways[0].payload[8:]


def test_settings_and_ping(serve: Callable[..., Served]) -> None:
    s = serve()
    c = s.raw()
    first = c.expect(lambda f: True, "the server's SETTINGS")
    assert first.type == SETTINGS and first.flags == 0 and first.sid == 0
    settings = dict(struct.iter_unpack(">HL", first.payload))
    assert settings[SETTINGS_INITIAL_WINDOW_SIZE] == 1 << 20
    assert settings[0x2] == 0  # no server push
    c.expect(lambda f: f.type == SETTINGS and f.flags & ACK, "the ACK of our SETTINGS")
    c.send(h2frame(PING, 0, 0, b"\x01\x02\x03\x04\x05\x06\x07\x08"))
    ack = c.expect(lambda f: f.type == PING, "PING ACK")
    assert ack == Frame(PING, ACK, 0, b"\x01\x02\x03\x04\x05\x06\x07\x08")
    # a PING ACK from us is not answered: the next PING's ACK is the next PING seen
    c.send(h2frame(PING, ACK, 0, b"AAAAAAAA"), h2frame(PING, 0, 0, b"BBBBBBBB"))
    assert c.expect(lambda f: f.type == PING, "PING ACK").payload == b"BBBBBBBB"


def test_continuation_and_padding(serve: Callable[..., Served]) -> None:
    s = serve()
    s.servicer.impl["Version"] = _version_echo
    c = s.raw()
    block = c.block(c.request_headers(extra=(("x-filler", "f" * 300),)))
    a, b, d = block[:7], block[7:100], block[100:]
    message = grpc_framed(pb.VersionRequest(version="padded").SerializeToString())
    half = len(message) // 2
    pad1, pad2 = 13, 200
    c.send(h2frame(HEADERS, 0, 1, a), h2frame(CONTINUATION, 0, 1, b),
           h2frame(CONTINUATION, END_HEADERS, 1, d),
           h2frame(DATA, PADDED, 1, bytes((pad1,)) + message[:half] + b"\0" * pad1))
    # the stream's received data is credited back, padding included (RFC 9113 section 6.9.1);
    # the connection's goes back in batches (test_requests_beyond_the_connection_window)
    first_len = 1 + half + pad1
    stream_credit = c.expect(lambda f: f.type == WINDOW_UPDATE and f.sid == 1, "the stream's credit")
    assert int.from_bytes(stream_credit.payload, "big") == first_len
    c.send(h2frame(DATA, PADDED | END_STREAM, 1, bytes((pad2,)) + message[half:] + b"\0" * pad2))
    r = c.response(1)
    assert r.reset is None and r.ended
    assert len(r.blocks) == 2
    assert r.blocks[0] == {":status": "200", "content-type": "application/grpc"}
    assert r.trailers == {"grpc-status": "0"}
    assert [pb.VersionResponse.FromString(m) for m in grpc_messages(r.data)] == [
        pb.VersionResponse(version="padded")]


def test_padded_headers_with_priority(serve: Callable[..., Served]) -> None:
    s = serve()
    s.servicer.impl["Version"] = _version_echo
    c = s.raw()
    block = c.block(c.request_headers())
    priority = struct.pack(">LB", 0x80000000 | 0, 15)  # exclusive, on stream 0, weight 16
    pad = 7
    c.send(h2frame(PRIORITY, 0, 3, struct.pack(">LB", 0, 1)),
           h2frame(HEADERS, PADDED | PRIORITY_FLAG | END_HEADERS, 1,
                   bytes((pad,)) + priority + block + b"\0" * pad),
           h2frame(DATA, END_STREAM, 1, grpc_framed(pb.VersionRequest(version="prio").SerializeToString())))
    r = c.response(1)
    assert r.trailers == {"grpc-status": "0"}
    assert pb.VersionResponse.FromString(grpc_messages(r.data)[0]).version == "prio"


@pytest.mark.parametrize(("method", "content_type", "status"), [
    ("GET", "application/grpc", "405"),
    ("PUT", "application/grpc", "405"),
    ("POST", "text/plain", "415"),
    ("POST", "", "415"),
])
def test_http_errors(serve: Callable[..., Served], method: str, content_type: str, status: str) -> None:
    s = serve()
    s.servicer.impl["Version"] = _version_echo
    c = s.raw()
    headers = c.request_headers(method=method, content_type=content_type)
    if not content_type:
        headers = [(k, v) for k, v in headers if k != "content-type"]
    body = grpc_framed(pb.VersionRequest().SerializeToString())
    if method == "GET":
        c.send(h2frame(HEADERS, END_HEADERS | END_STREAM, 1, c.block(headers)))
    else:
        c.send(h2frame(HEADERS, END_HEADERS, 1, c.block(headers)), h2frame(DATA, END_STREAM, 1, body))
    r = c.response(1)
    assert r.ended and r.reset is None
    assert r.blocks == [{":status": status}]
    assert r.data == b""
    assert s.observed == []
    # the connection serves a good request next
    c.unary(3, pb.VersionRequest(version="after").SerializeToString())
    assert c.response(3).trailers == {"grpc-status": "0"}


def test_long_status_message_is_cut(serve: Callable[..., Served]) -> None:
    """A status message over 4,096 characters once percent-encoded (a runtime's stderr, say) is
    cut, not sent whole: grpcio's client refuses trailers over 8 KiB at random and would report
    RESOURCE_EXHAUSTED instead."""
    s = serve()
    text = "é" * 3000 + " and more"  # 6 kB of UTF-8, 18 kB percent-encoded

    async def version(request: Any, context: Any) -> Any:
        raise NotFound(text)

    s.servicer.impl["Version"] = version
    c = s.raw()
    c.unary(1, b"")
    r = c.response(1)
    assert [f.type for f in c.seen if f.sid == 1] == [HEADERS]
    assert r.trailers["grpc-status"] == str(grpc.StatusCode.NOT_FOUND.value[0])
    assert len(r.trailers["grpc-message"]) <= 4096
    assert unquote(r.trailers["grpc-message"]) == "é" * 681 + " [...]"  # 681 * 6 + 6 characters
    # and through grpcio's client, with the right code
    with pytest.raises(grpc.RpcError) as err:
        s.runtime().Version(pb.VersionRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "é" * 681 + " [...]"


@pytest.mark.parametrize("inline", [False, True], ids=["task", "inline"])
def test_send_flow_control(serve: Callable[..., Served], inline: bool) -> None:
    """Our answer waits for the client's stream and connection windows."""
    s = serve(inline=("Version",) if inline else ())
    size = 100_000
    s.servicer.impl["Version"] = _plain_version_echo if inline else _version_echo
    c = s.raw(settings=settings_payload((SETTINGS_INITIAL_WINDOW_SIZE, 10)))
    c.unary(1, pb.VersionRequest(version="w" * size).SerializeToString())

    def data_on_1() -> int:
        return sum(len(f.payload) for f in c.seen if f.type == DATA and f.sid == 1)

    def sync(token: bytes) -> None:
        """Everything the server would write by now is read once our PING is answered."""
        c.send(h2frame(PING, 0, 0, token))
        c.expect(lambda f: f.type == PING and f.payload == token, "PING ACK")

    c.expect(lambda f: f.type == DATA and f.sid == 1, "the first DATA")
    sync(b"sync0001")
    assert data_on_1() == 10, "the server sent past the stream's initial window"
    # SETTINGS_INITIAL_WINDOW_SIZE applies to open streams as a delta
    c.send(h2frame(SETTINGS, 0, 0, settings_payload((SETTINGS_INITIAL_WINDOW_SIZE, 1000))))
    c.expect(lambda f: data_on_1() >= 1000, "DATA up to the grown window")
    sync(b"sync0002")
    assert data_on_1() == 1000
    # the stream's window opens wide: the connection's (65535 at first) is the limit
    c.send(h2frame(WINDOW_UPDATE, 0, 1, (1 << 20).to_bytes(4, "big")))
    c.expect(lambda f: data_on_1() >= 65535, "DATA up to the connection's window")
    sync(b"sync0003")
    assert data_on_1() == 65535, "the server sent past the connection's window"
    c.send(h2frame(WINDOW_UPDATE, 0, 0, (1 << 20).to_bytes(4, "big")))
    r = c.response(1)
    assert r.trailers == {"grpc-status": "0"}
    assert pb.VersionResponse.FromString(grpc_messages(bytes(b"".join(
        f.payload for f in c.seen if f.type == DATA and f.sid == 1)))[0]).version == "w" * size


def test_peer_max_frame_size(serve: Callable[..., Served]) -> None:
    s = serve()
    s.servicer.impl["Version"] = _version_echo
    c = s.raw(settings=settings_payload((MAX_FRAME_SIZE, 32768), (SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)))
    c.send(h2frame(WINDOW_UPDATE, 0, 0, (1 << 20).to_bytes(4, "big")))
    c.unary(1, pb.VersionRequest(version="m" * 100_000).SerializeToString())
    r = c.response(1)
    assert r.trailers == {"grpc-status": "0"}
    sizes = [len(f.payload) for f in c.seen if f.type == DATA and f.sid == 1]
    assert max(sizes) == 32768 and sum(sizes) == len(r.data)
    assert pb.VersionResponse.FromString(grpc_messages(r.data)[0]).version == "m" * 100_000


def test_request_ended_by_trailers(serve: Callable[..., Served]) -> None:
    s = serve()
    s.servicer.impl["Version"] = _version_echo
    c = s.raw()
    c.send(h2frame(HEADERS, END_HEADERS, 1, c.block(c.request_headers())),
           h2frame(DATA, 0, 1, grpc_framed(pb.VersionRequest(version="trailed").SerializeToString())),
           h2frame(HEADERS, END_HEADERS | END_STREAM, 1, c.block([("x-trailer", "1")])))
    r = c.response(1)
    assert r.trailers == {"grpc-status": "0"}
    assert pb.VersionResponse.FromString(grpc_messages(r.data)[0]).version == "trailed"


def test_stream_window_overflow_resets_only_that_stream(serve: Callable[..., Served]) -> None:
    s = serve()
    s.servicer.impl["Version"] = _version_echo
    c = s.raw()
    c.send(_open(c, 1), h2frame(WINDOW_UPDATE, 0, 1, (2**31 - 1).to_bytes(4, "big")))
    rst = c.expect(lambda f: f.sid == 1, "RST_STREAM on stream 1")
    assert rst == Frame(RST_STREAM, 0, 1, FLOW_CONTROL_ERROR.to_bytes(4, "big"))
    c.unary(3, pb.VersionRequest(version="next").SerializeToString())
    assert c.response(3).trailers == {"grpc-status": "0"}
    assert not [f for f in c.seen if f.type == GOAWAY]


def test_deadline_while_waiting_for_the_client_window(serve: Callable[..., Served]) -> None:
    """The answer is ready but the client's window holds it back until the deadline: the call
    ends DEADLINE_EXCEEDED, and the metrics count the call once."""
    s = serve()
    s.servicer.impl["Version"] = _version_echo
    c = s.raw(settings=settings_payload((SETTINGS_INITIAL_WINDOW_SIZE, 10)))
    c.unary(1, pb.VersionRequest(version="w" * 1000).SerializeToString(), extra=(("grpc-timeout", "100m"),))
    r = c.response(1)
    assert r.reset is None and r.ended
    assert len(r.data) == 10, "the server sent past the stream's window"
    assert r.blocks[0] == {":status": "200", "content-type": "application/grpc"}
    assert r.trailers["grpc-status"] == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    codes = [code for code, _ in s.observed_for("Version")]
    assert len(codes) == 1, f"one call observed as {codes}"


def test_stream_reset_while_waiting_for_the_window_ends_the_generator(serve: Callable[..., Served]) -> None:
    s = serve()
    ended: list[str] = []
    done = threading.Event()

    async def stream(request: Any, context: Any) -> Any:
        try:
            while True:
                yield _containers("x" * 1000)
        except (asyncio.CancelledError, GeneratorExit) as e:
            ended.append(type(e).__name__)
            done.set()
            raise

    s.servicer.impl["StreamContainers"] = stream
    c = s.raw(settings=settings_payload((SETTINGS_INITIAL_WINDOW_SIZE, 10)))
    c.unary(1, b"", path="/runtime.v1.RuntimeService/StreamContainers")
    c.expect(lambda f: f.type == DATA and f.sid == 1, "the first 10 bytes")
    c.send(h2frame(RST_STREAM, 0, 1, CANCEL.to_bytes(4, "big")))
    assert done.wait(WAIT), "the stream's generator was left running"
    assert len(ended) == 1
    c.send(h2frame(PING, 0, 0, b"still-up"))
    c.expect(lambda f: f.type == PING and f.payload == b"still-up", "PING ACK")


def _open(c: RawH2, sid: int) -> bytes:
    return h2frame(HEADERS, END_HEADERS, sid, c.block(c.request_headers()))


@pytest.mark.parametrize(("case", "code"), [
    ("even stream", PROTOCOL_ERROR),
    ("oversized frame", FRAME_SIZE_ERROR),
    ("interrupted header block", PROTOCOL_ERROR),
    ("DATA on an idle stream", PROTOCOL_ERROR),
    ("padding too long", PROTOCOL_ERROR),
    ("bad header block", COMPRESSION_ERROR),
    ("PUSH_PROMISE", PROTOCOL_ERROR),
    ("stream id going back", PROTOCOL_ERROR),
    ("CONTINUATION without HEADERS", PROTOCOL_ERROR),
    ("DATA on stream 0", PROTOCOL_ERROR),
    ("SETTINGS on a stream", PROTOCOL_ERROR),
    ("SETTINGS not in 6-byte units", FRAME_SIZE_ERROR),
    ("MAX_FRAME_SIZE too small", PROTOCOL_ERROR),
    ("INITIAL_WINDOW_SIZE over 2^31-1", FLOW_CONTROL_ERROR),
    ("WINDOW_UPDATE of 0 on the connection", PROTOCOL_ERROR),
    ("connection window over 2^31-1", FLOW_CONTROL_ERROR),
    ("PING on a stream", PROTOCOL_ERROR),
])
def test_connection_errors_end_with_goaway(serve: Callable[..., Served], case: str, code: int) -> None:
    s = serve()
    c = s.raw()
    wire = {
        "even stream": lambda: _open(c, 2),
        "oversized frame": lambda: h2frame(0xEE, 0, 0, b"\0" * 16385),
        "interrupted header block": lambda: (h2frame(HEADERS, 0, 1, c.block(c.request_headers()))
                                             + h2frame(PING, 0, 0, b"12345678")),
        "DATA on an idle stream": lambda: h2frame(DATA, 0, 5, b"x"),
        "padding too long": lambda: _open(c, 1) + h2frame(DATA, PADDED, 1, b"\x05abcd"),
        "bad header block": lambda: h2frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff"),
        "PUSH_PROMISE": lambda: h2frame(PUSH_PROMISE, END_HEADERS, 1, b"\0\0\0\2"),
        "stream id going back": lambda: _open(c, 5) + _open(c, 3),
        "CONTINUATION without HEADERS": lambda: h2frame(CONTINUATION, END_HEADERS, 1, b""),
        "DATA on stream 0": lambda: h2frame(DATA, 0, 0, b"x"),
        "SETTINGS on a stream": lambda: h2frame(SETTINGS, 0, 1, b""),
        "SETTINGS not in 6-byte units": lambda: h2frame(SETTINGS, 0, 0, b"\0\4\0\0\1"),
        "MAX_FRAME_SIZE too small": lambda: h2frame(SETTINGS, 0, 0, settings_payload((MAX_FRAME_SIZE, 100))),
        "INITIAL_WINDOW_SIZE over 2^31-1": lambda: h2frame(
            SETTINGS, 0, 0, settings_payload((SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31))),
        "WINDOW_UPDATE of 0 on the connection": lambda: h2frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\0"),
        "connection window over 2^31-1": lambda: h2frame(WINDOW_UPDATE, 0, 0, (2**31 - 1).to_bytes(4, "big")),
        "PING on a stream": lambda: h2frame(PING, 0, 1, b"12345678"),
    }[case]()
    c.send(wire)
    frames = c.read_to_eof()
    goaways = [f for f in frames if f.type == GOAWAY]
    assert len(goaways) == 1, frames
    if case == "stream id going back":
        # RFC 9113 section 5.1.1 names PROTOCOL_ERROR for an unexpected stream id; stream 3 is
        # closed once 5 is open (section 5.1), so STREAM_CLOSED is defensible too.
        assert goaway_code(goaways[0])[1] in (PROTOCOL_ERROR, STREAM_CLOSED), goaways[0]
    else:
        assert goaway_code(goaways[0])[1] == code, goaways[0]


def test_headers_on_a_finished_stream_end_the_connection(serve: Callable[..., Served]) -> None:
    s = serve()
    s.servicer.impl["Version"] = _version_echo
    c = s.raw()
    c.unary(1, pb.VersionRequest(version="once").SerializeToString())
    assert c.response(1).trailers == {"grpc-status": "0"}
    c.unary(1, pb.VersionRequest(version="twice").SerializeToString())
    goaways = [f for f in c.read_to_eof() if f.type == GOAWAY]
    assert len(goaways) == 1
    assert goaway_code(goaways[0]) == (1, STREAM_CLOSED)
    assert [c for c, _ in s.observed_for("Version")] == ["OK"]


def test_unknown_frames_and_stale_resets_are_ignored(serve: Callable[..., Served]) -> None:
    s = serve()
    s.servicer.impl["Version"] = _version_echo
    c = s.raw()
    c.send(h2frame(0xEE, 0, 0, b"whatever"), h2frame(0xEE, 0x55, 7, b""))
    c.unary(1, pb.VersionRequest(version="one").SerializeToString())
    assert c.response(1).trailers == {"grpc-status": "0"}
    c.send(h2frame(RST_STREAM, 0, 1, CANCEL.to_bytes(4, "big")))  # stream 1 is over
    c.unary(3, pb.VersionRequest(version="two").SerializeToString())
    r = c.response(3)
    assert r.trailers == {"grpc-status": "0"}
    assert pb.VersionResponse.FromString(grpc_messages(r.data)[0]).version == "two"
    assert not [f for f in c.seen if f.type == GOAWAY]


def test_too_many_streams_are_refused(serve: Callable[..., Served]) -> None:
    s = serve()
    c = s.raw()
    c.send(b"".join(_open(c, 2 * i + 1) for i in range(1001)))  # none sends its body
    rst = c.expect(lambda f: f.type == RST_STREAM, "RST_STREAM")
    assert rst == Frame(RST_STREAM, 0, 2001, REFUSED_STREAM.to_bytes(4, "big"))
    c.send(h2frame(PING, 0, 0, b"stillok!"))
    c.expect(lambda f: f.type == PING and f.flags & ACK, "PING ACK")
    assert not [f for f in c.seen if f.type in (GOAWAY, RST_STREAM) and f is not rst]


# ---------------------------------------------------------------------------------------- cancellation


def test_client_cancel_of_a_unary_call(serve: Callable[..., Served]) -> None:
    s = serve()
    entered, cancelled = threading.Event(), threading.Event()
    s.servicer.impl["Version"] = cancel_recorder(entered, cancelled)
    fut = s.runtime().Version.future(pb.VersionRequest(), timeout=30)
    assert entered.wait(WAIT)
    assert fut.cancel()
    assert cancelled.wait(WAIT), "RST_STREAM did not cancel the servicer"
    assert fut.cancelled()


def test_raw_rst_stream_cancels_the_call(serve: Callable[..., Served]) -> None:
    s = serve()
    entered, cancelled = threading.Event(), threading.Event()
    s.servicer.impl["Version"] = cancel_recorder(entered, cancelled)
    c = s.raw()
    c.unary(1, pb.VersionRequest().SerializeToString())
    assert entered.wait(WAIT)
    c.send(h2frame(RST_STREAM, 0, 1, CANCEL.to_bytes(4, "big")))
    assert cancelled.wait(WAIT), "RST_STREAM did not cancel the servicer"
    c.send(h2frame(PING, 0, 0, b"after-rs"))
    c.expect(lambda f: f.type == PING and f.payload == b"after-rs", "PING ACK")
    assert not [f for f in c.seen if f.sid == 1 and f.type in (HEADERS, DATA)], "an answer to a reset call"
    # the connection goes on
    s.servicer.impl["Version"] = _version_echo
    c.unary(3, pb.VersionRequest(version="next").SerializeToString())
    assert c.response(3).trailers == {"grpc-status": "0"}


def held_version(answer: str) -> tuple[Callable[..., Any], threading.Event, asyncio.Event]:
    """A Version that answers `answer` once released: (it, entered, release)."""
    entered = threading.Event()
    release = asyncio.Event()

    async def version(request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        entered.set()
        await release.wait()
        return pb.VersionResponse(version=answer)

    return version, entered, release


def test_client_goaway_lets_calls_finish(serve: Callable[..., Served]) -> None:
    s = serve()
    s.servicer.impl["Version"], entered, release = held_version("finished")
    c = s.raw()
    c.unary(1, pb.VersionRequest().SerializeToString())
    assert entered.wait(WAIT)
    c.send(h2frame(GOAWAY, 0, 0, (0).to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big")))
    c.send(h2frame(PING, 0, 0, b"goawayed"))
    c.expect(lambda f: f.type == PING and f.payload == b"goawayed", "PING ACK")
    s.call_soon(release.set)
    r = c.response(1)
    assert r.trailers == {"grpc-status": "0"}
    assert pb.VersionResponse.FromString(grpc_messages(r.data)[0]).version == "finished"
    c.read_to_eof()  # its last stream done, the server closes


# ---------------------------------------------------------------------------------------- stop


def test_stop_with_grace(serve: Callable[..., Served]) -> None:
    s = serve()
    fast_in, slow_in, slow_cancelled = threading.Event(), threading.Event(), threading.Event()
    release = asyncio.Event()
    slow = cancel_recorder(slow_in, slow_cancelled)

    async def version(request: pb.VersionRequest, context: Any) -> Any:
        if request.version != "fast":
            return await slow(request, context)
        fast_in.set()
        await release.wait()
        return pb.VersionResponse(version="fast done")

    s.servicer.impl["Version"] = version
    stub = s.runtime()
    fast_call = stub.Version.future(pb.VersionRequest(version="fast"), timeout=30)
    slow_call = stub.Version.future(pb.VersionRequest(version="slow"), timeout=30)
    assert fast_in.wait(WAIT) and slow_in.wait(WAIT)

    async def stop_then_release() -> None:
        stopping = asyncio.create_task(s.server.stop(0.5))
        await asyncio.sleep(0)  # stop() runs to its first await: listener closed, GOAWAY sent
        release.set()
        await stopping

    start = time.monotonic()
    s.loop.run(stop_then_release())
    elapsed = time.monotonic() - start
    assert fast_call.result(WAIT).version == "fast done"
    assert slow_cancelled.is_set(), "stop() returned with a call still running"
    with pytest.raises(grpc.RpcError) as e:
        slow_call.result(WAIT)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value  # the connection closed under it
    assert 0.45 <= elapsed < 3
    # nobody listens any more
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, pytest.raises(OSError):
        probe.connect(s.path)
    with grpc.insecure_channel("unix://" + s.path) as ch, pytest.raises(grpc.RpcError) as e:
        pb_grpc.RuntimeServiceStub(ch).Version(pb.VersionRequest(), timeout=2)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_stop_sends_goaway_and_refuses_new_streams(serve: Callable[..., Served]) -> None:
    s = serve()
    s.servicer.impl["Version"], entered, release = held_version("drained")
    c = s.raw()
    c.unary(1, pb.VersionRequest().SerializeToString())
    assert entered.wait(WAIT)
    start = time.monotonic()
    stopping = asyncio.run_coroutine_threadsafe(s.server.stop(WAIT), s.loop.loop)
    goaway = c.expect(lambda f: f.type == GOAWAY, "GOAWAY")
    assert goaway_code(goaway) == (1, NO_ERROR)
    c.send(_open(c, 3), h2frame(DATA, END_STREAM, 3, grpc_framed(b"")))
    refused = c.expect(lambda f: f.sid == 3, "an answer on stream 3")
    assert refused == Frame(RST_STREAM, 0, 3, REFUSED_STREAM.to_bytes(4, "big"))
    assert not stopping.done()
    s.call_soon(release.set)
    r = c.response(1)
    assert r.trailers == {"grpc-status": "0"}
    assert pb.VersionResponse.FromString(grpc_messages(r.data)[0]).version == "drained"
    c.read_to_eof()  # the last call done, the connection closes
    stopping.result(WAIT)
    assert time.monotonic() - start < WAIT - 1, "stop() waited out its grace with nothing running"


def test_an_oversized_request_is_answered_once_and_its_rest_dropped(serve: Callable[..., Served]) -> None:
    """A request over max_message is refused as soon as it is over (RESOURCE_EXHAUSTED, then one
    RST_STREAM NO_ERROR to stop the client), and the DATA still in flight is dropped quietly:
    not one RST_STREAM per frame, not a connection error."""
    s = serve(max_message=4096)
    s.servicer.impl["Version"] = _version_echo
    c = s.raw()
    c.send(h2frame(HEADERS, END_HEADERS, 1, c.block(c.request_headers())))
    body = grpc_framed(b"x" * 100_000)
    chunks = [body[i:i + 10_000] for i in range(0, len(body), 10_000)]
    c.send(*(h2frame(DATA, 0, 1, chunk) for chunk in chunks[:3]))
    r = c.response(1)
    assert r.trailers["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    # the client had more on the way
    c.send(*(h2frame(DATA, END_STREAM if i == len(chunks) - 1 else 0, 1, chunk)
             for i, chunk in enumerate(chunks) if i >= 3))
    c.unary(3, pb.VersionRequest(version="after").SerializeToString())
    r3 = c.response(3)
    assert r3.trailers == {"grpc-status": "0"}
    resets = [f for f in c.seen if f.type == RST_STREAM and f.sid == 1]
    assert [int.from_bytes(f.payload, "big") for f in resets] == [NO_ERROR]
    assert not [f for f in c.seen if f.type == GOAWAY]


@pytest.mark.parametrize("inline", [False, True], ids=["task", "inline"])
def test_an_answer_in_wire_form_is_sent_as_it_is(serve: Callable[..., Served], inline: bool) -> None:
    s = serve(inline=("ListContainers",) if inline else ())
    want = pb.ListContainersResponse(containers=[pb.Container(id=f"{i:064x}") for i in range(500)])

    def list_containers(request: Any, context: Any) -> Encoded:
        return Encoded(pb.ListContainersResponse, want.SerializeToString())

    s.servicer.impl["ListContainers"] = list_containers
    assert s.runtime().ListContainers(pb.ListContainersRequest(), timeout=WAIT) == want
