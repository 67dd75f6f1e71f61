"""A sans-IO SPDY/3.1 core: bytes in, events out, bytes to send (in the style of h11 and h2).

The kubelet's streaming clients (kubectl, crictl, critest) speak SPDY/3.1 through
k8s.io/apimachinery's httpstream/spdy, which is built on github.com/moby/spdystream. After the
HTTP/1.1 upgrade (``Upgrade: SPDY/3.1``, answered with 101) the client opens one stream per
channel with SYN_STREAM (``streamtype: stdin|stdout|stderr|error|resize``, or for port forward
``streamtype: data|error``, ``port``, ``requestid``); the server answers each with SYN_REPLY and
both sides then send DATA frames, FIN at each end, RST_STREAM, PING and GOAWAY.

Two layers live here, neither touches a socket:

- frames: one dataclass per frame type, ``FrameReader`` (incremental parser: frames may arrive
  split across reads or many per read) and ``FrameWriter`` (serializer). Each owns one zlib
  context with the SPDY/3 ``DICTIONARY``: header blocks are compressed with Z_SYNC_FLUSH and
  the context lives as long as the connection, one per direction.
- ``Connection``: stream state, automatic PING answers and flow control. Feed it with
  ``receive_data(bytes)``, which returns a list of events, and call its methods (``reply``,
  ``send_data``, ``reset``, ``ping``, ``goaway``, ``open_stream``...), which queue frames.
  ``data_to_send()`` drains everything queued. There is one ordered output queue, not bytes
  returned per call, because header blocks share one compression context: they must reach the
  peer in the order they were compressed.

Flow control. SPDY/3.1 gives every stream and the session a 64 KiB window, grown again by
WINDOW_UPDATE. moby/spdystream (v0.5.1, as vendored in cri-tools) implements none of it: it never
sends WINDOW_UPDATE or SETTINGS, parses the ones it gets and drops them, and writes DATA
without looking at any window. Therefore:

- receiving: ``Connection`` counts both windows and sends WINDOW_UPDATE once half a window has
  been consumed (as each Data event is returned, or when the application calls
  ``acknowledge_received_data`` if ``auto_window_update=False``). That is what a SPDY/3.1 peer
  needs and harmless to spdystream. A peer overrunning its window is an error only with
  ``flow_control=True``: spdystream does not wait for the updates, so it can overrun.
- sending: with ``flow_control=True`` data beyond the peer's window waits in the stream's
  buffer until a WINDOW_UPDATE (or a SETTINGS INITIAL_WINDOW_SIZE) arrives, see
  ``pending_bytes``. The default is ``False``, which sends at once: against spdystream,
  honouring the window would stall every stream after 64 KiB forever. Windows are counted
  either way (``send_window``).

Other spdystream behaviour a server must respect: it drops DATA that arrives on a stream before
it has replied to it (a client waits for our SYN_REPLY anyway), it closes the connection on a
control frame type it does not know (this module only writes the SPDY/3.1 types), and it echoes
PINGs and sends its own (odd ids from a client), which ``Connection`` answers by itself.

Errors. A frame that cannot be parsed (bad length, version other than 3, stream id 0, zlib
failure, a header block whose lengths run past its end) is a session error: ``receive_data``
returns ``ProtocolError(message, stream_id=None)``, queues GOAWAY(PROTOCOL_ERROR), and the
connection takes no more input; send what is queued and close the socket. A problem confined to
one stream (a frame for a stream never opened, a duplicate reply, data after FIN, upper-case or
duplicate header names) queues RST_STREAM and returns ``ProtocolError(message, stream_id=N)``;
the connection goes on. Control frames of unknown type are skipped, as the specification says.
Misuse of the API raises ``LocalProtocolError``.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 3
INITIAL_WINDOW_SIZE = 64 * 1024
MAX_WINDOW_SIZE = 2**31 - 1
MAX_STREAM_ID = 2**31 - 1
MAX_FRAME_LENGTH = 2**24 - 1  # the 24-bit length field
MAX_CONTROL_FRAME_LENGTH = 1 << 20  # what this reader accepts for a control frame
MAX_HEADER_BLOCK = 1 << 20  # decompressed size
DEFAULT_MAX_DATA_FRAME = 16 * 1024  # payload size of the DATA frames this side writes

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_CLEAR_SETTINGS = 0x01

Headers = dict[str, str]
"""A header block: lower-case names; several values of one name are joined by NUL."""


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


# The SPDY/3 header compression dictionary (1423 bytes): 65 length-prefixed words, then text.
_DICTIONARY_WORDS = (
    b"options head post put delete trace accept accept-charset accept-encoding accept-language "
    b"accept-ranges age allow authorization cache-control connection content-base "
    b"content-encoding content-language content-length content-location content-md5 "
    b"content-range content-type date etag expect expires from host if-match if-modified-since "
    b"if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
    b"proxy-authenticate proxy-authorization range referer retry-after server te trailer "
    b"transfer-encoding upgrade user-agent vary via warning www-authenticate method get status "
    b"200_OK version HTTP/1.1 url public set-cookie keep-alive origin"
).split()
_DICTIONARY_TEXT = (
    b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    b"203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    b"401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    b"503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00"
    b" Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    b"application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    b"gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = (
    b"".join(struct.pack(">I", len(w)) + w.replace(b"_", b" ") for w in _DICTIONARY_WORDS) + _DICTIONARY_TEXT
)


class SpdyError(Exception):
    """Base of this module's exceptions."""


