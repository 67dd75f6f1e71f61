"""The container lifecycle: create, start, stop, remove, status, exec.

The handler's HandlerRuntime (cri_shim.runtimes) does the running: under conmon for the
"oci" handlers of today. What remains here is conmon's exit files and pid, read to learn
of exits and after a restart.

The manager holds an in-memory index (answers List and Status without I/O) backed
by the sqlite store, a per-container lock for mutating calls, and one background
task that notices exits recorded by conmon.

It is somewhat over 400 lines on purpose: it is the one state machine of a container (create,
start, stop, remove, exits, recovery, exec, update), kept in one place so every transition and
its lock can be read together. The CRI views (`views`), stats (cri_shim.stats), the id index
(cri_shim.id_lookup) and the port types (cri_shim.ports) live elsewhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cri_shim import cgroup_paths
from cri_shim.atomic_file import PRIVATE_FILE, write_atomic
from cri_shim.config import Config
from cri_shim.containers import attach as attach_io
from cri_shim.containers import conmon, conmon_cgroup, views
from cri_shim.containers.spec_gen import ImageContext, build_spec
from cri_shim.containers.store import (
    CREATED,
    CREATING,
    EXITED,
    RUNNING,
    ContainerMeta,
    ContainerState,
    ContainerStore,
)
from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from cri_shim.id_lookup import IdIndex
from cri_shim.ports import ImageProvider, PodInfo, PodProvider, ResolvedImage
from cri_shim.runtime_handlers import HandlerRegistry
from cri_shim.runtimes.handler_runtime import ContainerCreate
from cri_shim.stats.rates import CpuRates
from cri_shim.streaming.stdio import StreamIO
from oci.errors import ContainerNotFound, OCIRuntimeError
from oci.spec import Process

log = logging.getLogger("cri_shim.containers")

EXIT_POLL_INTERVAL = 0.2

@dataclass
class Container:
    meta: ContainerMeta
    status: ContainerState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def config(self) -> pb.ContainerConfig:
        return pb.ContainerConfig.FromString(self.meta.config)


def new_id() -> str:
    return secrets.token_hex(32)


def now_ns() -> int:
    return time.time_ns()


class ContainerManager:
    def __init__(
        self,
        config: Config,
        handlers: HandlerRegistry,
        pods: PodProvider,
        images: ImageProvider,
        publish: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.config = config
        self.handlers = handlers
        self.pods = pods
        self.images = images
        # publish(container_id, pb.ContainerEventType, pod_id)
        self.publish = publish or (lambda cid, kind, pod: None)
        self.dir = Path(config.state_dir) / "containers"
        self.exit_dir = handlers.conmon.exit_dir
        self.socket_dir = handlers.conmon.socket_dir
        self.store = ContainerStore(Path(config.root_dir) / "containers.db")
        self.containers: IdIndex[Container] = IdIndex("container")
        self._watcher: asyncio.Task[None] | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="container-store")
        # Previous CPU sample of each container, for ContainerStats' usage_nano_cores (cri_shim.stats).
        self.cpu_rates = CpuRates()

    # --- component lifecycle -------------------------------------------------

    async def start(self) -> None:
        for d in (self.dir, self.exit_dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
        for meta, status in await asyncio.to_thread(self.store.load):
            self.containers.add(meta.id, Container(meta, status), self._name_key(meta))
        await self._recover()
        self._watcher = asyncio.create_task(self._watch_exits())

    async def stop(self) -> None:
        if self._watcher:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        self._writer.shutdown(wait=True)
        self.store.close()

    async def _recover(self) -> None:
        """Reconcile records with reality after a restart (or crash)."""
        for c in self.containers.values():
            if c.status.state == CREATING:
                log.info("container %s: cleaning up a half-created container", c.meta.id)
                await self._destroy(c)
                continue
            if c.status.state in (CREATED, RUNNING):
                self._check_exit(c)
                if c.status.state != EXITED and not conmon.conmon_alive(Path(c.meta.bundle)):
                    # The monitor died with the container and left no exit code.
                    self._mark_exited(c, 255, "Error", "container monitor (conmon) is gone")

    # --- helpers --------------------------------------------------------------

    @staticmethod
    def _name_key(meta: ContainerMeta) -> str:
        return f"{meta.pod_id}/{meta.name}/{meta.attempt}"

    def get(self, container_id: str) -> Container:
        return self.containers.get(container_id)

    def find(self, container_id: str) -> Container | None:
        return self.containers.find(container_id)

    def _persist(self, c: Container) -> concurrent.futures.Future[None]:
        """Write the status off the event loop; one writer thread keeps writes in order."""
        return self._writer.submit(self.store.put_status, c.meta.id, dataclasses.replace(c.status))

    def _check_exit(self, c: Container) -> bool:
        if c.status.state not in (CREATED, RUNNING):
            return False
        got = conmon.read_exit_code(self.exit_dir, c.meta.id)
        if got is None:
            return False
        code, when = got
        persist = Path(c.meta.bundle) / "persist"
        if conmon.oom_killed(persist):
            reason = "OOMKilled"
        elif code == 0:
            reason = "Completed"
        else:
            reason = "Error"
        self._mark_exited(c, code, reason, "", int(when * 1e9))
        return True

    def _mark_exited(self, c: Container, code: int, reason: str, message: str,
                     when: int | None = None) -> None:
        c.status.state = EXITED
        c.status.exit_code = code
        c.status.finished_at = max(when or now_ns(), c.status.started_at)
        c.status.reason = reason
        c.status.message = message
        self._persist(c)
        self.publish(c.meta.id, pb.CONTAINER_STOPPED_EVENT, c.meta.pod_id)

    async def _watch_exits(self) -> None:
        while True:
            await asyncio.sleep(EXIT_POLL_INTERVAL)
            try:
                # One directory listing per tick, not one stat per container.
                exited = {e.name for e in os.scandir(self.exit_dir)}
                for cid in exited:
                    c = self.containers.exact(cid)
                    if c is not None and c.status.state == RUNNING and not c.lock.locked():
                        self._check_exit(c)
            except Exception:  # noqa: BLE001 - the watcher must survive one bad record
                log.exception("exit watcher")

    # --- CRI calls ----------------------------------------------------------------

    async def create(self, pod_id: str, cfg: pb.ContainerConfig,
                     sandbox_config: pb.PodSandboxConfig | None = None) -> str:
        if not cfg.HasField("metadata") or not cfg.metadata.name:
            raise InvalidArgument("container config has no metadata.name")
        if not cfg.image.image:
            raise InvalidArgument(f"container {cfg.metadata.name!r}: no image given")
        if not pod_id:
            raise InvalidArgument("pod_sandbox_id is empty")
        pod = self.pods.container_pod(pod_id)
        if not pod.ready:
            raise FailedPrecondition(f"pod sandbox {pod_id} is not ready")
        pod_id = pod.context.id
        key = f"{pod_id}/{cfg.metadata.name}/{cfg.metadata.attempt}"
        self._check_name_free(key, cfg.metadata, pod_id)
        image = await self.images.resolve(cfg.image.image)
        if cfg.log_path and not pod.log_directory:
            raise InvalidArgument("log_path given but the pod has no log_directory")
        log_path = os.path.join(pod.log_directory, cfg.log_path) if cfg.log_path else ""
        # Again after the await: a concurrent create of the same name may have taken it.
        self._check_name_free(key, cfg.metadata, pod_id)
        cid = new_id()
        bundle = self.dir / cid
        stop_signal = str(image.config.get("StopSignal") or "SIGTERM")
        meta = ContainerMeta(
            id=cid, pod_id=pod_id, name=cfg.metadata.name, attempt=cfg.metadata.attempt,
            config=cfg.SerializeToString(), image_ref=cfg.image.image, image_id=image.id,
            image_repo_ref=image.repo_ref, handler=pod.handler, bundle=str(bundle),
            log_path=log_path, created_at=now_ns(), stop_signal=stop_signal,
        )
        c = Container(meta, ContainerState())
        # Record first (crash safety), reserve the name, then build things.
        await asyncio.to_thread(self.store.put, meta, c.status)
        self.containers.add(cid, c, key)
        async with c.lock:
            try:
                await self._create_in_runtime(c, cfg, pod, image, sandbox_config)
            except BaseException:
                await self._destroy(c)
                raise
        self.publish(cid, pb.CONTAINER_CREATED_EVENT, pod_id)
        return cid

    def _check_name_free(self, key: str, md: pb.ContainerMetadata, pod_id: str) -> None:
        owner = self.containers.name_owner(key)
        if owner is not None:
            raise AlreadyExists(
                f"container name {md.name!r} (attempt {md.attempt}) in pod "
                f"{pod_id} is reserved by container {owner}"
            )

    async def _create_in_runtime(self, c: Container, cfg: pb.ContainerConfig, pod: PodInfo,
                                 image: ResolvedImage, sandbox_config: pb.PodSandboxConfig | None) -> None:
        bundle = Path(c.meta.bundle)
        bundle.mkdir(parents=True, exist_ok=False, mode=0o700)
        rootfs = await self.images.prepare_rootfs(c.meta.id, image.id)
        rro = self.handlers.get(c.meta.handler).recursive_read_only_mounts
        spec = build_spec(cfg, c.meta.id, pod.context, ImageContext(c.meta.image_ref, image.config),
                          rootfs, sandbox_config or pod.config, recursive_read_only=rro,
                          cgroup_driver=self.config.cgroup_driver)
        ns = cfg.linux.security_context.namespace_options
        if ns.pid == pb.TARGET:
            target = self.get(ns.target_id)
            if target.status.state != RUNNING or not target.status.pid:
                raise FailedPrecondition(f"pid namespace target container {ns.target_id} is not running")
            assert spec.linux is not None
            for n in spec.linux.namespaces or []:
                if n.type == "pid":
                    n.path = f"/proc/{target.status.pid}/ns/pid"
        # Recorded as a cgroupfs path, which is what stats read (not systemd's slice:prefix:name).
        cgroups_path = spec.linux.cgroups_path or "" if spec.linux else ""
        user = spec.process.user if spec.process is not None else None
        # The metadata is frozen: what the spec decided replaces the record made before it, whole.
        c.meta = dataclasses.replace(
            c.meta, cgroups_path=cgroup_paths.container_cgroup(self.config.cgroup_driver, cgroups_path),
            uid=user.uid if user else c.meta.uid, gid=user.gid if user else c.meta.gid,
            supplemental_groups=list(user.additional_gids or []) if user else c.meta.supplemental_groups,
        )
        await asyncio.to_thread(write_atomic, bundle / "config.json", spec.to_json(indent=1), PRIVATE_FILE)
        if c.meta.log_path:
            Path(c.meta.log_path).parent.mkdir(parents=True, exist_ok=True)
        pid = await self.handlers.runtime(c.meta.handler).create(ContainerCreate(
            container_id=c.meta.id, name=c.meta.name, bundle=bundle, log_path=c.meta.log_path,
            pod=pod.context, stdin=cfg.stdin, stdin_once=cfg.stdin_once, terminal=cfg.tty,
        ))
        c.status.state = CREATED
        c.status.pid = pid
        await asyncio.wrap_future(self._writer.submit(self.store.put, c.meta, dataclasses.replace(c.status)))

    async def _destroy(self, c: Container) -> None:
        """Remove everything a container owns, tolerating parts that never existed."""
        meta = c.meta
        try:
            rt = self.handlers.runtime(meta.handler)
            with contextlib.suppress(ContainerNotFound):
                await rt.delete(meta.id, force=True)
        except (OCIRuntimeError, NotFound, FailedPrecondition) as e:
            log.warning("container %s: runtime delete: %s", meta.id, e)
        with contextlib.suppress(Exception):
            await self.images.release_rootfs(meta.id)
        await conmon_cgroup.remove(Path(meta.bundle))
        await asyncio.to_thread(shutil.rmtree, meta.bundle, True)
        with contextlib.suppress(FileNotFoundError):
            (self.exit_dir / meta.id).unlink()
        await asyncio.wrap_future(self._writer.submit(self.store.delete, meta.id))
        self.containers.remove(meta.id, self._name_key(meta))
        self.cpu_rates.forget(meta.id)

    async def start_container(self, container_id: str) -> None:
        c = self.get(container_id)
        async with c.lock:
            if c.status.state != CREATED:
                raise FailedPrecondition(
                    f"container {c.meta.id} is {c.status.state}, only a created container can start"
                )
            # Taken before start: a process that exits at once must not finish before it started.
            started = now_ns()
            try:
                await self.handlers.runtime(c.meta.handler).start(c.meta.id)
            except OCIRuntimeError as e:
                self._mark_exited(c, 128, "StartError", str(e))
                raise
            c.status.state = RUNNING
            c.status.started_at = started
            # On disk before the reply: a crash right after must not bring it back as CREATED.
            await asyncio.wrap_future(self._persist(c))
        self.publish(c.meta.id, pb.CONTAINER_STARTED_EVENT, c.meta.pod_id)

    async def stop_container(self, container_id: str, timeout: int) -> None:
        c = self.find(container_id)
        if c is None:
            return  # idempotent: stopping a missing container succeeds
        async with c.lock:
            await self._stop_locked(c, timeout)

    async def _stop_locked(self, c: Container, timeout: int) -> None:
        self._check_exit(c)
        if c.status.state == EXITED:
            return
        if c.status.state == CREATING:
            return
        rt = self.handlers.runtime(c.meta.handler)
        if c.status.state == CREATED:
            # Never started: nothing to signal gracefully.
            with contextlib.suppress(OCIRuntimeError):
                await rt.kill(c.meta.id, signal.SIGKILL)
        else:
            if timeout > 0:
                with contextlib.suppress(ContainerNotFound, OCIRuntimeError):
                    await rt.kill(c.meta.id, _signal_number(c.meta.stop_signal))
                if await self._wait_exit(c, timeout):
                    return
            with contextlib.suppress(ContainerNotFound, OCIRuntimeError):
                await rt.kill(c.meta.id, signal.SIGKILL, all=True)
        if not await self._wait_exit(c, 10):
            if c.status.state != EXITED:
                self._mark_exited(c, 137, "Error", "container did not report an exit after SIGKILL")

    async def _wait_exit(self, c: Container, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._check_exit(c) or c.status.state == EXITED:
                return True
            if not conmon.conmon_alive(Path(c.meta.bundle)):
                # conmon writes the exit file before exiting; look once more.
                await asyncio.sleep(0.05)
                if self._check_exit(c):
                    return True
                if c.status.state == CREATED:
                    self._mark_exited(c, 137, "Error", "killed before start")
                    return True
            await asyncio.sleep(0.05)
        return False

    async def remove_container(self, container_id: str) -> None:
        c = self.find(container_id)
        if c is None:
            return
        async with c.lock:
            if self.containers.exact(c.meta.id) is not c:
                return  # a concurrent RemoveContainer got here first
            if c.status.state in (CREATED, RUNNING):
                # CRI: removing a running container removes it forcibly.
                await self._stop_locked(c, 0)
            await self._destroy(c)
        self.publish(c.meta.id, pb.CONTAINER_DELETED_EVENT, c.meta.pod_id)

    def pod_containers(self, pod_id: str) -> list[Container]:
        return [c for c in self.containers.values() if c.meta.pod_id == pod_id]

    async def stop_pod(self, pod_id: str, timeout: int = 0) -> None:
        await asyncio.gather(*(self.stop_container(c.meta.id, timeout) for c in self.pod_containers(pod_id)))

    async def remove_pod(self, pod_id: str) -> None:
        await asyncio.gather(*(self.remove_container(c.meta.id) for c in self.pod_containers(pod_id)))

    # --- queries ------------------------------------------------------------------

    def list(self, f: pb.ContainerFilter | None) -> list[pb.Container]:
        return [views.container_pb(c) for c in self.containers.values() if views.matches(c, f)]

    def status(self, container_id: str, verbose: bool = False) -> tuple[pb.ContainerStatus, dict[str, str]]:
        c = self.get(container_id)
        self._check_exit(c)
        return views.container_status(c, verbose)

    # --- exec and resources -------------------------------------------------------------

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: int) -> pb.ExecSyncResponse:
        c = self.get(container_id)
        self._check_exit(c)
        if c.status.state != RUNNING:
            raise FailedPrecondition(f"container {c.meta.id} is not running ({c.status.state})")
        spec = json.loads((Path(c.meta.bundle) / "config.json").read_text())
        process = dict(spec["process"], args=cmd, terminal=False)
        process.pop("consoleSize", None)
        rt = self.handlers.runtime(c.meta.handler)
        result = await rt.exec_sync(c.meta.id, Path(c.meta.bundle), Process.from_dict(process), timeout)
        return pb.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    async def exec_stream(self, container_id: str, cmd: list[str], tty: bool, stdin: bool,
                          io: StreamIO) -> int:
        """Exec with the client's streams (CRI Exec, once the streaming server has them); return
        the exit code. NotFound / FailedPrecondition (not running) name the container."""
        c = self.get(container_id)
        self._check_exit(c)
        if c.status.state != RUNNING:
            raise FailedPrecondition(f"container {c.meta.id} is not running ({c.status.state})")
        if not cmd:
            raise InvalidArgument(f"exec in container {c.meta.id}: cmd must not be empty")
        spec = json.loads((Path(c.meta.bundle) / "config.json").read_text())
        process = dict(spec["process"], args=cmd, terminal=tty)
        process.pop("consoleSize", None)
        if not stdin:
            io = dataclasses.replace(io, stdin=None)
        rt = self.handlers.runtime(c.meta.handler)
        return await rt.exec_stream(c.meta.id, Path(c.meta.bundle), Process.from_dict(process), io)

    async def attach(self, container_id: str, stdin: bool, tty: bool, io: StreamIO) -> None:
        """Attach the client's streams to the container's (CRI Attach) through conmon, until
        the container exits or the client goes away. The client's stdin reaches a container
        created with stdin only (else the attach is output-only, as containerd's)."""
        c = self.get(container_id)
        self._check_exit(c)
        if c.status.state != RUNNING:
            raise FailedPrecondition(
                f"container {c.meta.id} is not running ({c.status.state}); cannot attach")
        cfg = c.config
        if not (stdin and cfg.stdin):
            io = dataclasses.replace(io, stdin=None)
        io = dataclasses.replace(io, tty=tty or cfg.tty)
        try:
            sock = await attach_io.connect(self.socket_dir, c.meta.id)
        except OSError as e:
            raise FailedPrecondition(
                f"container {c.meta.id}: cannot reach its monitor's attach socket: {e}") from None
        await attach_io.run(sock, Path(c.meta.bundle), io, stdin_once=cfg.stdin_once)

    async def update_resources(self, container_id: str, r: pb.LinuxContainerResources) -> None:
        c = self.get(container_id)
        async with c.lock:
            if c.status.state not in (CREATED, RUNNING):
                raise FailedPrecondition(f"container {c.meta.id} is {c.status.state}; cannot update it")
            from oci.builder import SpecBuilder
            from oci.spec import Spec

            b = SpecBuilder(Spec(oci_version="1.1.0"))
            from cri_shim.containers.spec_gen import apply_resources

            apply_resources(b, r)
            resources = b.spec.linux.resources if b.spec.linux else None
            if resources is not None:
                await self.handlers.runtime(c.meta.handler).update(c.meta.id, resources)
            c.status.resources = r.SerializeToString()
            self._persist(c)

    async def reopen_log(self, container_id: str) -> None:
        """Have the monitor reopen the log file; returns once the file exists again."""
        c = self.get(container_id)
        if c.status.state != RUNNING:
            raise FailedPrecondition(f"container {c.meta.id} is not running; its log cannot be reopened")
        rt = self.handlers.runtime(c.meta.handler)
        await rt.reopen_log(c.meta.id, Path(c.meta.bundle), c.meta.log_path)


def _signal_number(name: str) -> int:
    name = name.strip().upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        return int(signal.SIGTERM)

