"""Exec, attach and port-forward over WebSocket channels (wsproto does the framing).

The handshake has been answered by the server; from here on every message is one channel's
data (see channels.py). The session ends when the command does (its result goes on the
error channel, then a normal close) or when the client closes or drops the connection
(the command is then cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import AsyncIterator

from wsproto import WSConnection
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)

from cri_shim.streaming import channels
from cri_shim.streaming.channels import ChannelClosed, ChannelData, ChannelError, ChannelProtocol
from cri_shim.streaming.remote_command import run_command, until_client_leaves
from cri_shim.streaming.stdio import StreamIO, TerminalSize, Writer
from cri_shim.streaming.targets import AttachTarget, Backend, ExecTarget

log = logging.getLogger(__name__)

READ_SIZE = 65536
MAX_MESSAGE = 16 << 20  # a client's message larger than this ends the session


class WebSocketTransport:
    """A server-side WebSocket after the handshake: messages in, messages out."""

    def __init__(self, ws: WSConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.ws = ws
        self.reader = reader
        self.writer = writer
        self.closed = False
        self._partial: list[bytes | str] = []
        self._size = 0

    async def send(self, data: bytes | str) -> None:
        if self.closed:
            raise ConnectionResetError("websocket closed")
        self.writer.write(self.ws.send(Message(data=data)))
        await self.writer.drain()

    async def messages(self) -> AsyncIterator[bytes | str]:
        """Whole messages from the client until it closes or the connection drops."""
        while not self.closed:
            try:
                data = await self.reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self.closed = True
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                log.debug("websocket: %s", type(event).__name__)
                if isinstance(event, Ping):
                    self._write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    with contextlib.suppress(Exception):
                        self._write(self.ws.send(event.response()))
                    self.closed = True
                    return
                elif isinstance(event, TextMessage | BytesMessage):
                    whole = self._assemble(event)
                    if whole is not None:
                        yield whole

    def _assemble(self, event: TextMessage | BytesMessage) -> bytes | str | None:
        self._partial.append(event.data)
        self._size += len(event.data)
        if self._size > MAX_MESSAGE:
            raise ChannelError(f"websocket message larger than {MAX_MESSAGE} bytes")
        if not event.message_finished:
            return None
        parts, self._partial, self._size = self._partial, [], 0
        if isinstance(event, TextMessage):
            return "".join(str(p) for p in parts)
        return b"".join(bytes(p) for p in parts)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.writer.write(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.write(self.ws.send(CloseConnection(code=code, reason=reason)))
                await self.writer.drain()


async def serve_remote_command(transport: WebSocketTransport, proto: ChannelProtocol, backend: Backend,
                               target: ExecTarget | AttachTarget) -> None:
    def channel_writer(channel: int) -> Writer:
        async def write(data: bytes) -> None:
            if data:
                await transport.send(channels.encode(proto, channel, data))
        return write

    io = StreamIO(stdin=asyncio.Queue() if target.stdin else None, tty=target.tty,
                  stdout=channel_writer(channels.STDOUT) if target.stdout else None,
                  stderr=channel_writer(channels.STDERR) if target.stderr else None,
                  sizes_coming=target.tty)
    # the kubelet tells the client the session is up with an empty message on the lowest
    # channel it will write to
    first = channels.STDOUT if target.stdout else channels.STDERR if target.stderr else channels.ERROR
    await transport.send(channels.encode(proto, first, b""))

    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    reader = asyncio.create_task(_read_command_input(transport, proto, io, gone))
    try:
        result = await until_client_leaves(run_command(backend, target, io), gone)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    if result is None:
        return
    with contextlib.suppress(ConnectionError):
        payload = result.for_protocol(proto.status_json)
        if payload:
            await transport.send(channels.encode(proto, channels.ERROR, payload))
    await transport.close()


async def _read_command_input(transport: WebSocketTransport, proto: ChannelProtocol, io: StreamIO,
                              gone: asyncio.Future[None]) -> None:
    try:
        async for message in transport.messages():
            event = channels.decode(proto, message)
            if isinstance(event, ChannelClosed):
                if event.channel == channels.STDIN and io.stdin is not None:
                    io.stdin.put_nowait(None)
            elif isinstance(event, ChannelData):
                if event.channel == channels.STDIN and io.stdin is not None:
                    if event.data:
                        io.stdin.put_nowait(event.data)
                elif event.channel == channels.RESIZE:
                    size = json.loads(event.data)
                    io.resize.put_nowait(TerminalSize(int(size.get("Width", 0)), int(size.get("Height", 0))))
    except (ChannelError, ValueError, AttributeError) as e:
        log.warning("websocket session: %s", e)
    finally:
        if io.stdin is not None:
            io.stdin.put_nowait(None)
        if not gone.done():
            gone.set_result(None)


async def serve_port_forward(transport: WebSocketTransport, proto: ChannelProtocol, backend: Backend,
                             pod_id: str, ports: tuple[int, ...]) -> None:
    """Channels 2n (data) and 2n+1 (error) for the n-th port; each starts with the port's
    number (16 bits, little endian), as the kubelet writes it."""
    inbound: list[asyncio.Queue[bytes | None]] = [asyncio.Queue() for _ in ports]
    for i, port in enumerate(ports):
        prefix = struct.pack("<H", port)
        await transport.send(channels.encode(proto, 2 * i, prefix))
        await transport.send(channels.encode(proto, 2 * i + 1, prefix))

    async def forward(i: int, port: int) -> None:
        try:
            reader, writer = await backend.port_forward(pod_id, port)
        except Exception as e:  # noqa: BLE001 - the client reads it on the error channel
            message = f"error forwarding port {port} to pod {pod_id}: {e}"
            with contextlib.suppress(ConnectionError):
                await transport.send(channels.encode(proto, 2 * i + 1, message.encode()))
            return
        pump = asyncio.create_task(_pump_queue(inbound[i], writer))
        try:
            while chunk := await reader.read(READ_SIZE):
                await transport.send(channels.encode(proto, 2 * i, chunk))
        except (ConnectionError, OSError):
            pass
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            writer.close()

    forwards = [asyncio.create_task(forward(i, p)) for i, p in enumerate(ports)]
    try:
        async for message in transport.messages():
            event = channels.decode(proto, message)
            if isinstance(event, ChannelData) and event.channel % 2 == 0 and event.channel // 2 < len(ports):
                if event.data:
                    inbound[event.channel // 2].put_nowait(event.data)
    except (ChannelError, ConnectionError, OSError) as e:
        log.info("websocket port-forward to pod %s ended: %s", pod_id, e)
    finally:
        for t in forwards:
            t.cancel()
        await asyncio.gather(*forwards, return_exceptions=True)
        await transport.close()


async def _pump_queue(queue: asyncio.Queue[bytes | None], writer: asyncio.StreamWriter) -> None:
    """The client's bytes for one forwarded connection, in order, to the pod's socket."""
    while (chunk := await queue.get()) is not None:
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