class FrameError(SpdyError):
    """Bytes from the peer that break the protocol.

    ``stream_id`` is None for a session error (the connection cannot go on), or the stream that
    alone is affected (the frame was consumed whole and the compression context is intact).
    """

    def __init__(self, message: str, stream_id: int | None = None) -> None:
        super().__init__(message)
        self.stream_id = stream_id


class LocalProtocolError(SpdyError):
    """This side asked for something the protocol forbids (data on a closed stream, ...)."""


# ---------------------------------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class SynStreamFrame:
    stream_id: int
    headers: Headers
    fin: bool = False
    unidirectional: bool = False
    associated_stream_id: int = 0
    priority: int = 0  # 0 (highest) to 7
    slot: int = 0


@dataclass(frozen=True, slots=True)
class SynReplyFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, slots=True)
class RstStreamFrame:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Setting:
    id: int
    value: int
    flags: int = 0  # FLAG_SETTINGS_PERSIST_VALUE = 1, FLAG_SETTINGS_PERSISTED = 2


@dataclass(frozen=True, slots=True)
class SettingsFrame:
    settings: tuple[Setting, ...]
    clear: bool = False


@dataclass(frozen=True, slots=True)
class PingFrame:
    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAwayFrame:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True, slots=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, slots=True)
class WindowUpdateFrame:
    stream_id: int  # 0: the session window
    delta: int


