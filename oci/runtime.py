"""The interface every low-level OCI runtime backend offers to the layer above (asyncio)."""

from __future__ import annotations

import abc
import asyncio
import enum
import os
import signal as _signal
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from oci._model import Model
from oci.spec import Process, Resources

StrPath = str | os.PathLike[str]
StdioTarget = int | StrPath | None


class Status(enum.StrEnum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class State(Model):
    """The runtime-spec state document (`runtime state ID`); runtime-specific keys land in ``extra``."""

    oci_version: str = ""
    id: str
    status: str
    pid: int | None = None
    bundle: str = ""
    annotations: dict[str, str] | None = None

    @property
    def parsed_status(self) -> Status:
        """``status`` as a Status; raises ValueError for a value the runtime-spec does not define."""
        return Status(self.status)


@dataclass
class Stdio:
    """Where the container (or exec'd) process's stdio go when there is no terminal.

    Each is an open file descriptor or a path (stdin opened for reading, the others appended to);
    ``None`` means /dev/null. The runtime process itself shares them, as runc's interface implies.
    """

    stdin: StdioTarget = None
    stdout: StdioTarget = None
    stderr: StdioTarget = None


class OCIRuntime(abc.ABC):
    """One backend (runc, crun, pyrunc, ...) with its own state directory."""

    name: str

    @abc.abstractmethod
    async def create(self, container_id: str, bundle: StrPath, *, pid_file: StrPath | None = None,
                     console_socket: StrPath | None = None, no_pivot: bool = False,
                     no_new_keyring: bool = False, stdio: Stdio | None = None) -> None:
        """Set the container up; its process waits for ``start``. Raises ContainerAlreadyExists."""

    @abc.abstractmethod
    async def start(self, container_id: str) -> None:
        """Run the user process of a created container. Raises WrongState unless created."""

    @abc.abstractmethod
    async def state(self, container_id: str) -> State: ...

    @abc.abstractmethod
    async def list(self) -> list[State]: ...

    @abc.abstractmethod
    async def kill(self, container_id: str, signal: int | str = _signal.SIGTERM, *,
                   all: bool = False) -> None:
        """Send a signal (number or name) to the init process, or with ``all`` to every process."""

    @abc.abstractmethod
    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """Remove a stopped container (``force`` kills a running one first)."""

    @abc.abstractmethod
    async def exec(self, container_id: str, process: Process, *, pid_file: StrPath | None = None,
                   console_socket: StrPath | None = None, detach: bool = False,
                   stdio: Stdio | None = None) -> int:
        """Run another process in the container. Returns its exit code, or 0 when detached
        (the pid is then in ``pid_file``)."""

    @abc.abstractmethod
    async def update(self, container_id: str, resources: Resources) -> None: ...

    @abc.abstractmethod
    async def pause(self, container_id: str) -> None: ...

    @abc.abstractmethod
    async def resume(self, container_id: str) -> None: ...

    @abc.abstractmethod
    async def pids(self, container_id: str) -> list[int]: ...

    @abc.abstractmethod
    async def features(self) -> dict[str, Any]:
        """The runtime's `features` document (runtime-spec features.md)."""


class CommandLineRuntime(OCIRuntime):
    """A backend that is a runc-compatible command. A monitor (conmon) runs its `create` itself,
    so it needs the binary and the global options that select this backend's state; and a
    caller that streams an exec's output needs the runtime's process, not just an exit code."""

    binary: str
    # Whether `exec -t --console-socket` may run in the foreground (see exec_piped).
    foreground_console_socket: bool = False

    @abc.abstractmethod
    def runtime_args(self) -> list[str]:
        """Global options, before the verb, of every command of this backend."""

    @abc.abstractmethod
    def exec_piped(self, container_id: str, process: Process, *, pid_file: StrPath,
                   stdin: int = asyncio.subprocess.DEVNULL, stdout: int = asyncio.subprocess.PIPE,
                   stderr: int = asyncio.subprocess.PIPE, console_socket: StrPath | None = None,
                   ) -> AbstractAsyncContextManager[asyncio.subprocess.Process]:
        """Run ``exec`` in the foreground with stdout and stderr piped to the caller, which reads
        them while it runs and may kill it; the exec'd process's pid goes to ``pid_file``.
        Leaving the context kills the runtime's process if it is still running.

        ``stdin``/``stdout``/``stderr`` are what asyncio's subprocess takes (PIPE, DEVNULL or a
        file descriptor, such as a pty's slave). A ``process`` with ``terminal`` set runs as
        ``exec -t``: the runtime proxies between its own stdio (a terminal the caller gives it)
        and the container's pty, and copies its terminal's size on SIGWINCH, as runc does.
        With ``console_socket`` (where ``foreground_console_socket`` says the runtime takes it
        without --detach) the runtime sends the container's pty master there instead."""
