"""The streaming server's view of the daemon: containers to exec in and attach to, pods to
forward ports into (cri_shim.streaming.targets.Backend over the two managers)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import FailedPrecondition
from cri_shim.sandboxes.store import READY
from cri_shim.streaming.stdio import StreamIO
from cri_shim.streaming.targets import AttachTarget, ExecTarget

if TYPE_CHECKING:
    from cri_shim.containers.manager import ContainerManager
    from cri_shim.sandboxes.manager import SandboxManager


class ManagersBackend:
    def __init__(self, containers: ContainerManager, sandboxes: SandboxManager) -> None:
        self.containers = containers
        self.sandboxes = sandboxes

    def check_container(self, container_id: str) -> None:
        status, _ = self.containers.status(container_id)  # NotFound names it; notices an exit
        if status.state != pb.CONTAINER_RUNNING:
            state = pb.ContainerState.Name(status.state).removeprefix("CONTAINER_").lower()
            raise FailedPrecondition(f"container {status.id} is not running ({state})")

    def check_pod(self, pod_id: str) -> None:
        sb = self.sandboxes.get(pod_id)
        if sb.status.state != READY:
            raise FailedPrecondition(f"pod sandbox {sb.meta.id} is not ready ({sb.status.state})")

    async def exec(self, target: ExecTarget, io: StreamIO) -> int:
        return await self.containers.exec_stream(target.container_id, list(target.cmd), tty=target.tty,
                                                 stdin=target.stdin, io=io)

    async def attach(self, target: AttachTarget, io: StreamIO) -> None:
        await self.containers.attach(target.container_id, stdin=target.stdin, tty=target.tty, io=io)

    async def port_forward(self, pod_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await self.sandboxes.port_forward(pod_id, port)