@dataclass(frozen=True, slots=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


Frame = (
    SynStreamFrame
    | SynReplyFrame
    | RstStreamFrame
    | SettingsFrame
    | PingFrame
    | GoAwayFrame
    | HeadersFrame
    | WindowUpdateFrame
    | DataFrame
)


def encode_header_block(headers: Mapping[str, str]) -> bytes:
    """The uncompressed SPDY/3 name/value block: 32-bit count, then 32-bit length + bytes each."""
    parts = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        n = name.lower().encode("utf-8", "surrogateescape")
        v = value.encode("utf-8", "surrogateescape")
        if not n:
            raise LocalProtocolError("a header name must not be empty")
        parts += (struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v)
    return b"".join(parts)


def decode_header_block(raw: bytes, stream_id: int) -> Headers:
    """Parse an uncompressed name/value block; structural damage is a session error."""
    view = memoryview(raw)
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise FrameError(f"stream {stream_id}: header block ends inside {what}")
        chunk = bytes(view[pos : pos + n])
        pos += n
        return chunk

    (count,) = struct.unpack(">I", take(4, "the header count"))
    if count * 8 > len(raw) - 4:
        raise FrameError(f"stream {stream_id}: header block claims {count} headers in {len(raw)} bytes")
    headers: Headers = {}
    problem = ""
    for _ in range(count):
        (n_len,) = struct.unpack(">I", take(4, "a name length"))
        name = take(n_len, "a header name").decode("utf-8", "surrogateescape")
        (v_len,) = struct.unpack(">I", take(4, "a value length"))
        value = take(v_len, "a header value").decode("utf-8", "surrogateescape")
        if not name:
            problem = problem or "empty header name"
        elif name != name.lower():
            problem = problem or f"header name {name!r} is not lower case"
        elif name in headers:
            problem = problem or f"duplicate header {name!r}"
        headers[name] = value
    if pos != len(raw):
        raise FrameError(f"stream {stream_id}: {len(raw) - pos} bytes after the header block")
    if problem:
        raise FrameError(f"stream {stream_id}: {problem}", stream_id)
    return headers


class FrameReader:
    """Incremental frame parser, holding the peer-to-us header decompression context."""

    def __init__(
        self, max_control_length: int = MAX_CONTROL_FRAME_LENGTH, max_header_block: int = MAX_HEADER_BLOCK
    ) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._max_control = max_control_length
        self._max_block = max_header_block

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buf) - self._pos

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None until more bytes arrive. Raises FrameError."""
        while True:
            if self.buffered < 8:
                return None
            word0, word1 = struct.unpack_from(">II", self._buf, self._pos)
            flags, length = word1 >> 24, word1 & 0xFFFFFF
            control = bool(word0 & 0x80000000)
            if control:
                version, ftype = (word0 >> 16) & 0x7FFF, word0 & 0xFFFF
                if version != VERSION:
                    raise FrameError(f"unsupported SPDY version {version} (only 3 is spoken)")
                if length > self._max_control:
                    raise FrameError(f"control frame of type {ftype} is too large: {length} bytes")
            if self.buffered < 8 + length:
                return None
            start = self._pos + 8
            payload = bytes(self._buf[start : start + length])
            self._pos = start + length
            if not control:
                stream_id = word0 & 0x7FFFFFFF
                if stream_id == 0:
                    raise FrameError("DATA frame on stream 0")
                return DataFrame(stream_id, payload, bool(flags & FLAG_FIN))
            frame = self._control(ftype, flags, payload)
            if frame is not None:
                return frame
            # A control frame of unknown type: ignored, as the specification asks.

    def _control(self, ftype: int, flags: int, p: bytes) -> Frame | None:
        fin = bool(flags & FLAG_FIN)
        if ftype == FrameType.SYN_STREAM:
            self._need(p, 10, "SYN_STREAM", exact=False)
            sid, assoc = _stream_id(p, 0, "SYN_STREAM"), struct.unpack_from(">I", p, 4)[0] & MAX_STREAM_ID
            headers = self._headers(p[10:], sid)
            return SynStreamFrame(
                sid, headers, fin, bool(flags & FLAG_UNIDIRECTIONAL), assoc, p[8] >> 5, p[9]
            )
        if ftype in (FrameType.SYN_REPLY, FrameType.HEADERS):
            name = FrameType(ftype).name
            self._need(p, 4, name, exact=False)
            sid = _stream_id(p, 0, name)
            headers = self._headers(p[4:], sid)
            cls = SynReplyFrame if ftype == FrameType.SYN_REPLY else HeadersFrame
            return cls(sid, headers, fin)
        if ftype == FrameType.RST_STREAM:
            self._need(p, 8, "RST_STREAM")
            sid, status = _stream_id(p, 0, "RST_STREAM"), struct.unpack_from(">I", p, 4)[0]
            if status == 0:
                raise FrameError(f"RST_STREAM for stream {sid} with status 0")
            return RstStreamFrame(sid, status)
        if ftype == FrameType.SETTINGS:
            self._need(p, 4, "SETTINGS", exact=False)
            (count,) = struct.unpack_from(">I", p)
            if len(p) != 4 + 8 * count:
                raise FrameError(f"SETTINGS frame of {len(p)} bytes for {count} entries")
            entries = []
            for i in range(count):
                flags_id, value = struct.unpack_from(">II", p, 4 + 8 * i)
                entries.append(Setting(flags_id & 0xFFFFFF, value, flags_id >> 24))
            return SettingsFrame(tuple(entries), bool(flags & FLAG_CLEAR_SETTINGS))
        if ftype == FrameType.PING:
            self._need(p, 4, "PING")
            return PingFrame(struct.unpack(">I", p)[0])
        if ftype == FrameType.GOAWAY:
            self._need(p, 8, "GOAWAY")
            last, status = struct.unpack(">II", p)
            return GoAwayFrame(last & MAX_STREAM_ID, status)
        if ftype == FrameType.WINDOW_UPDATE:
            self._need(p, 8, "WINDOW_UPDATE")
            sid, delta = struct.unpack(">II", p)
            return WindowUpdateFrame(sid & MAX_STREAM_ID, delta & 0x7FFFFFFF)
        return None

    @staticmethod
    def _need(p: bytes, n: int, name: str, exact: bool = True) -> None:
        if len(p) < n or (exact and len(p) != n):
            raise FrameError(f"{name} frame has {len(p)} bytes of payload, expected {n}")

    def _headers(self, block: bytes, stream_id: int) -> Headers:
        # Always inflate, even for a frame about to be refused: the context spans the connection.
        try:
            raw = self._inflate.decompress(block, self._max_block + 1)
        except zlib.error as e:
            raise FrameError(f"stream {stream_id}: header block does not decompress: {e}") from None
        if self._inflate.unconsumed_tail or len(raw) > self._max_block:
            raise FrameError(f"stream {stream_id}: header block larger than {self._max_block} bytes")
        if self._inflate.eof:
            raise FrameError(f"stream {stream_id}: the peer ended its header compression stream")
        return decode_header_block(raw, stream_id)


def _stream_id(p: bytes, offset: int, name: str) -> int:
    sid: int = struct.unpack_from(">I", p, offset)[0] & MAX_STREAM_ID
    if sid == 0:
        raise FrameError(f"{name} frame on stream 0")
    return sid


def _control_header(ftype: FrameType, flags: int, length: int) -> bytes:
    if length > MAX_FRAME_LENGTH:
        raise LocalProtocolError(f"{ftype.name} frame of {length} bytes is too large")
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | length)


class FrameWriter:
    """Frame serializer, holding the us-to-peer header compression context."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, zdict=DICTIONARY)

    def _block(self, headers: Mapping[str, str]) -> bytes:
        raw = encode_header_block(headers)
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def serialize(self, frame: Frame) -> bytes:
        match frame:
            case DataFrame(stream_id=sid, data=data, fin=fin):
                if not 0 < sid <= MAX_STREAM_ID or len(data) > MAX_FRAME_LENGTH:
                    raise LocalProtocolError(f"bad DATA frame: stream {sid}, {len(data)} bytes")
                return struct.pack(">II", sid, (FLAG_FIN if fin else 0) << 24 | len(data)) + data
            case SynStreamFrame():
                block = self._block(frame.headers)
                flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
                body = struct.pack(
                    ">IIBB",
                    frame.stream_id,
                    frame.associated_stream_id,
                    (frame.priority & 7) << 5,
                    frame.slot,
                )
                return _control_header(FrameType.SYN_STREAM, flags, 10 + len(block)) + body + block
            case SynReplyFrame() | HeadersFrame():
                ftype = FrameType.SYN_REPLY if isinstance(frame, SynReplyFrame) else FrameType.HEADERS
                block = self._block(frame.headers)
                head = _control_header(ftype, FLAG_FIN if frame.fin else 0, 4 + len(block))
                return head + struct.pack(">I", frame.stream_id) + block
            case RstStreamFrame(stream_id=sid, status=status):
                return _control_header(FrameType.RST_STREAM, 0, 8) + struct.pack(">II", sid, status)
            case SettingsFrame(settings=settings, clear=clear):
                head = _control_header(
                    FrameType.SETTINGS, FLAG_CLEAR_SETTINGS if clear else 0, 4 + 8 * len(settings)
                )
                body = b"".join(struct.pack(">II", s.flags << 24 | s.id, s.value) for s in settings)
                return head + struct.pack(">I", len(settings)) + body
            case PingFrame(ping_id=pid):
                return _control_header(FrameType.PING, 0, 4) + struct.pack(">I", pid)
            case GoAwayFrame(last_good_stream_id=last, status=status):
                return _control_header(FrameType.GOAWAY, 0, 8) + struct.pack(">II", last, status)
            case WindowUpdateFrame(stream_id=sid, delta=delta):
                return _control_header(FrameType.WINDOW_UPDATE, 0, 8) + struct.pack(">II", sid, delta)
        raise TypeError(f"not a SPDY frame: {frame!r}")


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream (SYN_STREAM). Answer with ``reply`` or ``reset``."""

    stream_id: int
    headers: Headers
    fin: bool = False
    unidirectional: bool = False
    associated_stream_id: int = 0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class StreamReply:
    """The peer accepted a stream this side opened (SYN_REPLY)."""

    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, slots=True)
class HeadersReceived:
    """Further headers on an open stream (HEADERS)."""

    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes on a stream; ``fin`` means the peer will send no more on it (data may be empty)."""

    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer reset a stream (RST_STREAM); ``status`` is a ``RstStatus`` value."""

    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Ping:
    """A PING. ``reply=False``: the peer's, already answered; ``reply=True``: the echo of ours."""

    ping_id: int
    reply: bool


