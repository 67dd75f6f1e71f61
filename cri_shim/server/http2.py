"""The server side of HTTP/2 (RFC 9113) on an asyncio transport, as much as gRPC needs.

One `Connection` per accepted socket. It reads frames, assembles each stream's request (a
header block and a body), and hands a complete request to its `on_request` callback, which
answers through `headers_frames`, `try_data_frames`/`send_data` and `send`. It keeps the
flow-control windows both ways: a stream's received data is credited back at once (the gRPC
layer bounds a request's size) and the connection's in batches, and data we send waits for
the peer's windows. The peer's header blocks are decoded by `hpack_decoder`;
ours are coded without the dynamic table (`encode_headers`), so each block stands alone and
one the peer never reads (its stream was reset) cannot put the two tables out of step.

What gRPC never uses is refused or ignored as the RFC allows: server push is off, priorities
are ignored, and a request body ends the request (no request streaming). A protocol error
ends the connection with GOAWAY and the error's code.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any, cast

from cri_shim.server.hpack_decoder import Decoder, HPACKError

log = logging.getLogger("cri_shim.http2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types
(DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE,
 CONTINUATION) = range(10)
# flags
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
# settings
ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

DEFAULT_WINDOW = 65535
DEFAULT_FRAME = 16384
MAX_WINDOW = 2**31 - 1
# What we grant: a stream may send this much before we credit it back (we do at once).
RECV_WINDOW = 1 << 20
CONN_RECV_WINDOW = 1 << 24
# The largest header block we assemble (HEADERS + CONTINUATION), and advertise as the list size.
MAX_HEADER_BLOCK = 1 << 16
# Streams a client may have open at once; more are refused (REFUSED_STREAM: it may retry).
MAX_STREAMS = 1000

_HEAD = struct.Struct(">HBBBL")  # length (24 bits, as 16 + 8), type, flags, stream id
_SETTING = struct.Struct(">HL")


class ConnectionError_(Exception):  # noqa: N801 - not the builtin ConnectionError
    """A connection error (RFC 9113 section 5.4.1): GOAWAY with `code`, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamReset(Exception):
    """The stream ended before our answer did: RST_STREAM from the peer, or the connection went."""


def frame(ftype: int, flags: int, stream_id: int, payload: bytes | memoryview = b"") -> bytes:
    n = len(payload)
    return _HEAD.pack(n >> 8, n & 0xFF, ftype, flags, stream_id) + payload


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 section 5.1) with `first`'s high bits above its prefix."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes((first | value,))
    out = bytearray((first | top,))
    value -= top
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    """A header block of literals without indexing (RFC 7541 section 6.2.2), no Huffman coding;
    ":status: 200" is the static table's entry 8."""
    out = []
    for name, value in headers:
        if name == ":status" and value == "200":
            out.append(b"\x88")
            continue
        n, v = name.encode(), value.encode()
        out += (b"\x00", _hpack_int(len(n), 7, 0), n, _hpack_int(len(v), 7, 0), v)
    return b"".join(out)


class Stream:
    __slots__ = ("id", "headers", "body", "send_window", "remote_closed", "reset",
                 "dispatched", "task", "headers_sent", "observed", "expired")

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.headers: tuple[tuple[str, str], ...] = ()
        self.body = bytearray()
        self.send_window = send_window
        self.remote_closed = False
        self.reset = False
        self.dispatched = False  # handed to on_request
        self.task: asyncio.Task[Any] | None = None  # what answers it, unless answered at once
        # the gRPC layer's: response headers written; call logged and counted; deadline passed
        self.headers_sent = False
        self.observed = False
        self.expired = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


# on_request(connection, stream): the request is complete (headers, body): answer it now, or
# return the task that will
RequestCallback = Callable[["Connection", Stream], "asyncio.Task[None] | None"]


