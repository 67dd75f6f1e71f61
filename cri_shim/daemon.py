"""The serving daemon: socket ownership, the gRPC server, signals, components.

A component is anything with `async start()` and `async stop()` (the image
service's store, the pod and container managers); they start in order before
the socket opens and stop in reverse after it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import stat
from pathlib import Path
from typing import Protocol

import grpc

from cri_shim.config import Config
from cri_shim.criapi import api_pb2_grpc
from cri_shim.runtime_handlers import HandlerRegistry

log = logging.getLogger("cri_shim.daemon")

# Time allowed for in-flight calls when SIGTERM arrives; the kubelet retries the rest.
SHUTDOWN_GRACE = 1.0
MAX_MESSAGE = 16 * 1024 * 1024


class SocketInUse(Exception):
    """Another live process is serving on our socket path."""


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.handlers = HandlerRegistry(config)
        self.components: list[Component] = []
        self.pod_cidr = ""
        self._stopping = asyncio.Event()

    def add_component(self, component: Component) -> None:
        self.components.append(component)

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        cfg = self.config
        for d in (cfg.state_dir, cfg.root_dir):
            Path(d).mkdir(parents=True, exist_ok=True, mode=0o711)
        claim_socket(cfg.socket)
        await self.handlers.probe_features()
        for name in (h.name for h in self.handlers.missing()):
            log.warning(
                "runtime handler %r: binary %r not found; pods asking for it will fail",
                name, self.handlers.handlers[name].config.binary,
            )

        from cri_shim.server.image_service import ImageService
        from cri_shim.server.interceptor import LoggingInterceptor
        from cri_shim.server.runtime_service import RuntimeService

        runtime_service = RuntimeService(self)
        image_service = ImageService(self)
        started: list[Component] = []
        server = grpc.aio.server(
            interceptors=[LoggingInterceptor()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ],
        )
        try:
            for c in self.components:
                await c.start()
                started.append(c)
            api_pb2_grpc.add_RuntimeServiceServicer_to_server(runtime_service, server)
            api_pb2_grpc.add_ImageServiceServicer_to_server(image_service, server)
            server.add_insecure_port(f"unix:{cfg.socket}")
            await server.start()
            os.chmod(cfg.socket, 0o660)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            log.info("cri-shim serving on %s (state %s, root %s)", cfg.socket, cfg.state_dir, cfg.root_dir)
            await self._stopping.wait()
            log.info("shutting down")
            await server.stop(SHUTDOWN_GRACE)
        finally:
            for c in reversed(started):
                try:
                    await c.stop()
                except Exception:  # noqa: BLE001 - keep stopping the rest
                    log.exception("stopping %s failed", type(c).__name__)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cfg.socket)


def claim_socket(path: str) -> None:
    """Make `path` free for our socket: remove a stale one, refuse a live one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    try:
        st = p.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            log.info("removing stale socket %s", path)
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            return
        raise SocketInUse(f"cannot probe socket {path}: {e}") from e
    finally:
        probe.close()
    raise SocketInUse(f"another instance is already serving on {path}")
