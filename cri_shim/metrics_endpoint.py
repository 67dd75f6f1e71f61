"""The Prometheus scrape endpoint: GET /metrics on `[metrics] address` (host:port), served by
h11 on the daemon's event loop. Anything else is 404 (405 for other methods)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import h11
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cri_shim.errors import InvalidArgument
from cri_shim.telemetry import Telemetry

log = logging.getLogger(__name__)

MAX_HEAD = 8192
HEAD_TIMEOUT = 10.0


def parse_address(address: str) -> tuple[str, int]:
    """"127.0.0.1:9102", "[::1]:9102", ":9102" (all addresses) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidArgument(f"config: metrics.address {address!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsEndpoint:
    def __init__(self, telemetry: Telemetry, address: str) -> None:
        self.telemetry = telemetry
        self.host, self.port = parse_address(address)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(MAX_HEAD))
                        continue
                    break
            if not isinstance(event, h11.Request):
                return
            status, body, ctype = self._answer(event)
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Connection", "close")]
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
            if event.method != b"HEAD":
                writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        except (TimeoutError, h11.ProtocolError, ConnectionError) as e:
            log.debug("metrics request dropped: %s", e)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, request: h11.Request) -> tuple[int, bytes, str]:
        path = request.target.split(b"?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            return 405, b"only GET\n", "text/plain"
        if path != b"/metrics":
            return 404, b"metrics are at /metrics\n", "text/plain"
        return 200, generate_latest(self.telemetry.registry), CONTENT_TYPE_LATEST
