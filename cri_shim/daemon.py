"""The serving daemon: socket ownership, the gRPC server, signals, components.

A component is anything with `async start()` and `async stop()` (the image
service's store, the pod and container managers, the streaming server); they
start in order before the socket opens and stop in reverse after it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import ssl
import stat
import time
from pathlib import Path
from typing import Protocol

import grpc

from cri_shim import logs, sd_notify
from cri_shim.atomic_file import SHARED_FILE, private_dir, write_atomic
from cri_shim.config import Config
from cri_shim.containers.manager import ContainerManager
from cri_shim.criapi import api_pb2 as pb
from cri_shim.criapi import api_pb2_grpc
from cri_shim.errors import InvalidArgument
from cri_shim.event_bus import EventBus
from cri_shim.imaging.manager import ImageManager
from cri_shim.metrics_endpoint import MetricsEndpoint
from cri_shim.runtime_handlers import HandlerRegistry
from cri_shim.sandboxes.manager import SandboxManager
from cri_shim.server.stream_backend import ManagersBackend
from cri_shim.streaming.server import StreamingServer
from cri_shim.telemetry import Telemetry

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
        self._stopping = asyncio.Event()
        self.events = EventBus()
        self.image_manager = ImageManager(config)
        self.add_component(self.image_manager)
        self.sandboxes = SandboxManager(config, self.handlers, self._sandbox_event)
        self.containers = ContainerManager(
            config, self.handlers, self.sandboxes, self.image_manager, self._container_event
        )
        self.sandboxes.stop_containers = self.containers.stop_pod
        self.sandboxes.remove_containers = self.containers.remove_pod
        self.add_component(self.sandboxes)
        self.add_component(self.containers)
        # last to start, first to stop: sessions end before the managers they use
        self.streaming = streaming_server(config, ManagersBackend(self.containers, self.sandboxes))
        self.add_component(self.streaming)
        self.telemetry = Telemetry()
        self.handlers.observe(self.telemetry.observe_runtime)
        self.telemetry.count_states("pods",
                                    lambda: (s.status.state for s in self.sandboxes.sandboxes.values()))
        self.telemetry.count_states("containers",
                                    lambda: (c.status.state for c in self.containers.containers.values()))
        if config.metrics.address:
            self.add_component(MetricsEndpoint(self.telemetry, config.metrics.address))

    def _sandbox_event(self, pod_id: str, kind: int) -> None:
        self._publish(pod_id, kind, pod_id, with_containers=False)

    def _container_event(self, container_id: str, kind: int, pod_id: str) -> None:
        self._publish(container_id, kind, pod_id, with_containers=True)

    def _publish(self, object_id: str, kind: int, pod_id: str, with_containers: bool) -> None:
        """One event for GetContainerEvents, with the pod's status (and its containers')."""
        if not self.events.subscriber_count:
            return  # nobody listens: skip building statuses
        ev = pb.ContainerEventResponse(
            container_id=object_id, container_event_type=kind, created_at=time.time_ns()
        )
        status = self.sandboxes.pod_status_for_event(pod_id)
        if status is not None:
            ev.pod_sandbox_status.CopyFrom(status)
        if with_containers:
            for c in self.containers.pod_containers(pod_id):
                ev.containers_statuses.append(self.containers.status(c.meta.id)[0])
        self.events.publish(ev)

    def add_component(self, component: Component) -> None:
        self.components.append(component)

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        cfg = self.config
        for d in (cfg.state_dir, cfg.root_dir):
            private_dir(Path(d))  # what is below holds configuration: root only
        claim_socket(cfg.socket)
        await self.handlers.probe_features()
        for name in (h.name for h in self.handlers.missing()):
            log.warning(
                "runtime handler %r: binary %r not found; pods asking for it will fail",
                name, self.handlers.handlers[name].config.binary,
            )

        from cri_shim.server.grpc_server import GrpcServer
        from cri_shim.server.image_service import ImageService
        from cri_shim.server.interceptor import LoggingInterceptor
        from cri_shim.server.runtime_service import RuntimeService
        from cri_shim.server.services import Services

        services = Services(config=cfg, handlers=self.handlers, sandboxes=self.sandboxes,
                            containers=self.containers, images=self.image_manager, events=self.events,
                            streaming=self.streaming, telemetry=self.telemetry)
        runtime_service = RuntimeService(services)
        image_service = ImageService(services)
        started: list[Component] = []
        server: GrpcServer | grpc.aio.Server
        if cfg.grpc_server == "builtin":
            server = GrpcServer(self.telemetry.observe_rpc, MAX_MESSAGE)
            server.add_service("RuntimeService", runtime_service)
            server.add_service("ImageService", image_service)
        else:
            server = grpc.aio.server(
                interceptors=[LoggingInterceptor(self.telemetry.observe_rpc)],
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE),
                    ("grpc.max_send_message_length", MAX_MESSAGE),
                ],
            )
            api_pb2_grpc.add_RuntimeServiceServicer_to_server(runtime_service, server)
            api_pb2_grpc.add_ImageServiceServicer_to_server(image_service, server)
        try:
            for c in self.components:
                await c.start()
                started.append(c)
            self.telemetry.recovered.labels("pods").set(len(self.sandboxes.sandboxes))
            self.telemetry.recovered.labels("containers").set(len(self.containers.containers))
            if isinstance(server, GrpcServer):
                await server.start(cfg.socket)
            else:
                server.add_insecure_port(f"unix:{cfg.socket}")  # binds: only once components run
                await server.start()
            os.chmod(cfg.socket, 0o660)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            # SIGHUP: re-read the image index after an offline `cri-shim images import`.
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.image_manager.reload()))
            # SIGUSR1: debug logs on, and off again
            loop.add_signal_handler(signal.SIGUSR1, logs.toggle_debug)
            pidfile = Path(cfg.state_dir) / "cri-shim.pid"
            await asyncio.to_thread(write_atomic, pidfile, f"{os.getpid()}\n", SHARED_FILE)
            # What start-up made (modules, descriptors, the recovered pods and containers) lives
            # for the daemon's lifetime: out of the collector's sight, a full collection no
            # longer walks it (47 ms here, at any call it happened to land on).
            gc.collect()
            gc.freeze()
            log.info("cri-shim serving on %s (state %s, root %s)", cfg.socket, cfg.state_dir, cfg.root_dir)
            # systemd (Type=notify): ready once the socket answers
            sd_notify.notify(READY=1, MAINPID=os.getpid(), STATUS=f"serving on {cfg.socket}")
            await self._stopping.wait()
            log.info("shutting down")
            sd_notify.notify(STOPPING=1, STATUS="shutting down")
            await server.stop(SHUTDOWN_GRACE)
        finally:
            for c in reversed(started):
                try:
                    await c.stop()
                except Exception:  # noqa: BLE001 - keep stopping the rest
                    log.exception("stopping %s failed", type(c).__name__)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cfg.socket)
            with contextlib.suppress(FileNotFoundError):
                (Path(cfg.state_dir) / "cri-shim.pid").unlink()


def streaming_server(config: Config, backend: ManagersBackend) -> StreamingServer:
    st = config.streaming
    tls = None
    if st.tls_cert_file:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(st.tls_cert_file, st.tls_key_file)
        except (OSError, ssl.SSLError) as e:
            raise InvalidArgument(f"config: streaming TLS certificate {st.tls_cert_file!r} "
                                  f"or key {st.tls_key_file!r}: {e}") from None
    return StreamingServer(backend, st.address, st.port, tls=tls, token_ttl=st.token_ttl,
                           max_connections=st.max_connections)


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
