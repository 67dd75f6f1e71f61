"""Exec, attach and port-forward over SPDY/3.1 streams: the asyncio side of spdy.Connection.

The client opens the streams (SYN_STREAM with a `streamtype` header); we accept each with
SYN_REPLY. Remote command (exec, attach) waits for all the streams its options call for
(error, and stdin, stdout, stderr, resize as requested), runs the session, ends stdout and
stderr, writes the result on the error stream and closes. Port forward pairs a `data` and
an `error` stream by `requestID` and connects each pair to its `port` in the pod, for as
long as the client keeps the connection. The same sessions run over WebSocket binary messages
when client-go tunnels SPDY through a WebSocket (`SPDY/3.1+portforward.k8s.io`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from cri_shim.streaming import spdy
from cri_shim.streaming.remote_command import run_command, until_client_leaves
from cri_shim.streaming.status import parse_resize
from cri_shim.streaming.stdio import StreamIO, TerminalSize, Writer
from cri_shim.streaming.targets import AttachTarget, Backend, ExecTarget
from cri_shim.streaming.websocket import WebSocketTransport

log = logging.getLogger(__name__)

READ_SIZE = 65536
STREAM_CREATION_TIMEOUT = 30.0  # the kubelet's default
V4 = "v4.channel.k8s.io"
RESIZING = ("v3.channel.k8s.io", V4)


class ByteIO(Protocol):
    async def read(self) -> bytes: ...  # b"" once the peer is gone
    async def write(self, data: bytes) -> None: ...


class SocketIO:
    """The upgraded TCP (or TLS) connection itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 early: bytes = b"") -> None:
        self.reader = reader
        self.writer = writer
        self._early = early

    async def read(self) -> bytes:
        if self._early:
            data, self._early = self._early, b""
            return data
        try:
            return await self.reader.read(READ_SIZE)
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class TunnelIO:
    """SPDY bytes carried in WebSocket binary messages (client-go's tunneling dialer)."""

    def __init__(self, transport: WebSocketTransport) -> None:
        self.transport = transport
        self._messages = transport.messages()

    async def read(self) -> bytes:
        while True:
            try:
                message = await anext(self._messages)
            except (StopAsyncIteration, ConnectionError, OSError):
                return b""
            if message:  # the client's empty writes come as empty messages: not an end
                return message if isinstance(message, bytes) else message.encode()

    async def write(self, data: bytes) -> None:
        await self.transport.send(data)


