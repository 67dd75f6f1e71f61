"""cri_shim.server.http2: work queued with `after_write` while frames are answered runs once
their answer is written (the server counts and logs a call there, off the client's wait)."""

from __future__ import annotations

import logging
import struct
from typing import Any

import hpack
import pytest

from cri_shim.server import http2

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, SETTINGS = 1, 4
END_STREAM, END_HEADERS = 0x1, 0x4


def h2frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, ftype, flags, sid) + payload


class Transport:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.written = b""

    def write(self, data: bytes) -> None:
        self.events.append("write")
        self.written += data

    def close(self) -> None:
        self.events.append("close")

    def is_closing(self) -> bool:
        return False


def request(sid: int) -> bytes:
    block = hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", "/x"),
                                    (":authority", "a"), ("content-type", "application/grpc")])
    return h2frame(HEADERS, END_HEADERS | END_STREAM, sid, block)


def connection(events: list[str], answer: Any) -> tuple[http2.Connection, Transport]:
    conn = http2.Connection(answer, lambda c: None, 1 << 20)
    transport = Transport(events)
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(PREFACE + h2frame(SETTINGS, 0, 0))
    events.clear()
    return conn, transport


def test_after_write_runs_once_the_answer_is_written() -> None:
    events: list[str] = []

    def answer(conn: http2.Connection, st: http2.Stream) -> None:
        conn.send(st, conn.headers_frames(st, [(":status", "200")], True), end=True)
        conn.after_write(events.append, f"counted {st.id}")
        events.append("answered")

    conn, transport = connection(events, answer)
    conn.data_received(request(1) + request(3))
    # both answers leave in one write; the calls are counted after it, in order
    assert events == ["answered", "answered", "write", "counted 1", "counted 3"]
    events.clear()
    conn.after_write(events.append, "now")  # outside the reading of frames: at once
    assert events == ["now"]


def test_a_failing_after_write_call_leaves_the_connection_up(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []

    def broken() -> None:
        raise RuntimeError("bookkeeping broke")

    def answer(conn: http2.Connection, st: http2.Stream) -> None:
        conn.send(st, conn.headers_frames(st, [(":status", "200")], True), end=True)
        conn.after_write(broken)
        conn.after_write(events.append, f"counted {st.id}")

    conn, transport = connection(events, answer)
    with caplog.at_level(logging.ERROR, logger="cri_shim.http2"):
        conn.data_received(request(1))
    assert events == ["write", "counted 1"]
    assert "bookkeeping broke" in caplog.text
    assert not conn.closed
    conn.data_received(request(3))
    assert events[-2:] == ["write", "counted 3"]
