"""The container lifecycle: create, start, stop, remove, status, exec.

The handler's HandlerRuntime (cri_shim.runtimes) does the running: under conmon for the
"oci" handlers of today. What remains here is conmon's exit files and pid, read to learn
of exits and after a restart.

The manager holds an in-memory index (answers List and Status without I/O) backed
by the sqlite store, a per-container lock for mutating calls, and one background
task that notices exits recorded by conmon: inotify on conmon's exit directory
(`exit_watch`) wakes it, and StopContainer's waiter, as soon as an exit file appears; a slow
rescan of the directory is the backstop. Once an exit is recorded the runtime's own state of
the container is deleted in the background (as containerd's exit handler does), so
RemoveContainer is left with the bundle, the rootfs and the record.

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
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cri_shim import cgroup_paths, mounts
from cri_shim.atomic_file import PRIVATE_FILE, write_state
from cri_shim.config import Config
from cri_shim.containers import attach as attach_io
from cri_shim.containers import cdi, conmon, conmon_cgroup, exit_watch, stop_signals, views
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
from cri_shim.encoded import View
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
from cri_shim.seccomp_recorder.recordings import Recordings
from cri_shim.stats.rates import CpuRates
from cri_shim.streaming.stdio import StreamIO
from cri_shim.trash import Trash
from oci.errors import ContainerNotFound, OCIRuntimeError
from oci.spec import Process

log = logging.getLogger("cri_shim.containers")

EXIT_POLL_INTERVAL = 0.2
# With inotify: how often the exit directory is still rescanned, in case an event was missed.
EXIT_RESCAN_INTERVAL = 2.0
# A StopContainer waiting for an exit wakes at least this often to check conmon is alive.
EXIT_WAIT_BACKSTOP = 0.5

@dataclass
class Container:
    meta: ContainerMeta
    status: ContainerState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The decoded config, kept beside the bytes it came from (read-only: callers never modify it).
    _config: tuple[bytes, pb.ContainerConfig] | None = field(default=None, repr=False, compare=False)
    # The List view, kept while the metadata and the state it was built from hold (views).
    view: tuple[object, str, pb.Container, bytes] | None = field(default=None, repr=False, compare=False)
    # The Status view, its encoding, and the metadata and state they were built from (views).
    status_view: View[pb.ContainerStatus] | None = field(
        default=None, repr=False, compare=False)
    # The bundle's config.json as written (the verbose status shows it; ~6 KB).
    spec_json: str | None = field(default=None, repr=False, compare=False)
    # What of the Status view comes from the metadata alone, and the metadata it came from.
    status_template: tuple[object, pb.ContainerStatus] | None = field(default=None, repr=False,
                                                                       compare=False)
    # Set when conmon's exit file appears (exit_watch); StopContainer waits on it.
    exit_seen: asyncio.Event = field(default_factory=asyncio.Event)
    # The runtime's `delete` run once the exit is recorded (None: not started); RemoveContainer
    # awaits it and deletes again (forcibly) only if it failed.
    runtime_delete: asyncio.Task[bool] | None = None
    # The removal of conmon's cgroup, started at exit too (conmon leaves right after writing
    # the exit file); RemoveContainer awaits it.
    monitor_cleanup: asyncio.Task[None] | None = None

    @property
    def config(self) -> pb.ContainerConfig:
        """The CRI config, decoded once (List and Status ask for it on every call)."""
        cached = self._config
        if cached is None or cached[0] is not self.meta.config:
            cached = self._config = (self.meta.config, pb.ContainerConfig.FromString(self.meta.config))
        return cached[1]


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
        self.trash = Trash(Path(config.state_dir) / "trash")  # removed bundles, deleted in the background
        self.exit_dir = handlers.conmon.exit_dir
        self.socket_dir = handlers.conmon.socket_dir
        self.store = ContainerStore(Path(config.root_dir) / "containers.db")
        self.containers: IdIndex[Container] = IdIndex("container", lambda c: c.meta.pod_id)
        self._watcher: asyncio.Task[None] | None = None
        self._exit_watch = exit_watch.ExitWatch(self.exit_dir, self._on_exit_file)
        self._poll_interval = EXIT_POLL_INTERVAL
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="container-store")
        # Previous CPU sample of each container, for ContainerStats' usage_nano_cores (cri_shim.stats).
        self.cpu_rates = CpuRates()
        # Containers whose system calls are being recorded (seccomp_recorder).
        self.recordings = Recordings(config.seccomp_recorder_dir())

    # --- component lifecycle -------------------------------------------------

    async def start(self) -> None:
        for d in (self.dir, self.exit_dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
        for meta, status in await asyncio.to_thread(self.store.load):
            self.containers.add(meta.id, Container(meta, status), self._name_key(meta))
        if self._exit_watch.start():
            self._poll_interval = EXIT_RESCAN_INTERVAL
        else:
            log.warning("inotify unavailable: polling %s every %.1fs", self.exit_dir, EXIT_POLL_INTERVAL)
        await self._recover()
        self.trash.empty_soon()  # what a crash left there
        self._watcher = asyncio.create_task(self._watch_exits())

    async def stop(self) -> None:
        self.recordings.close()  # tracers detach; their containers keep running
        self._exit_watch.close()
        if self._watcher:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        self._writer.shutdown(wait=True)
        await self.trash.close()
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
        # A removal's last writes are not synced: a crash may have kept rows of its rootfs.
        await self.images.forget_containers_except({c.meta.id for c in self.containers.values()})

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
        loop = asyncio.get_running_loop()
        if c.runtime_delete is None:
            c.runtime_delete = loop.create_task(self._runtime_delete(c))
        if c.monitor_cleanup is None:
            c.monitor_cleanup = loop.create_task(conmon_cgroup.remove(Path(c.meta.bundle)))

    async def _runtime_delete(self, c: Container) -> bool:
        """Delete the runtime's state of an exited container and unmount its rootfs; its record,
        bundle and writable layer stay. True if the runtime no longer knows the container."""
        try:
            await self.handlers.runtime(c.meta.handler).delete(c.meta.id)
        except ContainerNotFound:
            pass
        except Exception as e:  # noqa: BLE001 - RemoveContainer deletes again, forcibly
            log.debug("container %s: runtime delete after exit: %s", c.meta.id, e)
            return False
        if c.meta.rootfs:
            # Unmounted now, as CRI-O does at exit; the writable layer stays until RemoveContainer.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(mounts.unmount, Path(c.meta.rootfs))
        return True

    def _on_exit_file(self, cid: str | None) -> None:
        """An exit file appeared (exit_watch); None: the event queue overflowed."""
        if cid is None:
            self._scan_exits()
            return
        c = self.containers.exact(cid)
        if c is None:
            return
        c.exit_seen.set()
        if c.status.state == RUNNING and not c.lock.locked():
            self._check_exit(c)

    def _scan_exits(self) -> None:
        # One directory listing, not one stat per container.
        for cid in {e.name for e in os.scandir(self.exit_dir)}:
            c = self.containers.exact(cid)
            if c is not None and c.status.state == RUNNING:
                c.exit_seen.set()
                if not c.lock.locked():
                    self._check_exit(c)

    async def _watch_exits(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                self._scan_exits()
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
        record_to = self.recordings.requested(cfg, sandbox_config or pod.config)
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
        stop_signal = (stop_signals.from_cri(cfg.stop_signal) or str(image.config.get("StopSignal") or "")
                       or stop_signals.DEFAULT)
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
                await self._create_in_runtime(c, cfg, pod, image, sandbox_config, record_to)
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
                                 image: ResolvedImage, sandbox_config: pb.PodSandboxConfig | None,
                                 record_to: str | None = None) -> None:
        bundle = Path(c.meta.bundle)
        bundle.mkdir(parents=True, exist_ok=False, mode=0o700)
        own = cfg.linux.security_context.namespace_options
        if own.HasField("userns_options") and own.userns_options.mode != (
                pb.POD if pod.context.userns is not None else pb.NODE):
            raise InvalidArgument(f"container {cfg.metadata.name!r}: its user namespace options differ "
                                  f"from those of pod {c.meta.pod_id}")
        if c.meta.log_path:
            Path(c.meta.log_path).parent.mkdir(parents=True, exist_ok=True)
        # The runtime's monitor starts (and joins its cgroup) while the rootfs and the spec are made.
        pending = await self.handlers.runtime(c.meta.handler).begin_create(ContainerCreate(
            container_id=c.meta.id, name=c.meta.name, bundle=bundle, log_path=c.meta.log_path,
            pod=pod.context, stdin=cfg.stdin, stdin_once=cfg.stdin_once, terminal=cfg.tty,
        ))
        try:
            await self._make_bundle(c, cfg, pod, image, sandbox_config, record_to)
        except BaseException:
            await pending.cancel()
            raise
        pid = await pending.finish()
        c.status.state = CREATED
        c.status.pid = pid
        written = self._writer.submit(self.store.put, c.meta, dataclasses.replace(c.status))
        views.status_template(c)  # while the record is written
        await asyncio.wrap_future(written)

    async def _make_bundle(self, c: Container, cfg: pb.ContainerConfig, pod: PodInfo,
                           image: ResolvedImage, sandbox_config: pb.PodSandboxConfig | None,
                           record_to: str | None) -> None:
        """The rootfs, the image volumes and the spec in the bundle's config.json."""
        bundle = Path(c.meta.bundle)
        rootfs = await self.images.prepare_rootfs(c.meta.id, image.id, pod.context.userns)
        if any(m.image.image for m in cfg.mounts):
            cfg = await self._mount_image_volumes(c.meta.id, cfg)
        rro = self.handlers.get(c.meta.handler).recursive_read_only_mounts
        spec = build_spec(cfg, c.meta.id, pod.context, ImageContext(c.meta.image_ref, image.config),
                          rootfs, sandbox_config or pod.config, recursive_read_only=rro,
                          cgroup_driver=self.config.cgroup_driver,
                          cdi_registry=cdi.load(self.config.cdi_spec_dirs) if cfg.CDI_devices else None)
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
            rootfs=str(rootfs),
        )
        c.spec_json = spec.to_json(indent=1)
        await asyncio.to_thread(write_state, bundle / "config.json", c.spec_json, PRIVATE_FILE)
        if record_to is not None:
            nnp = bool(spec.process and spec.process.no_new_privileges)
            binary = self.handlers.get(c.meta.handler).path or ""
            await asyncio.to_thread(self.recordings.prepare, bundle, record_to, binary, nnp)

    async def _destroy(self, c: Container) -> None:
        """Remove everything a container owns, tolerating parts that never existed."""
        meta = c.meta
        deleted = False
        if c.runtime_delete is not None:
            deleted = await asyncio.shield(c.runtime_delete)
        try:
            rt = self.handlers.runtime(meta.handler)
            if not deleted:
                with contextlib.suppress(ContainerNotFound):
                    await rt.delete(meta.id, force=True)
        except (OCIRuntimeError, NotFound, FailedPrecondition) as e:
            log.warning("container %s: runtime delete: %s", meta.id, e)
        await self.recordings.finish(meta.id)
        # The rootfs and the bundle are independent: both at once; the record goes last.
        await asyncio.gather(self._release_rootfs(meta.id), self._remove_bundle(c))
        await asyncio.wrap_future(self._writer.submit(self.store.delete, meta.id))
        self.containers.remove(meta.id, self._name_key(meta))
        self.cpu_rates.forget(meta.id)

    async def _mount_image_volumes(self, container_id: str, cfg: pb.ContainerConfig) -> pb.ContainerConfig:
        """The config with each image volume's host path: the image, mounted (shared, read-only)."""
        resolved = pb.ContainerConfig()
        resolved.CopyFrom(cfg)
        for i, m in enumerate(resolved.mounts):
            if m.image.image:
                path = await self.images.mount_volume(container_id, i, m.image.image, m.image_sub_path)
                m.host_path = str(path)
        return resolved

    async def _release_rootfs(self, container_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.images.release_rootfs(container_id)
        with contextlib.suppress(Exception):
            await self.images.release_volumes(container_id)

    async def _remove_bundle(self, c: Container) -> None:
        meta = c.meta
        done = False
        if c.monitor_cleanup is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(c.monitor_cleanup)
                done = True
        if not done:
            await conmon_cgroup.remove(Path(meta.bundle))  # before the bundle: its record lives there
        await asyncio.to_thread(self._discard_bundle, meta)
        self.trash.empty_soon()

    def _discard_bundle(self, meta: ContainerMeta) -> None:
        """Blocking: the bundle and conmon's exit file moved into the trash. A rename, not an
        unlink, for the exit file too: freeing its block is a device command where the file
        system discards freed blocks at once (0.7 ms on the test machine's disk)."""
        self.trash.remove(Path(meta.bundle))
        exit_file = self.exit_dir / meta.id
        if not self.trash.discard(exit_file):
            with contextlib.suppress(FileNotFoundError):
                exit_file.unlink()

    async def start_container(self, container_id: str) -> None:
        c = self.get(container_id)
        async with c.lock:
            if c.status.state != CREATED:
                raise FailedPrecondition(
                    f"container {c.meta.id} is {c.status.state}, only a created container can start"
                )
            # Taken before start: a process that exits at once must not finish before it started.
            started = now_ns()
            # A recorded container is traced before it runs its first instruction.
            await self.recordings.attach(c.meta.id, Path(c.meta.bundle), c.status.pid)
            try:
                await self.handlers.runtime(c.meta.handler).start(c.meta.id)
            except OCIRuntimeError as e:
                self._mark_exited(c, 128, "StartError", str(e))
                raise
            c.status.state = RUNNING
            c.status.started_at = started
            # On disk before the reply: a crash right after must not bring it back as CREATED.
            written = self._persist(c)
            views.status_body(c)  # the kubelet asks next; built while the record is written
            await asyncio.wrap_future(written)
        self.publish(c.meta.id, pb.CONTAINER_STARTED_EVENT, c.meta.pod_id)

    async def stop_container(self, container_id: str, timeout: int) -> None:
        c = self.find(container_id)
        if c is None:
            return  # idempotent: stopping a missing container succeeds
        async with c.lock:
            await self._stop_locked(c, timeout)
        if c.runtime_delete is not None:
            # As containerd: the reply comes once the runtime has let go of the container too.
            await asyncio.shield(c.runtime_delete)
        if c.status.state == EXITED:
            await self.recordings.finish(c.meta.id)  # its profile is on disk when Stop returns

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
                sig = stop_signals.number(c.meta.stop_signal)
                if not _signal_init(c, sig):
                    with contextlib.suppress(ContainerNotFound, OCIRuntimeError):
                        await rt.kill(c.meta.id, sig)
                if await self._wait_exit(c, timeout):
                    return
            with contextlib.suppress(ContainerNotFound, OCIRuntimeError):
                await rt.kill(c.meta.id, signal.SIGKILL, all=True)
        if not await self._wait_exit(c, 10):
            if c.status.state != EXITED:
                self._mark_exited(c, 137, "Error", "container did not report an exit after SIGKILL")

    async def _wait_exit(self, c: Container, timeout: float) -> bool:
        """Wait for conmon's exit file: woken by its inotify event, with a slow backstop that
        also notices a monitor that died without writing one."""
        deadline = time.monotonic() + timeout
        while True:
            c.exit_seen.clear()
            if self._check_exit(c) or c.status.state == EXITED:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(c.exit_seen.wait(), min(left, EXIT_WAIT_BACKSTOP))
                continue
            except TimeoutError:
                pass
            if not conmon.conmon_alive(Path(c.meta.bundle)):
                # conmon writes the exit file before exiting; look once more.
                await asyncio.sleep(0.05)
                if self._check_exit(c):
                    return True
                if c.status.state == CREATED:
                    self._mark_exited(c, 137, "Error", "killed before start")
                    return True

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
        """The pod's containers, oldest first (an index: PodSandboxStatus asks for every pod)."""
        return self.containers.members(pod_id)

    async def stop_pod(self, pod_id: str, timeout: int = 0) -> None:
        await asyncio.gather(*(self.stop_container(c.meta.id, timeout) for c in self.pod_containers(pod_id)))

    async def remove_pod(self, pod_id: str) -> None:
        await asyncio.gather(*(self.remove_container(c.meta.id) for c in self.pod_containers(pod_id)))

    # --- queries ------------------------------------------------------------------

    def list(self, f: pb.ContainerFilter | None) -> list[pb.Container]:
        return [views.container_pb(c) for c in self.containers.values() if views.matches(c, f)]

    def list_encoded(self, f: pb.ContainerFilter | None) -> bytes:
        """ListContainersResponse's encoding (see cri_shim.encoded)."""
        return b"".join([views.container_entry(c) for c in self.containers.values() if views.matches(c, f)])

    def status(self, container_id: str, verbose: bool = False) -> tuple[pb.ContainerStatus, dict[str, str]]:
        c = self.get(container_id)
        self._report_exits((c,))
        return views.container_status(c, verbose)

    def status_body(self, container_id: str) -> bytes:
        """The (not verbose) status, encoded (cri_shim.encoded)."""
        c = self.get(container_id)
        self._report_exits((c,))
        return views.status_body(c)

    def pod_status_bodies(self, pod_id: str) -> list[bytes]:
        """The encoded status of each of the pod's containers (PodSandboxStatus)."""
        cs = self.pod_containers(pod_id)
        if not cs:
            return []
        self._report_exits(cs)
        return [views.status_body(c) for c in cs]

    def _report_exits(self, cs: Iterable[Container]) -> None:
        """An exit recorded before this call is reported by it, without reading each exit file
        on every call: the exit events queued so far are handled first."""
        if self._exit_watch.watching:
            self._exit_watch.catch_up()
            for c in cs:
                if c.exit_seen.is_set():
                    self._check_exit(c)
        else:
            for c in cs:
                self._check_exit(c)

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


def _signal_init(c: Container, sig: int) -> bool:
    """Signal the container's init process directly, as `runc kill` without --all does, but
    without starting a runtime process. Through a pidfd, and only once that pidfd is known to
    name a process in the container's own cgroup (so never a process that reused the pid of an
    exited init); False when that cannot be shown, and the caller asks the runtime instead."""
    pid = c.status.pid
    if pid <= 0 or not c.meta.cgroups_path:
        return False
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            suffix = ":" + c.meta.cgroups_path.rstrip("/")
            if not any(line.rstrip("\n").endswith(suffix) for line in f):
                return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)