@dataclass(frozen=True, slots=True)
class GoAway:
    """The peer will open no more streams and accepts none past ``last_good_stream_id``."""

    last_good_stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    stream_id: int  # 0: the session window
    delta: int


@dataclass(frozen=True, slots=True)
class Settings:
    settings: dict[int, int]  # SettingId value -> value
    clear: bool = False


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol. ``stream_id`` None: the connection is finished (GOAWAY is
    queued; send it and close). Otherwise only that stream was reset (RST_STREAM queued)."""

    message: str
    stream_id: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its end of the transport (``receive_data(b"")``)."""


Event = (
    StreamOpened
    | StreamReply
    | HeadersReceived
    | Data
    | StreamReset
    | Ping
    | GoAway
    | WindowUpdate
    | Settings
    | ProtocolError
    | ConnectionClosed
)


# ------------------------------------------------------------------------------------ connection


@dataclass(slots=True)
class _Stream:
    stream_id: int
    local: bool  # opened by this side
    send_window: int
    recv_window: int = INITIAL_WINDOW_SIZE
    replied: bool = False  # SYN_REPLY sent (peer's stream) or received (ours)
    local_closed: bool = False  # FIN asked for; no more send_data
    fin_sent: bool = False
    remote_closed: bool = False
    pending: deque[memoryview] = field(default_factory=deque)
    pending_len: int = 0
    unacked: int = 0


