"""The recordings of one daemon: what the container manager calls at create, start and removal.

At create, `requested` checks the annotation (INVALID_ARGUMENT naming it, before anything is
made) and `prepare` writes the request into the bundle (`seccomp-recording.json`: the output
path and the runtime's tail), so a StartContainer after a daemon restart still records. At start,
`attach` starts the tracer and returns once it has attached; only then does the manager run the
runtime's `start`. After the container has exited (StopContainer, RemoveContainer), `finish`
collects the tracer; when it returns, the profile is on disk.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from cri_shim.atomic_file import PRIVATE_FILE, private_dir, write_atomic
from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import FailedPrecondition
from cri_shim.seccomp_recorder import annotation, launcher, profile

log = logging.getLogger("cri_shim.seccomp_recorder")

REQUEST_FILE = "seccomp-recording.json"
LOG_FILE = "seccomp-recorder.log"
# How long a tracer may take to write its profile once its container has exited.
FINISH_TIMEOUT = 20.0


class Recordings:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.active: dict[str, launcher.Recording] = {}

    def requested(self, cfg: pb.ContainerConfig, pod: pb.PodSandboxConfig) -> str | None:
        """The file a container's recording goes to (annotation.requested), None if none."""
        return annotation.requested(cfg.annotations, pod.annotations, cfg.metadata.name,
                                    pod.metadata.name)

    def prepare(self, bundle: Path, name: str, runtime_binary: str, no_new_privileges: bool) -> None:
        output = annotation.output_path(self.dir, name)
        tail = profile.runtime_tail(os.path.basename(runtime_binary), no_new_privileges)
        write_atomic(bundle / REQUEST_FILE, json.dumps({"output": str(output), "tail": list(tail)}),
                     PRIVATE_FILE)

    async def attach(self, container_id: str, bundle: Path, pid: int) -> None:
        """Trace the created container (init `pid`) if its bundle asks for it; returns once
        the tracer has attached. FailedPrecondition naming the container if it cannot."""
        try:
            request = json.loads((bundle / REQUEST_FILE).read_text())
        except FileNotFoundError:
            return
        output = Path(request["output"])
        private_dir(self.dir)
        try:
            rec = await launcher.start(pid, output, tuple(request["tail"]), bundle / LOG_FILE)
        except launcher.RecorderError as e:
            raise FailedPrecondition(
                f"container {container_id}: the seccomp recorder cannot trace it: {e}") from None
        self.active[container_id] = rec
        log.info("container %s: recording its system calls into %s", container_id, output)

    async def finish(self, container_id: str) -> None:
        """Collect the tracer of an exited container (its profile is then written)."""
        rec = self.active.pop(container_id, None)
        if rec is None:
            return
        code = await rec.finish(FINISH_TIMEOUT)
        rec.close_watch()
        if code == 0:
            log.info("container %s: seccomp profile written to %s", container_id, rec.output)
        else:
            log.warning("container %s: seccomp recorder ended with %s; see %s", container_id, code,
                        annotation.partial_path(rec.output) if code == 3 else "its log in the bundle")

    def close(self) -> None:
        """The daemon stops: every tracer detaches (its container keeps running untraced)."""
        for rec in self.active.values():
            rec.close_watch()
        self.active.clear()
