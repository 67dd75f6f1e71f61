"""The interface the container side uses to run containers of one CRI runtime handler.

As CRI-O's `RuntimeImpl` (internal/oci/oci.go): one implementation per kind of handler,
chosen by the handler's `type`. Today that is "oci", a runc-compatible binary under conmon
(conmon_oci.py); a micro-VM runtime would be another implementation of this class.
"""

from __future__ import annotations

import abc
import signal as _signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cri_shim.containers.spec_gen import PodContext
from cri_shim.streaming.stdio import StreamIO
from oci.spec import Process, Resources


@dataclass
class ContainerCreate:
    """What creating one container needs beyond its bundle's config.json."""

    container_id: str
    name: str
    bundle: Path
    log_path: str
    pod: PodContext
    stdin: bool = False
    stdin_once: bool = False
    terminal: bool = False


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


class PendingCreate(abc.ABC):
    """A create begun before the container's bundle is complete (HandlerRuntime.begin_create):
    exactly one of `finish` (the bundle's config.json is written) or `cancel` follows."""

    @abc.abstractmethod
    async def finish(self) -> int:
        """Create the container; return its host pid (as HandlerRuntime.create)."""

    @abc.abstractmethod
    async def cancel(self) -> None:
        """The bundle will not be completed: undo what was begun."""


class DeferredCreate(PendingCreate):
    """Nothing begun: `finish` is the runtime's whole create."""

    def __init__(self, runtime: HandlerRuntime, request: ContainerCreate) -> None:
        self._runtime = runtime
        self._request = request

    async def finish(self) -> int:
        return await self._runtime.create(self._request)

    async def cancel(self) -> None:
        pass


class HandlerRuntime(abc.ABC):
    """Runs the containers of one handler; errors are OCIRuntimeError or cri_shim errors."""

    name: str

    @abc.abstractmethod
    async def create(self, request: ContainerCreate) -> int:
        """Create the container from its bundle, monitored; return its host pid."""

    async def begin_create(self, request: ContainerCreate) -> PendingCreate:
        """Begin what creating the container can do before its bundle's config.json exists
        (a monitor's start, its cgroup), so that it overlaps with making the rootfs and the
        spec. By default nothing: `finish` does it all."""
        return DeferredCreate(self, request)

    @abc.abstractmethod
    async def start(self, container_id: str) -> None: ...

    @abc.abstractmethod
    async def kill(self, container_id: str, signal: int | str = _signal.SIGTERM, *,
                   all: bool = False) -> None: ...

    @abc.abstractmethod
    async def delete(self, container_id: str, *, force: bool = False) -> None: ...

    @abc.abstractmethod
    async def exec_sync(self, container_id: str, bundle: Path, process: Process,
                        timeout: float) -> ExecResult:
        """Run ``process`` in the container and collect its output; DeadlineExceeded after
        ``timeout`` seconds (0: none), with the process and its children killed."""

    @abc.abstractmethod
    async def exec_stream(self, container_id: str, bundle: Path, process: Process,
                          io: StreamIO) -> int:
        """Run ``process`` in the container with a client's streams; return its exit code
        (128 + the signal when a signal killed it). ``process.terminal`` decides tty or pipes;
        an ``io`` stream that is None is /dev/null. Cancelling kills the exec'd process tree."""

    @abc.abstractmethod
    async def update(self, container_id: str, resources: Resources) -> None: ...

    @abc.abstractmethod
    async def reopen_log(self, container_id: str, bundle: Path, log_path: str) -> None:
        """Have the monitor reopen the container's log; return once the file exists again."""

    @abc.abstractmethod
    async def features(self) -> dict[str, Any]:
        """The runtime's `features` document (runtime-spec features.md)."""
