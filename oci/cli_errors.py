"""Turn what a runc-compatible runtime printed into a typed error (sans-IO, unit-testable).

Runtimes write `{"level": "error", "msg": ...}` lines to the --log file when --log-format json
is given (runc, crun and pyrunc all do); plain stderr is the fallback. The wording differs per
runtime, so classification works on phrases seen in runc, crun and youki.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from oci.errors import (
    ContainerAlreadyExists,
    ContainerNotFound,
    OCIRuntimeError,
    RuntimeFailure,
    WrongState,
)


@dataclass(frozen=True)
class LogEntry:
    level: str
    msg: str


def parse_log(text: str) -> list[LogEntry]:
    """Parse a json-lines runtime log; lines that are not JSON are kept as level "unknown"."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            entries.append(LogEntry("unknown", line))
            continue
        if isinstance(obj, dict):
            entries.append(LogEntry(str(obj.get("level", "")).lower(), str(obj.get("msg", ""))))
        else:
            entries.append(LogEntry("unknown", line))
    return entries


def error_message(log_text: str, stderr: str = "") -> str:
    """The runtime's own error message: error/fatal log lines, else the last stderr lines."""
    entries = parse_log(log_text)
    errors = [e.msg for e in entries if e.level in ("error", "fatal", "panic")]
    if errors:
        return "; ".join(dict.fromkeys(errors))  # same message can be logged twice (runc init + runc)
    stderr = stderr.strip()
    if stderr:
        return "; ".join(stderr.splitlines()[-3:])
    unknown = [e.msg for e in entries if e.level == "unknown"]
    return "; ".join(unknown[-3:])


_ALREADY_EXISTS = ("already exists", "with given id already exists", "container with id exists")
_NOT_FOUND = ("does not exist", "container not found", "no such container", "not found in state",
              "doesn't exist")
_WRONG_STATE = (
    "not running", "not paused", "not stopped", "not created", "is paused", "is running", "is stopped",
    "cannot start", "cannot delete", "cannot pause", "cannot resume", "cannot exec", "cannot kill",
    "already running", "already paused", "already stopped", "has stopped", "has already been started",
    "in the paused state", "not in `created` or `stopped` state", "not in created state",
    "not in a running state", "no such process", "container is in", "invalid state",
)


def classify(message: str, *, command: str = "", container_id: str | None = None,
             root: str | None = None) -> type[OCIRuntimeError]:
    msg = message.lower()
    if command in ("create", "run"):
        # a bundle problem ("namespace ... does not exist") is never "container not found" here
        return ContainerAlreadyExists if any(p in msg for p in _ALREADY_EXISTS) else RuntimeFailure
    if command in ("features", "list", "spec", "--version"):
        return RuntimeFailure
    # crun: a second start finds the exec fifo already consumed
    if "exec.fifo" in msg and "no such file" in msg:
        return WrongState
    if any(p in msg for p in _ALREADY_EXISTS):
        return ContainerAlreadyExists
    if any(p in msg for p in _NOT_FOUND):
        return ContainerNotFound
    # crun: "error opening file `<root>/<id>/status`: No such file or directory" and
    # "cannot open directory '<root>/<id>'" mean the state directory is gone.
    if root and container_id and "no such file or directory" in msg:
        state_dir = f"{root.rstrip('/')}/{container_id}".lower()
        if f"{state_dir}/status" in msg or f"{state_dir}'" in msg or f"{state_dir}`" in msg:
            return ContainerNotFound
    if any(p in msg for p in _WRONG_STATE):
        return WrongState
    return RuntimeFailure


def make_error(*, runtime: str, command: str, exit_code: int | None, log_text: str, stderr: str = "",
               container_id: str | None = None, root: str | None = None) -> OCIRuntimeError:
    runtime_message = error_message(log_text, stderr) or f"exited with status {exit_code}"
    cls = classify(runtime_message, command=command, container_id=container_id, root=root)
    who = f" container {container_id!r}" if container_id else ""
    return cls(f"{runtime} {command}{who}: {runtime_message}", runtime=runtime, command=command,
               container_id=container_id, exit_code=exit_code, runtime_message=runtime_message)