class Connection:
    """One SPDY/3.1 session, server side by default; ``client=True`` opens odd stream ids."""

    def __init__(
        self,
        client: bool = False,
        *,
        flow_control: bool = False,
        auto_window_update: bool = True,
        max_data_frame: int = DEFAULT_MAX_DATA_FRAME,
    ) -> None:
        self.client = client
        self.flow_control = flow_control
        self.auto_window_update = auto_window_update
        self.max_data_frame = max_data_frame
        self._reader = FrameReader()
        self._writer = FrameWriter()
        self._out = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1 if client else 2
        self._next_ping_id = 1 if client else 2
        self._last_remote_id = 0
        self._peer_initial_window = INITIAL_WINDOW_SIZE
        self._send_window = INITIAL_WINDOW_SIZE
        self._recv_window = INITIAL_WINDOW_SIZE
        self._recv_unacked = 0
        self.goaway_sent = False
        self.goaway_received = False
        self.closed = False  # after a session error or the peer's EOF

    # ---- output

    def data_to_send(self) -> bytes:
        """Everything queued for the peer, in order; empties the queue."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _send(self, frame: Frame) -> None:
        self._out += self._writer.serialize(frame)

    # ---- introspection

    @property
    def open_streams(self) -> list[int]:
        return sorted(self._streams)

    @property
    def last_remote_stream_id(self) -> int:
        return self._last_remote_id

    def pending_bytes(self, stream_id: int | None = None) -> int:
        """Bytes given to ``send_data`` still waiting for send window (one stream or all)."""
        if stream_id is not None:
            s = self._streams.get(stream_id)
            return s.pending_len if s else 0
        return sum(s.pending_len for s in self._streams.values())

    def send_window(self, stream_id: int = 0) -> int:
        """The peer's window for a stream, or for the session with 0 (may be negative)."""
        if stream_id == 0:
            return self._send_window
        return self._stream(stream_id).send_window

    # ---- actions

    def open_stream(
        self,
        headers: Mapping[str, str],
        fin: bool = False,
        *,
        priority: int = 0,
        associated_stream_id: int = 0,
    ) -> int:
        """Send SYN_STREAM; returns the new stream's id."""
        if self.goaway_sent or self.goaway_received or self.closed:
            raise LocalProtocolError("no new streams after GOAWAY or close")
        sid = self._next_stream_id
        if sid > MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted")
        self._next_stream_id += 2
        self._send(SynStreamFrame(sid, dict(headers), fin, False, associated_stream_id, priority))
        s = _Stream(sid, local=True, send_window=self._peer_initial_window, local_closed=fin, fin_sent=fin)
        self._streams[sid] = s
        return sid

    def reply(self, stream_id: int, headers: Mapping[str, str], fin: bool = False) -> None:
        """Accept a stream the peer opened (SYN_REPLY)."""
        s = self._stream(stream_id)
        if s.local or s.replied:
            raise LocalProtocolError(f"stream {stream_id} cannot be replied to (ours, or replied already)")
        s.replied = True
        self._send(SynReplyFrame(stream_id, dict(headers), fin))
        if fin:
            s.local_closed = s.fin_sent = True
            self._maybe_forget(s)

    def send_headers(self, stream_id: int, headers: Mapping[str, str], fin: bool = False) -> None:
        s = self._stream(stream_id)
        if s.local_closed:
            raise LocalProtocolError(f"stream {stream_id} is closed for sending")
        self._send(HeadersFrame(stream_id, dict(headers), fin))
        if fin:
            s.local_closed = s.fin_sent = True
            self._maybe_forget(s)

    def send_data(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        """Queue ``data`` on a stream, in DATA frames of at most ``max_data_frame`` bytes."""
        s = self._stream(stream_id)
        if s.local_closed:
            raise LocalProtocolError(f"stream {stream_id} is closed for sending")
        if not s.local and not s.replied:
            raise LocalProtocolError(f"stream {stream_id}: reply before sending data")
        if data:
            s.pending.append(memoryview(bytes(data)))
            s.pending_len += len(data)
        s.local_closed = fin
        self._flush(s)
        self._maybe_forget(s)

    def close_stream(self, stream_id: int) -> None:
        """Half-close: FIN after whatever data is still pending."""
        self.send_data(stream_id, b"", fin=True)

    def reset(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        """Abort a stream (RST_STREAM); pending data is dropped."""
        self._streams.pop(stream_id, None)
        self._send(RstStreamFrame(stream_id, status))

    def ping(self) -> int:
        """Send a PING; its echo comes back as ``Ping(id, reply=True)``. Returns the id."""
        pid = self._next_ping_id
        self._next_ping_id = pid + 2 if pid + 2 <= 0xFFFFFFFF else pid % 2 or 2
        self._send(PingFrame(pid))
        return pid

    def goaway(self, status: int = GoAwayStatus.OK) -> None:
        """Announce that no new streams are accepted; open streams may finish."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self._send(GoAwayFrame(self._last_remote_id, status))

    def send_settings(self, settings: Mapping[int, int]) -> None:
        self._send(SettingsFrame(tuple(Setting(k, v) for k, v in settings.items())))

    def acknowledge_received_data(self, stream_id: int, length: int) -> None:
        """The application consumed ``length`` bytes of a Data event: reopen the windows.

        Called by ``receive_data`` itself unless ``auto_window_update=False``. WINDOW_UPDATE is
        sent once half of a window has been consumed.
        """
        if length <= 0:
            return
        self._recv_unacked += length
        if self._recv_unacked >= INITIAL_WINDOW_SIZE // 2:
            self._send(WindowUpdateFrame(0, self._recv_unacked))
            self._recv_window += self._recv_unacked
            self._recv_unacked = 0
        s = self._streams.get(stream_id)
        if s is None or s.remote_closed:
            return
        s.unacked += length
        if s.unacked >= INITIAL_WINDOW_SIZE // 2:
            self._send(WindowUpdateFrame(stream_id, s.unacked))
            s.recv_window += s.unacked
            s.unacked = 0

    # ---- input

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer (b"" at EOF); returns the events they complete."""
        if self.closed:
            return []
        events: list[Event] = []
        if not data:
            if self._reader.buffered:
                events.append(
                    ProtocolError(f"connection closed inside a frame ({self._reader.buffered} bytes)")
                )
            events.append(ConnectionClosed())
            self.closed = True
            return events
        self._reader.feed(data)
        while not self.closed:
            try:
                frame = self._reader.next_frame()
            except FrameError as e:
                if e.stream_id is None:
                    self._session_error(str(e), events)
                    break
                self._note_remote_id(e.stream_id)
                self._stream_error(e.stream_id, RstStatus.PROTOCOL_ERROR, str(e), events)
                continue
            if frame is None:
                break
            self._handle(frame, events)
        return events

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        match frame:
            case DataFrame():
                self._on_data(frame, events)
            case SynStreamFrame():
                self._on_syn_stream(frame, events)
            case SynReplyFrame(stream_id=sid):
                s = self._known_stream(sid, events)
                if s is None:
                    return
                if not s.local or s.replied:
                    self._stream_error(
                        sid, RstStatus.STREAM_IN_USE, f"unexpected SYN_REPLY on stream {sid}", events
                    )
                    return
                s.replied = True
                s.remote_closed = frame.fin
                events.append(StreamReply(sid, frame.headers, frame.fin))
                self._maybe_forget(s)
            case HeadersFrame(stream_id=sid):
                s = self._known_stream(sid, events)
                if s is None:
                    return
                if s.remote_closed:
                    self._stream_error(
                        sid, RstStatus.STREAM_ALREADY_CLOSED, f"HEADERS after FIN on {sid}", events
                    )
                    return
                s.remote_closed = frame.fin
                events.append(HeadersReceived(sid, frame.headers, frame.fin))
                self._maybe_forget(s)
            case RstStreamFrame(stream_id=sid, status=status):
                if self._streams.pop(sid, None) is not None:
                    events.append(StreamReset(sid, status))
            case SettingsFrame():
                values = {s.id: s.value for s in frame.settings}
                new = values.get(SettingId.INITIAL_WINDOW_SIZE)
                if new is not None:
                    if new > MAX_WINDOW_SIZE:
                        self._session_error(f"SETTINGS INITIAL_WINDOW_SIZE {new} too large", events)
                        return
                    delta, self._peer_initial_window = new - self._peer_initial_window, new
                    for s in self._streams.values():
                        s.send_window += delta
                events.append(Settings(values, frame.clear))
                self._flush_all()
            case PingFrame(ping_id=pid):
                mine = (pid % 2 == 1) == self.client
                if not mine:
                    self._send(frame)
                events.append(Ping(pid, reply=mine))
            case GoAwayFrame():
                self.goaway_received = True
                events.append(GoAway(frame.last_good_stream_id, frame.status))
            case WindowUpdateFrame(stream_id=sid, delta=delta):
                self._on_window_update(sid, delta, events)

    def _on_syn_stream(self, frame: SynStreamFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        if sid in self._streams:
            self._stream_error(sid, RstStatus.STREAM_IN_USE, f"second SYN_STREAM for stream {sid}", events)
            return
        if self._is_local_id(sid):
            self._session_error(f"SYN_STREAM with stream id {sid} of this side's parity", events)
            return
        if sid <= self._last_remote_id:
            self._session_error(f"SYN_STREAM id {sid} not above the previous {self._last_remote_id}", events)
            return
        if self.goaway_sent:
            return  # after GOAWAY, new streams are ignored
        self._last_remote_id = sid
        s = _Stream(sid, local=False, send_window=self._peer_initial_window, remote_closed=frame.fin)
        if frame.unidirectional:
            s.replied = s.local_closed = s.fin_sent = True
        self._streams[sid] = s
        events.append(
            StreamOpened(
                sid,
                frame.headers,
                frame.fin,
                frame.unidirectional,
                frame.associated_stream_id,
                frame.priority,
            )
        )
        self._maybe_forget(s)

    def _on_data(self, frame: DataFrame, events: list[Event]) -> None:
        sid, n = frame.stream_id, len(frame.data)
        self._recv_window -= n
        if self.flow_control and self._recv_window < 0:
            self._session_error("the peer overran the session window", events)
            return
        s = self._known_stream(sid, events)
        if s is None:
            self.acknowledge_received_data(sid, n)  # the session window still counts it
            return
        if s.remote_closed:
            self._stream_error(
                sid, RstStatus.STREAM_ALREADY_CLOSED, f"DATA after FIN on stream {sid}", events
            )
            self.acknowledge_received_data(sid, n)
            return
        if s.local and not s.replied:
            self._stream_error(
                sid, RstStatus.PROTOCOL_ERROR, f"DATA before SYN_REPLY on stream {sid}", events
            )
            self.acknowledge_received_data(sid, n)
            return
        s.recv_window -= n
        if self.flow_control and s.recv_window < 0:
            self._stream_error(sid, RstStatus.FLOW_CONTROL_ERROR, f"stream {sid} overran its window", events)
            self.acknowledge_received_data(sid, n)
            return
        s.remote_closed = frame.fin
        events.append(Data(sid, frame.data, frame.fin))
        if self.auto_window_update:
            self.acknowledge_received_data(sid, n)
        self._maybe_forget(s)

    def _on_window_update(self, sid: int, delta: int, events: list[Event]) -> None:
        if sid == 0:
            self._send_window += delta
            if self._send_window > MAX_WINDOW_SIZE:
                self._session_error("session send window overflow", events)
                return
            events.append(WindowUpdate(0, delta))
            self._flush_all()
            return
        s = self._streams.get(sid)
        if s is None:
            return  # a stream already finished or reset: nothing to grow
        s.send_window += delta
        if s.send_window > MAX_WINDOW_SIZE:
            self._stream_error(
                sid, RstStatus.FLOW_CONTROL_ERROR, f"stream {sid} send window overflow", events
            )
            return
        events.append(WindowUpdate(sid, delta))
        self._flush(s)
        self._maybe_forget(s)

    # ---- helpers

    def _stream(self, stream_id: int) -> _Stream:
        s = self._streams.get(stream_id)
        if s is None:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        return s

    def _is_local_id(self, sid: int) -> bool:
        return (sid % 2 == 1) == self.client

    def _note_remote_id(self, sid: int) -> None:
        if not self._is_local_id(sid) and sid > self._last_remote_id:
            self._last_remote_id = sid

    def _known_stream(self, sid: int, events: list[Event]) -> _Stream | None:
        """The open stream, or None: silently for a finished stream, with RST for one never opened."""
        s = self._streams.get(sid)
        if s is not None:
            return s
        never = sid >= self._next_stream_id if self._is_local_id(sid) else sid > self._last_remote_id
        if never:
            self._stream_error(sid, RstStatus.INVALID_STREAM, f"frame for stream {sid}, never opened", events)
        return None

    def _stream_error(self, sid: int, status: RstStatus, message: str, events: list[Event]) -> None:
        self._streams.pop(sid, None)
        self._send(RstStreamFrame(sid, status))
        events.append(ProtocolError(message, sid))

    def _session_error(self, message: str, events: list[Event]) -> None:
        if not self.goaway_sent:
            self.goaway_sent = True
            self._send(GoAwayFrame(self._last_remote_id, GoAwayStatus.PROTOCOL_ERROR))
        self.closed = True
        events.append(ProtocolError(message, None))

    def _flush_all(self) -> None:
        for s in list(self._streams.values()):
            if s.pending or (s.local_closed and not s.fin_sent):
                self._flush(s)
                self._maybe_forget(s)

    def _flush(self, s: _Stream) -> None:
        while s.pending:
            room = self.max_data_frame
            if self.flow_control:
                room = min(room, s.send_window, self._send_window)
                if room <= 0:
                    return
            chunk = s.pending[0]
            piece = chunk[:room]
            if len(piece) == len(chunk):
                s.pending.popleft()
            else:
                s.pending[0] = chunk[len(piece) :]
            s.pending_len -= len(piece)
            fin = s.local_closed and not s.pending
            self._send(DataFrame(s.stream_id, bytes(piece), fin))
            s.send_window -= len(piece)
            self._send_window -= len(piece)
            if fin:
                s.fin_sent = True
        if s.local_closed and not s.fin_sent:
            self._send(DataFrame(s.stream_id, b"", True))
            s.fin_sent = True

    def _maybe_forget(self, s: _Stream) -> None:
        if s.fin_sent and s.remote_closed and not s.pending:
            self._streams.pop(s.stream_id, None)