class Session:
    """A server-side SPDY session: accepted streams, their inbound bytes, ordered output."""

    def __init__(self, io: ByteIO) -> None:
        self.io = io
        self.conn = spdy.Connection()
        self.opened: asyncio.Queue[spdy.StreamOpened] = asyncio.Queue()
        self.inbound: dict[int, asyncio.Queue[bytes | None]] = {}
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                data = await self.io.read()
                events = self.conn.receive_data(data)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("spdy session: %d bytes in: %s", len(data), events)
                for event in events:
                    self._dispatch(event)
                await self.flush()
                if not data or self.conn.closed or any(
                        isinstance(e, spdy.GoAway | spdy.ConnectionClosed) for e in events):
                    return
                if any(isinstance(e, spdy.ProtocolError) and e.stream_id is None for e in events):
                    return
        except (ConnectionError, OSError) as e:
            log.debug("spdy session: %s", e)
        finally:
            for q in self.inbound.values():
                q.put_nowait(None)
            if not self.gone.done():
                self.gone.set_result(None)

    def _dispatch(self, event: spdy.Event) -> None:
        if isinstance(event, spdy.StreamOpened):
            self.inbound[event.stream_id] = asyncio.Queue()
            if event.fin:
                self.inbound[event.stream_id].put_nowait(None)
            self.opened.put_nowait(event)
        elif isinstance(event, spdy.Data):
            q = self.inbound.get(event.stream_id)
            if q is not None:
                if event.data:
                    q.put_nowait(event.data)
                if event.fin:
                    q.put_nowait(None)
        elif isinstance(event, spdy.StreamReset):
            q = self.inbound.get(event.stream_id)
            if q is not None:
                q.put_nowait(None)
        elif isinstance(event, spdy.ProtocolError):
            log.info("spdy session: %s", event.message)

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.io.write(data)

    async def accept(self, stream_id: int) -> None:
        self.conn.reply(stream_id, {})
        await self.flush()

    async def refuse(self, stream_id: int) -> None:
        self.conn.reset(stream_id, spdy.RstStatus.REFUSED_STREAM)
        await self.flush()

    async def send(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        try:
            self.conn.send_data(stream_id, data, fin=fin)
        except spdy.SpdyError as e:  # reset by the client meanwhile
            raise ConnectionResetError(f"stream {stream_id}: {e}") from None
        await self.flush()

    def writer(self, stream_id: int) -> Writer:
        async def write(data: bytes) -> None:
            if data:
                await self.send(stream_id, data)
        return write

    async def finish(self, stream_id: int) -> None:
        with contextlib.suppress(spdy.SpdyError, ConnectionError):
            self.conn.close_stream(stream_id)
            await self.flush()

    async def close(self) -> None:
        with contextlib.suppress(spdy.SpdyError, ConnectionError, OSError):
            self.conn.goaway()
            await self.flush()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def serve_remote_command(io: ByteIO, protocol: str, backend: Backend,
                               target: ExecTarget | AttachTarget) -> None:
    session = Session(io)
    try:
        await _remote_command(session, protocol, backend, target)
    finally:
        await session.close()


async def _remote_command(session: Session, protocol: str, backend: Backend,
                          target: ExecTarget | AttachTarget) -> None:
    resizing = target.tty and protocol in RESIZING
    expected = 1 + target.stdin + target.stdout + target.stderr + resizing
    streams: dict[str, int] = {}
    accepted = 0
    try:
        async with asyncio.timeout(STREAM_CREATION_TIMEOUT):
            while accepted < expected:
                opened = await _next_or_gone(session, session.opened.get())
                if opened is None:
                    return
                kind = opened.headers.get("streamtype", "")
                if kind not in ("error", "stdin", "stdout", "stderr", "resize"):
                    log.info("spdy: unexpected stream type %r", kind)
                    await session.refuse(opened.stream_id)
                    continue
                await session.accept(opened.stream_id)
                streams[kind] = opened.stream_id
                accepted += 1
    except TimeoutError:
        log.info("spdy: timed out waiting for the client to create %d streams", expected)
        return
    if protocol in ("channel.k8s.io", "") and "stdin" in streams:
        await session.finish(streams["stdin"])  # what v1 kubelets do
    io = StreamIO(stdin=session.inbound[streams["stdin"]] if "stdin" in streams and target.stdin else None,
                  stdout=session.writer(streams["stdout"]) if "stdout" in streams else None,
                  stderr=session.writer(streams["stderr"]) if "stderr" in streams else None,
                  tty=target.tty, sizes_coming="resize" in streams)
    resize_task = (asyncio.create_task(_pump_resizes(session.inbound[streams["resize"]], io))
                   if "resize" in streams else None)
    try:
        result = await until_client_leaves(run_command(backend, target, io), session.gone)
    finally:
        if resize_task:
            resize_task.cancel()
    if result is None:
        return
    for kind in ("stdout", "stderr"):
        if kind in streams:
            await session.finish(streams[kind])
    if "error" in streams:
        payload = result.for_protocol(protocol == V4)
        with contextlib.suppress(ConnectionError):
            if payload:
                await session.send(streams["error"], payload)
        await session.finish(streams["error"])


async def _next_or_gone(session: Session, getter: object) -> spdy.StreamOpened | None:
    task = asyncio.ensure_future(getter)  # type: ignore[arg-type]
    done, _ = await asyncio.wait({task, session.gone}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        return task.result()  # type: ignore[no-any-return]
    task.cancel()
    return None


async def _pump_resizes(inbound: asyncio.Queue[bytes | None], io: StreamIO) -> None:
    buf = bytearray()
    while (chunk := await inbound.get()) is not None:
        buf += chunk
        try:
            sizes = parse_resize(buf)
        except ValueError as e:
            log.info("spdy: %s", e)
            return
        for width, height in sizes:
            io.resize.put_nowait(TerminalSize(width, height))


async def serve_port_forward(io: ByteIO, backend: Backend, pod_id: str) -> None:
    session = Session(io)
    pairs: dict[str, dict[str, spdy.StreamOpened]] = {}
    forwards: set[asyncio.Task[None]] = set()
    try:
        while True:
            opened = await _next_or_gone(session, session.opened.get())
            if opened is None:
                return
            problem, kind, port = _check_port_stream(opened.headers)
            if problem:
                log.info("spdy port-forward to pod %s: %s", pod_id, problem)
                await session.refuse(opened.stream_id)
                continue
            await session.accept(opened.stream_id)
            request = opened.headers.get("requestid") or str(
                opened.stream_id if kind == "error" else opened.stream_id - 2)
            pair = pairs.setdefault(request, {})
            if kind in pair:
                await session.send(pair.get("error", opened).stream_id,
                                   f"error processing stream for request {request}: "
                                   f"{kind} stream already assigned".encode())
                continue
            pair[kind] = opened
            if len(pair) == 2:
                del pairs[request]
                task = asyncio.create_task(_forward(session, backend, pod_id, port, pair["data"].stream_id,
                                                    pair["error"].stream_id))
                forwards.add(task)
                task.add_done_callback(forwards.discard)
    finally:
        for task in list(forwards):
            task.cancel()
        await asyncio.gather(*forwards, return_exceptions=True)
        await session.close()


def _check_port_stream(headers: spdy.Headers) -> tuple[str, str, int]:
    port_text = headers.get("port", "")
    if not port_text:
        return '"port" header is required', "", 0
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return f"unable to parse {port_text!r} as a port", "", 0
    kind = headers.get("streamtype", "")
    if kind not in ("data", "error"):
        return f"invalid stream type {kind!r}", "", 0
    return "", kind, int(port_text)


async def _forward(session: Session, backend: Backend, pod_id: str, port: int, data_id: int,
                   error_id: int) -> None:
    try:
        reader, writer = await backend.port_forward(pod_id, port)
    except Exception as e:  # noqa: BLE001 - the client reads it on the error stream
        with contextlib.suppress(ConnectionError):
            await session.send(error_id, f"error forwarding port {port} to pod {pod_id}: {e}".encode())
        await session.finish(error_id)
        await session.finish(data_id)
        return

    async def client_to_pod() -> None:
        inbound = session.inbound[data_id]
        while (chunk := await inbound.get()) is not None:
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    upstream = asyncio.create_task(client_to_pod())
    try:
        while chunk := await reader.read(READ_SIZE):
            await session.send(data_id, chunk)
        # the pod closed its side (the client's end of input alone ends nothing: a server may
        # still answer a half-closed connection)
    except (ConnectionError, OSError) as e:
        log.debug("port-forward to pod %s port %d: %s", pod_id, port, e)
    finally:
        upstream.cancel()
        await asyncio.gather(upstream, return_exceptions=True)
        writer.close()
        await session.finish(data_id)
        await session.finish(error_id)
