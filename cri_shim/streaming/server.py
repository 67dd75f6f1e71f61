"""The streaming server: an HTTP/1.1 endpoint (h11) on the daemon's event loop whose URLs
carry single-use tokens; each connection upgrades to SPDY/3.1 or WebSocket.

    /exec/<token>   /attach/<token>   /portforward/<token>

Before upgrading, a bad, used or expired token is 404, a container that is gone 404, one
that is not running 409, a request that is not an upgrade 400, a protocol we do not speak
403 (SPDY, as the kubelet answers) or 400 (WebSocket). At most `max_connections` are served
at once (503 beyond), request heads are capped at 16 KiB (431), and a client has 10 s to
send its head.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData
from wsproto.events import Request as WSRequest

from cri_shim.errors import CRIError, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from cri_shim.streaming import channels, spdy_session, websocket
from cri_shim.streaming.targets import AttachTarget, Backend, ExecTarget, PortForwardTarget, Target
from cri_shim.streaming.tokens import DEFAULT_TTL, CacheFull, RequestCache

log = logging.getLogger(__name__)

MAX_HEAD = 16 << 10
HEAD_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 256
SPDY_REMOTE_COMMAND = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
SPDY_PORT_FORWARD = ("portforward.k8s.io",)
TUNNEL_PREFIX = "SPDY/3.1+"  # port-forward tunnelled over WebSocket (client-go's tunneling dialer)


@dataclass(frozen=True)
class _Head:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, list[str]]  # lower-case names, every value in order
    raw: bytes  # everything read so far, for the WebSocket handshake

    def values(self, name: str) -> list[str]:
        """Comma-separated values of every header line called name."""
        return [v.strip() for line in self.headers.get(name, []) for v in line.split(",") if v.strip()]

    def upgrade(self) -> str:
        if not any(v.lower() == "upgrade" for v in self.values("connection")):
            return ""
        return (self.values("upgrade") or [""])[0].lower()


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


class StreamingServer:
    def __init__(self, backend: Backend, address: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None, token_ttl: float = DEFAULT_TTL,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.backend = backend
        self.address = address
        self.port = port
        self.tls = tls
        self.max_connections = max_connections
        self.cache: RequestCache[Target] = RequestCache(ttl=token_ttl)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.base_url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.address, self.port, ssl=self.tls,
                                                  limit=MAX_HEAD)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"{'https' if self.tls else 'http'}://{shown}:{port}"
        log.info("streaming server on %s", self.base_url)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    # --- URLs -------------------------------------------------------------------------------

    def url_for(self, target: Target) -> str:
        validate_target(target)
        kind = {ExecTarget: "exec", AttachTarget: "attach", PortForwardTarget: "portforward"}[type(target)]
        try:
            token = self.cache.insert(target)
        except CacheFull as e:
            raise ResourceExhausted(str(e)) from None
        return f"{self.base_url}/{kind}/{token}"

    # --- connections ------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.max_connections:
            await _refuse(writer, HTTPError(503, f"streaming server busy: {self.max_connections} "
                                                 f"sessions at once"))
            with contextlib.suppress(Exception):
                writer.write_eof()
                await asyncio.wait_for(reader.read(MAX_HEAD), 1.0)  # so closing does not reset it
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # the server stops: the connection ends with it
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as e:
            log.debug("streaming connection dropped: %s", e)
        except Exception:
            log.exception("streaming connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            head = await asyncio.wait_for(_read_head(conn, reader), HEAD_TIMEOUT)
            if head is None:
                return
            target = self._route(head)
            upgrade = head.upgrade()
            if upgrade == "websocket":
                await self._websocket(head, target, reader, writer)
            elif upgrade == "spdy/3.1":
                await self._spdy(conn, head, target, reader, writer)
            else:
                raise HTTPError(400, "this URL takes a connection upgrade to SPDY/3.1 or websocket")
        except TimeoutError:
            await _refuse(writer, HTTPError(408, "no request within 10s"))
        except h11.RemoteProtocolError as e:
            await _refuse(writer, HTTPError(e.error_status_hint, f"bad request: {e}"))
        except HTTPError as e:
            await _refuse(writer, e)

    def _route(self, head: _Head) -> Target:
        parts = head.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("exec", "attach", "portforward"):
            raise HTTPError(404, f"no such streaming endpoint: {head.path}")
        kind, token = parts
        target = self.cache.consume(token)
        expected = {"exec": ExecTarget, "attach": AttachTarget, "portforward": PortForwardTarget}[kind]
        if target is None or not isinstance(target, expected):
            raise HTTPError(404, f"{kind} token is unknown, already used or expired: ask for a new URL")
        try:
            if isinstance(target, PortForwardTarget):
                self.backend.check_pod(target.pod_id)
            else:
                self.backend.check_container(target.container_id)
        except NotFound as e:
            raise HTTPError(404, e.message) from None
        except FailedPrecondition as e:
            raise HTTPError(409, e.message) from None
        except CRIError as e:
            raise HTTPError(500, e.message) from None
        return target

    async def _websocket(self, head: _Head, target: Target, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(head.raw)
        request = next((e for e in ws.events() if isinstance(e, WSRequest)), None)
        if request is None:
            raise HTTPError(400, "bad websocket handshake")
        offered = list(request.subprotocols)
        if isinstance(target, PortForwardTarget):
            ports = target.ports or _query_ports(head.query)
            tunnel = [p for p in offered if p == TUNNEL_PREFIX + SPDY_PORT_FORWARD[0]]
            if tunnel:
                writer.write(ws.send(AcceptConnection(subprotocol=tunnel[0])))
                transport = websocket.WebSocketTransport(ws, reader, writer)
                await spdy_session.serve_port_forward(spdy_session.TunnelIO(transport), self.backend,
                                                      target.pod_id)
                return
            proto = channels.negotiate(offered, channels.PORT_FORWARD)
        else:
            proto = channels.negotiate(offered, channels.REMOTE_COMMAND)
        if proto is None:
            await _reject_ws(writer, ws, f"unable to negotiate a protocol: client offers {offered}")
            return
        writer.write(ws.send(AcceptConnection(subprotocol=proto.name or None)))
        transport = websocket.WebSocketTransport(ws, reader, writer)
        if isinstance(target, PortForwardTarget):
            if not ports:
                await transport.close(1008, "no port to forward: the request names none")
                return
            await websocket.serve_port_forward(transport, proto, self.backend, target.pod_id, ports)
        else:
            await websocket.serve_remote_command(transport, proto, self.backend, target)

    async def _spdy(self, conn: h11.Connection, head: _Head, target: Target, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        server_protocols = SPDY_PORT_FORWARD if isinstance(target, PortForwardTarget) else SPDY_REMOTE_COMMAND
        offered = head.values("x-stream-protocol-version")
        if not offered:
            raise HTTPError(400, "unable to upgrade: header X-Stream-Protocol-Version is missing")
        chosen = next((p for p in offered if p in server_protocols), None)
        if chosen is None:
            raise HTTPError(403, f"unable to upgrade: unable to negotiate protocol: client supports "
                                 f"{offered}, server accepts {list(server_protocols)}",
                            [("X-Accepted-Stream-Protocol-Versions", p) for p in server_protocols])
        writer.write(conn.send(h11.InformationalResponse(status_code=101, headers=[
            ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", chosen)])))
        io = spdy_session.SocketIO(reader, writer, conn.trailing_data[0])
        if isinstance(target, PortForwardTarget):
            await spdy_session.serve_port_forward(io, self.backend, target.pod_id)
        else:
            await spdy_session.serve_remote_command(io, chosen, self.backend, target)


async def _read_head(conn: h11.Connection, reader: asyncio.StreamReader) -> _Head | None:
    raw = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(MAX_HEAD)
            raw += data
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            if raw.find(b"\r\n\r\n") > MAX_HEAD:
                raise HTTPError(431, f"request head larger than {MAX_HEAD} bytes")
            url = urlsplit(event.target.decode("latin-1"))
            headers: dict[str, list[str]] = {}
            for name, value in event.headers:
                headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
            return _Head(event.method.decode("latin-1"), url.path, parse_qs(url.query), headers, bytes(raw))
        if isinstance(event, h11.ConnectionClosed):
            return None
        raise HTTPError(400, f"unexpected {type(event).__name__}")


def _query_ports(query: dict[str, list[str]]) -> tuple[int, ...]:
    ports = []
    for value in query.get("port", []):
        for p in value.split(","):
            if not p.isdigit() or not 0 < int(p) < 65536:
                raise HTTPError(400, f"port {p!r} in the query is not a port number")
            ports.append(int(p))
    return tuple(ports)


def validate_target(target: Target) -> None:
    if isinstance(target, PortForwardTarget):
        if not target.pod_id:
            raise InvalidArgument("missing required pod_sandbox_id")
        bad = [p for p in target.ports if not 0 < p < 65536]
        if bad:
            raise InvalidArgument(f"port {bad[0]} is not a port number (1-65535)")
        return
    if not target.container_id:
        raise InvalidArgument("missing required container_id")
    if target.tty and target.stderr:
        raise InvalidArgument("tty and stderr cannot both be true")
    if not (target.stdin or target.stdout or target.stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")
    if isinstance(target, ExecTarget) and not target.cmd:
        raise InvalidArgument("cmd must not be empty")


async def _refuse(writer: asyncio.StreamWriter, error: HTTPError) -> None:
    """An HTTP error and the end of the connection (written plainly: it may answer a request
    h11 could not parse)."""
    body = (error.message + "\n").encode()
    lines = [f"HTTP/1.1 {error.status} {_REASONS.get(error.status, 'Error')}",
             "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}", "Connection: close",
             *[f"{k}: {v}" for k, v in error.headers]]
    with contextlib.suppress(ConnectionError, RuntimeError):
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()


async def _reject_ws(writer: asyncio.StreamWriter, ws: WSConnection, message: str) -> None:
    body = (message + "\n").encode()
    writer.write(ws.send(RejectConnection(status_code=400, has_body=True,
                                          headers=[(b"content-type", b"text/plain; charset=utf-8"),
                                                   (b"content-length", str(len(body)).encode())])))
    writer.write(ws.send(RejectData(data=body)))
    await writer.drain()


_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
            409: "Conflict", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}
