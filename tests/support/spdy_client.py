"""A small SPDY/3.1 streaming client for tests, on the project's sans-IO core in client mode:
the HTTP upgrade by hand, then streams opened with headers, data and FIN, until a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

from cri_shim.streaming import spdy


class UpgradeRefused(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class SpdyClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: str) -> None:
        self.reader, self.writer, self.head = reader, writer, head
        self.conn = spdy.Connection(client=True)
        self.data: dict[int, bytearray] = {}
        self.fin: set[int] = set()
        self.reset: set[int] = set()
        self.eof = False

    @classmethod
    async def connect(cls, url: str, protocol: str) -> SpdyClient:
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write((f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: Upgrade\r\n"
                      f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n").encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        status = int(head.split()[1])
        if status != 101:
            length = next((int(line.split(":")[1]) for line in head.split("\r\n")
                           if line.lower().startswith("content-length:")), 0)
            body = (await reader.readexactly(length)).decode() if length else ""
            writer.close()
            raise UpgradeRefused(status, body)
        return cls(reader, writer, head)

    def open(self, headers: dict[str, str], fin: bool = False) -> int:
        sid = self.conn.open_stream(headers, fin=fin)
        self.data[sid] = bytearray()
        return sid

    def send(self, sid: int, data: bytes, fin: bool = False) -> None:
        self.conn.send_data(sid, data, fin=fin)

    def close_stream(self, sid: int) -> None:
        self.conn.close_stream(sid)

    async def pump_until(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.writer.write(self.conn.data_to_send())
                chunk = await self.reader.read(65536)
                for ev in self.conn.receive_data(chunk):
                    if isinstance(ev, spdy.Data):
                        self.data[ev.stream_id] += ev.data
                        if ev.fin:
                            self.fin.add(ev.stream_id)
                    elif isinstance(ev, spdy.StreamReset):
                        self.reset.add(ev.stream_id)
                    elif isinstance(ev, spdy.StreamReply) and ev.fin:
                        self.fin.add(ev.stream_id)
                if not chunk:
                    self.eof = True
                    return
            self.writer.write(self.conn.data_to_send())

    def close(self) -> None:
        self.writer.close()
