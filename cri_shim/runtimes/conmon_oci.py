"""A handler of type "oci": a runc-compatible binary, each container monitored by conmon.

As CRI-O's `runtimeOCI` (internal/oci/runtime_oci.go) and podman's `ConmonOCIRuntime`, this
object owns the OCI runtime adapter and the conmon settings. Every command line of the
runtime comes from the adapter (oci.cli_runtime), conmon's included: conmon is handed the
adapter's binary and global options, so a flag such as --systemd-cgroup reaches `create`
(run by conmon), `exec` and the other verbs alike.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal as _signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cri_shim.config import Config, RuntimeHandlerConfig
from cri_shim.containers import conmon, conmon_cgroup
from cri_shim.errors import DeadlineExceeded, FailedPrecondition
from cri_shim.runtimes import exec_stream, exec_sync
from cri_shim.runtimes.handler_runtime import ContainerCreate, ExecResult, HandlerRuntime, PendingCreate
from cri_shim.streaming.stdio import StreamIO
from oci.cli_runtime import CLIRuntime
from oci.runtime import CommandLineRuntime
from oci.spec import Process, Resources

# How long ReopenContainerLog waits for conmon to create the new log file.
REOPEN_LOG_TIMEOUT = 5.0


@dataclass(frozen=True)
class ConmonSettings:
    """What every container's conmon shares: the binary and where it reports."""

    binary: str
    exit_dir: Path
    socket_dir: Path
    # The daemon configuration, for where conmon's own cgroup goes (conmon_cgroup.prepare).
    config: Config

    @classmethod
    def from_config(cls, config: Config) -> ConmonSettings:
        state = Path(config.state_dir)
        return cls(config.conmon, state / "exits", state / "sockets", config)


class ConmonOCIRuntime(HandlerRuntime):
    def __init__(self, name: str, oci: CommandLineRuntime, root: Path, settings: ConmonSettings) -> None:
        self.name = name
        self.oci = oci
        self.root = root  # the adapter's --root, created before the first container
        self.conmon = settings

    def __repr__(self) -> str:
        return f"ConmonOCIRuntime({self.name!r}, {self.oci!r})"

    def conmon_args(self, request: ContainerCreate) -> conmon.ConmonArgs:
        """conmon's arguments for one container (sans I/O, so it can be tested without root)."""
        bundle = request.bundle
        return conmon.ConmonArgs(
            conmon=self.conmon.binary, runtime_path=self.oci.binary,
            runtime_args=tuple(self.oci.runtime_args()),
            container_id=request.container_id, name=request.name, bundle=bundle,
            log_path=request.log_path or str(bundle / "console.log"),
            exit_dir=self.conmon.exit_dir, persist_dir=bundle / "persist", socket_dir=self.conmon.socket_dir,
            stdin=request.stdin, stdin_once=request.stdin_once, terminal=request.terminal,
        )

    async def create(self, request: ContainerCreate) -> int:
        return await (await self.begin_create(request)).finish()

    async def begin_create(self, request: ContainerCreate) -> PendingCreate:
        """conmon's cgroup made and conmon started, waiting on its start pipe (conmon.spawn)
        while the rootfs and the spec are made; `finish` lets it run the runtime's create."""
        args = self.conmon_args(request)
        self.root.mkdir(parents=True, exist_ok=True)
        args.cgroup_procs = await conmon_cgroup.prepare(self.conmon.config, request.pod,
                                                        request.container_id, request.bundle)
        return _ConmonCreate(await conmon.spawn(args))

    async def start(self, container_id: str) -> None:
        await self.oci.start(container_id)

    async def kill(self, container_id: str, signal: int | str = _signal.SIGTERM, *,
                   all: bool = False) -> None:
        await self.oci.kill(container_id, signal, all=all)

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        await self.oci.delete(container_id, force=force)

    async def update(self, container_id: str, resources: Resources) -> None:
        await self.oci.update(container_id, resources)

    async def features(self) -> dict[str, Any]:
        return await self.oci.features()

    async def exec_sync(self, container_id: str, bundle: Path, process: Process,
                        timeout: float) -> ExecResult:
        # The pid file lets a time-out kill the exec'd process tree, not only the runtime.
        work = bundle / f"exec-{secrets.token_hex(6)}"
        work.mkdir()
        try:
            async with self.oci.exec_piped(container_id, process, pid_file=work / "pid") as proc:
                assert proc.stdout and proc.stderr
                budget = exec_sync.OutputBudget(exec_sync.EXEC_OUTPUT_LIMIT)
                readers = asyncio.gather(exec_sync.read_capped(proc.stdout, budget),
                                         exec_sync.read_capped(proc.stderr, budget))
                try:
                    out, err = await asyncio.wait_for(asyncio.shield(readers), timeout or None)
                    code = await proc.wait()
                except TimeoutError:
                    await exec_sync.kill_exec(proc, work / "pid")
                    readers.cancel()
                    command = process.args[0] if process.args else ""
                    raise DeadlineExceeded(
                        f"exec {command!r} in container {container_id} timed out after {timeout}s"
                    ) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return ExecResult(out, err, code)

    async def exec_stream(self, container_id: str, bundle: Path, process: Process,
                          io: StreamIO) -> int:
        work = bundle / f"exec-{secrets.token_hex(6)}"
        work.mkdir()
        try:
            return await exec_stream.run(self.oci, container_id, process, io, work / "pid")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def reopen_log(self, container_id: str, bundle: Path, log_path: str) -> None:
        # The kubelet's log rotation renames the file and then calls this; it (and critest)
        # expects the new file to be there when the call returns, so wait for conmon.
        try:
            conmon.send_ctl(bundle, conmon.CTL_REOPEN_LOG)
        except OSError as e:
            raise FailedPrecondition(f"container {container_id}: cannot reach conmon: {e}") from None
        if not log_path:
            return
        log_file = Path(log_path)
        deadline = time.monotonic() + REOPEN_LOG_TIMEOUT
        while not log_file.exists():
            if time.monotonic() > deadline or not conmon.conmon_alive(bundle):
                raise DeadlineExceeded(f"container {container_id}: conmon did not reopen {log_file}")
            await asyncio.sleep(0.01)


def conmon_oci_runtime(name: str, binary_path: str, root: Path, handler: RuntimeHandlerConfig,
                       settings: ConmonSettings) -> ConmonOCIRuntime:
    """The handler runtime for a handler of type "oci"."""
    adapter = CLIRuntime(binary_path, root, name=name, global_args=handler.extra_args,
                         systemd_cgroup=settings.config.cgroup_driver == "systemd")
    return ConmonOCIRuntime(name, adapter, root, settings)


class _ConmonCreate(PendingCreate):
    def __init__(self, spawned: conmon.Spawned) -> None:
        self._spawned = spawned

    async def finish(self) -> int:
        return await conmon.go(self._spawned)

    async def cancel(self) -> None:
        await conmon.abandon(self._spawned)
