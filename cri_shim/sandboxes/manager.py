"""Pod sandbox lifecycle: RunPodSandbox, Stop, Remove, Status, List, recovery.

Order of RunPodSandbox, chosen so that a crash at any point is undone by recovery:
record (state creating) -> pod dir and files -> pinned namespaces -> sysctls ->
/dev/shm -> infra cgroup -> the infra process and CNI ADD, side by side -> record (state ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import posixpath
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cri_shim import cgroup_paths, cgroupfs, mounts
from cri_shim.atomic_file import PRIVATE_FILE, SHARED_FILE, write_state
from cri_shim.config import Config
from cri_shim.criapi import api_pb2 as pb
from cri_shim.encoded import View
from cri_shim.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument
from cri_shim.id_lookup import IdIndex
from cri_shim.network.cni import CNIError, CNINetwork, PodNetworkRequest, pod_ips
from cri_shim.network.cni_config import NoNetworkConfig, load_default_network
from cri_shim.ports import PodInfo, UserNamespace
from cri_shim.runtime_handlers import HandlerRegistry
from cri_shim.sandboxes import infra, namespaces, pod_files, port_forward, views
from cri_shim.sandboxes.store import CREATING, NOTREADY, READY, SandboxMeta, SandboxState, SandboxStore
from cri_shim.stats.rates import CpuRates

log = logging.getLogger("cri_shim.sandboxes")

SHM_SIZE = 64 << 20

@dataclass
class Sandbox:
    meta: SandboxMeta
    status: SandboxState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The decoded config, kept beside the bytes it came from (read-only: callers never modify it).
    _config: tuple[bytes, pb.PodSandboxConfig] | None = field(default=None, repr=False, compare=False)
    # The List view, kept while the metadata and the state it was built from hold (views).
    view: tuple[object, str, pb.PodSandbox, bytes] | None = field(default=None, repr=False, compare=False)
    # The Status view, and the metadata and (state, addresses) it was built from (views).
    status_view: View[pb.PodSandboxStatus] | None = field(
        default=None, repr=False, compare=False)

    @property
    def config(self) -> pb.PodSandboxConfig:
        """The CRI config, decoded once (List and Status ask for it on every call)."""
        cached = self._config
        if cached is None or cached[0] is not self.meta.config:
            cached = self._config = (self.meta.config, pb.PodSandboxConfig.FromString(self.meta.config))
        return cached[1]

    @property
    def dir(self) -> Path:
        return Path(self.meta.dir)

    def pins(self) -> dict[str, Path]:
        out = {}
        if self.has_userns:
            out["user"] = self.dir / "ns" / "user"  # first: it owns the others
        if not self.meta.host_network:
            out["net"] = self.dir / "ns" / "net"
            out["uts"] = self.dir / "ns" / "uts"
        if not self.meta.host_ipc:
            out["ipc"] = self.dir / "ns" / "ipc"
        return out

    @property
    def has_userns(self) -> bool:
        """Whether the pod has a user namespace of its own (CRI userns_options mode POD)."""
        ns = self.config.linux.security_context.namespace_options
        return ns.HasField("userns_options") and ns.userns_options.mode == pb.POD

    def userns(self) -> UserNamespace | None:
        if not self.has_userns:
            return None
        u = self.config.linux.security_context.namespace_options.userns_options
        return UserNamespace(self.dir / "ns" / "user",
                             tuple((m.container_id, m.host_id, m.length) for m in u.uids),
                             tuple((m.container_id, m.host_id, m.length) for m in u.gids))

    @property
    def shm_path(self) -> Path:
        return self.dir / "shm"

    @property
    def infra_pidfile(self) -> Path:
        return self.dir / "infra.pid"

    @property
    def pod_cgroup(self) -> str:
        """cgroupfs path of the pod's own cgroup parent; empty for pods made before the infra
        process, and for cgroup parent "/" (a kubelet without pod cgroups): the root cgroup is
        the whole machine, not the pod."""
        parent = posixpath.dirname(self.meta.infra_cgroup) if self.meta.infra_cgroup else ""
        return "" if parent == "/" else parent


def now_ns() -> int:
    return time.time_ns()


class SandboxManager:
    def __init__(
        self, config: Config, handlers: HandlerRegistry, publish: Callable[[str, int], None]
    ) -> None:
        self.config = config
        self.handlers = handlers
        self.publish = publish  # (sandbox id, pb.ContainerEventType)
        self.dir = Path(config.state_dir) / "pods"
        self.store = SandboxStore(Path(config.root_dir) / "sandboxes.db")
        self.sandboxes: IdIndex[Sandbox] = IdIndex("pod sandbox")
        # Set by the daemon: stop / remove every container of a pod.
        self.stop_containers: Callable[[str], Awaitable[None]] = _noop
        self.remove_containers: Callable[[str], Awaitable[None]] = _noop
        # Previous CPU sample of each pod's cgroup, for PodSandboxStats' usage_nano_cores.
        self.cpu_rates = CpuRates()

    # --- component --------------------------------------------------------------

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for meta, status in await asyncio.to_thread(self.store.load):
            self.sandboxes.add(meta.id, Sandbox(meta, status), self._name_key(meta))
        for sb in self.sandboxes.values():
            if sb.status.state == CREATING:
                log.info("pod %s: cleaning up a half-created sandbox", sb.meta.id)
                await self._undo_failed_create(sb)
            elif sb.status.state == READY:
                await self._recover_ready(sb)
            elif sb.meta.infra_cgroup:
                # A crash in the middle of StopPodSandbox may have left the infra process running.
                with contextlib.suppress(Internal):
                    await infra.stop(sb.infra_pidfile, sb.meta.infra_cgroup)

    async def _recover_ready(self, sb: Sandbox) -> None:
        """A ready pod stays ready while its pins and its infra process (the same one) live."""
        gone = [kind for kind, p in sb.pins().items() if not mounts.is_mounted(p)]
        rec = infra.find(sb.infra_pidfile) if sb.meta.infra_cgroup else None
        if not gone and (rec is not None or not sb.meta.infra_cgroup):
            if rec is not None:
                sb.status.infra_pid, sb.status.infra_start = rec.pid, rec.start
            return
        # Like containerd when a pause container exits: the kubelet then recreates the pod.
        why = f"namespaces {', '.join(gone)} gone" if gone else "infra process gone"
        log.warning("pod %s: %s; marking not ready", sb.meta.id, why)
        if sb.meta.infra_cgroup:
            with contextlib.suppress(Internal):
                await infra.stop(sb.infra_pidfile, sb.meta.infra_cgroup)
        sb.status.state = NOTREADY
        await asyncio.to_thread(self.store.put_status, sb.meta.id, sb.status)

    async def stop(self) -> None:
        self.store.close()

    # --- helpers -------------------------------------------------------------------

    @staticmethod
    def _name_key(meta: SandboxMeta) -> str:
        return f"{meta.name}_{meta.namespace}_{meta.uid}_{meta.attempt}"

    def get(self, sandbox_id: str) -> Sandbox:
        return self.sandboxes.get(sandbox_id)

    def find(self, sandbox_id: str) -> Sandbox | None:
        return self.sandboxes.find(sandbox_id)

    def network(self) -> CNINetwork:
        try:
            net = load_default_network(self.config.cni.conf_dir, self.config.cni.bin_dirs)
        except NoNetworkConfig as e:
            raise FailedPrecondition(f"pod network is not ready: {e}") from None
        return CNINetwork(net, self.config.cni.bin_dirs, self.config.cni_cache_dir())

    def _net_request(self, sb: Sandbox) -> PodNetworkRequest:
        cfg = sb.config
        ports = [
            {"hostPort": p.host_port, "containerPort": p.container_port,
             "protocol": pb.Protocol.Name(p.protocol).lower(), "hostIP": p.host_ip}
            for p in cfg.port_mappings if p.host_port > 0
        ]
        return PodNetworkRequest(
            pod_id=sb.meta.id, netns=str(sb.pins().get("net", "")), pod_name=sb.meta.name,
            pod_namespace=sb.meta.namespace, pod_uid=sb.meta.uid, port_mappings=ports,
        )

    # --- RunPodSandbox ------------------------------------------------------------------

    async def run(self, cfg: pb.PodSandboxConfig, runtime_handler: str) -> str:
        md = cfg.metadata
        if not md.name or not md.namespace:
            raise InvalidArgument("pod sandbox metadata needs a name and a namespace")
        handler = self.handlers.get(runtime_handler)
        ns = cfg.linux.security_context.namespace_options
        if ns.HasField("userns_options") and ns.userns_options.mode == pb.POD and not handler.user_namespaces:
            raise FailedPrecondition(
                f"pod sandbox {md.name!r} in namespace {md.namespace!r}: runtime handler {handler.name!r} "
                "does not support user namespaces (its runtime reports no idmapped mounts)")
        pod_id = secrets.token_hex(32)
        meta = SandboxMeta(
            id=pod_id, name=md.name, namespace=md.namespace, uid=md.uid,
            attempt=md.attempt, config=cfg.SerializeToString(), handler=handler.name,
            dir=str(self.dir / pod_id), created_at=now_ns(), host_network=ns.network == pb.NODE,
            host_ipc=ns.ipc == pb.NODE, host_pid=ns.pid == pb.NODE, shared_pid=ns.pid == pb.POD,
            cgroup_parent=cfg.linux.cgroup_parent,
            # Decided once and recorded: a later change of cgroup_driver must not lose the cgroup.
            infra_cgroup=cgroup_paths.sandbox_cgroup(
                self.config.cgroup_driver, cfg.linux.cgroup_parent, pod_id),
        )
        key = self._name_key(meta)
        owner = self.sandboxes.name_owner(key)
        if owner is not None:
            raise AlreadyExists(
                f"pod sandbox name {md.name!r} in namespace {md.namespace!r} (uid {md.uid!r}, attempt "
                f"{md.attempt}) is reserved by pod {owner}"
            )
        network = None if meta.host_network else self.network()
        sb = Sandbox(meta, SandboxState())
        # Record first: a crash from here on is cleaned up by recovery.
        self.sandboxes.add(meta.id, sb, key)
        await asyncio.to_thread(self.store.put, meta, sb.status)
        async with sb.lock:
            try:
                await self._setup(sb, cfg, network)
            except BaseException:
                await self._undo_failed_create(sb)
                raise
        self.publish(meta.id, pb.CONTAINER_CREATED_EVENT)
        self.publish(meta.id, pb.CONTAINER_STARTED_EVENT)
        return meta.id

    async def _setup(self, sb: Sandbox, cfg: pb.PodSandboxConfig, network: CNINetwork | None) -> None:
        d = sb.dir
        d.mkdir(parents=True, mode=0o711)
        # Like containerd and CRI-O: no hostname from the kubelet means the node's (a pod
        # name is not a hostname: it may be longer than 64 characters).
        hostname = cfg.hostname or os.uname().nodename
        if len(hostname) > 64:
            raise InvalidArgument(f"hostname {hostname[:20]!r}... is longer than 64 characters")
        await asyncio.to_thread(_write_files, d, [
            ("hostname", hostname + "\n", SHARED_FILE),
            ("resolv.conf", pod_files.resolv_conf(cfg.dns_config), SHARED_FILE),
            ("hosts", pod_files.hosts_file(hostname, []), SHARED_FILE),
        ])
        if cfg.log_directory:
            Path(cfg.log_directory).mkdir(parents=True, exist_ok=True)
        pins = sb.pins()
        uts_hostname = hostname if "uts" in pins else ""
        await namespaces.pin_namespaces(pins, uts_hostname, sb.userns())
        sysctls = dict(cfg.linux.sysctls)
        if sysctls:
            bad = [k for k in sysctls if not _namespaced_sysctl(k, sb)]
            if bad:
                raise InvalidArgument(f"sysctls {', '.join(bad)} are not namespaced for this pod")
            await namespaces.sysctls_in(pins, sysctls)
        if not sb.meta.host_ipc:
            sb.shm_path.mkdir(mode=0o1777, exist_ok=True)
            mounts.mount("shm", sb.shm_path, "tmpfs", mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC,
                         f"mode=1777,size={SHM_SIZE}", "the pod's /dev/shm")
        # The infra process: a process in the pod's namespaces inside the pod's cgroup named
        # after the sandbox id, and PID 1 of the pod's PID namespace when the pod shares one.
        try:
            procs = await asyncio.to_thread(cgroupfs.create, sb.meta.infra_cgroup)
        except OSError as e:
            raise Internal(f"pod {sb.meta.id}: creating cgroup {sb.meta.infra_cgroup}: {e}") from None
        # The infra process and the network need only the pins, not each other, so they are
        # made side by side: the infra process's first cgroup.procs write waits for an RCU
        # grace period (about 20 ms), while CNI ADD runs its plugins. Both finish before a
        # failure is raised, so the teardown that follows finds everything either one made.
        done = await asyncio.gather(self._start_infra(sb, pins, procs),
                                    self._add_network(sb, network, hostname),
                                    return_exceptions=True)
        failed = [r for r in done if isinstance(r, BaseException)]
        for extra in failed[1:]:
            log.warning("pod %s: %s", sb.meta.id, extra)
        if failed:
            raise failed[0]
        sb.status.state = READY
        views.sandbox_status(sb, False)  # the view the kubelet asks for next, built now
        await asyncio.to_thread(self.store.put_status, sb.meta.id, sb.status)

    async def _start_infra(self, sb: Sandbox, pins: dict[str, Path], procs: list[Path]) -> None:
        new_pidns = sb.meta.shared_pid and not sb.meta.host_pid
        rec = await infra.start(self.config.pause_init, pins, new_pidns, procs, sb.infra_pidfile,
                                sb.dir / "infra.log")
        sb.status.infra_pid, sb.status.infra_start = rec.pid, rec.start
        if new_pidns:
            sb.status.holder_pid = rec.pid

    async def _add_network(self, sb: Sandbox, network: CNINetwork | None, hostname: str) -> None:
        """CNI ADD (none for a host-network pod), then the pod's hosts file with its addresses."""
        files = []
        if network is not None:
            try:
                result = await network.add(self._net_request(sb))
            except CNIError as e:
                raise Internal(f"pod {sb.meta.id}: network setup failed: {e}") from None
            sb.status.ips = pod_ips(result).ips
            sb.status.network_ready = True
            files.append(("cni-result.json", json.dumps(result), PRIVATE_FILE))  # root's, as configuration is
        files.append(("hosts", pod_files.hosts_file(hostname, sb.status.ips), SHARED_FILE))
        await asyncio.to_thread(_write_files, sb.dir, files)

    # --- Stop / Remove ---------------------------------------------------------------------

    async def _undo_failed_create(self, sb: Sandbox) -> None:
        """Release what a failed (or crashed) RunPodSandbox made; keep the record if anything stays.

        The kept record (state creating, listed as not ready) is what lets RemovePodSandbox,
        or the next start-up, try again: forgetting it would leak for good what it describes.
        """
        try:
            await self._release(sb)
        except Exception as e:  # noqa: BLE001 - logged, and the record stays for a retry
            log.error("pod %s: clean-up incomplete, record kept for a retry: %s", sb.meta.id, e)

    async def _release(self, sb: Sandbox) -> None:
        """Teardown, then the pod's files and cgroups, then its record. When the teardown
        fails, everything else is still released but the directory and record stay."""
        try:
            await self._teardown(sb)
        except Exception:
            await self._destroy(sb, forget=False)
            raise
        await self._destroy(sb)

    async def _teardown(self, sb: Sandbox) -> None:
        """Release network and namespaces; each step runs even when an earlier one failed,
        and tolerates having been done already. Raises Internal naming what failed."""
        # CNI DEL and the infra process's end are independent (the pin keeps the network
        # namespace), so they run side by side.
        errors = [e for e in await asyncio.gather(self._release_network(sb), self._stop_infra(sb)) if e]
        # The PID-namespace holder of pods made before the infra process existed.
        namespaces.stop_pid_holder(sb.dir / "pidns-holder.pid")
        sb.status.infra_pid = sb.status.infra_start = sb.status.holder_pid = 0
        for path in sb.pins().values():
            try:
                namespaces.unpin(path)
            except Exception as e:  # noqa: BLE001
                errors.append(f"namespace pin: {e}")
        sb.status.network_ready = False
        if errors:
            raise Internal(f"pod {sb.meta.id}: teardown: {'; '.join(errors)}")

    async def _release_network(self, sb: Sandbox) -> str:
        """CNI DEL for the pod, once; what failed, or "" (a failed step must not skip the rest)."""
        if sb.meta.host_network or sb.status.network_released:
            return ""
        try:
            await self.network().delete(self._net_request(sb))
            sb.status.network_released = True
        except FailedPrecondition:
            # No configuration any more: nothing we can run DEL with; drop the cache.
            pass
        except Exception as e:  # noqa: BLE001
            return f"network: {e}"
        return ""

    async def _stop_infra(self, sb: Sandbox) -> str:
        if not sb.meta.infra_cgroup:
            return ""
        try:
            await infra.stop(sb.infra_pidfile, sb.meta.infra_cgroup)
        except Exception as e:  # noqa: BLE001
            return f"infra process: {e}"
        return ""

    async def stop_sandbox(self, sandbox_id: str) -> None:
        sb = self.find(sandbox_id)
        if sb is None:
            return  # CRI: stopping a missing pod succeeds
        await self.stop_containers(sb.meta.id)
        async with sb.lock:
            await self._teardown(sb)
            if sb.status.state != NOTREADY:
                sb.status.state = NOTREADY
                await asyncio.to_thread(self.store.put_status, sb.meta.id, sb.status)
                self.publish(sb.meta.id, pb.CONTAINER_STOPPED_EVENT)

    async def _destroy(self, sb: Sandbox, forget: bool = True) -> None:
        """Remove the pod's mounts and cgroups, then (forget) its directory and record; the
        record stays if /dev/shm cannot be unmounted (the directory could not go either)."""
        if sb.shm_path.exists():
            try:
                mounts.unmount(sb.shm_path)
            except Internal as e:
                raise Internal(f"pod {sb.meta.id}: {e.message}") from None
        if sb.meta.infra_cgroup:
            for err in await asyncio.to_thread(cgroupfs.remove, sb.meta.infra_cgroup, None, 1.0):
                log.warning("pod %s: infra cgroup not removed: %s", sb.meta.id, err)
            self.cpu_rates.forget(sb.pod_cgroup)
        if not sb.meta.cgroup_parent:
            # Containers of a pod without a kubelet cgroup parent live under
            # /cri-shim/<pod id>; runtimes remove their own cgroup, we remove the parent.
            await asyncio.to_thread(cgroupfs.remove, f"/cri-shim/{sb.meta.id}")
        if not forget:
            return
        await asyncio.to_thread(shutil.rmtree, sb.dir, True)
        await asyncio.to_thread(self.store.delete, sb.meta.id)
        self.sandboxes.remove(sb.meta.id, self._name_key(sb.meta))

    async def remove_sandbox(self, sandbox_id: str) -> None:
        sb = self.find(sandbox_id)
        if sb is None:
            return
        await self.stop_containers(sb.meta.id)
        await self.remove_containers(sb.meta.id)
        async with sb.lock:
            if self.sandboxes.exact(sb.meta.id) is not sb:
                return  # a concurrent RemovePodSandbox got here first
            was_ready = sb.status.state == READY
            try:
                await self._release(sb)
            finally:
                if was_ready:
                    sb.status.state = NOTREADY
                    self.publish(sb.meta.id, pb.CONTAINER_STOPPED_EVENT)
        self.publish(sb.meta.id, pb.CONTAINER_DELETED_EVENT)

    # --- queries ---------------------------------------------------------------------------

    def status(self, sandbox_id: str, verbose: bool = False) -> tuple[pb.PodSandboxStatus, dict[str, str]]:
        return views.sandbox_status(self.get(sandbox_id), verbose)

    def status_body(self, sandbox_id: str) -> tuple[str, bytes]:
        """The pod's full id and its (not verbose) status, encoded (cri_shim.encoded)."""
        sb = self.get(sandbox_id)
        return sb.meta.id, views.status_body(sb)

    def list(self, f: pb.PodSandboxFilter | None) -> list[pb.PodSandbox]:
        return [views.sandbox_pb(sb) for sb in self.sandboxes.values() if views.matches(sb, f)]

    def list_encoded(self, f: pb.PodSandboxFilter | None) -> bytes:
        """ListPodSandboxResponse's encoding (see cri_shim.encoded)."""
        return b"".join([views.sandbox_entry(sb) for sb in self.sandboxes.values() if views.matches(sb, f)])

    def container_pod(self, pod_id: str) -> PodInfo:
        """The container side's view of a pod (see cri_shim.ports.PodInfo)."""
        return views.pod_info(self.get(pod_id))

    async def port_forward(self, pod_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to localhost:port in the pod's network namespace (the host's for a
        host-network pod), for PortForward. NotFound, FailedPrecondition (pod not ready),
        InvalidArgument (port); ConnectionRefusedError / OSError naming the pod and port."""
        sb = self.get(pod_id)
        if not 0 < port < 65536:
            raise InvalidArgument(f"port forward to pod sandbox {sb.meta.id}: invalid port {port}")
        if sb.status.state != READY:
            raise FailedPrecondition(f"pod sandbox {sb.meta.id} is not ready; cannot forward port {port}")
        sock = await port_forward.connect(sb.pins().get("net"), port, f"pod sandbox {sb.meta.id}")
        return await asyncio.open_connection(sock=sock)

    def pod_status_for_event(self, sandbox_id: str) -> pb.PodSandboxStatus | None:
        sb = self.sandboxes.exact(sandbox_id)
        if sb is None:
            return None
        return self.status(sandbox_id)[0]


def _namespaced_sysctl(key: str, sb: Sandbox) -> bool:
    if key.startswith("net."):
        return not sb.meta.host_network
    if key.startswith(("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")):
        return not sb.meta.host_ipc
    return False


async def _noop(pod_id: str) -> None:
    return None


def _write_files(d: Path, files: list[tuple[str, str, int]]) -> None:
    """The pod's own files (name, text, mode), in one trip to a thread: write_state, as the
    pod directory is in the state directory. hosts, hostname and resolv.conf are bind-mounted
    into containers, so any user there reads them."""
    for name, text, mode in files:
        write_state(d / name, text, mode)
