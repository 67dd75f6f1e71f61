"""Typed errors of the OCI runtime layer.

Callers branch on the class (the CRI layer maps them to gRPC codes); ``runtime_message`` is the
runtime's own words, kept verbatim for logs and error details.
"""

from __future__ import annotations


class OCIRuntimeError(Exception):
    def __init__(self, message: str, *, runtime: str = "", command: str = "", container_id: str | None = None,
                 exit_code: int | None = None, runtime_message: str = "") -> None:
        self.runtime = runtime
        self.command = command
        self.container_id = container_id
        self.exit_code = exit_code
        self.runtime_message = runtime_message or message
        super().__init__(message)


class ContainerNotFound(OCIRuntimeError):
    """The runtime has no container with this id (under its --root)."""


class ContainerAlreadyExists(OCIRuntimeError):
    """create was given an id the runtime already knows."""


class WrongState(OCIRuntimeError):
    """The operation is not allowed in the container's current state (start twice, delete running...)."""


class RuntimeFailure(OCIRuntimeError):
    """Anything else the runtime reported: bad config, mount failure, cgroup error, crash."""


class RuntimeTimeout(RuntimeFailure):
    """The runtime command did not finish in time and was killed."""
