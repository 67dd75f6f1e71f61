"""A handler runtime that reports how long each runtime operation took and whether it failed
(per handler and verb), around any other handler runtime."""

from __future__ import annotations

import signal as _signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cri_shim.runtimes.handler_runtime import ContainerCreate, ExecResult, HandlerRuntime, PendingCreate
from cri_shim.streaming.stdio import StreamIO
from oci.spec import Process, Resources

T = TypeVar("T")
# (handler, verb, seconds, failed)
Observer = Callable[[str, str, float, bool], None]


class ObservedRuntime(HandlerRuntime):
    def __init__(self, inner: HandlerRuntime, observe: Observer) -> None:
        self.inner = inner
        self.name = inner.name
        self._observe = observe

    def __getattr__(self, name: str) -> Any:  # conmon_args and the like pass through
        return getattr(self.inner, name)

    async def _timed(self, verb: str, call: Awaitable[T]) -> T:
        start = time.monotonic()
        failed = True
        try:
            result = await call
            failed = False
            return result
        finally:
            self._observe(self.name, verb, time.monotonic() - start, failed)

    async def create(self, request: ContainerCreate) -> int:
        return await self._timed("create", self.inner.create(request))

    async def begin_create(self, request: ContainerCreate) -> PendingCreate:
        start = time.monotonic()
        try:
            inner = await self.inner.begin_create(request)
        except BaseException:
            self._observe(self.name, "create", time.monotonic() - start, True)
            raise
        return _TimedCreate(self, inner, time.monotonic() - start)

    async def start(self, container_id: str) -> None:
        await self._timed("start", self.inner.start(container_id))

    async def kill(self, container_id: str, signal: int | str = _signal.SIGTERM, *,
                   all: bool = False) -> None:
        await self._timed("kill", self.inner.kill(container_id, signal, all=all))

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        await self._timed("delete", self.inner.delete(container_id, force=force))

    async def exec_sync(self, container_id: str, bundle: Path, process: Process,
                        timeout: float) -> ExecResult:
        return await self._timed("exec", self.inner.exec_sync(container_id, bundle, process, timeout))

    async def exec_stream(self, container_id: str, bundle: Path, process: Process,
                          io: StreamIO) -> int:
        return await self._timed("exec_stream", self.inner.exec_stream(container_id, bundle, process, io))

    async def update(self, container_id: str, resources: Resources) -> None:
        await self._timed("update", self.inner.update(container_id, resources))

    async def reopen_log(self, container_id: str, bundle: Path, log_path: str) -> None:
        await self._timed("reopen_log", self.inner.reopen_log(container_id, bundle, log_path))

    async def features(self) -> dict[str, Any]:
        return await self._timed("features", self.inner.features())


class _TimedCreate(PendingCreate):
    """A begun create, observed once as one "create": the time of its begin and its finish
    (not what the daemon did in between), failed if either failed or it was cancelled."""

    def __init__(self, runtime: ObservedRuntime, inner: PendingCreate, begun: float) -> None:
        self._observed = runtime
        self._inner = inner
        self._begun = begun

    async def finish(self) -> int:
        start = time.monotonic()
        failed = True
        try:
            pid = await self._inner.finish()
            failed = False
            return pid
        finally:
            self._report(time.monotonic() - start, failed)

    async def cancel(self) -> None:
        try:
            await self._inner.cancel()
        finally:
            self._report(0.0, True)

    def _report(self, seconds: float, failed: bool) -> None:
        o = self._observed
        o._observe(o.name, "create", self._begun + seconds, failed)
