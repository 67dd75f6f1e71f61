"""What a streaming URL was issued for, and what the server needs from the daemon to serve it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from cri_shim.streaming.stdio import StreamIO


@dataclass(frozen=True)
class ExecTarget:
    container_id: str
    cmd: tuple[str, ...]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class AttachTarget:
    container_id: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class PortForwardTarget:
    pod_id: str
    ports: tuple[int, ...]


Target = ExecTarget | AttachTarget | PortForwardTarget


class Backend(Protocol):
    """The daemon's side of streaming. Errors are cri_shim.errors (NotFound, FailedPrecondition...)."""

    def check_container(self, container_id: str) -> None:
        """Raise unless the container exists and runs."""

    def check_pod(self, pod_id: str) -> None:
        """Raise unless the pod exists and is ready."""

    async def exec(self, target: ExecTarget, io: StreamIO) -> int:
        """Run target.cmd in the container with io; its exit code."""

    async def attach(self, target: AttachTarget, io: StreamIO) -> None:
        """Attach io to the container's streams until it exits or the client goes."""

    async def port_forward(self, pod_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to port inside the pod's network namespace."""