class Connection(asyncio.Protocol):
    def __init__(self, on_request: RequestCallback, on_close: Callable[[Connection], None],
                 max_body: int) -> None:
        self._on_request = on_request
        self._on_close = on_close
        self._max_body = max_body
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._preface_seen = False
        self._decoder = Decoder(MAX_HEADER_BLOCK)
        self.streams: dict[int, Stream] = {}
        self._last_stream = 0
        # a header block being assembled: (stream id, END_STREAM on its HEADERS, bytes so far)
        self._continued: tuple[int, bool, bytearray] | None = None
        self._peer_frame = DEFAULT_FRAME
        self._peer_window = DEFAULT_WINDOW  # SETTINGS_INITIAL_WINDOW_SIZE: each new stream's send window
        self._send_window = DEFAULT_WINDOW  # the connection's
        self._credit = 0  # received on the connection and not yet credited back
        self._window_waiters: list[asyncio.Future[None]] = []
        self._goaway_sent = False
        self._batch: list[bytes] | None = None  # frames to write once data_received is done
        self._after: list[tuple[Callable[..., None], tuple[Any, ...]]] = []  # then these calls
        self._peer_gone = False  # GOAWAY received
        self.closed = False

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's are not subclasses)
        transport = self.transport
        settings = b"".join(_SETTING.pack(k, v) for k, v in (
            (ENABLE_PUSH, 0), (MAX_CONCURRENT_STREAMS, MAX_STREAMS), (INITIAL_WINDOW_SIZE, RECV_WINDOW),
            (MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK)))
        transport.write(frame(SETTINGS, 0, 0, settings)
                        + frame(WINDOW_UPDATE, 0, 0, (CONN_RECV_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._buf += data
        # Everything written while these frames are read (acks, credit, answers given at once)
        # goes out in one write at the end.
        out: list[bytes] = []
        self._batch = out
        try:
            self._frames(out)
        except ConnectionError_ as e:
            log.warning("HTTP/2 connection error: %s", e)
            out.append(self._goaway(e.code, str(e)))
            self.close()
        finally:
            self._flush()
        if self._after:
            after, self._after = self._after, []
            for fn, args in after:
                try:
                    fn(*args)
                except Exception:  # noqa: BLE001 - bookkeeping must not break the connection
                    log.exception("after answering on an HTTP/2 connection")

    def _flush(self) -> None:
        out, self._batch = self._batch, None
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def after_write(self, fn: Callable[..., None], *args: Any) -> None:
        """Call fn(*args) once what was sent so far is written: at once, or, while the frames
        just read are answered, after their batch goes out (bookkeeping the client need not
        wait for)."""
        if self._batch is None:
            fn(*args)
        else:
            self._after.append((fn, args))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for st in list(self.streams.values()):
            self._drop(st, cancel=True)
        self._wake_senders()
        self._on_close(self)

    # ------------------------------------------------------------------ reading

    def _frames(self, out: list[bytes]) -> None:
        buf = self._buf
        pos = 0
        if not self._preface_seen:
            if len(buf) < len(PREFACE):
                if not PREFACE.startswith(bytes(buf)):
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 client (bad preface)")
                return
            if bytes(buf[:len(PREFACE)]) != PREFACE:
                raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 client (bad preface)")
            self._preface_seen = True
            pos = len(PREFACE)
        credit = 0  # connection-level flow-control credit to give back
        stream_credit: dict[int, int] = {}
        end = len(buf)
        while end - pos >= 9:
            hi, lo, ftype, flags, sid = _HEAD.unpack_from(buf, pos)
            length = (hi << 8) | lo
            sid &= 0x7FFFFFFF
            if length > DEFAULT_FRAME:  # we advertise no larger SETTINGS_MAX_FRAME_SIZE
                raise ConnectionError_(FRAME_SIZE_ERROR,
                                       f"frame of {length} bytes (the limit is {DEFAULT_FRAME})")
            if end - pos < 9 + length:
                break
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            if self._continued is not None and ftype != CONTINUATION:
                raise ConnectionError_(PROTOCOL_ERROR, "header block interrupted by another frame")
            if ftype == DATA:
                credit += length
                self._data(sid, flags, payload, stream_credit, out)
            elif ftype == HEADERS:
                self._headers(sid, flags, payload, out)
            elif ftype == CONTINUATION:
                self._continuation(sid, flags, payload, out)
            elif ftype == SETTINGS:
                self._settings(sid, flags, payload, out)
            elif ftype == WINDOW_UPDATE:
                self._window_update(sid, payload)
            elif ftype == PING:
                if sid:
                    raise ConnectionError_(PROTOCOL_ERROR, "PING on a stream")
                if length != 8:
                    raise ConnectionError_(FRAME_SIZE_ERROR, "PING not 8 bytes")
                if not flags & ACK:
                    out.append(frame(PING, ACK, 0, payload))
            elif ftype == RST_STREAM:
                if not sid or sid > self._last_stream:
                    raise ConnectionError_(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
                if length != 4:
                    raise ConnectionError_(FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes")
                st = self.streams.get(sid)
                if st is not None:
                    self._drop(st, cancel=True)
            elif ftype == GOAWAY:
                if sid:
                    raise ConnectionError_(PROTOCOL_ERROR, "GOAWAY on a stream")
                self._peer_gone = True
                if not self.streams:
                    self.close()
            elif ftype == PUSH_PROMISE:
                raise ConnectionError_(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            elif ftype == PRIORITY:
                if length != 5:
                    raise ConnectionError_(FRAME_SIZE_ERROR, "PRIORITY frame not 5 bytes")
            # unknown frame types are ignored (RFC 9113 section 4.1)
        del buf[:pos]
        # The connection's credit goes back in batches: one more write per call costs more than
        # the window it would keep open (the peer has CONN_RECV_WINDOW to spend).
        self._credit += credit
        if self._credit >= CONN_RECV_WINDOW // 2:
            out.append(frame(WINDOW_UPDATE, 0, 0, self._credit.to_bytes(4, "big")))
            self._credit = 0
        for sid, n in stream_credit.items():
            st = self.streams.get(sid)
            if st is not None and not st.remote_closed and n:
                out.append(frame(WINDOW_UPDATE, 0, sid, n.to_bytes(4, "big")))

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise ConnectionError_(PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1:len(payload) - payload[0]]

    def _data(self, sid: int, flags: int, payload: bytes, credit: dict[int, int], out: list[bytes]) -> None:
        if not sid:
            raise ConnectionError_(PROTOCOL_ERROR, "DATA on stream 0")
        st = self.streams.get(sid)
        if st is None:
            if sid > self._last_stream:
                raise ConnectionError_(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            # A stream we answered or reset: the peer's DATA in flight is dropped, as RFC 9113
            # section 5.1 lets an endpoint do after its RST_STREAM (and one RST_STREAM per frame
            # would answer a large refused request with thousands).
            return
        if st.remote_closed:
            self._reset(st, STREAM_CLOSED)
            return
        if flags & END_STREAM:
            st.remote_closed = True
        if st.dispatched:
            return  # answered already (the body was too large): the rest is dropped, not credited
        if not st.remote_closed:
            credit[sid] = credit.get(sid, 0) + len(payload)
        st.body += self._unpad(flags, payload)
        # Past the limit the request is answered as it stands (the gRPC layer says RESOURCE_EXHAUSTED)
        if st.remote_closed or len(st.body) > self._max_body:
            self._request(st)

    def _headers(self, sid: int, flags: int, payload: bytes, out: list[bytes]) -> None:
        if not sid or not sid & 1:
            raise ConnectionError_(PROTOCOL_ERROR, f"HEADERS on stream {sid} (a client's are odd)")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise ConnectionError_(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            block = block[5:]
        if flags & END_HEADERS:
            self._header_block(sid, bool(flags & END_STREAM), block, out)
        else:
            self._continued = (sid, bool(flags & END_STREAM), bytearray(block))

    def _continuation(self, sid: int, flags: int, payload: bytes, out: list[bytes]) -> None:
        if self._continued is None or self._continued[0] != sid:
            raise ConnectionError_(PROTOCOL_ERROR, f"CONTINUATION out of place on stream {sid}")
        block = self._continued[2]
        block += payload
        if len(block) > MAX_HEADER_BLOCK:
            raise ConnectionError_(PROTOCOL_ERROR, f"header block over {MAX_HEADER_BLOCK} bytes")
        if flags & END_HEADERS:
            end_stream = self._continued[1]
            self._continued = None
            self._header_block(sid, end_stream, bytes(block), out)

    def _header_block(self, sid: int, end_stream: bool, block: bytes, out: list[bytes]) -> None:
        try:
            headers = self._decoder.decode(block)
        except HPACKError as e:
            raise ConnectionError_(COMPRESSION_ERROR, f"header block of stream {sid}: {e}") from None
        st = self.streams.get(sid)
        if st is not None:  # trailers: they end the request
            if st.remote_closed:  # the client ended its side already (RFC 9113 section 5.1)
                self._reset(st, STREAM_CLOSED)
                return
            if not end_stream:
                raise ConnectionError_(PROTOCOL_ERROR,
                                       f"second header block on stream {sid} without END_STREAM")
            st.remote_closed = True
            self._request(st)
            return
        if sid <= self._last_stream:
            raise ConnectionError_(STREAM_CLOSED, f"HEADERS on closed stream {sid}")
        self._last_stream = sid
        if self._goaway_sent or self._peer_gone:
            out.append(frame(RST_STREAM, 0, sid, REFUSED_STREAM.to_bytes(4, "big")))
            return
        if len(self.streams) >= MAX_STREAMS:
            out.append(frame(RST_STREAM, 0, sid, REFUSED_STREAM.to_bytes(4, "big")))
            return
        st = Stream(sid, self._peer_window)
        st.headers = headers
        self.streams[sid] = st
        if end_stream:
            st.remote_closed = True
            self._request(st)

    def _request(self, st: Stream) -> None:
        if not st.dispatched:
            st.dispatched = True
            task = self._on_request(self, st)
            if task is not None:
                st.task = task

    def _settings(self, sid: int, flags: int, payload: bytes, out: list[bytes]) -> None:
        if sid:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        for i in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, i)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, f"initial window {value} too large")
                delta = value - self._peer_window
                self._peer_window = value
                for st in self.streams.values():
                    st.send_window += delta
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= (1 << 24) - 1:
                    raise ConnectionError_(PROTOCOL_ERROR, f"max frame size {value} out of range")
                self._peer_frame = value
            elif key == ENABLE_PUSH and value > 1:
                raise ConnectionError_(PROTOCOL_ERROR, f"ENABLE_PUSH {value}")
        out.append(frame(SETTINGS, ACK, 0))
        self._wake_senders()

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes")
        inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not sid:
            if not inc:
                raise ConnectionError_(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += inc
            if self._send_window > MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
        else:
            st = self.streams.get(sid)
            if st is None:
                return
            st.send_window += inc
            if st.send_window > MAX_WINDOW or not inc:
                self._reset(st, FLOW_CONTROL_ERROR if inc else PROTOCOL_ERROR)
        self._wake_senders()

    # ------------------------------------------------------------------ writing

    def _write(self, out: list[bytes]) -> None:
        if self._batch is not None:
            self._batch.extend(out)
        elif out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _goaway(self, code: int, message: str = "") -> bytes:
        self._goaway_sent = True
        payload = self._last_stream.to_bytes(4, "big") + code.to_bytes(4, "big") + message.encode()[:256]
        return frame(GOAWAY, 0, 0, payload)

    def headers_frames(self, st: Stream, headers: list[tuple[str, str]] | bytes,
                       end_stream: bool) -> list[bytes]:
        """HEADERS (+ CONTINUATION) frames for `headers` (or a block `encode_headers` made of
        them) on `st`."""
        block = headers if isinstance(headers, bytes) else encode_headers(headers)
        flags = END_STREAM if end_stream else 0
        limit = self._peer_frame
        if len(block) <= limit:
            return [frame(HEADERS, flags | END_HEADERS, st.id, block)]
        parts = [block[i:i + limit] for i in range(0, len(block), limit)]
        frames = [frame(HEADERS, flags, st.id, parts[0])]
        frames += [frame(CONTINUATION, 0, st.id, p) for p in parts[1:-1]]
        frames.append(frame(CONTINUATION, END_HEADERS, st.id, parts[-1]))
        return frames

    def try_data_frames(self, st: Stream, data: bytes) -> list[bytes] | None:
        """All of `data` as DATA frames if both windows have room for it now (taking it), else None."""
        n = len(data)
        if n > self._send_window or n > st.send_window:
            return None
        self._send_window -= n
        st.send_window -= n
        limit = self._peer_frame
        if n <= limit:
            return [frame(DATA, 0, st.id, data)]
        view = memoryview(data)
        return [frame(DATA, 0, st.id, view[i:i + limit]) for i in range(0, n, limit)]

    def send(self, st: Stream, frames: list[bytes], end: bool = False) -> None:
        """Write frames of `st`; `end`: they end our side of it."""
        if st.reset or self.closed:
            raise StreamReset(f"stream {st.id} was reset")
        self._write(frames)
        if end:
            self._done(st)

    async def send_data(self, st: Stream, data: bytes) -> None:
        """Write `data` on `st` as the peer's windows allow, waiting for WINDOW_UPDATEs."""
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            if st.reset or self.closed:
                raise StreamReset(f"stream {st.id} was reset")
            n = min(len(data) - pos, self._send_window, st.send_window, self._peer_frame)
            if n <= 0:
                waiter = asyncio.get_running_loop().create_future()
                self._window_waiters.append(waiter)
                await waiter
                continue
            self._send_window -= n
            st.send_window -= n
            self._write([frame(DATA, 0, st.id, view[pos:pos + n])])
            pos += n

    def _wake_senders(self) -> None:
        waiters, self._window_waiters = self._window_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _reset(self, st: Stream, code: int) -> None:
        self._write([frame(RST_STREAM, 0, st.id, code.to_bytes(4, "big"))])
        self._drop(st, cancel=True)

    def _drop(self, st: Stream, cancel: bool) -> None:
        st.reset = cancel
        self.streams.pop(st.id, None)
        if cancel and st.task is not None and not st.task.done():
            st.task.cancel()
        if cancel:
            self._wake_senders()
        if (self._peer_gone or self._goaway_sent) and not self.streams:
            self.close()

    def _done(self, st: Stream) -> None:
        """Our answer is complete. A request not read to its end is reset (RFC 9113 section 8.1)."""
        if not st.remote_closed:
            self._write([frame(RST_STREAM, 0, st.id, NO_ERROR.to_bytes(4, "big"))])
        self.streams.pop(st.id, None)
        if (self._peer_gone or self._goaway_sent) and not self.streams:
            self.close()

    # ------------------------------------------------------------------ shutting down

    def goaway(self) -> None:
        """No new streams: the open ones finish, then the connection closes."""
        if self.closed or self._goaway_sent:
            return
        self._write([self._goaway(NO_ERROR)])
        if not self.streams:
            self.close()

    def close(self) -> None:
        self._flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
