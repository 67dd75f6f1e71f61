"""cri-shim's own gRPC server: unary and server-streaming calls over cri_shim.server.http2.

Why not grpcio's server: an empty call costs 0.78 ms through grpc.aio against 0.46 ms for
containerd's whole call (hack/bench_cri.py's RPC floor); the request crosses grpc's C core,
its completion-queue thread and back to the event loop. Here the request is read, answered
and written by the event loop's own callbacks. `grpc_server = "grpcio"` in the config serves
with grpcio instead.

The gRPC protocol over HTTP/2 as the CRI's clients use it: a POST to /package.Service/Method
with `content-type: application/grpc`, one length-prefixed request message, and an answer of
response headers, messages, and trailers carrying `grpc-status` and `grpc-message`
(percent-encoded, cut to 4,096 characters), or the trailers alone for a call that fails first.
`grpc-timeout` bounds the call (DEADLINE_EXCEEDED). Messages are identity or gzip coded; other
codings are refused (UNIMPLEMENTED). Requests and answers over `max_message` bytes fail with
RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from cri_shim.criapi import api_pb2 as pb
from cri_shim.server import http2
from cri_shim.server.interceptor import (
    RPCFailure,
    RPCObserver,
    answer_now,
    answer_stream,
    answer_unary,
    succeeded,
)

log = logging.getLogger("cri_shim.rpc")

RESPONSE_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
OK_TRAILERS = [("grpc-status", "0")]
# the header blocks of every successful call, coded once
RESPONSE_BLOCK = http2.encode_headers(RESPONSE_HEADERS)
OK_BLOCK = http2.encode_headers(OK_TRAILERS)
MAX_STATUS_MESSAGE = 4096  # characters of grpc-message, once percent-encoded
CUT_MARK = b" [...]"
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


@dataclass(frozen=True)
class Method:
    name: str  # "Version"
    behavior: Callable[..., Any]
    request_type: Any
    streaming: bool
    inline: bool  # a plain function, answered from the read callback (see _serve_inline)


def grpc_timeout(value: str | None) -> float | None:
    """Seconds in a `grpc-timeout` header ("100m": 0.1), None for none or a malformed one."""
    if not value or len(value) > 9 or value[-1] not in _TIMEOUT_UNITS or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]


def _plain(c: int) -> bool:
    return 0x20 <= c <= 0x7E and c != 0x25


def percent_encode(message: str) -> str:
    """grpc-message's coding: printable ASCII but '%' as is, every other UTF-8 byte as %XX.
    At most MAX_STATUS_MESSAGE characters: grpcio's client refuses, at random, trailers over
    8 KiB, which would turn a long error (a runtime's stderr) into RESOURCE_EXHAUSTED."""
    raw = message.encode()
    if all(_plain(c) for c in raw) and len(raw) <= MAX_STATUS_MESSAGE:
        return message
    cost = 0
    for i, c in enumerate(raw):
        cost += 1 if _plain(c) else 3
        if cost > MAX_STATUS_MESSAGE:
            cut = raw[:i]
            while cost > MAX_STATUS_MESSAGE - len(CUT_MARK) and cut:
                cost -= 1 if _plain(cut[-1]) else 3
                cut = cut[:-1]
            raw = cut.decode(errors="ignore").encode() + CUT_MARK
            break
    return "".join(chr(c) if _plain(c) else f"%{c:02X}" for c in raw)


def status_headers(code: grpc.StatusCode, message: str) -> list[tuple[str, str]]:
    headers = [("grpc-status", str(code.value[0]))]
    if message:
        headers.append(("grpc-message", percent_encode(message)))
    return headers


def framed(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


class GrpcServer:
    def __init__(self, observe: RPCObserver, max_message: int) -> None:
        self._observe = observe
        self._max_message = max_message
        self._methods: dict[str, Method] = {}
        self._connections: set[http2.Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add_service(self, service: str, servicer: object) -> None:
        """Serve every method of `service` ("RuntimeService") in the CRI proto with `servicer`'s."""
        desc = pb.DESCRIPTOR.services_by_name[service]
        for m in desc.methods:
            behavior = getattr(servicer, m.name)
            self._methods[f"/{desc.full_name}/{m.name}"] = Method(
                name=m.name, behavior=behavior, request_type=getattr(pb, m.input_type.name),
                streaming=m.server_streaming,
                inline=not m.server_streaming and not inspect.iscoroutinefunction(behavior))

    async def start(self, path: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_unix_server(self._connection, path)

    def _connection(self) -> http2.Connection:
        conn = http2.Connection(self._request, self._connections.discard, self._max_message + 5)
        self._connections.add(conn)
        return conn

    async def stop(self, grace: float) -> None:
        """Refuse new calls; let those in flight finish for up to `grace` s, then cancel them."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.goaway()
        deadline = time.monotonic() + grace
        while any(c.streams for c in self._connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        tasks = [st.task for c in self._connections for st in c.streams.values() if st.task is not None]
        for conn in list(self._connections):
            conn.close()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------------ one call

    def _request(self, conn: http2.Connection, st: http2.Stream) -> asyncio.Task[None] | None:
        assert self._loop is not None
        method = self._methods.get(st.header(":path") or "")
        if method is not None and method.inline:
            self._serve_inline(conn, st, method)
            return None
        return self._loop.create_task(self._serve(conn, st, method))

    def _serve_inline(self, conn: http2.Connection, st: http2.Stream, method: Method) -> None:
        """A call to a method that never waits (a plain `def`: the Status and List calls the
        kubelet polls), answered from the read callback: no task, no extra turn of the event
        loop, and the answer leaves in the same write as the acks of the frames just read."""
        assert self._loop is not None
        try:
            request = self._checked(conn, st, method)
            if request is None:
                return
            try:
                reply, seconds, ids = answer_now(method.behavior, method.name, self._observe, request, None)
                st.observed = True
                message = self._message(method, reply)
            except RPCFailure as f:
                return self._fail(conn, st, f.code, f.message)
            if not self._reply_now(conn, st, message):  # the client's window is short: wait for it
                st.task = self._loop.create_task(self._serve_rest(conn, st, message))
            conn.after_write(succeeded, method.name, seconds, self._observe, ids)
        except Exception:  # noqa: BLE001 - the call must end with a status whatever happened
            self._internal(conn, st)

    async def _serve_rest(self, conn: http2.Connection, st: http2.Stream, message: bytes) -> None:
        try:
            await self._reply_rest(conn, st, message)
        except (http2.StreamReset, asyncio.CancelledError):
            pass  # the client went away or reset the call

    def _expire(self, st: http2.Stream) -> None:
        """The call's grpc-timeout has passed: cancel it (_serve answers DEADLINE_EXCEEDED)."""
        if st.task is not None and not st.task.done():
            st.expired = True
            st.task.cancel()

    async def _serve(self, conn: http2.Connection, st: http2.Stream, method: Method | None) -> None:
        assert self._loop is not None
        timeout = grpc_timeout(st.header("grpc-timeout"))
        # A timer, not asyncio.timeout(): this costs a third as much, and the call is our task.
        timer = self._loop.call_later(timeout, self._expire, st) if timeout is not None else None
        start = time.monotonic()
        try:
            await self._answer(conn, st, method)
        except asyncio.CancelledError:
            if st.expired and not st.reset and not conn.closed:
                self._deadline(conn, st, start)
            # else the client went away or reset the call: there is no one to answer
        except http2.StreamReset:
            pass
        except Exception:  # noqa: BLE001 - the call must end with a status whatever happened
            self._internal(conn, st)
        finally:
            if timer is not None:
                timer.cancel()

    def _internal(self, conn: http2.Connection, st: http2.Stream) -> None:
        log.exception("answering %s failed", st.header(":path"))
        with contextlib.suppress(http2.StreamReset):
            self._fail(conn, st, grpc.StatusCode.INTERNAL, "internal error in cri-shim's gRPC server")

    def _deadline(self, conn: http2.Connection, st: http2.Stream, start: float) -> None:
        name = st.header(":path") or "?"
        name = name.rsplit("/", 1)[-1]
        seconds = time.monotonic() - start
        if not st.observed:  # an answer already counted as OK may still wait for the client's window
            log.warning("%s -> DEADLINE_EXCEEDED after %.1f ms (grpc-timeout %s)", name, seconds * 1000,
                        st.header("grpc-timeout"))
            self._observe(name, "DEADLINE_EXCEEDED", seconds)
        with contextlib.suppress(http2.StreamReset):
            self._fail(conn, st, grpc.StatusCode.DEADLINE_EXCEEDED, f"{name}: deadline exceeded")

    def _fail(self, conn: http2.Connection, st: http2.Stream, code: grpc.StatusCode, message: str) -> None:
        """End the call with a status: in the trailers, or as trailers alone if nothing was sent."""
        if st.headers_sent:
            frames = conn.headers_frames(st, status_headers(code, message), True)
        else:
            frames = conn.headers_frames(st, RESPONSE_HEADERS + status_headers(code, message), True)
        conn.send(st, frames, end=True)

    def _http_error(self, conn: http2.Connection, st: http2.Stream, status: int) -> None:
        conn.send(st, conn.headers_frames(st, [(":status", str(status))], True), end=True)

    def _checked(self, conn: http2.Connection, st: http2.Stream, method: Method | None) -> Any:
        """The call's request; None once the call is answered with an error (not a POST, not
        gRPC, no such method, a message that cannot be read)."""
        if st.header(":method") != "POST":
            self._http_error(conn, st, 405)
            return None
        if not (st.header("content-type") or "").startswith("application/grpc"):
            self._http_error(conn, st, 415)
            return None
        if method is None:
            self._fail(conn, st, grpc.StatusCode.UNIMPLEMENTED, f"unknown method {st.header(':path')}")
            return None
        try:
            return self._decode(st, method)
        except RPCFailure as f:
            log.warning("%s -> %s: %s", method.name, f.code.name, f.message)
            self._observe(method.name, f.code.name, 0.0)
            self._fail(conn, st, f.code, f.message)
            return None

    async def _answer(self, conn: http2.Connection, st: http2.Stream, method: Method | None) -> None:
        request = self._checked(conn, st, method)
        if request is None or method is None:
            return
        try:
            if method.streaming:
                await self._stream(conn, st, method, request)
            else:
                await self._unary(conn, st, method, request)
        except RPCFailure as f:
            st.observed = True
            self._fail(conn, st, f.code, f.message)

    def _decode(self, st: http2.Stream, method: Method) -> Any:
        body = st.body
        if len(body) < 5:
            raise RPCFailure(grpc.StatusCode.INTERNAL, f"{method.name}: the request has no message")
        length = int.from_bytes(body[1:5], "big")
        if length > self._max_message:
            raise RPCFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method.name}: received message "
                             f"larger than max ({length} vs. {self._max_message})")
        if len(body) != 5 + length:
            raise RPCFailure(grpc.StatusCode.INTERNAL,
                             f"{method.name}: the request is not one message of {length} bytes "
                             f"({len(body) - 5} bytes follow its prefix)")
        data = bytes(body[5:])
        if body[0] & 1:
            coding = st.header("grpc-encoding") or "identity"
            if coding != "gzip":
                code = grpc.StatusCode.UNIMPLEMENTED if coding != "identity" else grpc.StatusCode.INTERNAL
                raise RPCFailure(code,
                                 f"{method.name}: request compressed with {coding!r}; "
                                 "cri-shim reads gzip or uncompressed messages")
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as e:
                raise RPCFailure(grpc.StatusCode.INTERNAL, f"{method.name}: bad gzip message: {e}") from None
            if len(data) > self._max_message:
                raise RPCFailure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 f"{method.name}: received message larger than max "
                                 f"({len(data)} vs. {self._max_message}) once uncompressed")
        try:
            return method.request_type.FromString(data)
        except DecodeError as e:
            raise RPCFailure(grpc.StatusCode.INTERNAL,
                             f"{method.name}: cannot parse the request as {method.request_type.__name__}: {e}"
                             ) from None

    def _message(self, method: Method, reply: Any) -> bytes:
        data = reply.SerializeToString()
        if len(data) > self._max_message:
            raise RPCFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method.name}: the answer is "
                             f"larger than max ({len(data)} vs. {self._max_message})")
        return framed(data)

    async def _unary(self, conn: http2.Connection, st: http2.Stream, method: Method, request: Any) -> None:
        reply, seconds, ids = await answer_unary(method.behavior, method.name, self._observe, request, None)
        st.observed = True
        message = self._message(method, reply)
        # Counted and logged before the answer leaves, unlike the inline calls: a call that
        # waited takes milliseconds, which the bookkeeping does not change, while bookkeeping
        # after the write runs just as the client is woken to send its next call, often on
        # this CPU, and that call then waits for it.
        succeeded(method.name, seconds, self._observe, ids)
        if not self._reply_now(conn, st, message):
            await self._reply_rest(conn, st, message)

    def _reply_now(self, conn: http2.Connection, st: http2.Stream, message: bytes) -> bool:
        """Headers, message and trailers in one write if the client's windows have room for the
        message; else the headers alone (False: `_reply_rest` sends the rest)."""
        frames = conn.headers_frames(st, RESPONSE_BLOCK, False)
        st.headers_sent = True
        data = conn.try_data_frames(st, message)
        if data is None:
            conn.send(st, frames)
            return False
        conn.send(st, frames + data + conn.headers_frames(st, OK_BLOCK, True), end=True)
        return True

    async def _reply_rest(self, conn: http2.Connection, st: http2.Stream, message: bytes) -> None:
        await conn.send_data(st, message)
        conn.send(st, conn.headers_frames(st, OK_BLOCK, True), end=True)

    async def _stream(self, conn: http2.Connection, st: http2.Stream, method: Method, request: Any) -> None:
        async for reply in answer_stream(method.behavior, method.name, self._observe, request, None):
            message = self._message(method, reply)
            if not st.headers_sent:
                conn.send(st, conn.headers_frames(st, RESPONSE_BLOCK, False))
                st.headers_sent = True
            await conn.send_data(st, message)
        st.observed = True
        if st.headers_sent:
            conn.send(st, conn.headers_frames(st, OK_BLOCK, True), end=True)
        else:
            conn.send(st, conn.headers_frames(st, RESPONSE_HEADERS + OK_TRAILERS, True), end=True)
